"""Accuracy of the classical chain on the real labelled tiles (../shared/real-dev), against a naive baseline.

Chain: load -> analysis.preprocess.clean_image -> analysis.segment.detect_classical ->
analysis.exclude.apply_exclusions; counted = not excluded. Objects on the image border DO count here, because the
truth (connected components of the label masks, >= 20 px) includes them. Matching is class-agnostic (crystal and
agglomerate both match the truth class 'crystal'), one-to-one at IoU 0.3 (detection.metrics).

Naive baseline (for comparison): pixels 30 % darker than a Gaussian-blurred copy (sigma 50 px) of the image, holes
filled, connected components >= 20 px (the label convention) or >= 100 px (specks ignored); everything is counted.

Prints a per-image table, pooled TP/FP/FN, precision/recall/F1, count accuracy (mean over images of
max(0, 1 - |p - t| / t)), the exclusion reasons and ms per image. The tiles are only measured here, never trained
on and never copied into the repository.

Run: .venv/bin/python bench/eval_real.py [--data ../shared/real-dev] [--overlay /tmp/eval_overlays]
     [--denoise bilateral|nlm|median|gaussian|none]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.exclude import ExclusionOptions, apply_exclusions  # noqa: E402
from analysis.preprocess import CleaningOptions, clean_image  # noqa: E402
from analysis.records import Detection  # noqa: E402
from analysis.segment import ClassicalOptions, detect_classical  # noqa: E402
from detection.metrics import match_boxes, score_detections  # noqa: E402

IOU_THRESHOLD = 0.3
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "real-dev"


def load(path: Path) -> np.ndarray:
    """Decode a tile with the product's safe loader when it exists, else with OpenCV."""
    try:
        from analysis.io import load_image
    except ImportError:  # io.py not there yet
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    image, _ = load_image(path.read_bytes(), name=path.name)
    return image


def naive_boxes(image: np.ndarray, *, min_area_px: int = 20) -> np.ndarray:
    """Threshold-and-fill baseline -> (N, 4) xyxy boxes of all components >= min_area_px."""
    background = cv2.GaussianBlur(image, (0, 0), 50.0)
    dark = (image < 0.7 * background).astype(np.uint8)  # 30 % darker than the local background
    h, w = dark.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = dark
    cv2.floodFill(flood, None, (0, 0), 2)
    filled = (flood != 2)[1:-1, 1:-1].astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(filled, connectivity=8)
    s = stats[1:][stats[1:, cv2.CC_STAT_AREA] >= min_area_px]
    return np.stack([s[:, 0], s[:, 1], s[:, 0] + s[:, 2], s[:, 1] + s[:, 3]], 1).astype(np.float64).reshape(-1, 4)


def boxes_of(dets: list[Detection]) -> np.ndarray:
    return np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in dets], np.float64).reshape(-1, 4)


def draw_overlay(path: Path, cleaned: np.ndarray, dets: list[Detection], truth: np.ndarray) -> None:
    """Truth boxes: yellow when missed; counted objects: blue (matched) / red (false); excluded: grey + reason."""
    col = cv2.cvtColor(np.clip(cleaned * 255, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    counted = [d for d in dets if d.excluded_reason is None]
    pi, ti = match_boxes(boxes_of(counted), truth, iou_threshold=IOU_THRESHOLD)
    matched = set(pi.tolist())
    for k, d in enumerate(dets):
        m = np.zeros(cleaned.shape, np.uint8)
        m[d.y_min : d.y_max, d.x_min : d.x_max] = d.mask
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if d.excluded_reason is not None:
            colour, label = (150, 150, 150), d.excluded_reason[:5]
        else:
            idx = counted.index(d)
            colour = (255, 128, 0) if idx in matched else (0, 0, 255)
            label = "A" if d.class_name == "agglomerate" else ""
        cv2.drawContours(col, contours, -1, colour, 1)
        if label:
            cv2.putText(col, label, (d.x_min, max(8, d.y_min - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1)
    missed = sorted(set(range(len(truth))) - set(ti.tolist()))
    for j in missed:
        x0, y0, x1, y1 = (int(v) for v in truth[j])
        cv2.rectangle(col, (x0, y0), (x1, y1), (0, 255, 255), 2)
    cv2.imwrite(str(path), col)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--overlay", type=Path, default=None, help="write one overlay PNG per tile into this folder")
    ap.add_argument("--denoise", default=CleaningOptions.denoise, help="denoising method of the cleaning step")
    args = ap.parse_args()
    truth_file = args.data / "truth.json"
    if not truth_file.is_file():
        raise SystemExit(f"no truth.json in {args.data}; pass --data")
    truth = json.loads(truth_file.read_text())
    cleaning = CleaningOptions(denoise=args.denoise)
    classical, exclusion = ClassicalOptions(), ExclusionOptions()
    if args.overlay:
        args.overlay.mkdir(parents=True, exist_ok=True)

    preds, naive, naive100, trues = [], [], [], []
    reasons: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    ms_clean = ms_detect = ms_exclude = 0.0
    print(f"{'image':28s} {'true':>4s} {'naive':>5s} {'ours':>4s} {'TP':>3s} {'FP':>3s} {'FN':>3s} {'excluded':>8s}")
    for name in sorted(truth):
        image = load(args.data / name)
        true_boxes = np.array([o["bbox"] for o in truth[name]], np.float64).reshape(-1, 4)
        t0 = time.perf_counter()
        cleaned = clean_image(image, options=cleaning)
        t1 = time.perf_counter()
        dets = detect_classical(cleaned, options=classical)
        t2 = time.perf_counter()
        dets = apply_exclusions(cleaned, dets, options=exclusion)
        t3 = time.perf_counter()
        ms_clean += 1000 * (t1 - t0)
        ms_detect += 1000 * (t2 - t1)
        ms_exclude += 1000 * (t3 - t2)
        counted = boxes_of([d for d in dets if d.excluded_reason is None])
        reasons.update(d.excluded_reason for d in dets if d.excluded_reason is not None)
        classes.update(d.class_name for d in dets if d.excluded_reason is None)
        nb = naive_boxes(image)
        preds.append(counted)
        naive.append(nb)
        naive100.append(naive_boxes(image, min_area_px=100))
        trues.append(true_boxes)
        s = score_detections([counted], [true_boxes], iou_threshold=IOU_THRESHOLD)
        print(f"{name:28s} {len(true_boxes):4d} {len(nb):5d} {len(counted):4d} {s.tp:3d} {s.fp:3d} {s.fn:3d} "
              f"{len(dets) - len(counted):8d}")
        if args.overlay:
            draw_overlay(args.overlay / (Path(name).stem + ".png"), cleaned, dets, true_boxes)
    n = len(truth)
    print()
    for label, p in (("naive, >= 20 px", naive), ("naive, >= 100 px", naive100), ("classical chain", preds)):
        s = score_detections(p, trues, iou_threshold=IOU_THRESHOLD)
        print(f"{label:22s} count accuracy {s.count_accuracy:.3f}  P {s.precision:.3f}  R {s.recall:.3f}  "
              f"F1 {s.f1:.3f}  (TP {s.tp}, FP {s.fp}, FN {s.fn}; {sum(len(x) for x in p)} counted, "
              f"{sum(len(t) for t in trues)} true)")
    print(f"counted by class: {dict(classes)}; excluded by reason: {dict(reasons)}")
    print(f"ms/image ({n} tiles, {image.shape[1]}x{image.shape[0]}): clean {ms_clean / n:.0f}, "
          f"detect {ms_detect / n:.0f}, exclusions {ms_exclude / n:.0f}, "
          f"total {(ms_clean + ms_detect + ms_exclude) / n:.0f}")
    time_full_frame(args.data, sorted(truth)[::7], cleaning, classical, exclusion)


def time_full_frame(data: Path, names: list[str], cleaning: CleaningOptions, classical: ClassicalOptions,
                    exclusion: ExclusionOptions) -> None:
    """Time the chain on 2592 x 1944 frames: each tile mirrored out to that size (seamless, same scale)."""
    frames = [np.ascontiguousarray(np.pad(load(data / n), ((0, 944), (0, 1480)), mode="symmetric")[:1944, :2592])
              for n in names]
    runs = []
    for frame in frames:
        t0 = time.perf_counter()
        cleaned = clean_image(frame, options=cleaning)
        t1 = time.perf_counter()
        dets = detect_classical(cleaned, options=classical)
        t2 = time.perf_counter()
        apply_exclusions(cleaned, dets, options=exclusion)
        t3 = time.perf_counter()
        runs.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    mean = np.mean(np.array(runs), axis=0)
    print(f"ms per 2592x1944 frame (mean of {len(frames)} mirrored tiles): clean {1000 * mean[0]:.0f}, "
          f"detect {1000 * mean[1]:.0f}, exclusions {1000 * mean[2]:.0f}, total {1000 * mean[3]:.0f}")


if __name__ == "__main__":
    main()
