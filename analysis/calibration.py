"""Pixel-size calibration from an image of a stage micrometer (a glass slide with a ruled scale).

:func:`measure_stage_micrometer` finds the period of the ruled lines, in any orientation, and turns it into µm per
pixel given the spacing of one division (``division_um``, printed on the micrometer, e.g. 10 µm):

1. Flatten: a least-squares quadratic surface is subtracted (uneven illumination, vignetting), the result scaled to
   unit variance and multiplied by a 2-D Hann window (no edge artefacts in the spectrum).
2. Coarse peak: the strongest bin of the power spectrum (``numpy.fft.rfft2``) with a period between
   :data:`MIN_PERIOD_PX` and the image extent / :data:`MIN_PERIODS`.
3. Fundamental: thin lines have strong harmonics, so the strongest peak can be the 2nd or 3rd harmonic of the
   ruling. Each sub-multiple f / k of the peak frequency is checked; the largest k whose sub-multiple carries at least
   :data:`SUBHARMONIC_RATIO` of the peak's power (and whose in-between harmonics are present too) is the fundamental.
   Longer tick marks every 5th or 10th division give much weaker sub-multiples and are not taken.
4. Sub-pixel refinement: the discrete-time Fourier transform is evaluated on finer and finer grids (1/4, 1/16,
   1/64 bin) around the fundamental and its harmonics, finished with a parabola through the three best samples.
   The k-th harmonic gives the frequency k times more precisely; the estimates are combined weighted by k² x power.

Refusals (:class:`CalibrationError`, with what to do): an image without contrast; no peak standing
:data:`MIN_PROMINENCE` times above the median power of the same spatial frequency in all directions (noise, crystals,
a blurred ruling); a periodic
pattern that carries too little of the image's detail (``quality`` < :data:`MIN_QUALITY`); fewer than
:data:`MIN_PERIODS` divisions across the image.

Images are float32 (H, W) in [0, 1] as :func:`analysis.io.load_image` returns them. Images above
:data:`MAX_WORK_PIXELS` are binned (block means, integer factor) first; the period is scaled back exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.errors import CrystalQCError
from analysis.io import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, load_image

#: Shortest period looked for (px of the analysed image): shorter rulings are not resolved.
MIN_PERIOD_PX = 2.5
#: At least this many divisions must fit across the image (along the scale).
MIN_PERIODS = 4.0
#: The ruling's peak must be this many times the median power at the same spatial frequency (all directions).
#: Measured on rendered images: noise 16, random crystal outlines 6-12, rulings >= 65 even at noise sigma 0.3.
MIN_PROMINENCE = 40.0
#: The ruling (fundamental + harmonics) must hold at least this fraction of the band's power.
MIN_QUALITY = 0.05
#: A sub-multiple of the strongest peak is the fundamental when it has this fraction of the peak's power.
SUBHARMONIC_RATIO = 0.15
#: Larger images are binned to at most about this many pixels before the analysis.
MAX_WORK_PIXELS = 4_000_000
#: Harmonics used for the refinement (at most).
MAX_HARMONICS = 8
MAX_DIVISION_UM = 1e5
#: A peak found further than this (Fourier bins) from where a harmonic series puts it does not belong to it.
_MAX_SHIFT_BINS = 0.25


class CalibrationError(CrystalQCError, ValueError):
    """No clear periodic ruling in the image, or unusable input; the message says what to change."""


@dataclass(frozen=True)
class CalibrationMeasurement:
    """Result of :func:`measure_stage_micrometer`.

    um_per_px: micrometres per pixel (division_um / spacing_px).
    spacing_px: distance between neighbouring ruled lines in pixels (sub-pixel).
    angle_deg: direction of the scale (perpendicular to the ruled lines), degrees in [0, 180) from the image's x
        axis (to the right) towards its y axis (downwards, i.e. clockwise on screen). 0 = vertical lines.
    n_periods: how many divisions fit across the image along the scale.
    quality: fraction (0..1) of the flattened image's spectral power that belongs to the ruling (fundamental and
        harmonics); a clean ruling gives 0.3-0.9, noise or crystals below 0.05.
    """

    um_per_px: float
    spacing_px: float
    angle_deg: float
    n_periods: float
    quality: float


def _check(image: np.ndarray, division_um: float) -> np.ndarray:
    if isinstance(division_um, bool) or not isinstance(division_um, (int, float, np.floating)) \
            or not math.isfinite(division_um) or not 0 < division_um < MAX_DIVISION_UM:
        raise CalibrationError("Enter the spacing of one division of the stage micrometer in µm (a number above 0,"
                               " e.g. 10 for a 1 mm scale with 100 divisions).")
    arr = np.asarray(image)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise CalibrationError(f"Expected a grey float image (H, W), got shape {arr.shape} and type {arr.dtype}.")
    if min(arr.shape) < 32:
        raise CalibrationError(f"The image is too small ({arr.shape[1]} x {arr.shape[0]} px); use an image of at "
                               "least 32 x 32 px that shows several divisions.")
    if not np.isfinite(arr).all():
        raise CalibrationError("The image contains invalid (NaN or infinite) pixel values.")
    return arr


def _bin(image: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = image.shape
    factor = max(1, math.ceil(math.sqrt(h * w / MAX_WORK_PIXELS)))
    if factor == 1:
        return image.astype(np.float64), 1
    hh, ww = h // factor * factor, w // factor * factor
    blocks = image[:hh, :ww].astype(np.float64).reshape(hh // factor, factor, ww // factor, factor)
    return blocks.mean(axis=(1, 3)), factor


def _flatten(image: np.ndarray) -> np.ndarray:
    """Image minus its least-squares quadratic surface, unit variance, times a 2-D Hann window."""
    h, w = image.shape
    step = max(1, int(math.sqrt(h * w / 40_000)))
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    u, v = xs.ravel() / w - 0.5, ys.ravel() / h - 0.5
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    coef, *_ = np.linalg.lstsq(design, image[::step, ::step].ravel(), rcond=None)
    uu = (np.arange(w) / w - 0.5)[None, :]
    vv = (np.arange(h) / h - 0.5)[:, None]
    surface = coef[0] + coef[1] * uu + coef[2] * vv + coef[3] * uu * uu + coef[4] * uu * vv + coef[5] * vv * vv
    flat = image - surface
    std = float(flat.std())
    if not std > 1e-4:
        raise CalibrationError("The image has no contrast (blank or saturated). Focus on the ruled scale of the "
                               "stage micrometer and adjust the exposure.")
    return flat / std * np.outer(np.hanning(h), np.hanning(w))


class _Spectrum:
    """Power of the windowed image's Fourier transform at arbitrary frequencies (cycles per pixel)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.h, self.w = image.shape
        self.x = np.arange(self.w, dtype=np.float64)
        self.y = np.arange(self.h, dtype=np.float64)

    def grid(self, fxs: np.ndarray, fys: np.ndarray) -> np.ndarray:
        """Power on the grid fys x fxs, shape (len(fys), len(fxs))."""
        phase_x = 2.0 * np.pi * np.outer(self.x, fxs)
        rows = self.image @ np.cos(phase_x) - 1j * (self.image @ np.sin(phase_x))  # real matrix products (BLAS)
        ey = np.exp(-2j * np.pi * np.outer(fys, self.y))
        return np.abs(ey @ rows) ** 2

    def bins(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance between two frequencies in Fourier bins of this image."""
        return float(np.hypot((a[0] - b[0]) * self.w, (a[1] - b[1]) * self.h))

    def refine(self, f: np.ndarray, *, radius_bins: float = 1.0) -> tuple[np.ndarray, float]:
        """The local power maximum near frequency ``f`` (fx, fy) and its power."""
        bx, by = 1.0 / self.w, 1.0 / self.h
        offsets = np.arange(-4, 5, dtype=np.float64)
        best = np.asarray(f, np.float64).copy()
        step = radius_bins / 4.0
        for _ in range(3):
            fxs, fys = best[0] + offsets * step * bx, best[1] + offsets * step * by
            p = self.grid(fxs, fys)
            iy, ix = np.unravel_index(int(np.argmax(p)), p.shape)
            best = np.array([fxs[ix], fys[iy]])
            last = (p, ix, iy, step)
            step /= 4.0
        p, ix, iy, step = last
        # parabola through the three best samples along each axis
        if 0 < ix < len(offsets) - 1:
            best[0] += _vertex(p[iy, ix - 1], p[iy, ix], p[iy, ix + 1]) * step * bx
        if 0 < iy < len(offsets) - 1:
            best[1] += _vertex(p[iy - 1, ix], p[iy, ix], p[iy + 1, ix]) * step * by
        return best, float(self.grid(best[:1], best[1:])[0, 0])


def _vertex(a: float, b: float, c: float) -> float:
    denom = a - 2.0 * b + c
    return 0.0 if denom >= 0 else float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))


def measure_stage_micrometer(image: np.ndarray, *, division_um: float) -> CalibrationMeasurement:
    """Measure µm per pixel from an image of a stage micrometer's ruled scale (any orientation).

    image: float (H, W) in [0, 1], at least 32 x 32 px, showing at least :data:`MIN_PERIODS` divisions.
    division_um: spacing of one division in µm (e.g. 10).

    Raises:
        CalibrationError: bad input, or no clear periodic ruling (the message says what to change).
    """
    arr = _check(image, division_um)
    work, factor = _bin(arr)
    flat = _flatten(work)
    h, w = flat.shape
    power = np.abs(np.fft.rfft2(flat)) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.hypot(fx, fy)
    max_period = max(h, w) / MIN_PERIODS
    band = (radius >= 1.0 / max_period) & (radius <= 1.0 / MIN_PERIOD_PX)
    band_power = np.where(band, power, 0.0)
    floor = float(np.median(power[band]))
    iy, ix = np.unravel_index(int(np.argmax(band_power)), power.shape)
    # prominence against the same spatial frequency in other directions: textures (crystals, dust) and noise
    # spread their power evenly around the ring, a ruling concentrates it in one direction
    ring = band & (np.abs(radius - radius[iy, ix]) <= 3.0 / min(h, w))
    spectrum = _Spectrum(flat)
    peak, peak_power = spectrum.refine(np.array([fx[0, ix], fy[iy, 0]]))
    if not peak_power > MIN_PROMINENCE * float(np.median(power[ring])):
        raise CalibrationError("No clear ruling found: the image shows no regular line pattern. Image the ruled "
                               "scale of the stage micrometer in focus, with several divisions across the field.")

    # look for the fundamental below the band too, so that a too coarse ruling is refused, not halved
    fundamental, fund_power = _fundamental(spectrum, peak, peak_power, 2.5 / max(h, w))
    estimates, weights = [fundamental], [fund_power]
    f0 = fundamental
    for m in range(2, MAX_HARMONICS + 1):
        guess = m * f0  # the running estimate: each harmonic found narrows down where the next one is
        if np.hypot(*guess) > 1.0 / MIN_PERIOD_PX:
            break
        f_m, p_m = spectrum.refine(guess, radius_bins=0.5)
        if p_m < max(0.05 * fund_power, 20.0 * floor) or spectrum.bins(f_m, guess) > _MAX_SHIFT_BINS:
            continue
        estimates.append(f_m / m)
        weights.append(m * m * p_m)
        f0 = np.average(np.array(estimates), axis=0, weights=np.array(weights))
    freq = float(np.hypot(*f0))
    spacing_work = 1.0 / freq
    angle = math.degrees(math.atan2(f0[1], f0[0])) % 180.0
    if angle >= 180.0 - 1e-9:
        angle = 0.0
    theta = math.radians(angle)
    extent = w * abs(math.cos(theta)) + h * abs(math.sin(theta))
    n_periods = extent / spacing_work
    quality = _quality(power, band, fx, fy, fundamental, h, w)
    if quality < MIN_QUALITY:
        raise CalibrationError(f"The periodic pattern is too weak (quality {quality:.2f}, need {MIN_QUALITY}). Image "
                               "the ruled scale of the stage micrometer in focus, filling more of the field.")
    if n_periods < MIN_PERIODS:
        raise CalibrationError(f"Only {n_periods:.1f} divisions fit across the image; at least {MIN_PERIODS:g} are "
                               "needed. Use a lower magnification or a finer scale.")
    spacing = spacing_work * factor
    return CalibrationMeasurement(um_per_px=float(division_um) / spacing, spacing_px=spacing, angle_deg=angle,
                                  n_periods=n_periods, quality=quality)


def _fundamental(spectrum: _Spectrum, peak: np.ndarray, peak_power: float,
                 min_freq: float) -> tuple[np.ndarray, float]:
    """The ruling's fundamental: the largest-k sub-multiple peak / k that is a real peak (see the module doc)."""
    k_max = int(np.hypot(*peak) / min_freq)
    for k in range(min(k_max, 4 * MAX_HARMONICS), 1, -1):
        guess = peak / k
        if spectrum.grid(guess[:1], guess[1:])[0, 0] < 0.5 * SUBHARMONIC_RATIO * peak_power:
            continue  # cheap test first: within half a bin of a real peak the power is at least ~70 % of its top
        f_k, p_k = spectrum.refine(guess, radius_bins=1.0)
        if p_k < SUBHARMONIC_RATIO * peak_power or spectrum.bins(f_k, guess) > _MAX_SHIFT_BINS:
            continue  # no peak there, or the search slid onto a neighbouring peak
        if all(_is_peak(spectrum, j * f_k, 0.5 * SUBHARMONIC_RATIO * peak_power, tolerance_bins=_MAX_SHIFT_BINS * j)
               for j in range(2, k)):
            return f_k, p_k
    return peak, peak_power


def _is_peak(spectrum: _Spectrum, f: np.ndarray, min_power: float, *, tolerance_bins: float) -> bool:
    """A peak of at least ``min_power`` within ``tolerance_bins`` of ``f`` (the j-th multiple of an estimate is
    j times as uncertain as the estimate)."""
    tolerance_bins = min(tolerance_bins, 1.0)
    found, power = spectrum.refine(f, radius_bins=tolerance_bins)
    return power >= min_power and spectrum.bins(found, f) <= tolerance_bins


def _quality(power: np.ndarray, band: np.ndarray, fx: np.ndarray, fy: np.ndarray, f0: np.ndarray,
             h: int, w: int) -> float:
    """Fraction of the band's power within 2 bins of the fundamental's harmonics (either sign)."""
    total = float(power[band].sum())
    near = np.zeros(power.shape, bool)
    dist_scale_x, dist_scale_y = w, h  # bins
    for m in range(1, 64):
        f = m * f0
        if np.hypot(*f) > 0.5 * math.sqrt(2):
            break
        for s in (1.0, -1.0):
            dx = (fx - s * f[0]) * dist_scale_x
            dy = (fy - s * f[1]) * dist_scale_y
            dy = (dy + h / 2) % h - h / 2  # fy wraps around
            near |= (dx * dx + dy * dy) <= 4.0
    return float(power[band & near].sum()) / total if total > 0 else 0.0


def measure_stage_micrometer_bytes(data: bytes, *, division_um: float, name: str = "",
                                   max_pixels: int = DEFAULT_MAX_PIXELS,
                                   max_bytes: int = DEFAULT_MAX_BYTES) -> CalibrationMeasurement:
    """:func:`measure_stage_micrometer` on untrusted image bytes, decoded by the safe loader
    (:func:`analysis.io.load_image`: format by magic bytes, size caps checked before decoding).

    Raises:
        InvalidImageError (and subclasses): unreadable, unsupported or too large file. CalibrationError.
    """
    image, _ = load_image(data, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
    return measure_stage_micrometer(image, division_um=division_um)
