"""YOLO (ultralytics detect head) pre- and post-processing on numpy arrays; no onnxruntime here.

Model input: float32 (B, 3, H, W) RGB in [0, 1], letterboxed (aspect kept, centred, grey 114/255 padding).
Model output: (B, 4 + nc, N): per anchor cx, cy, w, h in input pixels followed by nc class scores that are already
sigmoid probabilities (no objectness). Boxes leave this module as float32 xyxy with x_max/y_max exclusive.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: ultralytics pads with grey 114 (of 255).
PAD_VALUE = 114.0 / 255.0
#: Candidates kept before NMS (highest scores), as ultralytics does, so NMS time stays bounded.
MAX_NMS_CANDIDATES = 30_000


def letterbox(
    image: np.ndarray, *, size: tuple[int, int], pad_value: float = PAD_VALUE, allow_upscale: bool = False
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize ``image`` (H, W) keeping its aspect ratio and pad it, centred, to ``size`` = (height, width).

    The image is only shrunk unless ``allow_upscale``: our tiles are at the model input size and a small image is
    padded rather than enlarged, so crystals keep the pixel scale the model was trained at.
    Returns ``(out, scale, (pad_x, pad_y))``: float32 array of shape ``size``, the factor applied, and the left/top
    padding in pixels; a point (x, y) of ``image`` sits at (x * scale + pad_x, y * scale + pad_y) in ``out``.
    Raises ValueError for a non-2-D or empty image or a non-positive size.
    """
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"letterbox expects a non-empty (H, W) image, got shape {image.shape}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"letterbox size must be positive, got {size}")
    h, w = image.shape
    scale = min(out_h / h, out_w / w)
    if not allow_upscale:
        scale = min(scale, 1.0)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    src = np.asarray(image, dtype=np.float32)
    if (new_w, new_h) != (w, h):
        src = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = centre_padding((new_h, new_w), (out_h, out_w))
    out = np.full((out_h, out_w), pad_value, dtype=np.float32)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = src
    return out, float(scale), (float(pad_x), float(pad_y))


def centre_padding(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Left/top padding (pad_x, pad_y) that centres an unscaled (h, w) image in ``size`` = (height, width), with
    ultralytics' rounding (an odd pixel goes right/bottom). Raises ValueError when the image is larger than size."""
    h, w = int(shape[0]), int(shape[1])
    out_h, out_w = int(size[0]), int(size[1])
    if h > out_h or w > out_w or h <= 0 or w <= 0:
        raise ValueError(f"an image of {h}x{w} does not fit an input of {out_h}x{out_w} without rescaling")
    return max(int(round((out_w - w) / 2 - 0.1)), 0), max(int(round((out_h - h) / 2 - 0.1)), 0)


def padded_batch(
    crops: Sequence[np.ndarray],
    *,
    size: tuple[int, int],
    batch: int | None = None,
    dtype: type = np.float32,
    pad_value: float = PAD_VALUE,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Model input (B, 3, height, width) from grey crops, each centred unscaled on ``pad_value`` (as :func:`letterbox`
    with scale 1, but written straight into the batch: one copy per channel, no intermediate arrays).

    ``batch``: B (>= len(crops)) for a fixed-batch model; the extra slots are all padding. Default len(crops).
    Returns (tensor of ``dtype``, per crop (pad_x, pad_y)); a point (x, y) of a crop sits at (x + pad_x, y + pad_y).
    Raises ValueError for no crops, a non-2-D crop, a crop larger than ``size`` or batch < len(crops).
    """
    n = len(crops)
    b = n if batch is None else int(batch)
    if n == 0 or b < n:
        raise ValueError(f"padded_batch needs 1..batch crops, got {n} for batch {b}")
    out_h, out_w = int(size[0]), int(size[1])
    out = np.empty((b, 3, out_h, out_w), dtype=dtype)
    pads = []
    for i, crop in enumerate(crops):
        if crop.ndim != 2:
            raise ValueError(f"padded_batch needs (h, w) crops, got shape {crop.shape}")
        h, w = crop.shape
        pad_x, pad_y = centre_padding((h, w), (out_h, out_w))
        plane = out[i, 0]
        if (h, w) != (out_h, out_w):
            plane.fill(pad_value)
        plane[pad_y : pad_y + h, pad_x : pad_x + w] = crop
        out[i, 1] = plane
        out[i, 2] = plane
        pads.append((float(pad_x), float(pad_y)))
    if b > n:
        out[n:] = pad_value
    return out, pads


def to_input_tensor(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack grey (h, w) images of one shape into a contiguous float32 (B, 3, h, w) tensor (grey copied to RGB).

    Raises ValueError for an empty list, a non-2-D image or mixed shapes.
    """
    if len(images) == 0:
        raise ValueError("to_input_tensor needs at least one image")
    shape = images[0].shape
    for im in images:
        if im.ndim != 2 or im.shape != shape:
            raise ValueError(f"to_input_tensor needs (h, w) images of one shape, got {im.shape} and {shape}")
    out = np.empty((len(images), 3, *shape), dtype=np.float32)
    for i, im in enumerate(images):
        out[i, :] = im  # broadcasts over the 3 channels
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) cx, cy, w, h -> (N, 4) float32 x_min, y_min, x_max, y_max."""
    b = np.asarray(boxes, dtype=np.float32)
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def decode_output(
    raw: np.ndarray, *, n_classes: int, conf_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Turn a raw YOLO output (B, 4 + n_classes, N) into candidates per batch item.

    Each anchor votes for its best class; anchors whose best score is not above ``conf_threshold`` are dropped
    (ultralytics' rule). Returns for each item ``(boxes, scores, class_ids)``: float32 (K, 4) xyxy in model-input
    pixels, float32 (K,), int32 (K,); at most :data:`MAX_NMS_CANDIDATES` per item, highest scores first.
    Raises ValueError when the shape does not match ``n_classes``.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[1] != 4 + n_classes:
        raise ValueError(f"expected output of shape (B, {4 + n_classes}, N), got {raw.shape}")
    cls_scores = raw[:, 4:, :]
    best = cls_scores.max(axis=1)  # (B, N)
    results = []
    for b in range(raw.shape[0]):
        idx = np.flatnonzero(best[b] > conf_threshold)
        scores = best[b, idx].astype(np.float32)
        order = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        idx, scores = idx[order], scores[order]
        class_ids = cls_scores[b][:, idx].argmax(axis=0).astype(np.int32)
        boxes = xywh_to_xyxy(raw[b][:4][:, idx].T)
        results.append((boxes, scores, class_ids))
    return results


#: Bins of the distribution focal loss (DFL) box head of YOLOv8/YOLO11: each box side is a softmax over 16 bins.
REG_MAX = 16


def head_anchors(input_hw: tuple[int, int], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points of a detect head, as ultralytics orders them: level by level (``strides`` in head order), row
    by row, at cell centres in grid units. Returns float32 (A, 2) (x, y) points and float32 (A,) their strides."""
    points, steps = [], []
    for s in strides:
        h, w = int(input_hw[0]) // int(s), int(input_hw[1]) // int(s)
        sy, sx = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5,
                             indexing="ij")
        points.append(np.stack([sx.ravel(), sy.ravel()], axis=1))
        steps.append(np.full(h * w, float(s), dtype=np.float32))
    return np.concatenate(points), np.concatenate(steps)


def decode_raw_head(box_logits: np.ndarray, cls_logits: np.ndarray, *, anchors: np.ndarray,
                    anchor_strides: np.ndarray, conf_threshold: float | None) -> np.ndarray:
    """The standard output (B, 4 + nc, K) from a detect head's raw logits, for the anchors that can pass.

    box_logits: (B, 4 * REG_MAX, A), per anchor the DFL logits of the left, top, right, bottom distances;
    cls_logits: (B, nc, A) before the sigmoid; anchors/anchor_strides from :func:`head_anchors`. Only anchors whose
    best class could pass ``conf_threshold`` (None: all anchors, in order) are decoded - a few hundred of tens of
    thousands, so the softmax over the bins, the expensive part of the head, is done for those only - which gives
    the same boxes and scores as the exported graph's own decoding for them. Rows are padded to the batch's
    largest K with score -1 (below any threshold). Raises ValueError for inconsistent shapes.
    """
    box_logits, cls_logits = np.asarray(box_logits, np.float32), np.asarray(cls_logits, np.float32)
    if (box_logits.ndim != 3 or cls_logits.ndim != 3 or box_logits.shape[1] != 4 * REG_MAX
            or box_logits.shape[0] != cls_logits.shape[0] or box_logits.shape[2] != cls_logits.shape[2]
            or anchors.shape != (box_logits.shape[2], 2) or anchor_strides.shape != (box_logits.shape[2],)):
        raise ValueError(f"raw head outputs {box_logits.shape} / {cls_logits.shape} do not fit "
                         f"{anchors.shape[0]} anchors with {REG_MAX} DFL bins")
    batch, n_classes = box_logits.shape[0], cls_logits.shape[1]
    if conf_threshold is None:
        keep_all = np.arange(box_logits.shape[2])
    else:  # sigmoid(z) > c  <=>  z > log(c / (1 - c)); a margin leaves the final decision to decode_output
        c = min(max(float(conf_threshold), 1e-7), 1 - 1e-7)
        limit = np.log(c / (1 - c)) - 1e-3
    bins = np.arange(REG_MAX, dtype=np.float32)[None, :, None]
    decoded = []
    for b in range(batch):
        idx = keep_all if conf_threshold is None else np.flatnonzero(cls_logits[b].max(axis=0) > limit)
        d = box_logits[b][:, idx].reshape(4, REG_MAX, idx.size)
        e = np.exp(d - d.max(axis=1, keepdims=True))
        dist = (e * bins).sum(axis=1) / e.sum(axis=1)  # (4, K) expected distance per side, grid units
        a, step = anchors[idx].T, anchor_strides[idx]
        x1y1, x2y2 = a - dist[:2], a + dist[2:]
        scores = 1.0 / (1.0 + np.exp(-cls_logits[b][:, idx]))
        decoded.append(np.concatenate([(x1y1 + x2y2) / 2 * step, (x2y2 - x1y1) * step, scores]).astype(np.float32))
    out = np.zeros((batch, 4 + n_classes, max(d.shape[1] for d in decoded)), np.float32)
    out[:, 4:, :] = -1.0
    for b, d in enumerate(decoded):
        out[b, :, : d.shape[1]] = d
    return out


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of (N, 4) xyxy boxes (exclusive max); degenerate boxes have area 0."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def pairwise_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas (len(a), len(b)) of two sets of xyxy boxes."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)); 0 where both boxes are empty."""
    inter = pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float,
    class_ids: np.ndarray | None = None,
    max_det: int = 3000,
) -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices (int64), highest score first.

    A box is dropped when its IoU with a higher-scoring kept box is above ``iou_threshold``. With ``class_ids``
    boxes of different classes never suppress each other (each class is shifted to its own far-away region, the
    usual offset trick). Each step compares one kept box with all remaining boxes in one vectorised operation.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"nms: {b.shape[0]} boxes but {s.shape[0]} scores")
    if b.shape[0] == 0 or max_det <= 0:
        return np.zeros(0, dtype=np.int64)
    if class_ids is not None:
        c = np.asarray(class_ids).reshape(-1)
        if c.shape[0] != b.shape[0]:
            raise ValueError(f"nms: {b.shape[0]} boxes but {c.shape[0]} class ids")
        span = float(np.abs(b).max()) * 2 + 1
        b = b + (c.astype(np.float64) * span)[:, None]
    area = box_area(b)
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])
        h = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def ellipse_in_box(width: int, height: int) -> np.ndarray:
    """bool (height, width): the pixels whose centres lie inside the ellipse inscribed in a width x height box (area
    ~ pi/4 * width * height). Never empty for a box of at least 1 x 1 px: the centre pixel always lies inside.
    The one outline used where only a box is known (a model box without refinement, a box drawn by hand)."""
    x = (np.arange(width) + 0.5 - width / 2.0) / (width / 2.0)
    y = (np.arange(height) + 0.5 - height / 2.0) / (height / 2.0)
    return y[:, None] ** 2 + x[None, :] ** 2 <= 1.0


def unletterbox_boxes(boxes: np.ndarray, *, scale: float, pad: tuple[float, float]) -> np.ndarray:
    """Map (N, 4) xyxy boxes from letterboxed model-input pixels back to the source image (float32, not clipped)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    return (b - offset) / np.float32(scale)
