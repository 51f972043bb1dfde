"""Known-answer tests for analysis.measure: disks, rectangles, bars, L shapes, borders, errors."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from analysis.focus import focus_score
from analysis.measure import measure_particles, outline_length_px
from analysis.records import Detection


def _det(mask: np.ndarray, x0: int = 10, y0: int = 10, **kw) -> Detection:
    return Detection(x0, y0, x0 + mask.shape[1], y0 + mask.shape[0], mask, **kw)


def _disk(r: float, *, cx: float = 0.3, cy: float = 0.2) -> np.ndarray:
    n = int(math.ceil(r)) + 1
    y, x = np.mgrid[-n : n + 1, -n : n + 1]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _blank(h: int = 200, w: int = 220) -> np.ndarray:
    return np.full((h, w), 0.8, np.float32)


def _one(mask: np.ndarray, **kw):
    (p,) = measure_particles(_blank(), [_det(mask, **kw)])
    return p


@pytest.mark.parametrize("r", [6.0, 12.5, 30.0])
def test_disk_area_ecd_perimeter_and_shape(r):
    p = _one(_disk(r))
    assert p.area_px == pytest.approx(math.pi * r * r, rel=0.02)
    assert p.ecd_px == pytest.approx(2 * r, rel=0.01)
    assert p.perimeter_px == pytest.approx(2 * math.pi * r, rel=0.03)
    assert p.circularity > 0.95 and p.circularity <= 1.0
    assert p.aspect_ratio > 0.9  # a digital disk is slightly octagonal: its diagonal caliper is longer
    assert p.solidity > 0.9
    # Feret of a digital disk: the pixel squares reach half a pixel beyond the radius on each side.
    assert p.feret_max_px == pytest.approx(2 * r + 1, abs=1.5)
    assert p.feret_min_px == pytest.approx(2 * r + 1, abs=1.5)


@pytest.mark.parametrize(("w", "h"), [(1, 1), (10, 30), (25, 7), (40, 40)])
def test_axis_aligned_rectangle_feret_area_solidity(w, h):
    p = _one(np.ones((h, w), bool))
    assert p.area_px == w * h
    assert p.feret_max_px == pytest.approx(math.hypot(w, h), abs=1e-9)
    assert p.feret_min_px == pytest.approx(min(w, h), abs=1e-9)
    assert p.aspect_ratio == pytest.approx(min(w, h) / math.hypot(w, h))
    assert p.solidity == 1.0


@pytest.mark.parametrize("angle_deg", [15.0, 30.0, 45.0, 70.0])
def test_rotated_rectangle_feret_within_a_pixel(angle_deg):
    w, h = 40.0, 12.0
    n = 40
    y, x = np.mgrid[-n:n, -n:n] + 0.5
    t = math.radians(angle_deg)
    u, v = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    mask = (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)
    p = _one(mask)
    assert p.feret_max_px == pytest.approx(math.hypot(w, h), abs=1.5)
    assert p.feret_min_px == pytest.approx(h, abs=1.5)
    assert p.area_px == pytest.approx(w * h, rel=0.05)
    assert p.perimeter_px == pytest.approx(2 * (w + h), rel=0.05)


def test_thin_bar_has_small_aspect_ratio_and_circularity():
    p = _one(np.ones((1, 10), bool))
    assert p.feret_min_px == pytest.approx(1.0)
    assert p.feret_max_px == pytest.approx(math.hypot(10, 1))
    assert p.aspect_ratio < 0.11
    assert p.circularity < 0.35


def test_l_shape_solidity():
    mask = np.zeros((20, 20), bool)
    mask[:, :5] = True
    mask[15:, :] = True
    p = _one(mask)
    assert p.area_px == 175
    # Hull of the pixel corners: the 20x20 square minus the triangle (5,0)-(20,0)-(20,15).
    assert p.solidity == pytest.approx(175 / (400 - 15 * 15 / 2))
    assert p.feret_max_px == pytest.approx(math.hypot(20, 20))


def test_several_components_are_measured_as_union():
    square = np.ones((5, 5), bool)
    mask = np.zeros((5, 20), bool)
    mask[:, :5] = True
    mask[:, 15:] = True
    p, q = measure_particles(_blank(), [_det(mask), _det(square, 50, 50)])
    assert p.area_px == 2 * q.area_px
    assert p.perimeter_px == pytest.approx(2 * q.perimeter_px)
    assert p.feret_max_px == pytest.approx(math.hypot(20, 5))
    assert p.solidity == pytest.approx(50 / 100)


def test_outline_length_single_pixel_and_empty():
    assert outline_length_px(np.ones((1, 1), bool)) == pytest.approx(math.pi)
    assert outline_length_px(np.zeros((3, 3), bool)) == 0.0


def test_single_pixel_particle():
    p = _one(np.ones((1, 1), bool))
    assert p.area_px == 1
    assert p.feret_max_px == pytest.approx(math.sqrt(2))
    assert p.feret_min_px == 1.0
    assert 0 < p.circularity <= 1.0


def test_ids_order_and_copied_fields():
    a = _det(np.ones((3, 3), bool), 5, 5, class_name="agglomerate", confidence=0.7)
    b = _det(np.ones((4, 2), bool), 30, 40, class_name="dust", confidence=0.2, excluded_reason="dust")
    p, q = measure_particles(_blank(), [a, b])
    assert (p.particle_id, q.particle_id) == (1, 2)
    assert (p.class_name, p.confidence, p.excluded_reason) == ("agglomerate", 0.7, None)
    assert (q.class_name, q.confidence, q.excluded_reason) == ("dust", 0.2, "dust")
    assert (q.x_min, q.y_min, q.x_max, q.y_max) == (30, 40, 32, 44)
    assert measure_particles(_blank(), []) == []


def test_on_border_rule():
    img = _blank(100, 120)
    sq = np.ones((5, 5), bool)
    dets = [_det(sq, 0, 40), _det(sq, 40, 0), _det(sq, 115, 40), _det(sq, 40, 95), _det(sq, 40, 40), _det(sq, 2, 40)]
    flags = [p.on_border for p in measure_particles(img, dets)]
    assert flags == [True, True, True, True, False, False]
    wide = [p.on_border for p in measure_particles(img, dets, border_margin_px=3)]
    assert wide == [True, True, True, True, False, True]
    assert [p.on_border for p in measure_particles(img, dets, border_margin_px=0)] == [False] * 6


def test_integer_mask_same_as_bool_and_inputs_untouched():
    mask = _disk(7).astype(np.uint8)
    img = _blank()
    img_before, mask_before = img.copy(), mask.copy()
    (p,) = measure_particles(img, [_det(mask)])
    (q,) = measure_particles(img, [_det(mask.astype(bool))])
    assert p == q
    assert np.array_equal(img, img_before) and np.array_equal(mask, mask_before)


def test_focus_score_comes_from_the_cleaned_image():
    img = np.full((120, 120), 0.8, np.float32)
    disk = _disk(15)
    y0 = x0 = 60 - disk.shape[0] // 2
    img[y0 : y0 + disk.shape[0], x0 : x0 + disk.shape[1]][disk] = 0.3
    blurred = cv2.GaussianBlur(img, (0, 0), 3.0)
    (sharp,) = measure_particles(img, [_det(disk, x0, y0)])
    (soft,) = measure_particles(blurred, [_det(disk, x0, y0)])
    assert sharp.focus_score == pytest.approx(focus_score(img, disk, x_min=x0, y_min=y0))
    assert sharp.focus_score > 2 * soft.focus_score > 0


def test_empty_mask_raises():
    with pytest.raises(ValueError, match="empty"):
        measure_particles(_blank(), [_det(np.zeros((4, 4), bool))])


def test_mask_shape_mismatch_raises():
    det = Detection(10, 10, 20, 20, np.ones((5, 10), bool))
    with pytest.raises(ValueError, match="does not match its box"):
        measure_particles(_blank(), [det])


@pytest.mark.parametrize("box", [(-1, 0, 5, 5), (0, 0, 221, 5), (0, 195, 5, 201), (5, 5, 5, 8)])
def test_box_outside_image_raises(box):
    x0, y0, x1, y1 = box
    det = Detection(x0, y0, x1, y1, np.ones((max(0, y1 - y0), max(0, x1 - x0)), bool))
    with pytest.raises(ValueError, match="inside the 220x200 image"):
        measure_particles(_blank(), [det])


def test_non_2d_image_raises():
    with pytest.raises(ValueError, match="2-D"):
        measure_particles(np.zeros((10, 10, 3), np.float32), [])


def test_negative_margin_raises():
    with pytest.raises(ValueError, match="border_margin_px"):
        measure_particles(_blank(), [], border_margin_px=-1)


def test_precomputed_focus_scores_are_used_and_equal_the_computed_ones():
    from analysis.focus import focus_scores

    img = np.full((120, 120), 0.8, np.float32)
    disk = _disk(15)
    img[45 : 45 + disk.shape[0], 45 : 45 + disk.shape[1]][disk] = 0.3
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    dets = [_det(disk, 45, 45), _det(_disk(6), 5, 5)]
    scores = focus_scores(img, dets)
    assert scores[0] > 0 and scores[1] == 0.0  # a disk with a rim; a flat patch of background
    assert measure_particles(img, dets, focus_scores=scores) == measure_particles(img, dets)
    (p, _) = measure_particles(img, dets, focus_scores=[7.5, 1.0])
    assert p.focus_score == 7.5  # taken as given, not recomputed
    with pytest.raises(ValueError, match="focus scores"):
        measure_particles(img, dets, focus_scores=[1.0])
