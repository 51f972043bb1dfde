"""Per-particle focus score: how sharp the outline is compared with the particle's size.

A crystal in the focal plane has a crisp refraction rim; the same crystal at another depth shows a soft halo whose
width grows with the distance from the focal plane. We measure the **edge width** of the outline: the object's
contrast against the local background divided by the steepest gradients on the outline,

    edge_width_px = contrast / gradient,

which is independent of illumination and of how dark the crystal is (for a step blurred by a Gaussian of sigma
s it is ~2.5 s; a perfectly sharp edge reads ~2.5 px because of the 1 px smoothing applied before the gradient).

The **focus score** is the particle's equivalent circular diameter divided by that edge width: the number of edge
widths that fit across the particle. It answers the question that matters for sizing: is the blur small compared
with the particle? A 10 px crystal with a 4 px halo is a blob; a 200 px crystal with the same halo can still be
measured. On the real development tiles (objects >= 60 px found by the classical detector) labelled in-focus
crystals score median 5.7 (5-95 %: 2.9-19), unlabelled objects (blurred crystals, soft debris) median 2.6
(5-95 %: 1.8-5.4); ``analysis.exclude`` uses 3.0.

An object that barely differs from its surroundings has no edge to measure: below a contrast of
:data:`MIN_CONTRAST_FRACTION` of the local background the edge width is infinite and the score 0 (so the focus rule
excludes it, as ``faint`` rather than ``out_of_focus``). Noise and quantisation make a network box faint smooth patches
of background now and then (the INT8 model 1.4.0 on the real tiles re-imaged at twice the magnification: 205 false
positives, half of them with a contrast below 0.02 = 2.7 % of the background, while the faintest correctly found crystal
there reached 0.19 and the faintest found in the rendered tuning sets 0.026; docs/model_history.md, *1.4.0's weak
side*).

The score depends on the image scale in one way: a perfectly sharp edge reads ~2.5 px wide, so objects below
~8 px ECD can never score 3 (they are dust for ``analysis.exclude`` anyway).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from analysis.quantiles import median, percentile, percentiles

_PAD_PX = 12
_K5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_SMOOTH_SIGMA_PX = 1.0
#: Least contrast (fraction of the local background level) for an object to have a measurable edge; 0.02 in a
#: cleaned image, whose background sits at 0.75 (module docstring).
MIN_CONTRAST_FRACTION = 0.027


def _crop_and_mask(
    image: np.ndarray, mask: np.ndarray, x_min: int, y_min: int
) -> tuple[np.ndarray, np.ndarray] | None:
    h, w = image.shape
    mh, mw = mask.shape
    x0, y0 = max(0, x_min - _PAD_PX), max(0, y_min - _PAD_PX)
    x1, y1 = min(w, x_min + mw + _PAD_PX), min(h, y_min + mh + _PAD_PX)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = np.asarray(image[y0:y1, x0:x1], dtype=np.float32)
    full = np.zeros(crop.shape, np.uint8)
    oy, ox = y_min - y0, x_min - x0
    sy0, sx0 = max(0, -oy), max(0, -ox)
    sub = mask[sy0 : min(mh, crop.shape[0] - oy), sx0 : min(mw, crop.shape[1] - ox)]
    if sub.size == 0:
        return None
    full[oy + sy0 : oy + sy0 + sub.shape[0], ox + sx0 : ox + sx0 + sub.shape[1]] = sub.astype(bool)
    return crop, full


def edge_width_px(image: np.ndarray, mask: np.ndarray, *, x_min: int, y_min: int) -> float:
    """Width (px) of the object's outline edge: contrast / 90th-percentile gradient on the outline.

    image: float32 (H, W) in [0, 1], the whole cleaned image. mask: bool (h, w) crop whose top-left pixel sits at
    (x_min, y_min) in ``image`` (parts outside the image are ignored).
    Contrast = local background (median of a ring 3-7 px outside) minus the 5th percentile inside, or the
    95th percentile inside minus the background, whichever is larger. Returns ``inf`` when the object's contrast is
    below :data:`MIN_CONTRAST_FRACTION` of the background or there is no gradient (nothing to call sharp), and for
    an empty mask.
    """
    prepared = _crop_and_mask(image, mask, x_min, y_min)
    if prepared is None:
        return float("inf")
    crop, full = prepared
    if not full.any():
        return float("inf")
    smooth = cv2.GaussianBlur(crop, (0, 0), _SMOOTH_SIGMA_PX, borderType=cv2.BORDER_REFLECT)
    band = cv2.dilate(full, _K5) > cv2.erode(full, _K5)
    # gradient components on the outline band only (elementwise, so the same values as on the whole crop)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)[band] / 8.0
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)[band] / 8.0
    ring = (cv2.dilate(full, _K5, iterations=3) > 0) & ~(cv2.dilate(full, _K5) > 0)
    inside = crop[full > 0]
    if ring.sum() >= 8:
        background = median(crop[ring])
    else:  # object fills the crop (image-sized object): fall back to everything outside it, or the whole crop
        background = median(crop[full == 0]) if (full == 0).any() else median(crop)
    p5, p95 = percentiles(inside, (5, 95))
    contrast = max(background - p5, p95 - background)
    gradient = percentile(np.sqrt(gx * gx + gy * gy), 90)
    if contrast <= max(0.0, MIN_CONTRAST_FRACTION * background) or gradient <= 1e-6:
        return float("inf")
    return contrast / gradient


def focus_score(image: np.ndarray, mask: np.ndarray, *, x_min: int, y_min: int) -> float:
    """Return the focus score of one object: equivalent circular diameter / outline edge width.

    image: float32 (H, W) in [0, 1], the whole (cleaned) image.
    mask: bool (h, w) crop whose top-left pixel sits at (x_min, y_min) in ``image``.
    Returns a non-negative float (dimensionless, higher = sharper relative to the particle size); 0 for an empty
    mask or an object without contrast. Typical values: ~3-20 in focus, ~2-3 blurred (see ``analysis.exclude``).
    """
    area = float(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    width = edge_width_px(image, mask, x_min=x_min, y_min=y_min)
    if not np.isfinite(width) or width <= 0:
        return 0.0
    return float(np.sqrt(4.0 * area / np.pi) / width)


def focus_scores(image: np.ndarray, detections: Sequence) -> list[float]:
    """:func:`focus_score` of every detection (anything with ``mask``, ``x_min``, ``y_min``), in order.

    The pipeline computes the scores once and hands them to both ``analysis.exclude.apply_exclusions`` (focus
    rule) and ``analysis.measure.measure_particles`` (the ``focus_score`` column), which would otherwise compute
    the same score of the same mask twice.
    """
    return [focus_score(image, d.mask, x_min=int(d.x_min), y_min=int(d.y_min)) for d in detections]
