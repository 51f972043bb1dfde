"""Overlay drawing: detections on the (cleaned) image, coloured by class; excluded objects on demand.

Returns RGB uint8 (H, W, 3) arrays; ``analysis.io.encode_png`` turns them into PNG bytes.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from analysis.records import Particle

#: RGB colours per class / state; colour-blind friendly (Okabe-Ito palette).
COLOURS_RGB: dict[str, tuple[int, int, int]] = {
    "crystal": (0, 158, 115),  # bluish green
    "agglomerate": (230, 159, 0),  # orange
    "excluded": (213, 94, 0),  # vermillion
    "border": (86, 180, 233),  # sky blue: counted only with include_border
}

_REASON_TAGS = {"dust": "D", "fibre": "F", "bubble": "B", "out_of_focus": "OOF", "faint": "FT",
                "low_confidence": "LC"}


def _state(p: Particle, include_border: bool) -> str:
    if p.excluded_reason is not None:
        return "excluded"
    if p.on_border and not include_border:
        return "border"
    return p.class_name


def render_overlay(image: np.ndarray, particles: Sequence[Particle], *, include_border: bool = False,
                   show: Iterable[str] = ("crystal", "agglomerate", "border"), label_excluded: bool = True,
                   max_side_px: int | None = None) -> np.ndarray:
    """Draw particle boxes on a grey image.

    image: float32 (H, W) in [0, 1]. show: which states to draw among 'crystal', 'agglomerate', 'border' and
    'excluded'. Excluded objects get a short reason tag (D dust, F fibre, B bubble, OOF out of focus, FT faint,
    LC low confidence). max_side_px: downscale the result so its longer side is at most this (for quick previews).
    Returns a new RGB uint8 array; the input is not modified.
    """
    grey = np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    scale = 1.0
    if max_side_px and max(grey.shape) > max_side_px:
        scale = max_side_px / max(grey.shape)
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    wanted = set(show)
    thickness = max(1, int(round(max(out.shape) / 1500)))
    for p in particles:
        state = _state(p, include_border)
        if state not in wanted:
            continue
        colour = COLOURS_RGB[state]
        x0, y0 = int(p.x_min * scale), int(p.y_min * scale)
        x1, y1 = max(x0 + 1, int(p.x_max * scale) - 1), max(y0 + 1, int(p.y_max * scale) - 1)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness, lineType=cv2.LINE_AA)
        if state == "excluded" and label_excluded:
            tag = _REASON_TAGS.get(p.excluded_reason or "", "?")
            cv2.putText(out, tag, (x0, max(10, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thickness + 0.1,
                        colour, thickness, cv2.LINE_AA)
    return out
