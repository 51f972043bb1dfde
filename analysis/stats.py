"""Size statistics of measured particles: what counts, D-values, counts and fractions, histograms.

Sizes are equivalent circle diameters (ECD). Everything here works in pixels and, when a pixel size is known, in µm
(ECD_um = ECD_px * pixel_size_um). Volume weighting uses ECD³ as the volume of each particle (the volume of the sphere
of equal projected area, up to a constant that cancels), as image analysis conventionally does (ISO 13322-1).

:func:`counted` is the one place that decides which particles count.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.records import COUNTED_CLASSES, ImageResult, Particle

log = logging.getLogger(__name__)

#: Below this many counted particles the D-values get a warning. ISO 13322-1 makes the point that the number of
#: particles measured sets the precision of any percentile; it gives no single minimum. 50 is a floor, not a
#: guarantee: with 50 particles D10 and D90 each rest on only ~5 particles beyond them, and for a typical spread
#: (geometric standard deviation 1.5) the standard error of D50 is already ~7 %; with 12 particles it is ~14 % and
#: D10/D90 are essentially the smallest and largest particle. Volume-weighted values need far more particles.
MIN_STABLE_COUNT: int = 50

#: When one particle holds more than this fraction of the counted volume, the volume-weighted D-values describe
#: that particle rather than the population, and a warning says so.
DOMINANT_VOLUME_FRACTION: float = 0.5

#: Name given to border-touching particles that are not counted because ``include_border`` is False.
BORDER_REASON: str = "on_border"

WEIGHTINGS: tuple[str, ...] = ("number", "volume")


@dataclass(frozen=True)
class DValues:
    """Percentiles of a size distribution, in the unit of the input (px or µm); NaN when there is no particle.

    ``span`` = (d90 - d10) / d50 (dimensionless). ``mean`` is the arithmetic mean D[1,0] for number weighting and the
    volume-weighted mean D[4,3] = sum(d⁴) / sum(d³) for volume weighting.
    """

    d10: float
    d50: float
    d90: float
    span: float
    mean: float

    def scaled(self, factor: float) -> DValues:
        """The same distribution in another unit (e.g. px -> µm); span is unit-free and stays."""
        return DValues(self.d10 * factor, self.d50 * factor, self.d90 * factor, self.span, self.mean * factor)


_EMPTY = DValues(math.nan, math.nan, math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class SizeSummary:
    """Counts, fractions and D-values of one image or a batch.

    ``n_total`` = counted particles (crystals + agglomerates); ``n_excluded`` = all other objects seen, with
    ``excluded_by_reason`` {reason: count} (``"on_border"`` for border particles left out by the border rule), so
    ``n_total + n_excluded`` = number of particles measured. ``agglomerate_fraction`` is by count,
    ``agglomerate_volume_fraction`` by ECD³ (both NaN when nothing is counted). ``number``/``volume`` are D-values
    in px; ``number_um``/``volume_um`` in µm when calibrated, else None. ``particles_per_mm2`` = counted particles
    per mm² of image when the pixel size and the image area are known, else None. ``warnings`` are sentences for
    the user.
    """

    n_crystals: int
    n_agglomerates: int
    n_total: int
    n_excluded: int
    excluded_by_reason: dict
    agglomerate_fraction: float
    agglomerate_volume_fraction: float
    number: DValues
    volume: DValues
    number_um: DValues | None
    volume_um: DValues | None
    particles_per_mm2: float | None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def unit(self) -> str:
        """The unit sizes are reported in: "µm" when calibrated (the µm values exist), else "px"."""
        return "µm" if self.number_um is not None else "px"

    def dvalues(self, weighting: str = "number") -> DValues:
        """The ``weighting`` ("number" or "volume") D-values in :attr:`unit`."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        if weighting == "number":
            return self.number_um if self.number_um is not None else self.number
        return self.volume_um if self.volume_um is not None else self.volume


def not_counted_reason(particle: Particle, *, include_border: bool) -> str | None:
    """Why ``particle`` does not count (its ``excluded_reason``, or ``"on_border"``), or None when it counts."""
    if particle.excluded_reason is not None:
        return particle.excluded_reason
    if particle.on_border and not include_border:
        return BORDER_REASON
    return None


def counted(particles: Sequence[Particle], *, include_border: bool) -> list[Particle]:
    """The particles that count: no ``excluded_reason`` and (``include_border`` or not ``on_border``); order kept."""
    return [p for p in particles if not_counted_reason(p, include_border=include_border) is None]


def pooled_sizes(results: Sequence[ImageResult]) -> np.ndarray:
    """ECD of every counted particle of ``results``: in µm (each image with its own pixel size) when all are
    calibrated, else in px - the unit of :func:`summarize_results`' D-values (and of :func:`summarize_particles`'
    for one image)."""
    calibrated = bool(results) and all(r.pixel_size_um is not None for r in results)
    return np.array([p.ecd_px * (r.pixel_size_um if calibrated else 1.0)
                     for r in results for p in counted(r.particles, include_border=r.include_border)], dtype=float)


def size_distribution(ecd: np.ndarray, *, weighting: str = "number") -> DValues:
    """D10, D50, D90, span and mean of a set of sizes (1-D, any unit; the result is in the same unit).

    ``weighting="number"``: each particle weighs 1; the D-values equal ``np.percentile(ecd, [10, 50, 90])`` with
    numpy's default 'linear' method. ``weighting="volume"``: each particle weighs ecd³; the D-values are read off the
    cumulative volume distribution Q3 as a step function: Dx is the smallest size at which the cumulative volume
    fraction reaches x % (numpy's weighted 'inverted_cdf' percentile; no interpolation between particles, since a
    weighted 'linear' percentile has no unique definition). So all-equal sizes give all D equal, and a particle that
    holds the middle of the volume is D50_v.

    Returns all-NaN DValues for an empty input (span is also NaN when d50 is 0).
    Raises ValueError for an unknown weighting, an input that is not 1-D, or negative/non-finite sizes.
    """
    values = _checked_sizes(ecd, weighting)
    if values.size == 0:
        return _EMPTY
    if weighting == "number":
        d10, d50, d90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
        mean = float(values.mean())
    else:
        weights = values**3
        if not weights.sum() > 0:  # all sizes zero: the volume distribution degenerates to the number one
            d10 = d50 = d90 = mean = 0.0
        else:
            d10, d50, d90 = (
                float(v) for v in np.percentile(values, [10, 50, 90], weights=weights, method="inverted_cdf")
            )
            mean = float((values**4).sum() / weights.sum())
    span = (d90 - d10) / d50 if d50 > 0 else math.nan
    return DValues(d10, d50, d90, span, mean)


def histogram(
    values: np.ndarray,
    *,
    bins: int = 30,
    log: bool = False,
    weighting: str = "number",
    range_: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of sizes: returns (edges (bins + 1,), fraction per bin in % (bins,)).

    ``log=True`` uses geometric bins (equal width in log size; needs positive sizes and range). ``weighting`` is
    "number" or "volume" (weights size³). Fractions are relative to ALL values given, so with a ``range_`` that cuts
    some off the bars sum to less than 100 %. Empty input: zero fractions over ``range_`` (or 0..1, 1..10 for log).
    Raises ValueError for bad bins, weighting, range, or non-positive sizes on a log axis.
    """
    values = _checked_sizes(values, weighting)
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    if log and values.size and values.min() <= 0:
        raise ValueError("a logarithmic histogram needs sizes > 0; use log=False")
    if range_ is not None:
        lo, hi = float(range_[0]), float(range_[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"range_ must be (low, high) with low < high, got {range_!r}")
        if log and lo <= 0:
            raise ValueError(f"a logarithmic histogram needs range_ > 0, got {range_!r}")
    elif values.size == 0:
        lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
    else:
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            lo, hi = (lo / 1.1, hi * 1.1) if log else (lo - 0.5, hi + 0.5)
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    weights = values**3 if weighting == "volume" else np.ones_like(values)
    total = weights.sum()
    counts, _ = np.histogram(values, bins=edges, weights=weights)
    fractions = 100.0 * counts / total if total > 0 else np.zeros(bins)
    return edges, fractions.astype(np.float64)


def summarize_particles(
    particles: Sequence[Particle],
    *,
    pixel_size_um: float | None = None,
    include_border: bool = False,
    image_area_px: float | None = None,
) -> SizeSummary:
    """Summary of one image's particles (counted ones decide the statistics, see :func:`counted`).

    pixel_size_um: µm per pixel (> 0) or None; image_area_px: image area in px² (> 0) or None, for the density.
    Raises ValueError for a non-positive pixel size or image area, or a counted particle of a class that is not
    counted (a detector must set ``excluded_reason`` for anything but crystal/agglomerate).
    """
    scale = _checked_pixel_size(pixel_size_um)
    if image_area_px is not None and not (math.isfinite(image_area_px) and image_area_px > 0):
        raise ValueError(f"image_area_px must be a positive number, got {image_area_px!r}")
    pool = _Pool.of(particles, include_border=include_border, scale=scale)
    area_mm2 = None if scale is None or image_area_px is None else image_area_px * scale * scale * 1e-6
    return pool.summary(calibrated=scale is not None, area_mm2=area_mm2, notes=())


def summarize_result(result: ImageResult) -> SizeSummary:
    """:func:`summarize_particles` of one analysed image, with its pixel size, border rule and area (so the density
    is known when it is calibrated)."""
    return summarize_particles(result.particles, pixel_size_um=result.pixel_size_um,
                               include_border=result.include_border,
                               image_area_px=float(result.meta.width * result.meta.height))


def summarize_results(results: Sequence[ImageResult]) -> SizeSummary:
    """Batch summary: pools the counted particles of all images (each with its own border rule and calibration).

    µm values are pooled per particle with each image's own pixel size, so images with different calibrations pool
    correctly in µm. If any image is uncalibrated, the µm values (and the density) are None. Pixel values always pool
    the raw pixel sizes; a warning says when the pixel sizes differ (px values then mix scales).
    Raises ValueError as :func:`summarize_particles` does.
    """
    pools = []
    for res in results:
        scale = _checked_pixel_size(res.pixel_size_um)
        pools.append(_Pool.of(res.particles, include_border=res.include_border, scale=scale))
    scales = [res.pixel_size_um for res in results]
    calibrated = bool(results) and all(s is not None for s in scales)
    notes = []
    n_uncal = sum(s is None for s in scales)
    if 0 < n_uncal < len(scales):
        notes.append(f"{n_uncal} of {len(scales)} images have no pixel size: batch values are in pixels only")
    if calibrated and len(set(scales)) > 1:
        notes.append("pixel sizes differ between images: pixel values mix scales, use the µm values")
    area_mm2 = None
    if calibrated:
        area_mm2 = sum(r.meta.width * r.meta.height * r.pixel_size_um**2 * 1e-6 for r in results)
    return _Pool.concat(pools).summary(calibrated=calibrated, area_mm2=area_mm2, notes=tuple(notes))


# --- internals -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """Counted particles as arrays (ECD px, ECD µm or NaN, agglomerate flag) plus the reasons of the others."""

    ecd_px: np.ndarray
    ecd_um: np.ndarray
    agglomerate: np.ndarray
    excluded: Counter

    @staticmethod
    def of(particles: Sequence[Particle], *, include_border: bool, scale: float | None) -> _Pool:
        excluded: Counter = Counter()
        kept = []
        for p in particles:
            reason = not_counted_reason(p, include_border=include_border)
            if reason is not None:
                excluded[reason] += 1
                continue
            if p.class_name not in COUNTED_CLASSES:
                raise ValueError(
                    f"particle {p.particle_id} has class {p.class_name!r} but no excluded_reason; only "
                    f"{', '.join(COUNTED_CLASSES)} can be counted (the detector must set excluded_reason)"
                )
            kept.append(p)
        ecd_px = np.array([p.ecd_px for p in kept], np.float64)
        ecd_um = ecd_px * scale if scale is not None else np.full(len(kept), math.nan)
        agglomerate = np.array([p.class_name == "agglomerate" for p in kept], bool)
        return _Pool(ecd_px, ecd_um, agglomerate, excluded)

    @staticmethod
    def concat(pools: Sequence[_Pool]) -> _Pool:
        excluded: Counter = Counter()
        for pool in pools:
            excluded.update(pool.excluded)
        if not pools:
            return _Pool(np.zeros(0), np.zeros(0), np.zeros(0, bool), excluded)
        return _Pool(
            np.concatenate([p.ecd_px for p in pools]),
            np.concatenate([p.ecd_um for p in pools]),
            np.concatenate([p.agglomerate for p in pools]),
            excluded,
        )

    def summary(self, *, calibrated: bool, area_mm2: float | None, notes: tuple[str, ...]) -> SizeSummary:
        n_total = int(self.ecd_px.size)
        n_agg = int(self.agglomerate.sum())
        # Volume fractions in µm when calibrated (correct across calibrations), else in px.
        sizes = self.ecd_um if calibrated else self.ecd_px
        volume = sizes**3
        total_volume = float(volume.sum())
        warnings = list(notes)
        if n_total == 0:
            warnings.append("no particles counted: no size statistics")
        elif n_total < MIN_STABLE_COUNT:
            warnings.append(
                f"only {n_total} particles counted: D-values are not stable (need >= {MIN_STABLE_COUNT})"
            )
        if n_total >= 2 and total_volume > 0:
            largest = float(volume.max()) / total_volume
            if largest > DOMINANT_VOLUME_FRACTION:
                warnings.append(
                    f"one particle holds {100 * largest:.0f} % of the counted volume: "
                    "volume-weighted D-values describe that particle, not the population"
                )
        return SizeSummary(
            n_crystals=n_total - n_agg,
            n_agglomerates=n_agg,
            n_total=n_total,
            n_excluded=int(sum(self.excluded.values())),
            excluded_by_reason=dict(sorted(self.excluded.items())),
            agglomerate_fraction=n_agg / n_total if n_total else math.nan,
            agglomerate_volume_fraction=float(volume[self.agglomerate].sum()) / total_volume
            if total_volume > 0
            else math.nan,
            number=size_distribution(self.ecd_px, weighting="number"),
            volume=size_distribution(self.ecd_px, weighting="volume"),
            number_um=size_distribution(self.ecd_um, weighting="number") if calibrated else None,
            volume_um=size_distribution(self.ecd_um, weighting="volume") if calibrated else None,
            particles_per_mm2=n_total / area_mm2 if area_mm2 else None,
            warnings=tuple(warnings),
        )


def _checked_sizes(values: np.ndarray, weighting: str) -> np.ndarray:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"sizes must be a 1-D array, got shape {arr.shape}")
    if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0):
        raise ValueError("sizes must be finite and >= 0 (found NaN, inf or a negative size)")
    return arr


def _checked_pixel_size(pixel_size_um: float | None) -> float | None:
    if pixel_size_um is None:
        return None
    value = float(pixel_size_um)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the pixel size must be a positive number of µm per pixel, got {pixel_size_um!r}")
    return value
