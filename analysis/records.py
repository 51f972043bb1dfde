"""The records that flow through the pipeline: one frozen dataclass per kind of thing.

Conventions (see ../shared/DESIGN.md): images are float32 (H, W) in [0, 1]; boxes are xyxy in full-image pixels with
``x_max``/``y_max`` exclusive (a one-pixel object at column 3 has x_min=3, x_max=4); units live in field names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Classes that are counted. Anything else a detector finds is excluded with a reason.
COUNTED_CLASSES: tuple[str, ...] = ("crystal", "agglomerate")

#: Reasons an object is seen but not counted.
EXCLUSION_REASONS: tuple[str, ...] = (
    "dust",  # too small to be a crystal
    "fibre",  # long and thin: fibre or scratch
    "bubble",  # round, thick dark ring with a bright centre
    "out_of_focus",  # blurred crystal at another depth (focus score below threshold)
    "faint",  # no measurable outline: contrast below the focus score's floor (analysis.focus.MIN_CONTRAST_FRACTION)
    "low_confidence",  # detector confidence below threshold
)


@dataclass(frozen=True, eq=False)
class Detection:
    """One object found by a detector, before measurement.

    ``mask`` is a bool array of shape (y_max - y_min, x_max - x_min) covering the integer box; True marks the object.
    ``excluded_reason`` is None for countable objects, otherwise one of :data:`EXCLUSION_REASONS`.
    """

    x_min: int
    y_min: int
    x_max: int
    y_max: int
    mask: np.ndarray
    class_name: str = "crystal"
    confidence: float = 1.0
    excluded_reason: str | None = None


@dataclass(frozen=True)
class Particle:
    """One measured object. Sizes in pixels; µm values are derived in one place (``analysis.report``).

    Shape factors (ISO 9276-6 style): ``ecd_px`` = sqrt(4 area / pi); ``feret_max_px``/``feret_min_px`` = largest and
    smallest caliper width of the convex hull; ``aspect_ratio`` = feret_min / feret_max (0..1];
    ``circularity`` = 4 pi area / perimeter^2 (1 for a disk); ``solidity`` = area / convex hull area.
    ``focus_score`` is the particle's ECD divided by the 10-90 % width of its outline edge (dimensionless, about
    2-20; higher = sharper; see ``analysis.focus``). ``excluded_reason`` is None for counted particles.
    """

    particle_id: int
    class_name: str
    confidence: float
    x_min: int
    y_min: int
    x_max: int
    y_max: int
    area_px: float
    perimeter_px: float
    ecd_px: float
    feret_max_px: float
    feret_min_px: float
    aspect_ratio: float
    circularity: float
    solidity: float
    focus_score: float
    on_border: bool
    excluded_reason: str | None = None

    @property
    def counted(self) -> bool:
        return self.excluded_reason is None


@dataclass(frozen=True)
class ImageMeta:
    """What we learned about the source file while loading it safely."""

    format: str  # 'png' | 'jpeg' | 'tiff' | 'bmp'
    width: int
    height: int
    bit_depth: int  # bits per sample of the source (8 or 16; 1 for bilevel)
    channels: int  # channels in the source (1 grey, 3 colour, 4 with alpha)
    n_pages: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "2 further TIFF pages skipped"


@dataclass(frozen=True, eq=False)
class ImageResult:
    """Everything the analysis of one image produced; the report tables are made from these (``analysis.report``).

    ``particles`` holds counted AND excluded objects (excluded ones have ``excluded_reason`` set); which of them count
    is decided in one place, ``analysis.stats.counted``, using ``include_border``. ``pixel_size_um`` is µm per pixel
    (None when the image is uncalibrated: sizes are then reported in pixels only). ``detector`` names what found the
    objects, e.g. ``"classical"`` or ``"onnx:<model name> <version>"``. ``seconds`` is the wall time of the analysis.
    ``cleaned`` is the float32 (H, W) cleaned image in [0, 1] for before/after views (None when not kept).
    """

    name: str  # image name as given (file name)
    meta: ImageMeta
    particles: tuple[Particle, ...]  # counted AND excluded (excluded have excluded_reason set)
    pixel_size_um: float | None  # µm per pixel, None when uncalibrated
    include_border: bool  # whether border-touching particles count
    detector: str  # e.g. "classical" or "onnx:<model name> <version>"
    seconds: float  # wall time of the analysis
    cleaned: np.ndarray | None = None  # float32 (H, W) cleaned image for before/after views
