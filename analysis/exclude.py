"""Exclusion filters that apply to any detector's output (classical or neural).

Objects are never dropped: an excluded object keeps its box and mask and gets ``excluded_reason`` set to one of
:data:`analysis.records.EXCLUSION_REASONS`, so the app can still draw it (greyed out) and the report can count the
exclusions. Rules, checked in this order (the first that matches names the reason):

``dust``            area < ``min_area_px``. Below ~9 px ECD a crystal's rim and interior cannot be resolved, and
                    specks of that size are dust or debris.
``fibre``           long and thin: aspect ratio (width / length of the minimum-area rectangle) <= ``fibre_aspect_max``
                    and width <= ``fibre_width_max_px``. Fibres and scratches are thin lines; crystal rods are thicker.
``bubble``          round (circularity >= ``bubble_circularity_min`` and the outline's distance to the centroid varies
                    by <= ``bubble_radius_spread_max`` of the mean radius + 1 px), a thick dark ring
                    (>= ``bubble_ring_fraction_min`` of the radius, measured on the radial profile of the distance
                    transform) and a bright centre (close to or above the background). Crystal rims are thin and
                    crystal outlines are polygons.
``out_of_focus``    ``analysis.focus.focus_score`` (ECD / outline edge width) < ``focus_threshold``: the outline blur
                    is a large fraction of the particle's size - a crystal at another depth, or soft debris.
``faint``           the same rule where the score is 0: the object barely differs from its surroundings (contrast
                    below ``analysis.focus.MIN_CONTRAST_FRACTION`` of the background, or no gradient at all), so it has
                    no outline to measure - a patch of background, a ghost. Told apart from ``out_of_focus`` so that
                    a technician does not look for blur on an object that is simply not there.
``low_confidence``  detector confidence < ``confidence_threshold``.

"Overlap across depths is not agglomeration": the detectors outline in-focus objects by their sharp edges, and a
blurred blob behind a crystal adds no sharp edges, so it neither joins the crystal's mask nor turns it into an
agglomerate; this module does not change classes.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from analysis.focus import focus_score
from analysis.quantiles import median, percentile
from analysis.records import EXCLUSION_REASONS, Detection

logger = logging.getLogger(__name__)

_K5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_PAD_PX = 12


@dataclass(frozen=True)
class ExclusionOptions:
    """Thresholds of :func:`apply_exclusions` (pixels of the analysed image).

    min_area_px: dust limit (60 px ~ 8.7 px ECD).
    fibre_aspect_max: width / length at or below which a thin object is a fibre (0.2 = 5 times longer than wide).
    fibre_width_max_px: fibres are at most this wide (px); thicker elongated objects are rods.
    bubble_circularity_min: 4 pi area / perimeter^2 (convex hull perimeter) at or above which an object is round.
    bubble_radius_spread_max: (max - min) distance outline-to-centroid / mean radius allowed for a bubble
        (plus 1 px for pixelation); a regular hexagon has 0.13, a disk ~0.
    bubble_ring_fraction_min: the dark ring must cover at least this fraction of the radius (crystal rims: < 0.2).
    focus_threshold: minimum ``focus_score`` (particle ECD / edge width) for an in-focus particle. 3.0 = the
        outline blur must be smaller than a third of the particle diameter.
    confidence_threshold: minimum detector confidence. 0.05 = the lowest score at which the model's boxes are
        considered at all: it counts a box scoring 0.05-0.25 only when the segmentation confirms an object in it
        (``detection.onnx_detector.CANDIDATE_THRESHOLD``), so a higher value here drops those confirmed boxes too.
    """

    min_area_px: float = 60.0
    fibre_aspect_max: float = 0.2
    fibre_width_max_px: float = 8.0
    bubble_circularity_min: float = 0.85
    bubble_radius_spread_max: float = 0.08
    bubble_ring_fraction_min: float = 0.3
    focus_threshold: float = 3.0
    confidence_threshold: float = 0.05


def _crop(image: np.ndarray, det: Detection) -> tuple[np.ndarray, np.ndarray]:
    """Float crop around the detection (padded) and the uint8 mask in crop coordinates."""
    h, w = image.shape
    x0, y0 = max(0, det.x_min - _PAD_PX), max(0, det.y_min - _PAD_PX)
    x1, y1 = min(w, det.x_max + _PAD_PX), min(h, det.y_max + _PAD_PX)
    crop = np.asarray(image[y0:y1, x0:x1], np.float32)
    full = np.zeros(crop.shape, np.uint8)
    mx0, my0 = det.x_min - x0, det.y_min - y0
    mh, mw = det.mask.shape
    sub = det.mask[max(0, -my0) : min(mh, crop.shape[0] - my0), max(0, -mx0) : min(mw, crop.shape[1] - mx0)]
    full[max(0, my0) : max(0, my0) + sub.shape[0], max(0, mx0) : max(0, mx0) + sub.shape[1]] = sub.astype(bool)
    return crop, full


def _largest_contour(mask_u8: np.ndarray) -> np.ndarray | None:
    contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea) if contours else None


def _is_fibre(contour: np.ndarray, options: ExclusionOptions) -> bool:
    (_, _), (a, b), _ = cv2.minAreaRect(contour)
    length, width = max(a, b) + 1.0, min(a, b) + 1.0  # +1: pixel centres to pixel edges
    return width <= options.fibre_width_max_px and width / length <= options.fibre_aspect_max


def _is_bubble(crop: np.ndarray, full: np.ndarray, contour: np.ndarray, options: ExclusionOptions) -> bool:
    area = float(full.sum())
    hull_perimeter = cv2.arcLength(cv2.convexHull(contour), True)
    if hull_perimeter <= 0 or 4 * np.pi * area / hull_perimeter**2 < options.bubble_circularity_min:
        return False
    pts = contour.reshape(-1, 2).astype(np.float64)
    ys, xs = np.nonzero(full)
    radii = np.hypot(pts[:, 0] - xs.mean(), pts[:, 1] - ys.mean())
    mean_r = float(radii.mean())
    if mean_r < 4 or radii.max() - radii.min() > options.bubble_radius_spread_max * mean_r + 1.0:
        return False
    ring = (cv2.dilate(full, _K5, iterations=3) > 0) & ~(cv2.dilate(full, _K5) > 0)
    if ring.sum() < 8:
        return False
    background = median(crop[ring])
    inside = full > 0
    depth = background - percentile(crop[inside], 5)
    if depth <= 0.05 * background:
        return False
    dist = cv2.distanceTransform(full, cv2.DIST_L2, 5)
    t = dist / max(float(dist.max()), 1e-6)  # 0 at the outline, 1 at the centre
    centre = crop[inside & (t >= 0.8)]
    if centre.size == 0 or float(centre.mean()) < background - 0.3 * depth:
        return False  # dark centre: a solid particle, not a bubble
    dark = crop < background - 0.5 * depth
    ring_fraction = 0.0
    for lo in np.arange(0.0, 1.0, 0.1):
        sel = inside & (t >= lo) & (t < lo + 0.1)
        if not sel.any() or dark[sel].mean() < 0.5:
            break
        ring_fraction = lo + 0.1
    return ring_fraction >= options.bubble_ring_fraction_min


def exclusion_reason(
    image: np.ndarray, det: Detection, *, options: ExclusionOptions = ExclusionOptions(),
    focus: float | None = None,
) -> str | None:
    """Reason why ``det`` is not counted (one of EXCLUSION_REASONS) or None. Arguments as :func:`apply_exclusions`;
    ``focus``: the detection's focus score when already known (else computed when the focus rule is reached)."""
    area = float(np.count_nonzero(det.mask))
    if area < options.min_area_px:
        return "dust"
    crop, full = _crop(image, det)
    contour = _largest_contour(full)
    if contour is None:
        return "dust"  # the mask lies outside the image
    if _is_fibre(contour, options):
        return "fibre"
    if _is_bubble(crop, full, contour, options):
        return "bubble"
    if focus is None:
        focus = focus_score(image, det.mask, x_min=det.x_min, y_min=det.y_min)
    if focus < options.focus_threshold:
        return "faint" if focus == 0.0 else "out_of_focus"
    if det.confidence < options.confidence_threshold:
        return "low_confidence"
    return None


def apply_exclusions(
    image: np.ndarray, detections: Sequence[Detection], *, options: ExclusionOptions = ExclusionOptions(),
    focus_scores: Sequence[float] | None = None,
) -> list[Detection]:
    """Judge every detection; return NEW detections (same order) with ``excluded_reason`` set or None.

    A detection that arrives already excluded keeps its reason (a model may label mimics itself).

    image: the cleaned float32 (H, W) image in [0, 1] the detections were found on (focus and bubble rules read it).
    detections: any detector's output, boxes/masks in full-image pixels; never modified, never dropped.
    focus_scores: optional ``analysis.focus.focus_scores(image, detections)`` computed by the caller (the pipeline
    shares them with the measurement step); None = computed here where the focus rule is reached.
    Raises ValueError for a non-2-D image or a detection whose mask does not match its box.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a grey (H, W) image, got shape {img.shape}")
    if focus_scores is not None and len(focus_scores) != len(detections):
        raise ValueError(f"{len(focus_scores)} focus scores for {len(detections)} detections")
    out = []
    for i, det in enumerate(detections):
        if det.mask.shape != (det.y_max - det.y_min, det.x_max - det.x_min):
            raise ValueError(
                f"detection mask shape {det.mask.shape} does not match its box "
                f"({det.x_min}, {det.y_min}, {det.x_max}, {det.y_max})"
            )
        # A reason the detector already gave (e.g. a model's 'mimic' class) stands; the rules only add reasons.
        reason = det.excluded_reason or exclusion_reason(
            img, det, options=options, focus=None if focus_scores is None else focus_scores[i])
        out.append(dataclasses.replace(det, excluded_reason=reason))
    counts = {r: sum(d.excluded_reason == r for d in out) for r in EXCLUSION_REASONS}
    logger.debug("exclusions: %s of %d", counts, len(out))
    return out
