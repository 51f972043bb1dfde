"""Tests for analysis.labels: YOLO label lines with known answers, which particles are labelled, data.yaml."""
from __future__ import annotations

import dataclasses

import pytest

from analysis.labels import CLASS_NAMES, data_yaml, yolo_labels
from analysis.records import ImageMeta, ImageResult, Particle


def _p(pid: int, box: tuple[int, int, int, int], *, cls: str = "crystal", border: bool = False,
       reason: str | None = None) -> Particle:
    x0, y0, x1, y1 = box
    return Particle(
        particle_id=pid, class_name=cls, confidence=0.9, x_min=x0, y_min=y0, x_max=x1, y_max=y1, area_px=10.0,
        perimeter_px=12.0, ecd_px=3.5, feret_max_px=4.0, feret_min_px=3.0, aspect_ratio=0.75, circularity=0.9,
        solidity=0.95, focus_score=5.0, on_border=border, excluded_reason=reason,
    )  # fmt: skip


def _result(particles, *, width=200, height=100, include_border=False) -> ImageResult:
    meta = ImageMeta(format="png", width=width, height=height, bit_depth=8, channels=1)
    return ImageResult("a.png", meta, tuple(particles), None, include_border, "classical", 0.1)


def test_class_names_match_what_training_expects():
    from detection.train import EXPECTED_NAMES

    assert CLASS_NAMES == ("crystal", "agglomerate") == EXPECTED_NAMES


def test_known_answer_lines_normalised_to_the_image_size():
    # 200 x 100 image; box 20..60 x 10..30 -> centre (40, 20) -> (0.2, 0.2), size 40 x 20 -> (0.2, 0.2)
    # agglomerate box 100..200 x 50..100 -> centre (150, 75) -> (0.75, 0.75), size (0.5, 0.5)
    text = yolo_labels(_result([_p(1, (20, 10, 60, 30)), _p(2, (100, 50, 200, 100), cls="agglomerate")]))
    assert text == ("0 0.200000 0.200000 0.200000 0.200000\n"
                    "1 0.750000 0.750000 0.500000 0.500000\n")


def test_odd_sizes_are_rounded_to_six_decimals():
    text = yolo_labels(_result([_p(1, (0, 0, 1, 1))], width=3, height=7))
    assert text == "0 0.166667 0.071429 0.333333 0.142857\n"


def test_excluded_mimics_are_not_labelled_but_border_particles_are():
    particles = [_p(1, (0, 0, 10, 10), border=True), _p(2, (50, 50, 60, 60), reason="dust"),
                 _p(3, (70, 20, 90, 40), reason="bubble"), _p(4, (120, 20, 130, 40), reason="out_of_focus")]
    for include_border in (False, True):  # a counting rule only: the cut crystal is a real object either way
        lines = yolo_labels(_result(particles, include_border=include_border)).splitlines()
        assert lines == ["0 0.025000 0.050000 0.050000 0.100000"]


def test_no_labelled_particle_gives_an_empty_file():
    assert yolo_labels(_result([])) == ""
    assert yolo_labels(_result([_p(1, (5, 5, 9, 9), reason="fibre")])) == ""


def test_class_order_follows_the_classes_argument():
    result = _result([_p(1, (20, 10, 60, 30)), _p(2, (100, 50, 200, 100), cls="agglomerate")])
    lines = yolo_labels(result, classes=("agglomerate", "crystal")).splitlines()
    assert [line.split()[0] for line in lines] == ["1", "0"]


def test_a_counted_class_missing_from_classes_is_refused_not_dropped():
    result = _result([_p(1, (20, 10, 60, 30)), _p(2, (100, 50, 200, 100), cls="agglomerate")])
    with pytest.raises(ValueError, match="particle 2 is a 'agglomerate'"):
        yolo_labels(result, classes=("crystal",))


@pytest.mark.parametrize("classes", [(), ("crystal", "crystal")])
def test_bad_classes_are_refused(classes):
    with pytest.raises(ValueError, match="distinct class names"):
        yolo_labels(_result([]), classes=classes)


def test_a_box_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="particle 1: box .* not inside the 200 x 100 px image"):
        yolo_labels(_result([_p(1, (150, 50, 201, 60))]))


def test_a_zero_sized_image_is_refused():
    result = _result([])
    result = dataclasses.replace(result, meta=dataclasses.replace(result.meta, width=0))
    with pytest.raises(ValueError, match="not positive"):
        yolo_labels(result)


def _parse_simple_yaml(text: str) -> dict:
    """The subset data_yaml writes: comments, ``key: value`` lines and one ``names:`` block of ``  id: name``."""
    raw: dict = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().partition(": ") if not line.endswith(":") else (line[:-1], "", "")
        if line.startswith("  "):
            raw["names"][int(key)] = value
        elif key == "names":
            raw["names"] = {}
        else:
            raw[key] = int(value) if value.isdigit() else value
    return raw


def test_data_yaml_is_accepted_by_the_training_config_check(tmp_path):
    from detection.train import check_data_config

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    raw = _parse_simple_yaml(data_yaml())
    assert raw == {"path": ".", "train": "images", "val": "images", "nc": 2, "names": {0: "crystal", 1: "agglomerate"}}
    clean = check_data_config(raw, yaml_dir=tmp_path)
    assert clean["train"] == clean["val"] == str((tmp_path / "images").resolve())
    assert clean["images"] == {"train": 1, "val": 1}
