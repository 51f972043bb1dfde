"""Known-answer tests for analysis.preprocess: flat-field correction, denoising, cleaning."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.preprocess import (
    BACKGROUND_LEVEL,
    DENOISE_METHODS,
    CleaningOptions,
    clean_image,
    correct_background,
    denoise,
    estimate_background,
    estimate_noise_sigma,
)


def _vignetted(h: int = 300, w: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Background 0.8 falling to ~0.45 in the corners, with a few dark crystals; returns (image, background mask)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w * 0.45) / w) ** 2 + ((yy - h * 0.55) / h) ** 2
    illum = 0.8 * (1.0 - 1.2 * r2)
    objects = np.ones((h, w), np.float32)
    for cx, cy, rad in ((80, 70, 18), (300, 200, 25), (200, 120, 12)):
        cv2.circle(objects, (cx, cy), rad, 0.4, -1)
    image = (illum * objects).astype(np.float32)
    background = cv2.erode((objects == 1).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    return image, background


def _edge_width_10_90(profile: np.ndarray) -> float:
    lo, hi = profile[:3].mean(), profile[-3:].mean()
    t = (profile - lo) / (hi - lo)
    x = np.arange(t.size, dtype=np.float64)
    return float(np.interp(0.9, t, x) - np.interp(0.1, t, x))


def test_estimate_background_follows_illumination_not_crystals():
    image, bg_mask = _vignetted()
    field = estimate_background(image)
    assert field.shape == image.shape and field.dtype == np.float32
    rel_err = np.abs(field[bg_mask] - image[bg_mask]) / image[bg_mask]
    assert np.median(rel_err) < 0.02
    # inside the crystals the field stays near the illumination, not the dark crystal
    assert field[70, 80] > 0.6


def test_correct_background_flattens_vignetting():
    image, bg_mask = _vignetted()
    before = float(image[bg_mask].std())
    flat = correct_background(image)
    after = float(flat[bg_mask].std())
    assert before > 0.05
    assert after < before / 10
    assert float(np.median(flat[bg_mask])) == pytest.approx(BACKGROUND_LEVEL, abs=0.01)
    assert flat.dtype == np.float32 and flat.min() >= 0.0 and flat.max() <= 1.0


def test_correct_background_does_not_modify_input():
    image, _ = _vignetted()
    copy = image.copy()
    correct_background(image)
    np.testing.assert_array_equal(image, copy)


def test_clean_image_keeps_a_step_edge_sharp():
    rng = np.random.default_rng(1)
    h, w = 300, 400
    big = np.full((h * 4, w * 4), 0.75, np.float32)
    big[400:800, 600:840] = 0.35  # a dark 60 x 100 px object, sub-pixel exact edges
    clean = cv2.GaussianBlur(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA), (0, 0), 0.7)
    noisy = np.clip(clean + rng.normal(0, 0.01, clean.shape), 0, 1).astype(np.float32)
    out = clean_image(noisy)
    rows = slice(110, 190)  # the object's left edge is at x = 150
    width_in = _edge_width_10_90(clean[rows, 140:160].mean(axis=0)[::-1])
    width_out = _edge_width_10_90(out[rows, 140:160].mean(axis=0)[::-1])
    assert width_out <= width_in + 0.5
    # and the noise on the flat background went down
    assert out[20:80, 20:120].std() < 0.6 * noisy[20:80, 20:120].std()


@pytest.mark.parametrize("method", [m for m in DENOISE_METHODS if m != "none"])
def test_denoise_reduces_noise_on_flat_image(method):
    rng = np.random.default_rng(0)
    flat = np.clip(0.6 + rng.normal(0, 0.03, (120, 160)), 0, 1).astype(np.float32)
    out = denoise(flat, method=method)
    assert out.shape == flat.shape and out.dtype == np.float32
    assert out.std() < 0.7 * flat.std()
    assert out.mean() == pytest.approx(flat.mean(), abs=0.01)


def test_denoise_none_and_zero_strength_return_a_copy():
    img = np.random.default_rng(0).random((20, 30), dtype=np.float32)
    for out in (denoise(img, method="none"), denoise(img, method="gaussian", strength=0.0)):
        np.testing.assert_array_equal(out, img)
        assert out is not img


def test_noise_sigma_estimate_ignores_edges():
    rng = np.random.default_rng(3)
    img = np.full((200, 200), 0.7, np.float32)
    img[:, 100:] = 0.2  # a strong edge must not inflate the estimate
    noisy = (img + rng.normal(0, 0.02, img.shape)).astype(np.float32)
    assert estimate_noise_sigma(noisy) == pytest.approx(0.02, rel=0.15)


def test_default_options_are_documented_choice():
    opts = CleaningOptions()
    assert opts.denoise in DENOISE_METHODS and opts.background_sigma_px is None and opts.strength == 1.0


def test_errors_are_actionable():
    img = np.zeros((50, 50), np.float32)
    with pytest.raises(ValueError, match="grey"):
        clean_image(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="float"):
        correct_background(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        estimate_background(np.zeros((4, 50), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        clean_image(np.full((50, 50), np.nan, np.float32))
    with pytest.raises(ValueError, match="sigma"):
        estimate_background(img, sigma_px=0)
    with pytest.raises(ValueError, match="unknown denoising method"):
        denoise(img, method="wavelet")
    with pytest.raises(ValueError, match="strength"):
        denoise(img, method="gaussian", strength=-1)
    with pytest.raises(ValueError, match="unknown denoising method"):
        clean_image(img, options=CleaningOptions(denoise="bogus"))


@pytest.mark.parametrize("shape, win", [((48, 64), 13), ((8, 8), 3), ((8, 9), 21), ((30, 17), 1)])
def test_direct_median_filter_equals_scipy(shape, win):
    from scipy import ndimage as ndi

    from analysis.preprocess import _median_filter

    rng = np.random.default_rng(3)
    values = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    values[::5] = np.round(values[::5], 1)  # ties
    got = _median_filter(values, win)
    assert got.dtype == np.float32 and got.shape == values.shape
    np.testing.assert_array_equal(got, ndi.median_filter(values, size=win, mode="nearest"))


def test_direct_median_filter_hands_huge_windows_to_scipy(monkeypatch):
    import analysis.preprocess as pre

    values = np.random.default_rng(4).random((20, 30)).astype(np.float32)
    want = pre._median_filter(values, 7)
    monkeypatch.setattr(pre, "_DIRECT_MEDIAN_MAX_VALUES", 10)  # every window "too big": scipy path
    np.testing.assert_array_equal(pre._median_filter(values, 7), want)
