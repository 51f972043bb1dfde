"""Detector speed and accuracy: our onnxruntime detector vs ultralytics `predict` on the same passes.

    .venv-train/bin/python bench/bench_onnx.py [--n 5] [--model FILE ...] [--weights runs/.../best.pt]
                                               [--threads 2] [--sessions]

Runs in the training venv (it needs ultralytics for the comparison; without it only our side is timed). ``--model``
(repeatable; default the shipped package weights/*.cqcpkg) is a ``.cqcpkg`` (verified against weights/trusted_keys)
or a bare ``.onnx``; ``--weights`` is the .pt the ONNX files were exported from (training output is not kept;
``bench/pt_from_onnx.py`` rebuilds an equivalent .pt from the float ONNX export). For each model both sides get the
same cleaned image and run the model on the same passes: our plan (``OnnxDetector.plan``: 640 px tiles with 128 px
overlap for a fixed-size model, the whole image padded to the stride for a dynamic-size one), the same thresholds
and the same seam merge. Times are model-side only (image in -> merged boxes out, pre/post-processing included on
both sides), medians over rendered images, the two sides taking turns. F1 at IoU 0.5 against the rendered truth
shows that both find the same objects. ``--sessions`` also times onnxruntime session settings (threads, spinning,
graph optimisation level) on the first model's input for each size. Prints figures; asserts nothing.
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
from analysis.pipeline import SHIPPED_KEYS_DIR, find_shipped_model  # noqa: E402
from detection.metrics import score_detections  # noqa: E402
from detection.onnx_detector import EDGE_MARGIN_PX, OnnxDetector, OnnxDetectorOptions  # noqa: E402
from detection.synthetic import render_image  # noqa: E402
from detection.tiling import merge_tile_detections  # noqa: E402
from detection.yolo import padded_batch  # noqa: E402

SIZES = ((1280, 1024), (2592, 1944))


def load_model(path: Path, threads: int) -> OnnxDetector:
    if path.suffix == ".cqcpkg":
        try:
            from analysis.onnx_adapter import load_package_detector
            from detection.package import load_trusted_keys
        except ImportError as e:  # the training venv may lack `cryptography` (requirements-train.txt)
            sys.exit(f"cannot verify {path} here ({e}); install cryptography in this venv "
                     "(pip install 'cryptography>=50') or pass --model with a bare .onnx file")

        return load_package_detector(path, trusted_keys=load_trusted_keys(SHIPPED_KEYS_DIR), threads=threads).model
    return OnnxDetector(path.read_bytes(), threads=threads, name=path.parent.name)


def ultralytics_predict(model, image: np.ndarray, options: OnnxDetectorOptions, tiles: np.ndarray,
                        input_hw: tuple[int, int], *, threads: int | None = None) -> np.ndarray:
    """Same passes and merge as OnnxDetector.predict_boxes, but the model runs through ultralytics' predict.

    ``threads``: torch intra-op threads, set just before the call: ultralytics' predictor setup (first call) sets
    torch to os.cpu_count() - 1 threads (1 on a 2-core machine), which made earlier comparisons 1 thread vs 2.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    grey = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    crops = [np.repeat(grey[y0:y1, x0:x1, None], 3, axis=2) for x0, y0, x1, y1 in tiles.tolist()]
    results = model.predict(crops, imgsz=list(input_hw), conf=options.conf_threshold, iou=options.iou_threshold,
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


def rendered(w: int, h: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    img, truth = render_image(950_000 + i, size=(w, h), difficulty="medium")
    img = img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
    if img.ndim == 3:
        img = img.mean(axis=2)
    boxes = np.array([o["box"] for o in truth["objects"] if o["counted"]], float).reshape(-1, 4)
    return clean_image(img), boxes


def bench_sessions(model_bytes: bytes, batch: np.ndarray, threads: int, repeats: int = 5) -> None:
    """Median session.run time on one input for a few onnxruntime settings (raw sessions, nothing else timed)."""
    from detection.ort import ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    rows = []
    for n_threads in sorted({1, threads}):
        for spin in (False, True):
            for level_name, level in levels.items():
                opts = ort.SessionOptions()
                opts.graph_optimization_level = level
                opts.intra_op_num_threads = n_threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
                s = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
                feed = {s.get_inputs()[0].name: batch}
                s.run(None, feed)
                wall, cpu = [], []
                for _ in range(repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    s.run(None, feed)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                rows.append((n_threads, spin, level_name, statistics.median(wall), statistics.median(cpu)))
    for n_threads, spin, level_name, wall_s, cpu_s in rows:
        print(f"    threads {n_threads}, spinning {'on ' if spin else 'off'}, optimisation {level_name:<5}: "
              f"{wall_s:.3f} s wall, {cpu_s:.3f} s cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--model", action="append", type=Path, default=[], help="repeatable: .cqcpkg or .onnx")
    ap.add_argument("--weights", type=Path, default=ROOT / "runs" / "crystal-yolo11n" / "weights" / "best.pt")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sessions", action="store_true", help="also time onnxruntime session settings")
    args = ap.parse_args()
    paths = args.model or [p for p in [find_shipped_model()] if p is not None]
    if not paths:
        sys.exit("no model: pass --model FILE or ship weights/<name>.cqcpkg")
    ours = [load_model(p, args.threads) for p in paths]
    # same passes on both sides: the native-scale pass only (the half-scale pass of predict_boxes is not mirrored
    # on the ultralytics side; it adds about a quarter of a native pass to ours)
    options = OnnxDetectorOptions(skip_empty_tiles=False, coarse_scale=0.0)
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
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.threads} threads each "
          f"side (torch threads re-set before every ultralytics call); ultralytics weights "
          f"{args.weights if theirs is not None else '-'}")
    for p, m in zip(paths, ours):
        kind = "dynamic size (whole image)" if m.dynamic_input else f"fixed {m.meta.imgsz[0]} px (tiles)"
        print(f"  model {p}: {kind}")
    print(f"{'size':>11} {'model':<24} {'passes':>12} {'ours s':>7} {'ultra s':>8} {'speed-up':>8} "
          f"{'ours F1':>8} {'ultra F1':>9}")
    for w, h in SIZES:
        images = [rendered(w, h, i) for i in range(args.n)]
        truths = [t for _, t in images]
        for p, model in zip(paths, ours):
            tiles, input_hw = model.plan(h, w, options=options)
            model.predict_boxes(images[0][0], options=options)  # warm-up
            if theirs is not None:
                ultralytics_predict(theirs, images[0][0], options, tiles, input_hw, threads=args.threads)
            t_ours, t_theirs, pred_o, pred_t = [], [], [], []
            for img, _ in images:
                t0 = time.perf_counter()
                boxes, _, _ = model.predict_boxes(img, options=options)
                t_ours.append(time.perf_counter() - t0)
                pred_o.append(boxes)
                if theirs is not None:
                    t0 = time.perf_counter()
                    pred_t.append(ultralytics_predict(theirs, img, options, tiles, input_hw, threads=args.threads))
                    t_theirs.append(time.perf_counter() - t0)
            mo = statistics.median(t_ours)
            f1o = score_detections(pred_o, truths, iou_threshold=0.5).f1
            passes = f"{len(tiles)}x{input_hw[1]}x{input_hw[0]}"
            if theirs is not None:
                mt = statistics.median(t_theirs)
                f1t = score_detections(pred_t, truths, iou_threshold=0.5).f1
                print(f"{w:>5}x{h:<5} {p.name[:24]:<24} {passes:>12} {mo:7.3f} {mt:8.3f} {mt / mo:7.2f}x "
                      f"{f1o:8.3f} {f1t:9.3f}")
            else:
                print(f"{w:>5}x{h:<5} {p.name[:24]:<24} {passes:>12} {mo:7.3f} {'-':>8} {'-':>8} {f1o:8.3f} {'-':>9}")
        if args.sessions:
            model = ours[0]
            tiles, input_hw = model.plan(h, w, options=options)
            crops = [images[0][0][y0:y1, x0:x1] for x0, y0, x1, y1 in tiles[: options.batch_size].tolist()]
            batch, _ = padded_batch(crops, size=input_hw)
            print(f"  session settings, {paths[0].name}, one run of input {tuple(batch.shape)}:")
            bench_sessions(model_bytes_of(paths[0]), batch, args.threads)
    if theirs is not None:
        import torch

        print(f"torch threads after the last ultralytics call: {torch.get_num_threads()}")


def model_bytes_of(path: Path) -> bytes:
    """The ONNX bytes of a model file or (already verified by load_model; timing only) of a package."""
    if path.suffix == ".cqcpkg":
        from detection.package import unpack

        return unpack(path.read_bytes()).model_bytes
    return path.read_bytes()


if __name__ == "__main__":
    main()
