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

Full scale is the format's: 255 for 8-bit, 65535 for 16-bit. A 12-bit camera writing 16-bit files clips at 4095,
which this check does not see.
"""
from __future__ import annotations

import numpy as np

#: Share of pixels at full scale from which an image is called over-exposed.
OVEREXPOSED_FRACTION = 0.5
#: A pixel within this much of full scale (image in [0, 1]) counts as clipped: half an 8-bit grey level.
_CLIP_MARGIN = 0.5 / 255


def saturated_fraction(image: np.ndarray) -> float:
    """Share of the pixels of ``image`` (float (H, W) in [0, 1], as decoded) at full scale; 0.0 for an empty image."""
    a = np.asarray(image)
    if a.size == 0:
        return 0.0
    return float(np.count_nonzero(a >= 1.0 - _CLIP_MARGIN)) / a.size


def exposure_note(image: np.ndarray) -> str | None:
    """A sentence for the technician when the image is over-exposed (:data:`OVEREXPOSED_FRACTION`), else None."""
    fraction = saturated_fraction(image)
    if fraction < OVEREXPOSED_FRACTION:
        return None
    return (f"Over-exposed: {100 * fraction:.0f} % of the pixels are at full white, so faint crystal outlines and "
            "bright crystal interiors may be lost; lower the illumination or the exposure time and take the image "
            "again.")
