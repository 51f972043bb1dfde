"""analysis.calibration: the period of a rendered stage-micrometer ruling, in any orientation, with noise and uneven
illumination, comes back within 1 %; images without a clear ruling are refused with an actionable message."""
from __future__ import annotations

import math

import numpy as np
import pytest

import analysis.calibration as calibration
from analysis.calibration import CalibrationError, CalibrationMeasurement, measure_stage_micrometer
from analysis.errors import CrystalQCError


def render_ruling(shape: tuple[int, int], spacing: float, angle_deg: float, *, width: float = 1.2,
                  contrast: float = 0.5, noise: float = 0.0, uneven: float = 0.0, ticks: bool = False,
                  seed: int = 0) -> np.ndarray:
    """Dark Gaussian-profile lines every ``spacing`` px; the scale runs along ``angle_deg`` (from x towards y), so
    the lines are perpendicular to it. ``uneven`` tilts and bends the illumination (multiplicative);
    ``ticks``: lines cover only a band across the scale, every 5th line longer (like a real micrometer)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    t = math.radians(angle_deg)
    u = x * math.cos(t) + y * math.sin(t) + 3.3
    phase = np.mod(u, spacing)
    d = np.minimum(phase, spacing - phase)
    line = np.exp(-0.5 * (d / width) ** 2)
    if ticks:
        v = -x * math.sin(t) + y * math.cos(t)
        v = v - v.mean()
        long_line = np.mod(np.round(u / spacing), 5) == 0
        line = line * (np.abs(v) < np.where(long_line, 0.35, 0.2) * min(h, w))
    light = 0.75 + uneven * (x / w - 0.5) + 0.5 * uneven * (y / h - 0.5) ** 2
    img = light * (1.0 - contrast * line) + np.random.default_rng(seed).normal(0.0, noise, shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _angle_error(measured: float, truth: float) -> float:
    return abs((measured - truth + 90.0) % 180.0 - 90.0)


@pytest.mark.parametrize("spacing", [8.0, 13.7, 27.5, 60.0])
@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_known_spacing_with_noise_and_uneven_light(spacing, angle):
    img = render_ruling((384, 448), spacing, angle, noise=0.06, uneven=0.4, seed=int(spacing * 10 + angle))
    m = measure_stage_micrometer(img, division_um=10.0)
    assert isinstance(m, CalibrationMeasurement)
    assert m.spacing_px == pytest.approx(spacing, rel=0.01)
    assert m.um_per_px == pytest.approx(10.0 / spacing, rel=0.01)
    assert m.um_per_px == pytest.approx(10.0 / m.spacing_px, rel=1e-12)
    assert _angle_error(m.angle_deg, angle) < 1.0 and 0.0 <= m.angle_deg < 180.0
    extent = 448 * abs(math.cos(math.radians(angle))) + 384 * abs(math.sin(math.radians(angle)))
    assert m.n_periods == pytest.approx(extent / spacing, rel=0.01)
    assert MIN_QUALITY_OK <= m.quality <= 1.0


MIN_QUALITY_OK = 0.3


@pytest.mark.parametrize("spacing, angle", [(11.0, 137.0), (45.0, 7.5), (20.0, 63.0)])
def test_micrometer_with_tick_marks_measures_the_division_not_the_long_ticks(spacing, angle):
    img = render_ruling((400, 480), spacing, angle, ticks=True, width=0.8, noise=0.04, seed=3)
    m = measure_stage_micrometer(img, division_um=10.0)
    assert m.spacing_px == pytest.approx(spacing, rel=0.01)
    assert _angle_error(m.angle_deg, angle) < 1.0


def test_fundamental_is_found_when_a_harmonic_is_stronger():
    """Period 40 px whose 2nd harmonic carries 4x the power of the fundamental: the strongest peak is at 20 px,
    but the pattern repeats every 40 px."""
    h, w = 360, 400
    x = np.arange(w)[None, :].repeat(h, axis=0)
    img = 0.5 + 0.15 * np.cos(2 * np.pi * x / 40.0) + 0.3 * np.cos(4 * np.pi * x / 40.0 + 0.7)
    m = measure_stage_micrometer(img.astype(np.float32), division_um=5.0)
    assert m.spacing_px == pytest.approx(40.0, rel=0.01)
    assert m.um_per_px == pytest.approx(5.0 / 40.0, rel=0.01)


def test_large_images_are_binned_and_scaled_back(monkeypatch):
    monkeypatch.setattr(calibration, "MAX_WORK_PIXELS", 60_000)  # 384 x 448 -> binned by 2
    img = render_ruling((384, 448), 17.3, 30.0, noise=0.03)
    m = measure_stage_micrometer(img, division_um=10.0)
    assert m.spacing_px == pytest.approx(17.3, rel=0.01)
    assert m.n_periods == pytest.approx((448 * math.cos(math.radians(30)) + 384 * 0.5) / 17.3, rel=0.02)


def _random_crystals(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((384, 448), 0.7)
    y, x = np.mgrid[0:384, 0:448]
    for _ in range(25):
        cx, cy, r = rng.uniform(0, 448), rng.uniform(0, 384), rng.uniform(6, 30)
        d = np.hypot(x - cx, y - cy)
        img[np.abs(d - r) < 2] = 0.3
    return (img + rng.normal(0, 0.02, img.shape)).astype(np.float32)


@pytest.mark.parametrize("image, match", [
    (np.random.default_rng(1).random((384, 448)).astype(np.float32), "No clear ruling"),
    (_random_crystals(), "No clear ruling|too weak"),
    (np.full((384, 448), 0.5, np.float32), "no contrast"),
    (np.ones((384, 448), np.float32), "no contrast"),
    (render_ruling((384, 448), 150.0, 0.0), "divisions fit across the image"),
])
def test_images_without_a_usable_ruling_are_refused(image, match):
    with pytest.raises(CalibrationError, match=match) as err:
        measure_stage_micrometer(image, division_um=10.0)
    assert isinstance(err.value, CrystalQCError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("division", [0.0, -10.0, float("nan"), float("inf"), True, "10", 1e6])
def test_bad_division_is_refused(division):
    with pytest.raises(CalibrationError, match="spacing of one division"):
        measure_stage_micrometer(render_ruling((64, 64), 8.0, 0.0), division_um=division)


@pytest.mark.parametrize("image, match", [
    (np.zeros((64, 64, 3), np.float32), "grey float image"),
    (np.zeros((64, 64), np.uint8), "grey float image"),
    (np.zeros((20, 400), np.float32), "too small"),
    (np.where(np.eye(64, dtype=bool), np.nan, 0.5).astype(np.float32), "NaN"),
])
def test_bad_images_are_refused(image, match):
    with pytest.raises(CalibrationError, match=match):
        measure_stage_micrometer(image, division_um=10.0)


def test_input_is_not_modified():
    img = render_ruling((128, 160), 9.0, 20.0, noise=0.02)
    before = img.copy()
    measure_stage_micrometer(img, division_um=10.0)
    np.testing.assert_array_equal(img, before)


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.round(image * 255).astype(np.uint8))
    assert ok
    return buf.tobytes()


def test_measure_from_image_bytes_uses_the_safe_loader():
    from analysis.calibration import measure_stage_micrometer_bytes
    from analysis.errors import ImageTooLargeError, InvalidImageError

    data = _png(render_ruling((240, 320), 12.5, 90.0, noise=0.02))
    m = measure_stage_micrometer_bytes(data, division_um=10.0, name="micrometer.png")
    assert m.spacing_px == pytest.approx(12.5, rel=0.01) and m.um_per_px == pytest.approx(0.8, rel=0.01)
    with pytest.raises(ImageTooLargeError, match="image size cap"):
        measure_stage_micrometer_bytes(data, division_um=10.0, max_pixels=240 * 320 - 1)
    with pytest.raises(InvalidImageError):
        measure_stage_micrometer_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, division_um=10.0)
