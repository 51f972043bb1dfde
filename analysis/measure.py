"""Per-particle measurement: size and shape factors of each detected object, from its mask.

Input: the cleaned float32 (H, W) image in [0, 1] and the detections (integer xyxy box, bool mask covering the box).
Output: one :class:`~analysis.records.Particle` per detection, in input order, ``particle_id`` = 1..N. All lengths
are in pixels, areas in pixels²; µm values are derived later (``analysis.report`` / ``analysis.stats``).

How each quantity is measured (from the MASK, never from the box):

* ``area_px``: number of True pixels. A mask with several components is measured as their union (areas add up,
  outlines add up, the convex hull and Feret diameters are those of all components together).
* ``perimeter_px``: Vossepoel-Smeulders corner-count estimator on the 8-connected outline, plus a half-pixel offset.
  The outline is traced through the centres of the boundary pixels (``cv2.findContours``); its chain has ``n_e``
  even (axial) steps, ``n_o`` odd (diagonal) steps and ``n_c`` corners (changes of direction), and its length is
  estimated as ``0.980 n_e + 1.406 n_o - 0.091 n_c`` (Vossepoel & Smeulders 1982), which stays within ~2 % for
  straight edges of any orientation. Plain pixel-edge counting overestimates diagonal edges by up to 27 %, and the
  Crofton estimator underestimates axis-parallel edges by ~7 % (both measured on test shapes), hence this choice.
  The chain runs half a pixel inside the pixel-edge boundary that ``area_px`` counts, so each outline gets
  ``2 pi * 0.5 = pi`` added (Steiner's formula for a parallel curve at distance 0.5). Result: a disk of radius
  r >= 2 px gives 2 pi r within ~2 %. Only outer outlines count: holes inside a mask are not part of the perimeter
  (the perimeter is that of the projected outline, ISO 9276-6 style); detectors should fill holes anyway.
* ``ecd_px`` = sqrt(4 area / pi), the diameter of the disk of equal area.
* ``feret_max_px`` / ``feret_min_px``: largest and smallest caliper width of the convex hull of the pixel CORNERS
  (each pixel is a unit square), by rotating calipers: the smallest width is found with one caliper flush with a hull
  edge. A w x h axis-aligned rectangle of pixels gives exactly sqrt(w² + h²) and min(w, h); one pixel gives sqrt(2)
  and 1.
* ``aspect_ratio`` = feret_min / feret_max in (0, 1]; ``circularity`` = 4 pi area / perimeter², clipped to <= 1
  (1 for a disk; unreliable below ~20 px area); ``solidity`` = area / area of that convex hull, in (0, 1].
* ``focus_score``: :func:`analysis.focus.focus_score` on the cleaned image.
* ``on_border``: the box lies within ``border_margin_px`` of an image edge (with the default 1: touches the edge).

Cost: ~0.2 ms per small particle (measured: 2000 ellipses of median 180 px, ~0.4 s; about 40 % of it is the focus
score).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import cv2
import numpy as np

from analysis.focus import focus_score
from analysis.records import Detection, Particle

log = logging.getLogger(__name__)

# Vossepoel & Smeulders (1982) weights for even steps, odd steps and corners of an 8-connected chain code.
_W_EVEN, _W_ODD, _W_CORNER = 0.980, 1.406, 0.091


def measure_particles(
    image: np.ndarray, detections: Sequence[Detection], *, border_margin_px: int = 1,
    focus_scores: Sequence[float] | None = None,
) -> list[Particle]:
    """Measure every detection; return Particles in input order with ``particle_id`` 1..N.

    image: float32 (H, W) cleaned image in [0, 1] (focus score and image size for ``on_border``); not modified.
    detections: boxes must lie inside the image and each mask must be a 2-D array of the box's shape
    (h = y_max - y_min, w = x_max - x_min) with at least one True (non-zero) pixel.
    border_margin_px: a particle whose box comes within this many pixels of an edge is ``on_border`` (>= 0).
    ``class_name``, ``confidence`` and ``excluded_reason`` are copied from the detection.
    focus_scores: optional ``analysis.focus.focus_scores(image, detections)`` already computed by the caller (the
    pipeline shares them with the exclusion step); None = computed here.

    Raises ValueError when the image is not 2-D, the margin is negative, a box lies outside the image, a mask does
    not match its box, or a mask is empty (a detector must never produce an empty mask).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"measure_particles needs a 2-D (H, W) grey image, got shape {image.shape}")
    if border_margin_px < 0:
        raise ValueError(f"border_margin_px must be >= 0, got {border_margin_px}")
    if focus_scores is not None and len(focus_scores) != len(detections):
        raise ValueError(f"{len(focus_scores)} focus scores for {len(detections)} detections")
    height, width = image.shape
    particles = []
    for index, det in enumerate(detections, start=1):
        mask = _checked_mask(det, index, width=width, height=height)
        focus = None if focus_scores is None else float(focus_scores[index - 1])
        particles.append(_measure_one(image, det, mask, index, width=width, height=height, margin=border_margin_px,
                                      focus=focus))
    log.debug("measured %d particles on a %dx%d image", len(particles), width, height)
    return particles


def _checked_mask(det: Detection, index: int, *, width: int, height: int) -> np.ndarray:
    """Return the detection's mask as a C-contiguous bool array after checking it against its box and the image."""
    x0, y0, x1, y1 = int(det.x_min), int(det.y_min), int(det.x_max), int(det.y_max)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"detection {index}: box (x_min={x0}, y_min={y0}, x_max={x1}, y_max={y1}) does not lie inside the "
            f"{width}x{height} image (x_max/y_max are exclusive)"
        )
    mask = np.asarray(det.mask)
    if mask.shape != (y1 - y0, x1 - x0):
        raise ValueError(
            f"detection {index}: mask shape {mask.shape} does not match its box ({y1 - y0}, {x1 - x0}) (h, w)"
        )
    mask = np.ascontiguousarray(mask, dtype=bool) if mask.dtype == bool else np.ascontiguousarray(mask != 0)
    if not mask.any():
        raise ValueError(
            f"detection {index}: the mask is empty (no True pixel); the detector must drop such objects"
        )
    return mask


def _measure_one(
    image: np.ndarray, det: Detection, mask: np.ndarray, pid: int, *, width: int, height: int, margin: int,
    focus: float | None = None,
) -> Particle:
    area = float(np.count_nonzero(mask))
    perimeter = outline_length_px(mask)
    hull = _corner_hull(mask)
    feret_max, feret_min = _feret_px(hull)
    hull_area = _polygon_area(hull)
    x0, y0, x1, y1 = int(det.x_min), int(det.y_min), int(det.x_max), int(det.y_max)
    if focus is None:
        focus = focus_score(image, mask, x_min=x0, y_min=y0)
    on_border = x0 < margin or y0 < margin or x1 > width - margin or y1 > height - margin
    return Particle(
        particle_id=pid,
        class_name=det.class_name,
        confidence=float(det.confidence),
        x_min=x0,
        y_min=y0,
        x_max=x1,
        y_max=y1,
        area_px=area,
        perimeter_px=perimeter,
        ecd_px=math.sqrt(4.0 * area / math.pi),
        feret_max_px=feret_max,
        feret_min_px=feret_min,
        aspect_ratio=feret_min / feret_max,
        circularity=min(1.0, 4.0 * math.pi * area / (perimeter * perimeter)),
        solidity=min(1.0, area / hull_area),
        focus_score=focus,
        on_border=bool(on_border),
        excluded_reason=det.excluded_reason,
    )


def outline_length_px(mask: np.ndarray) -> float:
    """Perimeter (px) of the outer outline(s) of a bool (h, w) mask; see the module docstring for the estimator.

    Returns the sum over all components; pi for a single pixel; 0.0 for an empty mask.
    """
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    total = 0.0
    for contour in contours:
        points = contour[:, 0, :]
        total += math.pi  # half-pixel offset from pixel centres to pixel edges (Steiner)
        if len(points) < 2:
            continue
        steps = np.diff(points, axis=0, append=points[:1])
        odd = np.count_nonzero(steps[:, 0] * steps[:, 1])  # diagonal moves have both components non-zero
        even = len(steps) - odd
        code = steps[:, 0] * 3 + steps[:, 1]  # unique per direction (components are -1, 0 or 1)
        corners = np.count_nonzero(code[1:] != code[:-1]) + int(code[0] != code[-1])
        total += _W_EVEN * even + _W_ODD * odd - _W_CORNER * corners
    return float(total)


def _corner_hull(mask: np.ndarray) -> np.ndarray:
    """Convex hull (k, 2) float64 of the pixel corners of a non-empty bool mask, counter-clockwise or clockwise.

    Only the leftmost and rightmost pixel of each row can be hull vertices, so 4 corners per row suffice.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    sub = mask[rows]
    left = sub.argmax(axis=1)
    right = mask.shape[1] - sub[:, ::-1].argmax(axis=1)  # exclusive right edge of the rightmost pixel
    pts = np.empty((4 * len(rows), 2), np.int32)
    pts[0::4, 0], pts[0::4, 1] = left, rows
    pts[1::4, 0], pts[1::4, 1] = left, rows + 1
    pts[2::4, 0], pts[2::4, 1] = right, rows
    pts[3::4, 0], pts[3::4, 1] = right, rows + 1
    return cv2.convexHull(pts)[:, 0, :].astype(np.float64)


def _feret_px(hull: np.ndarray) -> tuple[float, float]:
    """Largest and smallest caliper width of a convex polygon (k >= 3 vertices in order)."""
    diff = hull[:, None, :] - hull[None, :, :]
    feret_max = float(np.sqrt((diff * diff).sum(axis=2).max()))
    edges = hull[np.r_[1 : len(hull), 0]] - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    edges, starts, lengths = edges[keep], hull[keep], lengths[keep]
    # Distance of every vertex from the line through each edge; the width across that edge is the largest one.
    rel = hull[None, :, :] - starts[:, None, :]
    cross = np.abs(edges[:, None, 0] * rel[:, :, 1] - edges[:, None, 1] * rel[:, :, 0]) / lengths[:, None]
    feret_min = float(cross.max(axis=1).min())
    return feret_max, feret_min


def _polygon_area(poly: np.ndarray) -> float:
    """Area (shoelace) of a simple polygon (k, 2)."""
    nxt = poly[np.r_[1 : len(poly), 0]]
    return float(abs(np.dot(poly[:, 0], nxt[:, 1]) - np.dot(poly[:, 1], nxt[:, 0])) / 2.0)
