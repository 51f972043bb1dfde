"""Detection accuracy metrics: pure box geometry, reused by every evaluation (real tiles, synthetic sets, model QA).

Boxes are float (N, 4) arrays in xyxy full-image pixels with ``x_max``/``y_max`` exclusive, so a box's area is
``(x_max - x_min) * (y_max - y_min)``. Matching is one-to-one (Hungarian assignment on IoU), class-agnostic; callers
that want per-class scores filter the boxes first.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) in xyxy pixels, got {arr.shape}")
    return arr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N, 4) with every box in ``b`` (M, 4) -> float64 (N, M).

    Degenerate boxes (zero or negative width/height) have IoU 0 with everything. Raises ValueError on a wrong shape.
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_boxes(pred: np.ndarray, true: np.ndarray, *, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of predicted to true boxes that maximises the summed IoU.

    Pairs whose IoU is below ``iou_threshold`` are dropped after the assignment (so they count as one false positive
    and one false negative). Returns ``(pred_idx, true_idx)``, two int64 arrays of equal length, sorted by pred index.
    Raises ValueError if ``iou_threshold`` is not in (0, 1].
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    iou = box_iou(pred, true)
    if iou.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] >= iou_threshold
    order = np.argsort(rows[keep], kind="stable")
    return rows[keep][order].astype(np.int64), cols[keep][order].astype(np.int64)


def count_accuracy(pred_counts: Sequence[int], true_counts: Sequence[int]) -> float:
    """Mean over images of ``max(0, 1 - |p - t| / t)``.

    An image with ``t == 0`` scores 1 if ``p == 0`` and 0 otherwise. Returns NaN for an empty list.
    Raises ValueError if the two sequences differ in length or hold a negative count.
    """
    p = np.asarray(pred_counts, dtype=np.float64).reshape(-1)
    t = np.asarray(true_counts, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"need one predicted count per image: got {p.size} predicted and {t.size} true counts")
    if (p < 0).any() or (t < 0).any():
        raise ValueError("counts cannot be negative")
    if p.size == 0:
        return float("nan")
    return float(_per_image_count_accuracy(p, t).mean())


#: Columns of the per-image tallies (:func:`tally_row`; :func:`scores_from_tallies` and
#: :func:`paired_bootstrap` take them): matched, unmatched predictions, unmatched
#: truths, predicted count, true count.
TALLY_COLUMNS = ("tp", "fp", "fn", "n_pred", "n_true")


@dataclass(frozen=True)
class DetectionScores:
    """Pooled detection scores over a set of images (precision/recall/F1 are 0 when undefined)."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    count_accuracy: float


def score_detections(
    per_image_pred: Sequence[np.ndarray], per_image_true: Sequence[np.ndarray], *, iou_threshold: float
) -> DetectionScores:
    """Match each image's predicted boxes to its true boxes and pool TP/FP/FN over all images.

    per_image_pred, per_image_true: one (N_i, 4) xyxy box array per image (same order, same length).
    Count accuracy uses the number of boxes per image. Raises ValueError on mismatched lengths or bad shapes.
    """
    if len(per_image_pred) != len(per_image_true):
        raise ValueError(
            f"need predictions for every image: got {len(per_image_pred)} predicted and {len(per_image_true)} true"
        )
    tallies = []
    for pred, true in zip(per_image_pred, per_image_true):
        p = _as_boxes(pred, "pred")
        t = _as_boxes(true, "true")
        pi, _ = match_boxes(p, t, iou_threshold=iou_threshold)
        tallies.append(tally_row(len(pi), len(p), len(t)))
    return scores_from_tallies(tallies)


def tally_row(n_matched: int, n_pred: int, n_true: int) -> tuple[int, int, int, int, int]:
    """One image's row of :data:`TALLY_COLUMNS`: ``(tp, fp, fn, n_pred, n_true)`` from its one-to-one matches."""
    return n_matched, n_pred - n_matched, n_true - n_matched, n_pred, n_true


def scores_from_tallies(tallies) -> DetectionScores:
    """Pooled scores from per-image rows of :data:`TALLY_COLUMNS` (as :func:`score_detections`, without matching
    again)."""
    rows = np.asarray(tallies, dtype=np.int64).reshape(-1, len(TALLY_COLUMNS))
    tp, fp, fn = (int(v) for v in rows[:, :3].sum(axis=0))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return DetectionScores(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1,
                           count_accuracy=count_accuracy(rows[:, 3], rows[:, 4]))


@dataclass(frozen=True)
class PairedDifference:
    """Detector B minus detector A on the same images, with a percentile bootstrap interval (images resampled)."""

    n_images: int
    draws: int
    confidence: float
    f1: float
    f1_low: float
    f1_high: float
    count_accuracy: float
    count_accuracy_low: float
    count_accuracy_high: float


def _pooled_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Pooled F1 = 2TP / (2TP + FP + FN) per row of summed tallies (0 where nothing was labelled or found)."""
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def _per_image_count_accuracy(n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    safe = np.where(n_true > 0, n_true, 1)
    return np.where(n_true > 0, np.clip(1.0 - np.abs(n_pred - n_true) / safe, 0.0, None),
                    (n_pred == 0).astype(np.float64))


def paired_bootstrap(tallies_a: np.ndarray, tallies_b: np.ndarray, *, draws: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> PairedDifference:
    """How sure is "B scores better (or worse) than A"? Both detectors ran on the same images; the images are drawn
    with replacement ``draws`` times, the same draw for both, and the differences B - A of the pooled F1 (as
    :func:`score_detections`) and of the count accuracy (as :func:`count_accuracy`) are taken on each draw.

    tallies_a, tallies_b: int arrays (n_images, 5) in the order of :data:`TALLY_COLUMNS`, one row per image, the
    rows of both in the same image order. Returns the differences on the images as they are and the central
    ``confidence`` percentile interval over the draws: an interval that holds 0 means the images do not tell the two
    apart. The draws are seeded, so a rerun prints the same interval. Raises ValueError on shapes that do not match,
    no image, a true count that differs between the two, draws < 1 or a confidence outside (0, 1).
    """
    a = np.asarray(tallies_a, dtype=np.float64)
    b = np.asarray(tallies_b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(TALLY_COLUMNS) or a.shape != b.shape:
        raise ValueError(f"need two (n_images, {len(TALLY_COLUMNS)}) tallies of the same images, got {a.shape} "
                         f"and {b.shape}")
    if len(a) == 0:
        raise ValueError("need at least one image")
    if not np.array_equal(a[:, 4], b[:, 4]):
        raise ValueError("the true counts differ: the tallies are not of the same images in the same order")
    if draws < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need draws >= 1 and a confidence in (0, 1), got {draws} and {confidence}")

    def differences(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """idx (k, n): k resamplings of image indices -> (k,) differences of F1 and of count accuracy."""
        sa, sb = a[idx].sum(axis=1), b[idx].sum(axis=1)
        f1 = _pooled_f1(sb[:, 0], sb[:, 1], sb[:, 2]) - _pooled_f1(sa[:, 0], sa[:, 1], sa[:, 2])
        per_image = _per_image_count_accuracy(b[:, 3], b[:, 4]) - _per_image_count_accuracy(a[:, 3], a[:, 4])
        return f1, per_image[idx].mean(axis=1)

    n = len(a)
    f1_point, count_point = differences(np.arange(n)[None, :])
    f1_draws, count_draws = differences(np.random.default_rng(seed).integers(0, n, size=(draws, n)))
    tail = 100.0 * (1.0 - confidence) / 2.0
    f1_lo, f1_hi = np.percentile(f1_draws, [tail, 100.0 - tail])
    c_lo, c_hi = np.percentile(count_draws, [tail, 100.0 - tail])
    return PairedDifference(n_images=n, draws=draws, confidence=confidence,
                            f1=float(f1_point[0]), f1_low=float(f1_lo), f1_high=float(f1_hi),
                            count_accuracy=float(count_point[0]), count_accuracy_low=float(c_lo),
                            count_accuracy_high=float(c_hi))
