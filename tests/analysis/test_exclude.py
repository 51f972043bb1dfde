"""Known-answer tests for analysis.exclude (exclusion rules) and analysis.focus (focus score)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from analysis.exclude import ExclusionOptions, apply_exclusions, exclusion_reason
from analysis.focus import MIN_CONTRAST_FRACTION, edge_width_px, focus_score
from analysis.records import EXCLUSION_REASONS, Detection

BG = 0.75
SS = 4


def render(draw, h: int = 120, w: int = 120, *, blur_px: float = 0.0) -> np.ndarray:
    """Draw at 4x with ``draw(canvas, scale)``, area-downsample, blur by 0.7 px optics (+ ``blur_px``)."""
    big = np.full((h * SS, w * SS), BG, np.float32)
    draw(big, SS)
    img = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    sigma = float(np.hypot(0.7, blur_px))
    return cv2.GaussianBlur(img, (0, 0), sigma).astype(np.float32)


def detection_from(image: np.ndarray, *, level: float = 0.5, confidence: float = 0.9) -> Detection:
    """Detection of the one object in ``image``: pixels deviating by > level x its contrast, holes filled."""
    dev = np.abs(image - BG)
    mask = (dev > level * dev.max()).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, [max(contours, key=cv2.contourArea)], -1, 1, -1)
    ys, xs = np.nonzero(filled)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Detection(x_min=int(x0), y_min=int(y0), x_max=int(x1), y_max=int(y1), mask=filled[y0:y1, x0:x1] > 0,
                     confidence=confidence)


def disk(cx, cy, r, value):
    return lambda c, s: cv2.circle(c, (round(cx * s), round(cy * s)), round(r * s), value, -1)


def translucent_hexagon(c, s, cx=60, cy=60, r=25, rim_px=2):
    t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1) * s
    shape = np.zeros(c.shape, np.uint8)
    cv2.fillPoly(shape, [pts.astype(np.int32)], 1)
    inner = cv2.erode(shape, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim_px * s + 1,) * 2))
    c[shape > 0] = 0.3
    c[inner > 0] = 0.73


# ---------------------------------------------------------------- focus


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_edge_width_of_a_blurred_step_is_about_sqrt_2pi_sigma(sigma):
    image = render(disk(60, 60, 30, 0.35), blur_px=sigma)
    det = detection_from(image)
    total = np.sqrt(sigma**2 + 0.7**2 + 1.0**2)  # scene blur, optics, and the 1 px smoothing of the measurement
    width = edge_width_px(image, det.mask, x_min=det.x_min, y_min=det.y_min)
    assert width == pytest.approx(np.sqrt(2 * np.pi) * total, rel=0.2)


def test_focus_score_is_higher_for_the_sharp_copy_and_independent_of_contrast():
    sharp = render(disk(60, 60, 20, 0.35))
    faint = render(disk(60, 60, 20, 0.6))
    blurred = render(disk(60, 60, 20, 0.35), blur_px=5.0)
    scores = {}
    for name, img in (("sharp", sharp), ("faint", faint), ("blurred", blurred)):
        d = detection_from(img)
        scores[name] = focus_score(img, d.mask, x_min=d.x_min, y_min=d.y_min)
    assert scores["sharp"] > 2 * scores["blurred"]
    assert scores["faint"] == pytest.approx(scores["sharp"], rel=0.15)


@pytest.mark.parametrize("background", [BG, 0.4])
def test_an_object_fainter_than_the_visibility_floor_has_no_edge_and_is_excluded(background):
    """A sharp disk whose contrast is just below MIN_CONTRAST_FRACTION of the background scores 0 and is excluded
    as faint (not as out of focus: it is sharp, just not there enough); the same disk just above it is an in-focus
    crystal, on a bright and on a dim background."""
    def scene(fraction):
        big = np.full((120 * SS, 120 * SS), background, np.float32)
        disk(60, 60, 20, background * (1 - fraction))(big, SS)
        img = cv2.resize(big, (120, 120), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(img, (0, 0), 0.7).astype(np.float32)

    faint, visible = scene(0.8 * MIN_CONTRAST_FRACTION), scene(1.3 * MIN_CONTRAST_FRACTION)
    yy, xx = np.mgrid[38:83, 38:83]
    det = Detection(x_min=38, y_min=38, x_max=83, y_max=83, mask=np.hypot(xx - 59.5, yy - 59.5) <= 20,
                    confidence=0.9)
    assert edge_width_px(faint, det.mask, x_min=38, y_min=38) == float("inf")
    assert focus_score(faint, det.mask, x_min=38, y_min=38) == 0.0
    assert exclusion_reason(faint, det) == "faint"
    assert exclusion_reason(faint, det, options=ExclusionOptions(focus_threshold=0.0)) is None  # focus check off
    assert focus_score(visible, det.mask, x_min=38, y_min=38) > 3 * ExclusionOptions().focus_threshold
    assert exclusion_reason(visible, det) is None


def test_focus_score_empty_mask_and_flat_image_are_zero():
    image = np.full((40, 40), BG, np.float32)
    assert focus_score(image, np.zeros((5, 5), bool), x_min=3, y_min=3) == 0.0
    assert focus_score(image, np.ones((5, 5), bool), x_min=3, y_min=3) == 0.0
    assert edge_width_px(image, np.zeros((5, 5), bool), x_min=3, y_min=3) == float("inf")


def test_focus_score_accepts_masks_that_leave_the_image():
    image = render(disk(5, 60, 20, 0.35))
    mask = np.ones((40, 30), bool)
    assert focus_score(image, mask, x_min=-10, y_min=40) >= 0.0


# ---------------------------------------------------------------- rules


def test_dust_is_excluded_by_area():
    image = render(disk(60, 60, 3.5, 0.3))
    det = detection_from(image)
    assert det.mask.sum() < ExclusionOptions().min_area_px
    assert exclusion_reason(image, det) == "dust"


def test_sharp_crystal_is_counted():
    image = render(translucent_hexagon)
    assert exclusion_reason(image, detection_from(image)) is None


def test_blurred_crystal_is_out_of_focus():
    image = render(disk(60, 60, 12, 0.35), blur_px=4.0)
    assert exclusion_reason(image, detection_from(image)) == "out_of_focus"


def test_thin_line_is_a_fibre_but_a_thick_rod_is_not():
    fibre = render(lambda c, s: cv2.line(c, (20 * s, 40 * s), (100 * s, 80 * s), 0.4, thickness=3 * s))
    assert exclusion_reason(fibre, detection_from(fibre)) == "fibre"
    rod = render(lambda c, s: cv2.rectangle(c, (30 * s, 50 * s), (90 * s, 64 * s), 0.35, -1))
    assert exclusion_reason(rod, detection_from(rod)) is None


def _bubble(c, s):
    disk(60, 60, 20, 0.3)(c, s)
    disk(60, 60, 9, 0.9)(c, s)


def test_round_thick_dark_ring_with_bright_centre_is_a_bubble():
    image = render(_bubble)
    det = detection_from(image, level=0.3)  # ring and bright centre, filled outline
    assert exclusion_reason(image, det) == "bubble"


def test_bubble_lookalikes_are_not_bubbles():
    # thin-rimmed round crystal: bright centre but thin ring
    thin = render(lambda c, s: (disk(60, 60, 20, 0.3)(c, s), disk(60, 60, 18, 0.76)(c, s)))
    # solid dark round particle: dark centre
    solid = render(disk(60, 60, 20, 0.3))
    # hexagonal crystal with a thick dark frame and bright centre: a polygon, not round
    def hexagon(c, s):
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        for r, v in ((26, 0.3), (12, 0.9)):
            pts = np.stack([60 + r * np.cos(t), 60 + r * np.sin(t)], 1) * s
            cv2.fillPoly(c, [pts.astype(np.int32)], v)
    frame = render(hexagon)
    for img in (thin, solid, frame):
        assert exclusion_reason(img, detection_from(img, level=0.3)) != "bubble"


def test_low_confidence_is_excluded_last():
    image = render(translucent_hexagon)
    det = detection_from(image, confidence=0.1)
    assert exclusion_reason(image, det, options=ExclusionOptions(confidence_threshold=0.25)) == "low_confidence"
    assert exclusion_reason(image, det, options=ExclusionOptions(confidence_threshold=0.05)) is None
    # the default floor is the model's candidate threshold: a confirmed candidate (0.05-0.25) counts
    assert exclusion_reason(image, dataclasses.replace(det, confidence=0.04)) == "low_confidence"
    assert exclusion_reason(image, det) is None


# ---------------------------------------------------------------- apply_exclusions


def test_apply_exclusions_never_drops_and_never_mutates():
    image = render(lambda c, s: (translucent_hexagon(c, s), disk(100, 100, 3, 0.3)(c, s)))
    crystal = detection_from(render(translucent_hexagon))
    speck = Detection(x_min=97, y_min=97, x_max=103, y_max=103, mask=np.ones((6, 6), bool))
    dets = [crystal, speck]
    out = apply_exclusions(image, dets)
    assert len(out) == 2
    assert out[0] is not crystal and out[1] is not speck
    assert [d.excluded_reason for d in out] == [None, "dust"]
    assert all(d.excluded_reason is None for d in dets)  # inputs untouched
    assert out[1].mask is speck.mask or np.array_equal(out[1].mask, speck.mask)
    assert all(d.excluded_reason in (None, *EXCLUSION_REASONS) for d in out)


def test_apply_exclusions_of_nothing_is_nothing():
    assert apply_exclusions(np.zeros((10, 10), np.float32), []) == []


def test_apply_exclusions_rejects_bad_input():
    image = np.full((30, 30), BG, np.float32)
    bad = Detection(x_min=0, y_min=0, x_max=10, y_max=10, mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="does not match its box"):
        apply_exclusions(image, [bad])
    with pytest.raises(ValueError, match="grey"):
        apply_exclusions(np.zeros((30, 30, 3), np.float32), [])


def test_a_reason_given_by_the_detector_is_kept():
    img = np.full((64, 64), 0.75, np.float32)
    img[20:40, 20:40] = 0.3
    mask = np.ones((20, 20), bool)
    det = Detection(20, 20, 40, 40, mask, class_name="mimic", confidence=0.9, excluded_reason="out_of_focus")
    (out,) = apply_exclusions(img, [det])
    assert out.excluded_reason == "out_of_focus"


def test_precomputed_focus_scores_give_the_same_reasons_and_drive_the_focus_rule():
    from analysis.focus import focus_scores

    sharp = render(translucent_hexagon)
    blurred = render(disk(60, 60, 12, 0.35), blur_px=4.0)
    for image in (sharp, blurred):
        dets = [detection_from(image)]
        scores = focus_scores(image, dets)
        assert scores == [focus_score(image, dets[0].mask, x_min=dets[0].x_min, y_min=dets[0].y_min)]
        with_scores = apply_exclusions(image, dets, focus_scores=scores)
        assert [d.excluded_reason for d in with_scores] == [d.excluded_reason for d in apply_exclusions(image, dets)]
    assert with_scores[0].excluded_reason == "out_of_focus"  # the blurred disk, judged on the given score
    dets = [detection_from(sharp)]
    assert apply_exclusions(sharp, dets, focus_scores=[0.5])[0].excluded_reason == "out_of_focus"
    with pytest.raises(ValueError, match="focus scores"):
        apply_exclusions(sharp, dets, focus_scores=[])
