"""ui.viewer: zoom windows stay inside the image and show 1/zoom of each side; previews cap the size."""
from __future__ import annotations

import numpy as np
import pytest

from ui.viewer import PREVIEW_MAX_SIDE_PX, crop, preview, zoom_window


def test_zoom_one_is_the_whole_image():
    assert zoom_window(1944, 2592, zoom=1) == (0, 1944, 0, 2592)


def test_zoom_window_is_centred_and_a_quarter_of_each_side():
    y0, y1, x0, x1 = zoom_window(1944, 2592, zoom=4, centre_x_pct=50, centre_y_pct=50)
    assert (y1 - y0, x1 - x0) == (486, 648)
    assert (y0 + y1) / 2 == 972 and (x0 + x1) / 2 == 1296


@pytest.mark.parametrize("cx, cy, expected", [
    (0, 0, (0, 243, 0, 324)),               # top-left corner: window moved inside
    (100, 100, (1701, 1944, 2268, 2592)),   # bottom-right corner
    (-50, 250, (1701, 1944, 0, 324)),       # out-of-range centres are clamped
])
def test_zoom_window_stays_inside_the_image(cx, cy, expected):
    assert zoom_window(1944, 2592, zoom=8, centre_x_pct=cx, centre_y_pct=cy) == expected


def test_zoom_window_of_a_tiny_image_is_at_least_one_pixel():
    assert zoom_window(3, 5, zoom=8) == (1, 2, 2, 3)


@pytest.mark.parametrize("zoom", [0, -2, 1.5])
def test_bad_zoom_is_refused(zoom):
    with pytest.raises(ValueError, match="zoom"):
        zoom_window(100, 100, zoom=zoom)
    with pytest.raises(ValueError, match="empty"):
        zoom_window(0, 100, zoom=2)


def test_crop_is_a_copy_of_the_window_at_full_resolution():
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = crop(image, (5, 10, 7, 19))
    assert out.shape == (5, 12, 3)
    assert np.array_equal(out, image[5:10, 7:19])
    out[...] = 0
    assert image[5, 7, 0] != 0 or image[5, 7, 1] != 0  # the original is untouched


def test_preview_caps_the_longer_side_and_keeps_small_images():
    big = np.random.default_rng(0).random((1944, 2592), dtype=np.float32)
    small = preview(big)
    assert small.shape == (1200, PREVIEW_MAX_SIDE_PX) and small.dtype == np.float32
    assert abs(float(small.mean()) - float(big.mean())) < 1e-3  # area averaging keeps the brightness
    tiny = np.zeros((100, 50))
    assert preview(tiny) is tiny
