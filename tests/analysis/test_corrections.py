"""Tests for analysis.corrections: delete / set_class / add_box with known answers, replay, every error path, JSON."""
from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest

from analysis.corrections import (
    MANUAL_NOTE,
    MIN_BOX_PX,
    CorrectionError,
    Edit,
    apply_edits,
    check_box,
    edits_from_json,
    edits_to_json,
    replay_edits,
)
from analysis.errors import CrystalQCError
from analysis.measure import measure_particles
from analysis.records import Detection, ImageMeta, ImageResult
from analysis.stats import summarize_particles
from detection.yolo import ellipse_in_box

W, H = 320, 200
# (centre x, centre y, radius, class): the "detected" disks; one more disk at (250, 60) r 18 is left undetected
DISKS = [(50, 50, 15, "crystal"), (130, 60, 12, "crystal"), (60, 140, 20, "agglomerate"), (180, 150, 10, "crystal")]
MISSED = (250, 60, 18)


def _image() -> np.ndarray:
    img = np.full((H, W), 0.7, np.float32)
    for x, y, r, _ in DISKS + [(*MISSED, "crystal")]:
        cv2.circle(img, (x, y), r, 0.3, -1)
    return img


def _detected(*, cleaned: bool = True) -> ImageResult:
    img = _image()
    dets = []
    for x, y, r, cls in DISKS:
        x0, y0, x1, y1 = x - r - 1, y - r - 1, x + r + 2, y + r + 2
        dets.append(Detection(x0, y0, x1, y1, img[y0:y1, x0:x1] < 0.5, class_name=cls, confidence=0.8))
    particles = tuple(measure_particles(img, dets))
    meta = ImageMeta(format="png", width=W, height=H, bit_depth=8, channels=1)
    return ImageResult("disks.png", meta, particles, None, False, "classical", 0.1,
                       cleaned=img if cleaned else None)


def _summary(result: ImageResult):
    return summarize_particles(result.particles, pixel_size_um=None, include_border=result.include_border)


def test_no_edits_gives_an_equal_result_and_does_not_touch_the_input():
    detected = _detected()
    before = detected.particles
    out = apply_edits(detected, [])
    assert out.particles == before and out.detector == "classical" and out is not detected
    assert detected.particles is before


def test_delete_removes_the_particle_and_lowers_the_count():
    detected = _detected()
    out = apply_edits(detected, [Edit("delete", particle_id=2)])
    assert [p.particle_id for p in out.particles] == [1, 3, 4]
    assert _summary(detected).n_crystals == 3 and _summary(out).n_crystals == 2
    assert [p.particle_id for p in detected.particles] == [1, 2, 3, 4]  # input unchanged
    assert out.detector == "classical"  # nothing added by hand


def test_set_class_moves_a_particle_between_crystal_and_agglomerate_counts():
    detected = _detected()
    out = apply_edits(detected, [Edit("set_class", particle_id=3, class_name="crystal"),
                                 Edit("set_class", particle_id=1, class_name="agglomerate")])
    before, after = _summary(detected), _summary(out)
    assert (before.n_crystals, before.n_agglomerates) == (3, 1)
    assert (after.n_crystals, after.n_agglomerates) == (3, 1)
    assert {p.particle_id: p.class_name for p in out.particles} == {
        1: "agglomerate", 2: "crystal", 3: "crystal", 4: "crystal"}
    # only the class changes: the measurement stays
    assert dataclasses.replace(out.particles[0], class_name="crystal") == detected.particles[0]


def test_add_box_around_a_missed_disk_measures_pi_r_squared():
    detected = _detected()
    x, y, r = MISSED
    box = (x - r - 6, y - r - 6, x + r + 7, y + r + 7)
    replay = replay_edits(detected, [Edit("add_box", class_name="crystal", box=box, user="alice")])
    out = replay.result
    new = out.particles[-1]
    assert new.particle_id == 5 and replay.manual_ids == {5}
    assert replay.edits[0].particle_id == 5
    assert new.area_px == pytest.approx(math.pi * r * r, rel=0.08)
    assert new.ecd_px == pytest.approx(2 * r, rel=0.04)
    assert (new.x_min, new.y_min) == pytest.approx((x - r, y - r), abs=2)  # the segment, not the loose box
    assert new.confidence == 1.0 and new.excluded_reason is None and new.class_name == "crystal"
    assert out.detector == "classical" + MANUAL_NOTE
    assert _summary(out).n_crystals == _summary(detected).n_crystals + 1


def test_add_box_without_a_cleaned_image_uses_the_inscribed_ellipse():
    detected = _detected(cleaned=False)
    out = apply_edits(detected, [Edit("add_box", class_name="agglomerate", box=(200, 100, 240, 120))])
    new = out.particles[-1]
    assert (new.x_min, new.y_min, new.x_max, new.y_max) == (200, 100, 240, 120)
    assert new.area_px == pytest.approx(math.pi / 4 * 40 * 20, rel=0.05)
    assert new.class_name == "agglomerate" and _summary(out).n_agglomerates == 2


def test_add_box_on_blank_background_falls_back_to_the_ellipse():
    detected = _detected()
    out = apply_edits(detected, [Edit("add_box", class_name="crystal", box=(230, 110, 290, 140))])
    new = out.particles[-1]
    assert (new.x_min, new.y_min, new.x_max, new.y_max) == (230, 110, 290, 140)
    assert new.area_px == pytest.approx(math.pi / 4 * 60 * 30, rel=0.05)


def test_added_ids_are_fresh_and_never_reuse_a_deleted_id():
    detected = _detected(cleaned=False)
    edits = [Edit("delete", particle_id=4), Edit("add_box", class_name="crystal", box=(200, 100, 230, 130)),
             Edit("add_box", class_name="crystal", box=(250, 150, 280, 180)), Edit("delete", particle_id=5)]
    replay = replay_edits(detected, edits)
    assert [p.particle_id for p in replay.result.particles] == [1, 2, 3, 6]
    assert [e.particle_id for e in replay.edits] == [4, 5, 6, 5]
    assert replay.manual_ids == {6}


def test_replay_is_deterministic_and_undo_is_replaying_one_fewer():
    detected = _detected()
    x, y, r = MISSED
    edits = [Edit("delete", particle_id=1), Edit("add_box", class_name="crystal", box=(x - r - 3, y - r - 3,
                                                                                        x + r + 4, y + r + 4)),
             Edit("set_class", particle_id=5, class_name="agglomerate")]
    a, b = apply_edits(detected, edits), apply_edits(detected, edits)
    assert a.particles == b.particles and a.detector == b.detector
    undone = apply_edits(detected, edits[:-1])
    assert undone.particles[-1].class_name == "crystal" and a.particles[-1].class_name == "agglomerate"
    # the edits as applied (ids filled in) replay to the same result
    assert apply_edits(detected, replay_edits(detected, edits).edits).particles == a.particles


def test_manual_note_goes_when_the_added_particle_is_deleted():
    detected = _detected(cleaned=False)
    out = apply_edits(detected, [Edit("add_box", class_name="crystal", box=(200, 100, 230, 130)),
                                 Edit("delete", particle_id=5)])
    assert out.detector == "classical" and len(out.particles) == 4


# ------------------------------------------------------------------------------------------------ error paths
@pytest.mark.parametrize("edit, message", [
    (Edit("delete", particle_id=99), "Particle 99 is not in this analysis"),
    (Edit("set_class", particle_id=42, class_name="crystal"), "Particle 42 is not in this analysis"),
    (Edit("set_class", particle_id=1, class_name="crystal"), "Particle 1 is already a crystal"),
    (Edit("add_box", class_name="crystal", box=(300, 20, 330, 40)), r"reaches outside the 320 x 200 px image"),
    (Edit("add_box", class_name="crystal", box=(-1, 20, 10, 40)), "reaches outside"),
    (Edit("add_box", class_name="crystal", box=(50, 20, 40, 40)), "inverted"),
    (Edit("add_box", class_name="crystal", box=(50, 40, 60, 40)), "inverted"),
    (Edit("add_box", class_name="crystal", box=(50, 40, 52, 60)), f"at least {MIN_BOX_PX} x {MIN_BOX_PX} px"),
    (Edit("add_box", class_name="crystal", box=(33, 33, 68, 68)), "covers particle 1, which is already counted"),
    (Edit("add_box", particle_id=3, class_name="crystal", box=(200, 100, 230, 130)), "id 3 is already in use"),
])
def test_an_edit_that_does_not_fit_is_refused_with_a_message(edit, message):
    with pytest.raises(CorrectionError, match=message) as info:
        apply_edits(_detected(), [edit])
    assert isinstance(info.value, CrystalQCError)


def test_deleting_twice_is_refused():
    with pytest.raises(CorrectionError, match="may have been deleted already"):
        apply_edits(_detected(), [Edit("delete", particle_id=2), Edit("delete", particle_id=2)])


def test_a_cleaned_image_of_another_size_is_refused():
    with pytest.raises(CorrectionError, match="cleaned image is 10 x 20 px but the analysis is 320 x 200 px"):
        apply_edits(_detected(), [], cleaned=np.zeros((20, 10), np.float32))


def test_a_non_edit_is_refused():
    with pytest.raises(CorrectionError, match="Expected an Edit"):
        apply_edits(_detected(), [{"kind": "delete", "particle_id": 1}])


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "rename"}, "Unknown correction 'rename'"),
    ({"kind": "delete"}, "needs the particle id"),
    ({"kind": "delete", "particle_id": 0}, "whole number from 1"),
    ({"kind": "delete", "particle_id": True}, "whole number from 1"),
    ({"kind": "delete", "particle_id": 1, "class_name": "crystal"}, "takes no class"),
    ({"kind": "delete", "particle_id": 1, "box": (1, 2, 3, 4)}, "takes no box"),
    ({"kind": "set_class", "particle_id": 1, "class_name": "dust"}, "class must be one of crystal, agglomerate"),
    ({"kind": "add_box", "class_name": "crystal"}, "four whole pixel numbers"),
    ({"kind": "add_box", "class_name": "crystal", "box": (1.5, 2, 3, 4)}, "four whole pixel numbers"),
    ({"kind": "add_box", "class_name": "crystal", "box": (1, 2, 3)}, "four whole pixel numbers"),
    ({"kind": "delete", "particle_id": 1, "user": "a\nb"}, "printable text"),
    ({"kind": "delete", "particle_id": 1, "time": "yesterday"}, "ISO-8601"),
])
def test_malformed_edits_are_refused_when_made(kwargs, message):
    with pytest.raises(CorrectionError, match=message):
        Edit(**kwargs)


def test_check_box_returns_the_box_when_it_fits():
    assert check_box((0, 0, W, H), width=W, height=H) == (0, 0, W, H)


def test_ellipse_in_box_area_and_a_tiny_box():
    assert np.count_nonzero(ellipse_in_box(100, 50)) == pytest.approx(math.pi / 4 * 5000, rel=0.03)
    assert ellipse_in_box(1, 1).all()
    for w in range(1, 12):  # never empty: the centre pixel is always inside
        for h in range(1, 12):
            assert ellipse_in_box(w, h)[h // 2, w // 2]


# ------------------------------------------------------------------------------------------------ JSON
def test_edit_list_round_trips_through_json():
    edits = (Edit("delete", particle_id=2, user="alice", time="2024-05-01T10:00:00+00:00"),
             Edit("add_box", particle_id=5, class_name="agglomerate", box=(1, 2, 30, 40), user="bob",
                  time="2024-05-01T10:01:00+00:00"))
    data = edits_to_json(edits)
    assert edits_from_json(data) == edits
    assert json.loads(data)["edits"][1]["box"] == [1, 2, 30, 40]


@pytest.mark.parametrize("data, message", [
    (b"{not json", "not valid JSON"),
    (b'{"schema": "other", "version": 1, "edits": []}', "not a crystal QC edit list"),
    (b'{"schema": "crystal-qc/edits", "version": 2, "edits": []}', "format version 2"),
    (b'{"schema": "crystal-qc/edits", "version": 1, "edits": {}}', "must be a list"),
    (b'{"schema": "crystal-qc/edits", "version": 1, "edits": [{"kind": "delete"}]}', "missing or unknown fields"),
    (b'{"schema": "crystal-qc/edits", "version": 1, "edits": [{"kind": "delete", "particle_id": "1",'
     b' "class_name": null, "box": null, "user": "", "time": ""}]}', "whole number"),
])
def test_a_damaged_edit_list_is_refused(data, message):
    with pytest.raises(CorrectionError, match=message):
        edits_from_json(data)
