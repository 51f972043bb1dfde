"""Accuracy of a detector on labelled images: rendered held-out sets and the real labelled tiles.

    python -m detection.evaluate [--detector classical|onnx|auto ...] [--model FILE ...] [--bootstrap DRAWS]
                                 [--synthetic N] [--seed S] [--difficulty easy,medium,hard] [--size WxH]
                                 [--real DIR] [--no-frames] [--iou 0.5] [--real-iou 0.3]
                                 [--blur-rule fixed|relative|large|large-tight] [--conf C]

The real tiles are also put back together into the micrographs they were cut from (``real-frames``: tiles named
``<frame>_<row>_<col>``, adjacent without overlap, their label masks stitched the same way so that a crystal cut by a
tile edge is one object again): the pipeline then sees whole frames (2224 x 2000 for the development set), as a plant
would give it, with its tiling, seams and half-scale pass at work.

``--blur-rule`` renders the rendered sets with another rule for which blurred crystals count (the labels a model
trained on that rule learned; ``detection.synthetic.options.BLUR_RULES``). ``--conf`` runs the model's detectors at
another score threshold (``OnnxDetectorOptions.conf_threshold``; research use: choose it on tuning renderings, seeds
800000+, never on the real tiles).

Every detector named with --detector (each model detector once per --model) is run on the same images in the same
run, so rows compare directly. ``--bootstrap DRAWS`` then says, per set, whether each row differs from the first by
more than the luck of these images: the images are resampled with replacement (the same draw for both detectors) and
the 95 % interval of the F1 and count-accuracy differences is printed; on the 28 real tiles a difference of a hundredth
is usually inside it.
Metrics (all class-agnostic except class accuracy):
- count accuracy: mean over images of max(0, 1 - |pred - true| / true)
- precision / recall / F1 with one-to-one box matching at the IoU threshold
- mAP50: average precision at IoU 0.5, predictions ranked by confidence (all-point interpolation)
- class accuracy: share of matched objects whose class (crystal / agglomerate) is right (rendered sets only)
- D50 error: mean over images of |D50_pred - D50_true| / D50_true (number-weighted ECD from masks)
- size: median over matched pairs of ECD_pred / ECD_true, the sizing bias of what is found (misses aside)
Border-touching objects are counted here, because the truth labels include them.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from analysis.pipeline import DETECTOR_CHOICES, AnalysisOptions, Detector, analyze_bytes, make_detector
from analysis.records import COUNTED_CLASSES, ImageResult
from detection.metrics import (
    TALLY_COLUMNS, PairedDifference, box_iou, match_boxes, paired_bootstrap, scores_from_tallies, tally_row,
)

#: Seeds at or above this are never used for training data (documented in the README's training section).
HELD_OUT_SEED_BASE = 900_000


@dataclass(frozen=True, eq=False)
class LabelledImage:
    """One evaluation image: encoded bytes and its counted truth objects; ``options``: how to analyse this image
    (e.g. with the calibration profile it was analysed with in the plant), None for the evaluation's own; ``load``:
    reads the encoded bytes when they are needed (``data`` is then b""), so a set of large images, or of images
    decrypted from a vault, never holds more than one in memory (:meth:`read`)."""

    name: str
    data: bytes
    boxes: np.ndarray  # float (N, 4) xyxy
    classes: tuple[str, ...]  # 'crystal' / 'agglomerate'
    ecd_px: np.ndarray  # (N,)
    options: AnalysisOptions | None = None
    load: Callable[[], bytes] | None = None

    def read(self) -> bytes:
        """The encoded image: ``data``, or what ``load`` returns."""
        return self.data if self.load is None else self.load()


@dataclass(frozen=True)
class EvalReport:
    detector: str
    set_name: str
    n_images: int
    iou_threshold: float
    count_accuracy: float
    precision: float
    recall: float
    f1: float
    map50: float
    class_accuracy: float
    d50_error: float
    median_seconds: float
    #: Median over matched pairs of (particle ECD / labelled ECD): the sizing bias of the objects found, apart from
    #: what is missed (1.0 = unbiased; a merged pair or a halo reads > 1, a partial outline < 1).
    size_ratio: float = float("nan")
    #: Recall per labelled-size bin: ``(lo_px, hi_px, n_labelled, recall)`` for each of :data:`SIZE_BINS_PX` that
    #: holds labels (which sizes the detector misses; ``--by-size``).
    recall_by_size: tuple[tuple[float, float, int, float], ...] = ()
    #: One row per image, in the order of the images: ``(tp, fp, fn, n_pred, n_true)``
    #: (:data:`detection.metrics.TALLY_COLUMNS`), for a paired comparison of two detectors (``--bootstrap``).
    per_image: tuple[tuple[int, int, int, int, int], ...] = ()


#: Labelled ECD bin edges (px) of :attr:`EvalReport.recall_by_size`: specks, small, medium, large, very large.
SIZE_BINS_PX = (0.0, 15.0, 25.0, 40.0, 80.0, 120.0, float("inf"))


def recall_by_size(ecd_px: np.ndarray, found: np.ndarray, edges: Sequence[float] = SIZE_BINS_PX
                   ) -> tuple[tuple[float, float, int, float], ...]:
    """``(lo, hi, n, recall)`` for each bin ``lo <= ECD < hi`` of ``edges`` that holds labels; ``found`` (bool, as
    ``ecd_px``) says which labels were matched."""
    ecd_px, found = np.asarray(ecd_px, float), np.asarray(found, bool)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (ecd_px >= lo) & (ecd_px < hi)
        if inside.any():
            rows.append((float(lo), float(hi), int(inside.sum()), float(found[inside].mean())))
    return tuple(rows)


def format_size_row(r: EvalReport) -> str:
    """One line: recall per labelled-size bin, e.g. ``recall by labelled ECD: <15 px 0.56 (25) | 15-25 px ...``."""
    def span(lo: float, hi: float) -> str:
        return f"<{hi:g} px" if lo == 0 else (f">={lo:g} px" if hi == float("inf") else f"{lo:g}-{hi:g} px")
    cells = " | ".join(f"{span(lo, hi)} {rec:.2f} ({n})" for lo, hi, n, rec in r.recall_by_size)
    return f"  recall by labelled ECD: {cells}"


def real_set(folder: Path) -> list[LabelledImage]:
    """The labelled real tiles (``truth.json`` + JPEGs); every labelled object counts as a crystal."""
    truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    items = []
    for name in sorted(truth):
        objs = truth[name]
        items.append(LabelledImage(
            name=name, data=(folder / name).read_bytes(),
            boxes=np.array([o["bbox"] for o in objs], float).reshape(-1, 4),
            classes=tuple("crystal" for _ in objs),
            ecd_px=np.array([o["ecd_px"] for o in objs], float)))
    return items


_TILE_NAME = re.compile(r"^(?P<frame>.+)_(?P<row>\d+)_(?P<col>\d+)\.(?:jpe?g|png|tiff?)$", re.IGNORECASE)
#: Smallest labelled object (px) in the real tiles' ``truth.json`` (connected components of the label mask).
REAL_MIN_OBJECT_PX = 20


def real_frames(folder: Path) -> list[LabelledImage]:
    """The real tiles stitched back into whole frames, with truth from the stitched label masks (module docstring).

    Only frames whose tiles form a complete grid (every row and column present, one height per row and one width
    per column, a ``<tile>_mask.png`` beside each) are returned, PNG-encoded (lossless: the tiles' own pixels);
    objects are 8-connected components of the stitched mask of at least :data:`REAL_MIN_OBJECT_PX` pixels, as in
    ``truth.json``. Returns an empty list when the tiles do not follow the naming.
    """
    from PIL import Image  # the label masks are palette PNGs: their indices, not their colours, are the labels

    truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    grids: dict[str, dict[tuple[int, int], str]] = {}
    for name in truth:
        m = _TILE_NAME.match(name)
        if m:
            grids.setdefault(m["frame"], {})[(int(m["row"]), int(m["col"]))] = name
    items = []
    for frame in sorted(grids):
        tiles = grids[frame]
        rows = 1 + max(r for r, _ in tiles)
        cols = 1 + max(c for _, c in tiles)
        if len(tiles) != rows * cols:
            continue
        grey, label, widths = [], [], set()
        for r in range(rows):
            row_img, row_mask = [], []
            for c in range(cols):
                path = folder / tiles[(r, c)]
                img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                mask_path = path.with_name(path.stem + "_mask.png")
                if img is None or not mask_path.is_file():
                    break
                with Image.open(mask_path) as mask_file:
                    mask = np.asarray(mask_file) > 0
                if mask.shape != img.shape:
                    break
                row_img.append(img)
                row_mask.append(mask)
            if len(row_img) != cols or len({a.shape[0] for a in row_img}) != 1:
                break
            widths.add(tuple(a.shape[1] for a in row_img))
            grey.append(np.hstack(row_img))
            label.append(np.hstack(row_mask))
        if len(grey) != rows or len(widths) != 1:  # a missing tile or mask, or tiles that do not line up
            continue
        image, mask = np.vstack(grey), np.vstack(label)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= REAL_MIN_OBJECT_PX]
        x, y, w, h, area = (stats[keep, k].astype(float) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                                     cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT,
                                                                     cv2.CC_STAT_AREA))
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        items.append(LabelledImage(
            name=f"{frame}.png", data=png.tobytes(),
            boxes=np.stack([x, y, x + w, y + h], axis=1).reshape(-1, 4),
            classes=tuple("crystal" for _ in keep), ecd_px=np.sqrt(4.0 * area / np.pi)))
    return items


def synthetic_set(n: int, *, seed: int, difficulty: str, size: tuple[int, int],
                  blur_rule: str = "fixed", looks: str = "default") -> Iterator[LabelledImage]:
    """Render ``n`` images (seeds seed..seed+n-1) with the project's generator, PNG-encoded; ``blur_rule`` decides
    which blurred crystals are labelled as counted, ``looks`` how crystals are drawn (``render_image``)."""
    from detection.synthetic import render_image

    for i in range(n):
        image, truth = render_image(seed + i, size=size, difficulty=difficulty, blur_rule=blur_rule,
                                    looks=looks)
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        objs = [o for o in truth["objects"] if o["counted"]]
        yield LabelledImage(
            name=f"{difficulty}_{seed + i}.png", data=png.tobytes(),
            boxes=np.array([o["box"] for o in objs], float).reshape(-1, 4),
            classes=tuple(o["class"] for o in objs),
            ecd_px=np.array([o["ecd_px"] for o in objs], float))


def _counted(result: ImageResult):
    return [p for p in result.particles if p.excluded_reason is None and p.class_name in COUNTED_CLASSES]


def labelled_from_result(name: str, data: bytes | Callable[[], bytes], result: ImageResult, *,
                         options: AnalysisOptions | None = None) -> LabelledImage:
    """A labelled image whose truth is a result (e.g. one a technician corrected): its objects as :func:`evaluate`
    scores predictions (not excluded, of a counted class; border-touching ones included, as ``analysis.labels``
    labels them). ``data``: the image file the result was made from, or a function that reads it when needed."""
    kept = _counted(result)
    held, load = (b"", data) if callable(data) else (data, None)
    return LabelledImage(name=name, data=held, boxes=particle_boxes(kept), classes=tuple(p.class_name for p in kept),
                         ecd_px=np.array([p.ecd_px for p in kept], float), options=options, load=load)


def particle_boxes(particles: Sequence) -> np.ndarray:
    """Float (N, 4) xyxy boxes of particles (anything with x_min / y_min / x_max / y_max), as the truth boxes."""
    return np.array([[p.x_min, p.y_min, p.x_max, p.y_max] for p in particles], float).reshape(-1, 4)


def average_precision(preds: Sequence[tuple[np.ndarray, np.ndarray]], truths: Sequence[np.ndarray], *,
                      iou_threshold: float = 0.5) -> float:
    """All-point interpolated AP; preds are per-image (boxes (N,4), scores (N,)), greedy matching by score."""
    n_true = sum(len(t) for t in truths)
    if n_true == 0:
        return float("nan")
    records: list[tuple[float, bool]] = []
    for (boxes, scores), true in zip(preds, truths):
        order = np.argsort(-scores, kind="stable")
        iou = box_iou(boxes[order], true) if len(true) and len(boxes) else np.zeros((len(boxes), len(true)))
        taken = np.zeros(len(true), bool)
        for row, idx in enumerate(order):
            hit = False
            if len(true):
                cand = np.where(~taken, iou[row], -1.0)
                j = int(np.argmax(cand))
                if cand[j] >= iou_threshold:
                    taken[j] = True
                    hit = True
            records.append((float(scores[idx]), hit))
    if not records:
        return 0.0
    records.sort(key=lambda r: -r[0])
    hits = np.array([h for _, h in records], float)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / n_true
    # precision envelope, then area under the step curve
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(envelope * recall_steps))


def evaluate(detector: Detector, items: Sequence[LabelledImage], *, set_name: str, iou_threshold: float,
             score_classes: bool = True, options: AnalysisOptions | None = None) -> EvalReport:
    """Run the full pipeline (clean, detect, exclude, measure) on every image and score it; an image with its own
    ``options`` is analysed with those, the others with ``options``.

    score_classes: whether the truth distinguishes crystals from agglomerates (False for the real tiles).
    """
    options = options or AnalysisOptions(include_border=True)
    pred_scored, truths, seconds = [], [], []
    class_hits = class_total = 0
    d50_errors, size_ratios = [], []
    label_ecd, label_found = [], []
    tallies = []
    for item in items:
        t0 = time.perf_counter()
        result = analyze_bytes(item.read(), name=item.name, detector=detector, options=item.options or options,
                               keep_cleaned=False)
        seconds.append(time.perf_counter() - t0)
        kept = _counted(result)
        boxes = particle_boxes(kept)
        scores = np.array([p.confidence for p in kept], float)
        pred_scored.append((boxes, scores))
        truths.append(item.boxes)
        pi, ti = match_boxes(boxes, item.boxes, iou_threshold=iou_threshold)
        tallies.append(tally_row(len(pi), len(boxes), len(item.boxes)))
        if score_classes:
            class_hits += sum(kept[a].class_name == item.classes[b] for a, b in zip(pi, ti))
            class_total += len(pi)
        size_ratios += [kept[a].ecd_px / item.ecd_px[b] for a, b in zip(pi, ti) if item.ecd_px[b] > 0]
        found = np.zeros(len(item.ecd_px), bool)
        found[np.asarray(ti, int)] = True
        label_ecd.append(np.asarray(item.ecd_px, float))
        label_found.append(found)
        if kept and len(item.ecd_px):
            d50_true = float(np.percentile(item.ecd_px, 50))
            d50_pred = float(np.percentile([p.ecd_px for p in kept], 50))
            d50_errors.append(abs(d50_pred - d50_true) / d50_true)
    scores_ = scores_from_tallies(tallies)  # the matches above, not matched again
    return EvalReport(
        detector=detector.label, set_name=set_name, n_images=len(truths), iou_threshold=iou_threshold,
        count_accuracy=scores_.count_accuracy, precision=scores_.precision, recall=scores_.recall, f1=scores_.f1,
        map50=average_precision(pred_scored, truths, iou_threshold=0.5),
        class_accuracy=class_hits / class_total if class_total else float("nan"),
        d50_error=float(np.mean(d50_errors)) if d50_errors else float("nan"),
        median_seconds=statistics.median(seconds) if seconds else float("nan"),
        size_ratio=float(np.median(size_ratios)) if size_ratios else float("nan"),
        recall_by_size=recall_by_size(np.concatenate(label_ecd) if label_ecd else np.zeros(0),
                                      np.concatenate(label_found) if label_found else np.zeros(0, bool)),
        per_image=tuple(tallies),
    )


HEADER = (f"{'set':<16} {'detector':<28} {'n':>3} {'IoU':>4} {'count acc':>9} {'prec':>6} {'recall':>6} "
          f"{'F1':>6} {'mAP50':>6} {'class acc':>9} {'D50 err':>8} {'size':>6} {'s/img':>6}")


def format_row(r: EvalReport) -> str:
    return (f"{r.set_name:<16} {r.detector[:28]:<28} {r.n_images:>3} {r.iou_threshold:>4.2f} "
            f"{r.count_accuracy:>9.3f} {r.precision:>6.3f} {r.recall:>6.3f} {r.f1:>6.3f} {r.map50:>6.3f} "
            f"{r.class_accuracy:>9.3f} {r.d50_error:>8.3f} {r.size_ratio:>6.3f} {r.median_seconds:>6.2f}")


def compare(base: EvalReport, other: EvalReport, *, draws: int, seed: int = 0) -> PairedDifference:
    """``other`` minus ``base`` on the same images, with bootstrap intervals
    (:func:`detection.metrics.paired_bootstrap`). Raises ValueError when the two reports are not of the same images."""
    if base.set_name != other.set_name or base.n_images != other.n_images:
        raise ValueError(f"{base.set_name} ({base.n_images} images) and {other.set_name} ({other.n_images}) are not "
                         "the same images")
    cols = len(TALLY_COLUMNS)
    return paired_bootstrap(np.array(base.per_image, np.int64).reshape(-1, cols),
                            np.array(other.per_image, np.int64).reshape(-1, cols), draws=draws, seed=seed)


def format_comparison(base: EvalReport, other: EvalReport, d: PairedDifference) -> str:
    """One line: ``other - base`` F1 and count accuracy with their intervals, e.g. ``  real: onnx:b 2.0 - onnx:a
    1.0: F1 -0.008 [-0.021, +0.004], count acc +0.012 [-0.010, +0.031] (95 % paired bootstrap over 28 images, ...)``.
    """
    pct = f"{100 * d.confidence:g} %"
    return (f"  {other.set_name}: {other.detector} - {base.detector}: "
            f"F1 {d.f1:+.3f} [{d.f1_low:+.3f}, {d.f1_high:+.3f}], "
            f"count acc {d.count_accuracy:+.3f} [{d.count_accuracy_low:+.3f}, {d.count_accuracy_high:+.3f}] "
            f"({pct} paired bootstrap over {d.n_images} images, {d.draws} draws)")


def with_conf(detector: Detector, conf: float | None) -> Detector:
    """``detector`` with its model run at score threshold ``conf`` (None: unchanged). The candidate threshold is
    lowered with it when it would exceed it. Raises ValueError for a detector without a model (classical) or a
    threshold outside [0, 1)."""
    if conf is None:
        return detector
    # imported here, as the renderer in synthetic_set: importing this module (the app's model page does) must not
    # load onnxruntime or the generator
    from analysis.onnx_adapter import HybridDetector, OnnxPipelineDetector

    inner = detector.model if isinstance(detector, HybridDetector) else detector
    if not isinstance(inner, OnnxPipelineDetector):
        raise ValueError(f"--conf applies to a model's detector, not to {detector.label!r}")
    opts = replace(inner.options, conf_threshold=conf,
                   candidate_threshold=min(inner.options.candidate_threshold, conf))
    changed = replace(inner, options=opts)  # OnnxDetectorOptions checks the range
    return replace(detector, model=changed) if detector is not inner else changed


def main(argv: Sequence[str] | None = None) -> int:
    from detection.onnx_detector import OnnxDetectorOptions
    from detection.synthetic.options import BLUR_RULES, LOOKS

    ap = argparse.ArgumentParser(prog="python -m detection.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", action="append", choices=DETECTOR_CHOICES)
    ap.add_argument("--model", type=Path, action="append", default=None,
                    help="a .cqcpkg or .onnx file (default: the shipped package); repeat to compare models: each "
                         "--detector runs with each --model")
    ap.add_argument("--synthetic", type=int, default=10, help="rendered images per difficulty (0 = none)")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE)
    ap.add_argument("--difficulty", default="easy,medium,hard")
    ap.add_argument("--size", default="1280x1024")
    ap.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "real-dev")
    ap.add_argument("--no-frames", action="store_true",
                    help="skip the real tiles stitched back into whole frames (set 'real-frames')")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU threshold on rendered sets")
    ap.add_argument("--real-iou", type=float, default=0.3, help="IoU threshold on the real tiles")
    ap.add_argument("--by-size", action="store_true",
                    help="after each row, the recall per labelled-size bin (which crystal sizes are missed)")
    ap.add_argument("--blur-rule", default="fixed", choices=BLUR_RULES,
                    help="which blurred crystals the rendered sets label as counted (the renderer's --blur-rule)")
    ap.add_argument("--looks", default="default", choices=LOOKS,
                    help="how the rendered sets draw crystals (the renderer's --looks; 'translucent' is a look the "
                         "shipped model was not trained on: a stand-in for another generator)")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="DRAWS",
                    help="after each set, every detector row against the first with a 95 %% paired bootstrap "
                         "interval over the images (e.g. 2000 draws; 0 = off): is a difference more than the "
                         "luck of these images?")
    ap.add_argument("--conf", type=float, default=None,
                    help="the model's score threshold (default: the detector's own, "
                         f"{OnnxDetectorOptions.conf_threshold}); choose it on tuning renderings, never on real tiles")
    args = ap.parse_args(argv)
    if args.bootstrap < 0:
        ap.error("--bootstrap needs a number of draws >= 0")
    w, h = (int(v) for v in args.size.lower().split("x"))
    try:
        detectors = [with_conf(make_detector(k, model_path=m), args.conf)
                     for k in (args.detector or ["classical"])
                     for m in ([None] if k == "classical" else args.model or [None])]
    except ValueError as e:
        ap.error(str(e))
    sets: list[tuple[str, list[LabelledImage], float]] = []
    if args.synthetic > 0:
        for k, diff in enumerate(args.difficulty.split(",")):
            items = list(synthetic_set(args.synthetic, seed=args.seed + 10_000 * k, difficulty=diff, size=(w, h),
                                       blur_rule=args.blur_rule, looks=args.looks))
            rule = "" if args.blur_rule == "fixed" else f"-{args.blur_rule}"
            look = "" if args.looks == "default" else f"-{args.looks}"
            sets.append((f"synthetic-{diff}{rule}{look}", items, args.iou))
    if args.real and (args.real / "truth.json").is_file():
        sets.append(("real", real_set(args.real), args.real_iou))
        frames = [] if args.no_frames else real_frames(args.real)
        if frames:
            sets.append(("real-frames", frames, args.real_iou))
    else:
        print(f"note: no real tiles at {args.real}; skipped", file=sys.stderr)
    print(HEADER)
    for set_name, items, iou in sets:
        reports = []
        for det in detectors:
            report = evaluate(det, items, set_name=set_name, iou_threshold=iou,
                              score_classes=not set_name.startswith("real"))
            reports.append(report)
            print(format_row(report), flush=True)
            if args.by_size:
                print(format_size_row(report), flush=True)
        if args.bootstrap:
            for other in reports[1:]:
                print(format_comparison(reports[0], other, compare(reports[0], other, draws=args.bootstrap)),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
