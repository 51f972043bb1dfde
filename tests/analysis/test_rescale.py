"""Small-crystal images: when the second, enlarged pass runs and how its particles come back (analysis.rescale)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import rescale
from analysis.records import Particle
from analysis.rescale import chosen_factor, resized, scaled_exclusion, scaled_particle, upscale_factor


def particle(ecd: float, *, reason: str | None = None, cls: str = "crystal", box=(10, 20, 30, 44)) -> Particle:
    x0, y0, x1, y1 = box
    return Particle(particle_id=1, class_name=cls, confidence=0.9, x_min=x0, y_min=y0, x_max=x1, y_max=y1,
                    area_px=math.pi / 4 * ecd**2, perimeter_px=math.pi * ecd, ecd_px=ecd, feret_max_px=1.2 * ecd,
                    feret_min_px=0.8 * ecd, aspect_ratio=0.67, circularity=0.9, solidity=0.95, focus_score=4.0,
                    on_border=False, excluded_reason=reason)


SHAPE = (1024, 1280)


def test_an_image_of_small_crystals_is_enlarged_twice():
    parts = [particle(12), particle(14, reason="out_of_focus"), particle(10, reason="dust"), particle(16)]
    assert upscale_factor(parts, SHAPE) == rescale.UPSCALE == 2.0


@pytest.mark.parametrize("parts, why", [
    ([particle(30), particle(40), particle(25)], "ordinary crystals"),
    ([particle(12, reason="out_of_focus")] * 6 + [particle(40), particle(55)], "large counted crystals among blobs"),
    ([particle(12), particle(14)], "too few objects to judge"),
    ([particle(12, reason="out_of_focus")] * 5, "nothing counted"),
    ([particle(12, cls="bubble"), particle(10, cls="bubble"), particle(11, cls="bubble"), particle(40)],
     "only crystal-like objects say how large the crystals are"),
])
def test_ordinary_images_keep_their_single_pass(parts, why):
    assert upscale_factor(parts, SHAPE) == 1.0, why


def test_the_thresholds_are_strict_bounds():
    at_limit = [particle(rescale.SMALL_MEDIAN_ECD_PX)] * 3
    below = [particle(rescale.SMALL_MEDIAN_ECD_PX - 0.01)] * 3
    assert upscale_factor(at_limit, SHAPE) == 1.0
    assert upscale_factor(below, SHAPE) == 2.0


def test_large_images_are_enlarged_less_or_not_at_all():
    small = [particle(12)] * 4
    big = (3000, 4000)  # 12 MP: 2 x would be 48 MP
    f = upscale_factor(small, big)
    assert rescale.MIN_UPSCALE <= f < 2.0
    assert f * f * big[0] * big[1] == pytest.approx(rescale.MAX_UPSCALED_PIXELS, rel=1e-6)
    assert upscale_factor(small, (6000, 8000)) == 1.0  # 48 MP: even 1.25 x is beyond the cap


def test_scaled_particle_maps_box_and_sizes_back():
    p = particle(20.0, box=(21, 41, 61, 80))
    q = scaled_particle(p, 2.0, (100, 200))
    assert (q.x_min, q.y_min, q.x_max, q.y_max) == (10, 20, 31, 40)  # enclosing box, max exclusive
    assert q.ecd_px == pytest.approx(10.0)
    assert q.area_px == pytest.approx(p.area_px / 4)
    assert (q.perimeter_px, q.feret_max_px, q.feret_min_px) == pytest.approx(
        (p.perimeter_px / 2, p.feret_max_px / 2, p.feret_min_px / 2))
    # scale-free values stay as measured
    assert (q.aspect_ratio, q.circularity, q.solidity, q.focus_score) == (
        p.aspect_ratio, p.circularity, p.solidity, p.focus_score)
    assert (q.class_name, q.confidence, q.excluded_reason, q.particle_id) == (
        p.class_name, p.confidence, p.excluded_reason, p.particle_id)


def test_scaled_particle_stays_inside_the_image():
    p = particle(8.0, box=(397, 197, 400, 200))  # last pixels of an enlarged 400 x 200 image
    q = scaled_particle(p, 2.0, (100, 200))
    assert 0 <= q.x_min < q.x_max <= 200 and 0 <= q.y_min < q.y_max <= 100
    r = scaled_particle(particle(8.0, box=(0, 0, 1, 1)), 2.0, (100, 200))
    assert (r.x_min, r.y_min, r.x_max, r.y_max) == (0, 0, 1, 1)


def test_enlarged_keeps_range_dtype_and_size():
    rng = np.random.default_rng(0)
    img = (rng.random((31, 47)) > 0.5).astype(np.float32)  # hard steps make bicubic overshoot
    out = resized(img, 2.0)
    assert out.shape == (62, 94) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert resized(img, 1.5).shape == (round(31 * 1.5), round(47 * 1.5))


def test_pixel_limits_keep_their_meaning_in_the_images_own_pixels():
    from analysis.exclude import ExclusionOptions

    base = ExclusionOptions(min_area_px=60.0, fibre_width_max_px=8.0)
    big = scaled_exclusion(base, 2.0)
    assert big.min_area_px == 240.0 and big.fibre_width_max_px == 16.0
    assert (big.focus_threshold, big.fibre_aspect_max, big.confidence_threshold) == (
        base.focus_threshold, base.fibre_aspect_max, base.confidence_threshold)


# --- the whole pipeline (classical detector: no model needed) ---------------------------------------------------

def crystal_field(seed: int, *, radius: tuple[float, float], n: int = 40, h: int = 512, w: int = 640):
    """A brightfield-like image of ``n`` translucent hexagonal crystals with dark rims, slightly soft and noisy, on
    a vignetted background; returns (float32 image, (n, 2) centres)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = (0.78 * (1 - 0.08 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4))).astype(np.float32)
    gap = 4.5 * radius[1]
    centres: list[np.ndarray] = []
    while len(centres) < n:
        c = rng.uniform([gap, gap], [w - gap, h - gap])
        if all(np.hypot(*(c - d)) > gap for d in centres):
            centres.append(c)
    for cx, cy in centres:
        r, a0 = rng.uniform(*radius), rng.uniform(0, np.pi)
        pts = np.array([[cx + r * np.cos(a0 + k * np.pi / 3) * (1.3 if k % 3 == 0 else 1.0),
                         cy + r * np.sin(a0 + k * np.pi / 3)] for k in range(6)])
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts * 4).astype(np.int32)], 1, shift=2)
        rim = m - cv2.erode(m, np.ones((3, 3), np.uint8))
        img[m > 0] *= 0.82
        img[rim > 0] = 0.35
    img = cv2.GaussianBlur(img, (0, 0), 0.6) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), np.array(centres)


def analyse(img: np.ndarray, *, upscale: bool):
    from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_image
    from analysis.records import ImageMeta

    meta = ImageMeta(format="png", width=img.shape[1], height=img.shape[0], bit_depth=8, channels=1)
    return analyze_image(img, name="field.png", meta=meta, detector=ClassicalDetector(),
                         options=AnalysisOptions(upscale_small=upscale), keep_cleaned=False)


def counted_centres(result) -> np.ndarray:
    kept = [p for p in result.particles if p.excluded_reason is None]
    return np.array([[(p.x_min + p.x_max) / 2, (p.y_min + p.y_max) / 2] for p in kept]).reshape(-1, 2)


def test_small_sharp_crystals_are_counted_by_the_enlarged_pass_in_the_images_pixels():
    img, centres = crystal_field(0, radius=(5.5, 7.5))  # ECD ~ 11-16 px
    single, double = analyse(img, upscale=False), analyse(img, upscale=True)
    assert not single.meta.notes and any("analysed enlarged 2 x" in note for note in double.meta.notes)
    found = counted_centres(double)
    # every crystal once, each box centred on a crystal in the image's own coordinates
    assert len(found) == len(centres)
    dist = np.hypot(*(found[:, None, :] - centres[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert dist.max() < 2.0
    # the single pass calls several of them blurred (their diameter is only ~3 edge widths)
    assert len(counted_centres(single)) <= len(centres) - 3
    # sizes come back in the image's pixels: the same crystals measure alike in both passes
    ecd_single = np.median([p.ecd_px for p in single.particles if p.excluded_reason is None])
    ecd_double = np.median([p.ecd_px for p in double.particles if p.excluded_reason is None])
    assert ecd_double == pytest.approx(ecd_single, rel=0.08)
    h, w = img.shape
    assert all(0 <= p.x_min < p.x_max <= w and 0 <= p.y_min < p.y_max <= h for p in double.particles)


def test_an_image_of_ordinary_crystals_is_analysed_once():
    img, centres = crystal_field(1, radius=(13.0, 17.0), n=12)
    single, auto = analyse(img, upscale=False), analyse(img, upscale=True)
    assert not auto.meta.notes
    assert auto.particles == single.particles
    assert len(counted_centres(auto)) == len(centres)


# --- an analysis scale set by the QC lead ------------------------------------------------------------------------

def test_chosen_factor_reduces_as_asked_and_enlarges_within_the_cap():
    assert chosen_factor(0.5, SHAPE) == 0.5
    assert chosen_factor(2.0, SHAPE) == 2.0
    assert chosen_factor(2.0, (3000, 4000)) == pytest.approx(math.sqrt(rescale.MAX_UPSCALED_PIXELS / 12e6))
    assert chosen_factor(4.0, (6000, 8000)) == 1.0  # cannot be enlarged by 1.25 within the cap


def test_resized_reduces_by_area_averaging():
    img = np.zeros((40, 60), np.float32)
    img[:, 1::2] = 1.0  # one-pixel stripes average to grey, not to aliased stripes
    out = resized(img, 0.5)
    assert out.shape == (20, 30)
    assert np.allclose(out, 0.5, atol=1e-6)


@pytest.mark.parametrize("scale", [0.0, 0.2, 4.5, float("nan")])
def test_an_analysis_scale_out_of_range_is_refused(scale):
    from analysis.pipeline import AnalysisOptions

    with pytest.raises(ValueError, match="analysis scale"):
        AnalysisOptions(scale=scale)


def test_an_analysis_scale_of_one_half_analyses_large_crystals_at_half_size():
    from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_image
    from analysis.records import ImageMeta

    img, centres = crystal_field(2, radius=(26.0, 34.0), n=8, h=640, w=800)
    meta = ImageMeta(format="png", width=800, height=640, bit_depth=8, channels=1)
    own = analyze_image(img, name="big.png", meta=meta, detector=ClassicalDetector(), keep_cleaned=False)
    half = analyze_image(img, name="big.png", meta=meta, detector=ClassicalDetector(),
                         options=AnalysisOptions(scale=0.5), keep_cleaned=False)
    assert not own.meta.notes and any("analysis scale" in note for note in half.meta.notes)
    for result in (own, half):
        found = counted_centres(result)
        assert len(found) == len(centres)
        assert np.hypot(*(found[:, None, :] - centres[None, :, :]).transpose(2, 0, 1)).min(axis=1).max() < 3.0
    ecd = [np.median([p.ecd_px for p in r.particles if p.counted]) for r in (own, half)]
    assert ecd[1] == pytest.approx(ecd[0], rel=0.08)  # sizes in the image's own pixels either way
