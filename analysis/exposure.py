"""Acquisition check: is the micrograph over-exposed?

Translucent crystals show up in brightfield as dark rims around interiors that are often brighter than the
background. When the illumination or exposure time is too high, the background and those bright interiors clip at
the format's full scale and faint rims vanish into it; no cleaning brings them back. The technician should hear about
it while the sample is still under the microscope.

Measured on the 28 real development tiles with their grey levels multiplied by 1.3 / 1.45 / 1.6 / 1.75 / 2 and
clipped (``bench/robustness.py --only none,gain1.3,...``, model 1.4.1, one run; README *Robustness*): a median
of 23 / 55 / 80 / 90 / 94 % of the pixels at full white, F1 0.878 (as stored) -> 0.881 / 0.867 / 0.821 / 0.821 /
0.760, and the crystals found measure smaller as their bright parts merge into the background (median found /
labelled ECD 0.995 -> 0.992 / 0.978 / 0.963 / 0.942 / 0.895). Hence a note from :data:`OVEREXPOSED_FRACTION` (half
the image at full white), where the losses begin: it is given on 7 / 14 / 23 / 28 / 28 of the 28 tiles. The real
tiles and the rendered tuning images as stored have at most 3 % of their pixels at full white.

Full scale is the format's (255 for 8-bit, 65535 for 16-bit), except for cameras with 10, 12 or 14-bit sensors that
write 16-bit files without scaling: they clip at 1023, 4095 or 16383, which decodes to 1/64, 1/16 or 1/4 of white.
When the image's brightest value is exactly one of those levels, that level is the full scale. An 8-bit image
cannot hit them (the nearest 8-bit levels differ by more than a 16-bit step), and an unclipped image of such a
camera stays below them, so ordinary images are not affected; a few hot pixels at the level stay far below the
threshold.
"""
from __future__ import annotations

import numpy as np

#: Share of pixels at full scale from which an image is called over-exposed.
OVEREXPOSED_FRACTION = 0.5
#: A pixel within this much of full scale (image in [0, 1]) counts as clipped: half an 8-bit grey level.
_CLIP_MARGIN = 0.5 / 255
#: Sensor bit depths written unscaled into 16-bit files, whose full scale is 2**bits - 1 of 65535.
SENSOR_BITS = (10, 12, 14)
#: How close (image in [0, 1]) the brightest value must be to a sensor's full scale: half a 16-bit step.
_LEVEL_TOLERANCE = 0.5 / 65535


def full_scale(image: np.ndarray) -> tuple[float, int | None]:
    """The level at which ``image`` (float in [0, 1], as decoded) clips, with the sensor bit depth when it is not
    the format's own full scale (1.0, None)."""
    a = np.asarray(image)
    if a.size == 0:
        return 1.0, None
    top = float(a.max())
    for bits in SENSOR_BITS:
        level = (2**bits - 1) / 65535
        if abs(top - level) <= _LEVEL_TOLERANCE:
            return level, bits
    return 1.0, None


def _saturation(image: np.ndarray) -> tuple[float, int | None]:
    """(share of the pixels at full scale, sensor bit depth or None), with one :func:`full_scale` pass."""
    a = np.asarray(image)
    if a.size == 0:
        return 0.0, None
    level, bits = full_scale(a)
    threshold = level - _LEVEL_TOLERANCE if bits else 1.0 - _CLIP_MARGIN
    return float(np.count_nonzero(a >= threshold)) / a.size, bits


def saturated_fraction(image: np.ndarray) -> float:
    """Share of the pixels of ``image`` (float (H, W) in [0, 1], as decoded) at full scale (:func:`full_scale`);
    0.0 for an empty image."""
    return _saturation(image)[0]


def exposure_note(image: np.ndarray) -> str | None:
    """A sentence for the technician when the image is over-exposed (:data:`OVEREXPOSED_FRACTION`), else None."""
    fraction, bits = _saturation(image)
    if fraction < OVEREXPOSED_FRACTION:
        return None
    where = f"the camera's full scale ({bits}-bit sensor in a 16-bit file)" if bits else "full white"
    return (f"Over-exposed: {100 * fraction:.0f} % of the pixels are at {where}, so faint crystal outlines and "
            "bright crystal interiors may be lost; lower the illumination or the exposure time and take the image "
            "again.")
