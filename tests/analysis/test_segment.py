"""Known-answer tests for the classical detector (analysis.segment) on hand-drawn synthetic scenes.

Scenes are drawn at 4x and area-downsampled (sub-pixel edges), blurred by sigma 0.7 px (optics), given a gentle
vignetting and Gaussian noise, and then go through the real chain: clean_image -> detect_classical ->
apply_exclusions.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.exclude import apply_exclusions
from analysis.preprocess import clean_image
from analysis.records import Detection
from analysis.segment import (ClassicalOptions, _components, _disk_closing, detect_classical, edge_thresholds, fill_holes,
                              confirm_mask, refine_mask)
from detection.metrics import box_iou

SS = 4  # supersampling factor
BG = 0.75


def polygon(cx: float, cy: float, r: float, n: int, *, rot_deg: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    """Vertices (n, 2) of a polygon in full-resolution pixels; ``stretch`` elongates it along x before rotation."""
    ang = np.deg2rad(rot_deg)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / n
    x, y = r * stretch * np.cos(t), r * np.sin(t)
    return np.stack([cx + x * np.cos(ang) - y * np.sin(ang), cy + x * np.sin(ang) + y * np.cos(ang)], 1)


def box_of(pts: np.ndarray) -> np.ndarray:
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1])


class Scene:
    """Accumulates a 'deviation from background' layer at 4x; ``render`` makes the final noisy image."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.layer = np.zeros((h * SS, w * SS), np.float32)
        self.blurred = np.zeros((h, w), np.float32)

    def _pts(self, pts: np.ndarray) -> np.ndarray:
        return np.round(pts * SS + (SS - 1) / 2).astype(np.int32)

    def crystal(self, pts: np.ndarray, *, rim: float = 0.3, interior: float = 0.72, rim_px: float = 2.0) -> None:
        """Translucent crystal: interior near background, dark rim of ``rim_px`` inside the outline."""
        shape = np.zeros(self.layer.shape, np.uint8)
        cv2.fillPoly(shape, [self._pts(pts)], 1)
        r = round(rim_px * SS)
        inner = cv2.erode(shape, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        self.layer[shape > 0] = rim - BG
        self.layer[inner > 0] = interior - BG

    def dark_crystal(self, pts: np.ndarray, *, value: float = 0.3) -> None:
        cv2.fillPoly(self.layer, [self._pts(pts)], value - BG)

    def blurred_dark(self, pts: np.ndarray, *, sigma_px: float, value: float = 0.3) -> None:
        """A dark crystal at another depth: drawn, downsampled, blurred by ``sigma_px`` and added."""
        layer = np.zeros_like(self.layer)
        cv2.fillPoly(layer, [self._pts(pts)], value - BG)
        small = cv2.resize(layer, (self.w, self.h), interpolation=cv2.INTER_AREA)
        self.blurred += cv2.GaussianBlur(small, (0, 0), sigma_px)

    def disk(self, cx: float, cy: float, r: float, value: float) -> None:
        cv2.circle(self.layer, (round(cx * SS), round(cy * SS)), round(r * SS), value - BG, -1)

    def line(self, p0: tuple[float, float], p1: tuple[float, float], *, width_px: float, value: float) -> None:
        a = (round(p0[0] * SS), round(p0[1] * SS))
        b = (round(p1[0] * SS), round(p1[1] * SS))
        cv2.line(self.layer, a, b, value - BG, thickness=round(width_px * SS))

    def render(self, *, seed: int = 0, noise: float = 0.01) -> np.ndarray:
        small = cv2.resize(self.layer, (self.w, self.h), interpolation=cv2.INTER_AREA)
        img = BG + cv2.GaussianBlur(small + self.blurred, (0, 0), 0.7)
        yy, xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
        vignette = 1.0 - 0.25 * (((xx - self.w / 2) / self.w) ** 2 + ((yy - self.h / 2) / self.h) ** 2)
        rng = np.random.default_rng(seed)
        return np.clip(img * vignette + rng.normal(0, noise, img.shape), 0, 1).astype(np.float32)


def run_chain(image: np.ndarray) -> list[Detection]:
    cleaned = clean_image(image)
    return apply_exclusions(cleaned, detect_classical(cleaned))


def boxes(dets: list[Detection]) -> np.ndarray:
    return np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in dets], np.float64).reshape(-1, 4)


def overlapping(dets: list[Detection], box: np.ndarray, min_iou: float = 0.3) -> list[Detection]:
    if not dets:
        return []
    iou = box_iou(boxes(dets), box[None, :])[:, 0]
    return [d for d, v in zip(dets, iou) if v >= min_iou]


def main_scene() -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """5 in-focus crystals and one of each mimic. Returns (image, crystal polygons, mimic boxes)."""
    s = Scene(400, 560)
    crystals = [
        polygon(80, 80, 16, 6),
        polygon(210, 90, 12, 4, rot_deg=30, stretch=2.2),  # a rod
        polygon(340, 80, 14, 5, rot_deg=10),
        polygon(470, 90, 15, 4, rot_deg=45, stretch=1.3),
        polygon(120, 300, 11, 6, rot_deg=20, stretch=1.5),
    ]
    for pts in crystals[:4]:
        s.crystal(pts)
    s.dark_crystal(crystals[4])  # thick dark crystal (no bright interior)
    blurred = crystals[4] + np.array([180.0, 0.0])  # the same dark crystal at another depth
    s.blurred_dark(blurred, sigma_px=4.0)
    s.disk(460, 300, 14, 0.3)  # bubble: thick dark ring ...
    s.disk(460, 300, 6.5, 0.9)  # ... and bright centre
    s.disk(230, 220, 3.2, 0.35)  # dust speck
    s.line((200, 370), (330, 350), width_px=2.5, value=0.45)  # fibre
    mimics = {
        "out_of_focus": box_of(blurred),
        "bubble": np.array([446, 286, 475, 315]),
        "dust": np.array([226, 216, 234, 224]),
        "fibre": np.array([199, 348, 332, 373]),
    }
    return s.render(seed=7), crystals, mimics


def test_main_scene_counts_the_crystals_and_excludes_every_mimic():
    image, crystals, mimics = main_scene()
    dets = run_chain(image)
    counted = [d for d in dets if d.excluded_reason is None]
    assert len(counted) == len(crystals)
    iou = box_iou(boxes(counted), np.stack([box_of(p) for p in crystals]))
    assert (iou.max(axis=0) >= 0.6).all()  # each crystal found with a tight box
    assert all(d.class_name == "crystal" for d in counted)
    for reason, box in mimics.items():
        found = overlapping(dets, box)
        assert found, f"{reason} mimic was not detected at all"
        assert {d.excluded_reason for d in found} == {reason}


def test_masks_cover_the_whole_crystal_including_the_interior():
    image, crystals, _ = main_scene()
    counted = [d for d in run_chain(image) if d.excluded_reason is None]
    for pts in crystals:
        true_area = cv2.contourArea(pts.astype(np.float32))
        det = overlapping(counted, box_of(pts), 0.5)[0]
        assert det.mask.shape == (det.y_max - det.y_min, det.x_max - det.x_min)
        assert det.mask.sum() == pytest.approx(true_area, rel=0.2)


def test_confidences_are_probabilities():
    image, _, _ = main_scene()
    dets = detect_classical(clean_image(image))
    assert dets and all(0.0 <= d.confidence <= 1.0 for d in dets)
    assert all(d.excluded_reason is None for d in dets)  # the detector itself excludes nothing


def test_two_touching_crystals_count_as_two():
    s = Scene(160, 200)
    a = polygon(70, 80, 22, 6)
    b = polygon(70 + 2 * 22 * np.cos(np.pi / 6) + 0.5, 80 + 22 * 0.9, 20, 6)  # corner-to-side contact
    s.crystal(a)
    s.crystal(b)
    counted = [d for d in run_chain(s.render(seed=1)) if d.excluded_reason is None]
    assert len(counted) == 2
    iou = box_iou(boxes(counted), np.stack([box_of(a), box_of(b)]))
    assert (iou.max(axis=0) >= 0.5).all()


def test_elongated_rod_is_not_split():
    s = Scene(120, 240)
    rod = polygon(120, 60, 9, 4, rot_deg=15, stretch=9.0)
    s.crystal(rod)
    counted = [d for d in run_chain(s.render(seed=2)) if d.excluded_reason is None]
    assert len(counted) == 1
    assert counted[0].class_name == "crystal"


def test_cluster_of_overlapping_crystals_is_one_agglomerate():
    s = Scene(200, 200)
    for rot in (0, 60, 120):  # three rods crossing at their centres: a star-shaped cluster
        s.crystal(polygon(100, 100, 8, 4, rot_deg=rot, stretch=5.0), rim_px=2.0)
    counted = [d for d in run_chain(s.render(seed=3)) if d.excluded_reason is None]
    assert len(counted) == 1
    assert counted[0].class_name == "agglomerate"


def test_crystal_over_a_blurred_blob_is_one_crystal_not_an_agglomerate():
    s = Scene(200, 240)
    s.blurred_dark(polygon(130, 100, 35, 20), sigma_px=6.0, value=0.45)  # big soft blob at another depth
    crystal = polygon(100, 100, 16, 6, rot_deg=10)
    s.crystal(crystal)
    dets = run_chain(s.render(seed=4))
    counted = [d for d in dets if d.excluded_reason is None]
    assert len(counted) == 1
    assert counted[0].class_name == "crystal"
    assert box_iou(boxes(counted), box_of(crystal)[None, :])[0, 0] >= 0.6


def test_empty_image_gives_no_detections():
    image = Scene(100, 120).render(seed=5)
    assert detect_classical(clean_image(image)) == []


def test_very_noisy_empty_image_raises_the_thresholds_and_counts_nothing():
    rng = np.random.default_rng(9)
    noisy = np.clip(0.6 + rng.normal(0, 0.1, (300, 400)), 0, 1).astype(np.float32)
    cleaned = clean_image(noisy)
    grad = cv2.magnitude(cv2.Sobel(cv2.GaussianBlur(cleaned, (0, 0), 1.0), cv2.CV_32F, 1, 0) / 8,
                         cv2.Sobel(cv2.GaussianBlur(cleaned, (0, 0), 1.0), cv2.CV_32F, 0, 1) / 8) / BG
    low, high = edge_thresholds(grad, ClassicalOptions())
    assert high > ClassicalOptions().edge_high
    assert edge_thresholds(grad, ClassicalOptions(noise_adaptive=False)) == (0.02, 0.05)
    assert [d for d in apply_exclusions(cleaned, detect_classical(cleaned)) if d.excluded_reason is None] == []


def _boxed_hexagon() -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """A cleaned image of one hexagonal crystal, a detector-like box 3 px around it, and its outline."""
    s = Scene(160, 200)
    pts = polygon(100, 80, 20, 6)
    s.crystal(pts)
    cleaned = clean_image(s.render(seed=6))
    return cleaned, tuple(float(v) for v in box_of(pts) + np.array([-3, -3, 3, 3])), pts


def test_refine_mask_segments_inside_the_box():
    cleaned, box, pts = _boxed_hexagon()
    x0, y0, x1, y1, mask = refine_mask(cleaned, box, pad_px=2)
    assert mask.dtype == bool and mask.shape == (y1 - y0, x1 - x0)
    assert box[0] - 2 <= x0 and box[1] - 2 <= y0 and x1 <= box[2] + 2 and y1 <= box[3] + 2
    assert mask.sum() == pytest.approx(cv2.contourArea(pts.astype(np.float32)), rel=0.2)


def test_refine_mask_falls_back_to_an_ellipse_on_empty_background():
    cleaned = clean_image(Scene(100, 120).render(seed=8))
    x0, y0, x1, y1, mask = refine_mask(cleaned, (20.0, 30.0, 60.0, 50.0))
    assert (x0, y0, x1, y1) == (20, 30, 60, 50)
    assert mask.shape == (20, 40)
    assert mask.sum() == pytest.approx(np.pi * 20 * 10, rel=0.15)
    assert not mask[0, 0] and mask[10, 20]


def test_confirm_mask_outlines_an_object_and_refuses_an_empty_box():
    cleaned, box, _ = _boxed_hexagon()
    confirmed = confirm_mask(cleaned, box)
    refined = refine_mask(cleaned, box)
    assert confirmed is not None and confirmed[:4] == refined[:4] and np.array_equal(confirmed[4], refined[4])
    # background only: refine_mask falls back to the inscribed ellipse, confirm_mask finds nothing
    assert confirm_mask(cleaned, (10.0, 10.0, 40.0, 30.0)) is None
    assert refine_mask(cleaned, (10.0, 10.0, 40.0, 30.0))[4].any()


def test_refine_mask_joins_the_parts_of_one_boxed_object():
    # two separate bodies inside one detector box (e.g. the two halves of a crystal split by a bright facet): the
    # segment overlapping the box most covers half of it, so the union of the parts inside the box is returned
    s = Scene(160, 220)
    left, right = polygon(80, 80, 18, 4), polygon(140, 80, 18, 4)
    s.crystal(left)
    s.crystal(right)
    cleaned = clean_image(s.render(seed=11))
    lo, hi = box_of(left), box_of(right)
    box = (float(lo[0]) - 2, float(min(lo[1], hi[1])) - 2, float(hi[2]) + 2, float(max(lo[3], hi[3])) + 2)
    one = cv2.contourArea(left.astype(np.float32))
    assert refine_mask(cleaned, box, min_box_iou=0.0)[4].sum() == pytest.approx(one, rel=0.25)  # one body only
    x0, y0, x1, y1, mask = refine_mask(cleaned, box)
    assert mask.sum() == pytest.approx(2 * one, rel=0.25)
    assert mask[80 - y0, 80 - x0] and mask[80 - y0, 140 - x0]
    assert box_iou(np.array([[x0, y0, x1, y1]], float), np.array([box]))[0, 0] > 0.7


def test_refine_mask_uses_the_box_when_the_segment_is_a_small_part_of_it():
    # a small dark speck in a large box (the model boxed a faint crystal whose rim does not segment): the speck's
    # outline would measure a 10 px object; the inscribed ellipse keeps the model's size
    s = Scene(160, 200)
    speck = polygon(100, 80, 5, 6)
    s.crystal(speck)
    cleaned = clean_image(s.render(seed=12))
    box = (60.0, 40.0, 140.0, 120.0)
    assert refine_mask(cleaned, box, min_box_iou=0.0)[4].sum() < 200  # without the check: the speck
    x0, y0, x1, y1, mask = refine_mask(cleaned, box)
    assert (x0, y0, x1, y1) == (60, 40, 140, 120)
    assert mask.sum() == pytest.approx(np.pi * 40 * 40, rel=0.1)


def test_refine_mask_rejects_a_box_outside_the_image():
    cleaned = np.full((50, 50), BG, np.float32)
    with pytest.raises(ValueError, match="no area"):
        refine_mask(cleaned, (60.0, 60.0, 70.0, 70.0))
    with pytest.raises(ValueError, match="no area"):
        refine_mask(cleaned, (10.0, 10.0, 10.0, 20.0))


def test_fill_holes_with_closed_border_side():
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5] = ring[5:15, 14] = ring[5, 5:15] = ring[14, 5:15] = True
    assert fill_holes(ring)[10, 10]
    u_shape = np.zeros((20, 20), bool)
    u_shape[0:10, 5] = u_shape[0:10, 14] = u_shape[9, 5:15] = True  # open towards the top border
    assert not fill_holes(u_shape)[4, 10]
    assert fill_holes(u_shape, closed_sides=(True, False, False, False))[4, 10]
    lines = np.zeros((10, 10), bool)
    lines[:, 3] = lines[:, 7] = True  # two lines from the top to the bottom border
    assert fill_holes(lines, closed_sides=(True, True, False, False)).sum() == 50
    assert fill_holes(lines, closed_sides=(True, True, True, True)).sum() == 20  # all closed: treated as open


def test_bad_input_and_options_raise():
    with pytest.raises(ValueError, match="grey"):
        detect_classical(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ValueError, match="float"):
        detect_classical(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="edge_low"):
        detect_classical(np.zeros((20, 20), np.float32), options=ClassicalOptions(edge_low=0.1, edge_high=0.05))
    with pytest.raises(ValueError, match="contrast_fraction"):
        detect_classical(np.zeros((20, 20), np.float32), options=ClassicalOptions(contrast_fraction=1.5))


def test_segmenting_without_class_and_confidence_gives_the_same_outlines():
    # refine_mask segments with describe=False (it keeps only outlines); the outlines must be those of the full
    # classical pass, including the split agglomerate-like pair and every mimic of the main scene
    from analysis.segment import _gradient, _segment_regions, _support

    image, _, _ = main_scene()
    cleaned = clean_image(image)
    opts = ClassicalOptions()
    smooth = cv2.GaussianBlur(cleaned, (0, 0), opts.smooth_sigma_px, borderType=cv2.BORDER_REFLECT)
    grad = _gradient(smooth)
    thresholds = edge_thresholds(grad, opts)
    support = _support(grad, opts, thresholds)
    full = _segment_regions(cleaned, smooth, grad, support, thresholds[0], opts)
    bare = _segment_regions(cleaned, smooth, grad, support, thresholds[0], opts, describe=False)
    assert len(full) == len(bare) >= 8
    assert [d.confidence for d in full] == [d.confidence for d in detect_classical(cleaned)]
    for a, b in zip(full, bare):
        assert (a.x_min, a.y_min, a.x_max, a.y_max) == (b.x_min, b.y_min, b.x_max, b.y_max)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert b.class_name == "crystal" and b.confidence == 0.0
    assert any(d.confidence > 0.5 for d in full)


def test_fill_faint_facets_fills_exactly_the_gaps_with_an_edge_along_the_chord():
    # A C-shaped outline (a crystal whose bright facet was cut out) and an L-shaped notch; the gradient is strong
    # only along the hull chord of the C's mouth. Reference: each gap judged on its own, as the rule states.
    from analysis.quantiles import median
    from analysis.segment import _K3, _fill_faint_facets

    piece = np.zeros((60, 70), bool)
    cv2.circle(piece.view(np.uint8), (30, 30), 22, 1, -1)
    piece[22:38, 35:60] = False  # the mouth of the C (opens to the right)
    piece[8:20, 8:20] = False  # a second, corner gap
    grad = np.full(piece.shape, 0.005, np.float32)
    grad[:, 50:54] = 0.08  # an edge where the C's hull chord runs
    taken = np.zeros_like(piece)
    opts = ClassicalOptions()

    m8 = piece.astype(np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros_like(m8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.vstack(contours)), 1)
    rim = (hull > 0) & ~(cv2.erode(hull, _K3, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
    n, labels = cv2.connectedComponents(((hull > 0) & ~piece).astype(np.uint8), connectivity=4)
    expected = piece.copy()
    for i in range(1, n):
        chord = (labels == i) & rim
        if chord.sum() >= 3 and median(grad[chord]) >= opts.edge_low:
            expected |= labels == i
    assert n >= 3  # both gaps lie inside the hull

    got = _fill_faint_facets(piece, grad, taken, opts.edge_low, opts)
    np.testing.assert_array_equal(got, expected)
    assert got[30, 45] and not piece[18, 18] and not got[18, 18]  # the mouth is filled, the corner gap is not
    assert not np.shares_memory(got, piece)
    flat = _fill_faint_facets(piece, np.zeros_like(grad), taken, opts.edge_low, opts)
    np.testing.assert_array_equal(flat, piece)  # no edge anywhere: nothing is filled


def test_disk_closing_kernel_and_distance_transforms_agree():
    """The two ways _close_notches closes an outline (disk kernel for small r, distance transforms for large r)
    give the same mask, so the switch between them never changes a result."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(6, 90, 2))
        shape = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(1, w)), int(rng.integers(1, h)))
            cv2.ellipse(shape, centre, axes, float(rng.uniform(0, 180)), 0, float(rng.uniform(90, 360)), 1, -1)
        mask = (shape > 0) & (rng.random((h, w)) > 0.1)  # ragged outline with holes
        r = int(rng.integers(1, 20))
        by_kernel = _disk_closing(mask, r, by_kernel=True)
        assert by_kernel.shape == mask.shape and by_kernel[mask].all()  # a closing contains the mask
        assert np.array_equal(by_kernel, _disk_closing(mask, r, by_kernel=False))
        checked += int((by_kernel & ~mask).any())
    assert checked > 50  # most cases actually closed something


def test_components_matches_cv2_statistics():
    """_components (labels, then boxes and areas from scipy) equals cv2.connectedComponentsWithStats."""
    rng = np.random.default_rng(3)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        binary = rng.random((h, w)) > rng.uniform(0.3, 0.9)
        n, labels, stats = _components(binary)
        n_cv, labels_cv, stats_cv, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
        assert n == n_cv and np.array_equal(labels, labels_cv)
        assert np.array_equal(stats[1:], stats_cv[1:]) and stats[0, 4] == stats_cv[0, 4]
