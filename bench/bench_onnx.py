"""Detector speed and accuracy: our onnxruntime tiling vs ultralytics `predict` on the same tiles.

    .venv-train/bin/python bench/bench_onnx.py [--n 5] [--weights runs/crystal-yolo11n/weights/best.pt]

Runs in the training venv (it needs ultralytics for the comparison; without it only our side is timed). Both sides
get the same cleaned image, the same 640 px tiles with 128 px overlap, the same thresholds and the same seam merge;
times are model-side only (tiles in -> merged boxes out), medians over rendered images. F1 at IoU 0.5 against the
rendered truth shows that the two sides find the same objects. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from analysis.preprocess import clean_image  # noqa: E402
from analysis.pipeline import find_shipped_model  # noqa: E402
from detection.metrics import score_detections  # noqa: E402
from detection.onnx_detector import EDGE_MARGIN_PX, OnnxDetector, OnnxDetectorOptions  # noqa: E402
from detection.synthetic import render_image  # noqa: E402
from detection.tiling import merge_tile_detections, tile_boxes  # noqa: E402

SIZES = ((1280, 1024), (2592, 1944))


def ultralytics_predict(model, image: np.ndarray, options: OnnxDetectorOptions, tile: int):
    """Same tiling and merge as OnnxDetector.predict_boxes, but the model runs through ultralytics' predict."""
    h, w = image.shape
    tiles = tile_boxes(w, h, tile=(tile, tile), overlap=options.tile_overlap_px)
    grey = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    crops = [np.repeat(grey[y0:y1, x0:x1, None], 3, axis=2) for x0, y0, x1, y1 in tiles.tolist()]
    results = model.predict(crops, imgsz=tile, conf=options.conf_threshold, iou=options.iou_threshold,
                            agnostic_nms=True, verbose=False, batch=options.batch_size, max_det=3000)
    boxes, scores, tile_idx = [], [], []
    for t, (r, (x0, y0, _, _)) in enumerate(zip(results, tiles.tolist())):
        b = r.boxes.xyxy.cpu().numpy() + np.array([x0, y0, x0, y0], np.float32)
        boxes.append(b)
        scores.append(r.boxes.conf.cpu().numpy())
        tile_idx.append(np.full(len(b), t))
    boxes, scores, tile_idx = np.concatenate(boxes), np.concatenate(scores), np.concatenate(tile_idx)
    if len(tiles) > 1 and len(boxes):
        keep, merged = merge_tile_detections(boxes, scores, None, tile_idx, tiles,
                                             iou_threshold=options.iou_threshold, edge_margin_px=EDGE_MARGIN_PX)
        return merged
    return boxes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--weights", type=Path, default=ROOT / "runs" / "crystal-yolo11n" / "weights" / "best.pt")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model_path = find_shipped_model()
    if model_path is None:
        sys.exit("no model in weights/")
    ours = OnnxDetector(model_path.read_bytes(), threads=args.threads, name=model_path.parent.name)
    tile = ours.meta.imgsz[0]
    options = OnnxDetectorOptions(skip_empty_tiles=False)  # same tiles on both sides
    theirs = None
    try:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "0")
        from detection.train import configure_offline

        configure_offline()
        import torch
        from ultralytics import YOLO

        torch.set_num_threads(args.threads)
        theirs = YOLO(str(args.weights))
    except Exception as e:  # noqa: BLE001 - the comparison is optional
        print(f"note: ultralytics comparison skipped ({type(e).__name__}: {e})")
    print(f"machine: {os.cpu_count()} cores, {args.threads} threads each; model {model_path}; tiles {tile} px")
    print(f"{'size':>11} {'ours s':>7} {'ultra s':>8} {'speed-up':>8} {'ours F1':>8} {'ultra F1':>9}")
    for w, h in SIZES:
        t_ours, t_theirs, pred_o, pred_t, truths = [], [], [], [], []
        for i in range(args.n):
            img, truth = render_image(950_000 + i, size=(w, h), difficulty="medium")
            img = img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
            if img.ndim == 3:
                img = img.mean(axis=2)
            cleaned = clean_image(img)
            truths.append(np.array([o["box"] for o in truth["objects"] if o["counted"]], float).reshape(-1, 4))
            t0 = time.perf_counter()
            boxes, _, _ = ours.predict_boxes(cleaned, options=options)
            t_ours.append(time.perf_counter() - t0)
            pred_o.append(boxes)
            if theirs is not None:
                if i == 0:
                    ultralytics_predict(theirs, cleaned, options, tile)  # warm-up
                t0 = time.perf_counter()
                pred_t.append(ultralytics_predict(theirs, cleaned, options, tile))
                t_theirs.append(time.perf_counter() - t0)
        mo = statistics.median(t_ours)
        f1o = score_detections(pred_o, truths, iou_threshold=0.5).f1
        if theirs is not None:
            mt = statistics.median(t_theirs)
            f1t = score_detections(pred_t, truths, iou_threshold=0.5).f1
            print(f"{w:>5}x{h:<5} {mo:7.3f} {mt:8.3f} {mt / mo:7.2f}x {f1o:8.3f} {f1t:9.3f}")
        else:
            print(f"{w:>5}x{h:<5} {mo:7.3f} {'-':>8} {'-':>8} {f1o:8.3f} {'-':>9}")


if __name__ == "__main__":
    main()
