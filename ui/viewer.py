"""Image viewing helpers for the result view (no Streamlit): zoom windows on full-resolution images and downscaled
previews, so a 2592 x 1944 micrograph is never sent to the browser whole on every rerun.

Zoom: the view shows ``1/zoom`` of the width and height around a centre chosen in % of the image, cropped from the
full-resolution array (real pixels, not an upscaled preview). Previews: the longer side is at most
:data:`PREVIEW_MAX_SIDE_PX`.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Zoom factors offered by the result view (1 = the whole image).
ZOOMS: tuple[int, ...] = (1, 2, 4, 8)
#: Longest side (px) of the whole-image previews shown in the browser.
PREVIEW_MAX_SIDE_PX = 1600


def zoom_window(height: int, width: int, *, zoom: int, centre_x_pct: float = 50.0,
                centre_y_pct: float = 50.0) -> tuple[int, int, int, int]:
    """The crop ``(y0, y1, x0, x1)`` (end exclusive) showing ``1/zoom`` of each side around the centre given in %
    of the width and height; the window is moved inside the image when the centre is near an edge.

    Raises ValueError for a zoom below 1 or an empty image.
    """
    if int(zoom) != zoom or zoom < 1:
        raise ValueError(f"zoom must be a whole number >= 1, got {zoom!r}")
    if height < 1 or width < 1:
        raise ValueError(f"the image is empty ({height} x {width} px)")
    win_h, win_w = max(1, round(height / zoom)), max(1, round(width / zoom))

    def start(size: int, win: int, pct: float) -> int:
        centre = min(max(float(pct), 0.0), 100.0) / 100.0 * size
        return int(min(max(round(centre - win / 2), 0), size - win))

    y0, x0 = start(height, win_h, centre_y_pct), start(width, win_w, centre_x_pct)
    return y0, y0 + win_h, x0, x0 + win_w


def crop(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """A copy of ``image[y0:y1, x0:x1]`` (any number of channels)."""
    y0, y1, x0, x1 = window
    return np.ascontiguousarray(image[y0:y1, x0:x1]).copy()


def preview(image: np.ndarray, *, max_side_px: int = PREVIEW_MAX_SIDE_PX) -> np.ndarray:
    """``image`` downscaled (area averaging) so its longer side is at most ``max_side_px``; smaller images are
    returned as they are (not copied)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side_px:
        return image
    scale = max_side_px / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
