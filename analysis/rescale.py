"""Small-crystal images: analysed a second time at twice the size, results mapped back to the image's pixels.

The detector, the focus score and the dust limit all work best on crystals of about 15-250 px ECD: the shipped
model sees little of a 10 px crystal at its finest stride (8 px), the focus score (ECD / edge width) cannot call a
crystal sharp when its diameter is only two or three edge widths, and the dust limit (60 px², 8.7 px ECD) removes the
smallest. A microscope with a lower magnification than the development tiles' puts most crystals there: the real
tiles re-imaged at half size lost 92 crystals to the focus rule and 26 to the dust limit (README, *Robustness*).

So after the ordinary pass, :func:`upscale_factor` asks whether the image holds *small crystals*: the median ECD of
every crystal-like object found (counted or excluded; dust, blurred and sharp alike) is below
:data:`SMALL_MEDIAN_ECD_PX`, **and** the median ECD of the counted ones is below :data:`SMALL_COUNTED_MEDIAN_ECD_PX`
(an image of ordinary crystals among many small soft blobs has the first but not the second). Then the cleaned image
is enlarged by :data:`UPSCALE` (bicubic) and analysed again - detection, exclusions and measurement - and every
particle is mapped back (:func:`scaled_particle`): boxes to the enclosing box in the image's pixels, lengths divided
by the factor, areas by its square; shape factors and focus scores are scale-free and stay as measured. The
exclusion limits given in pixels (the dust limit, the widest fibre) keep their meaning in the image's own pixels
(:func:`scaled_exclusion`), so a minimum size set on the Settings screen means the same in both passes. The result
replaces the ordinary pass; the image's notes say so.

A QC lead whose microscope shows crystals much larger than the model was made for (a higher magnification, or an
oversampling camera: outlines soft even in focus) sets the calibration profile's *analysis scale* instead
(``AnalysisOptions.scale``, e.g. 0.5): the image is then analysed resized by that factor in one pass, mapped back the
same way, and the automatic rule does not apply (:func:`chosen_factor`).

Chosen on the real development tiles (as stored and re-imaged at 0.5 / 0.6 / 0.75 / 1.5 x) and the rendered tuning
sets; figures in the README (*Small-crystal images*). Enlarging is capped at :data:`MAX_UPSCALED_PIXELS`; an image too
large to enlarge by at least :data:`MIN_UPSCALE` keeps its ordinary pass.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from analysis.exclude import ExclusionOptions
from analysis.quantiles import median
from analysis.records import Particle

#: Median ECD (px) of all crystal-like objects of the ordinary pass below which an image may hold small crystals.
SMALL_MEDIAN_ECD_PX = 18.0
#: ... and the median ECD (px) of its counted objects must be below this too.
SMALL_COUNTED_MEDIAN_ECD_PX = 30.0
#: Objects (all crystal-like ones) the ordinary pass must find before the image's size is judged at all.
MIN_OBJECTS = 3
#: Enlargement of a small-crystal image.
UPSCALE = 2.0
#: Largest enlarged image (pixels); a larger image is enlarged less.
MAX_UPSCALED_PIXELS = 24_000_000
#: Least worthwhile enlargement (below it the ordinary pass stands).
MIN_UPSCALE = 1.25
#: Range of an analysis scale set by the QC lead (``AnalysisOptions.scale``).
MIN_SCALE, MAX_SCALE = 0.25, 4.0
#: Classes whose size says how large the image's crystals are.
CRYSTAL_LIKE = ("crystal", "agglomerate")


def upscale_factor(particles: Sequence[Particle], shape: tuple[int, int]) -> float:
    """1.0 (keep the ordinary pass) or the enlargement for a small-crystal image (module docstring)."""
    sizes = [p.ecd_px for p in particles if p.class_name in CRYSTAL_LIKE]
    counted = [p.ecd_px for p in particles if p.class_name in CRYSTAL_LIKE and p.excluded_reason is None]
    if len(sizes) < MIN_OBJECTS or not counted:
        return 1.0
    if median(sizes) >= SMALL_MEDIAN_ECD_PX or median(counted) >= SMALL_COUNTED_MEDIAN_ECD_PX:
        return 1.0
    return chosen_factor(UPSCALE, shape)


def chosen_factor(scale: float, shape: tuple[int, int]) -> float:
    """The resize factor for an analysis scale set by the QC lead (a calibration profile's ``analysis_scale``):
    ``scale`` itself when it reduces the image; when it enlarges, at most what :data:`MAX_UPSCALED_PIXELS` allows
    (1.0 = no resize, when that is below :data:`MIN_UPSCALE`)."""
    if scale <= 1.0:
        return scale
    factor = min(scale, math.sqrt(MAX_UPSCALED_PIXELS / max(1, shape[0] * shape[1])))
    return factor if factor >= MIN_UPSCALE else 1.0


def resized(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (float32 (H, W) in [0, 1]) resized by ``factor``: bicubic when enlarging (clipped back to
    [0, 1]), pixel-area averaging when reducing."""
    h, w = image.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    method = cv2.INTER_CUBIC if factor > 1.0 else cv2.INTER_AREA
    out = cv2.resize(np.asarray(image, np.float32), size, interpolation=method)
    return np.clip(out, 0.0, 1.0, out=out)


def scaled_particle(p: Particle, factor: float, shape: tuple[int, int]) -> Particle:
    """A particle measured on an image resized by ``factor``, in the pixels of the original ``shape`` (H, W):
    the enclosing box (x_max / y_max exclusive, inside the image), lengths / factor, area / factor²."""
    h, w = shape
    x0, y0 = min(w - 1, int(math.floor(p.x_min / factor))), min(h - 1, int(math.floor(p.y_min / factor)))
    x1 = max(x0 + 1, min(w, int(math.ceil(p.x_max / factor))))
    y1 = max(y0 + 1, min(h, int(math.ceil(p.y_max / factor))))
    return dataclasses.replace(
        p, x_min=x0, y_min=y0, x_max=x1, y_max=y1, area_px=p.area_px / factor**2,
        perimeter_px=p.perimeter_px / factor, ecd_px=p.ecd_px / factor, feret_max_px=p.feret_max_px / factor,
        feret_min_px=p.feret_min_px / factor)


def scaled_exclusion(options: ExclusionOptions, factor: float) -> ExclusionOptions:
    """``options`` for an image resized by ``factor``: the pixel limits (dust area, fibre width) scaled so they
    cover the same part of the original image; the ratios and the focus and confidence thresholds unchanged."""
    return dataclasses.replace(options, min_area_px=options.min_area_px * factor**2,
                               fibre_width_max_px=options.fibre_width_max_px * factor)
