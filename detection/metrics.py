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
    safe_t = np.where(t > 0, t, 1.0)
    per_image = np.where(t > 0, np.clip(1.0 - np.abs(p - t) / safe_t, 0.0, None), (p == 0).astype(np.float64))
    return float(per_image.mean())


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
    tp = fp = fn = 0
    pred_counts, true_counts = [], []
    for pred, true in zip(per_image_pred, per_image_true):
        p = _as_boxes(pred, "pred")
        t = _as_boxes(true, "true")
        pi, _ = match_boxes(p, t, iou_threshold=iou_threshold)
        tp += len(pi)
        fp += len(p) - len(pi)
        fn += len(t) - len(pi)
        pred_counts.append(len(p))
        true_counts.append(len(t))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return DetectionScores(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        count_accuracy=count_accuracy(pred_counts, true_counts),
    )
