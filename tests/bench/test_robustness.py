"""bench/robustness.py: the re-imaging transforms and the truth that follows them (no model needed)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection.evaluate import LabelledImage

_SPEC = importlib.util.spec_from_file_location("bench_robustness",
                                               Path(__file__).resolve().parents[2] / "bench" / "robustness.py")
robustness = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(robustness)


def _item() -> LabelledImage:
    img = np.full((100, 160), 180, np.uint8)
    cv2.rectangle(img, (40, 20), (79, 59), 60, -1)
    ok, png = cv2.imencode(".png", img)
    assert ok
    return LabelledImage(name="t.png", data=png.tobytes(), boxes=np.array([[40.0, 20.0, 80.0, 60.0]]),
                         classes=("crystal",), ecd_px=np.array([45.0]))


def _grey(item: LabelledImage) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(item.data, np.uint8), cv2.IMREAD_GRAYSCALE)


def test_scaling_moves_the_truth_with_the_pixels():
    item = _item()
    half = robustness.transform_item(item, "scale", 0.5)
    assert _grey(half).shape == (50, 80)
    assert half.boxes.tolist() == [[20.0, 10.0, 40.0, 30.0]] and half.ecd_px.tolist() == [22.5]
    dark = np.argwhere(_grey(half) < 120)
    assert dark.min(0).tolist() == [10, 20] and dark.max(0).tolist() == [29, 39]  # the square, where the box says
    double = robustness.transform_item(item, "scale", 2.0)
    assert _grey(double).shape == (200, 320) and double.boxes.tolist() == [[80.0, 40.0, 160.0, 120.0]]


@pytest.mark.parametrize("kind,value", [("contrast", 0.5), ("gamma", 1.6), ("noise", 8.0), ("blur", 1.0),
                                        ("jpeg", 50), ("gain", 1.5), ("none", 0)])
def test_other_transforms_keep_the_truth_and_change_only_the_grey_levels(kind, value):
    item = _item()
    out = robustness.transform_item(item, kind, value)
    assert out.boxes.tolist() == item.boxes.tolist() and out.ecd_px.tolist() == item.ecd_px.tolist()
    before, after = _grey(item).astype(float), _grey(out).astype(float)
    assert after.shape == before.shape
    assert (np.array_equal(after, before)) == (kind == "none")
    if kind == "gain":  # the background (180) clips at white, the square (60) scales
        assert after[5, 5] == 255 and after[40, 60] == 90
    if kind == "contrast":  # the step between square and background halves
        assert after[40, 60] - after[5, 5] == pytest.approx((before[40, 60] - before[5, 5]) * value, abs=1)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_turns_the_boxes_with_the_pixels(degrees):
    item = _item()
    out = robustness.transform_item(item, "rotate", degrees)
    grey = _grey(out)
    assert grey.shape == ((160, 100) if degrees != 180 else (100, 160))
    dark = np.argwhere(grey < 120)  # the square, (row, col)
    (y0, x0), (y1, x1) = dark.min(0), dark.max(0) + 1
    assert out.boxes.tolist() == [[float(x0), float(y0), float(x1), float(y1)]]
    assert out.ecd_px.tolist() == item.ecd_px.tolist()
    with pytest.raises(ValueError, match="90, 180 or 270"):
        robustness.transform_item(item, "rotate", 45)


def test_an_unknown_transform_is_refused():
    with pytest.raises(ValueError, match="unknown transform"):
        robustness.transform_grey(np.zeros((8, 8), np.uint8), "shear", 0.1)


@pytest.mark.parametrize("name, parsed", [("none", ("none", 0)), ("scale0.55", ("scale", 0.55)),
                                          ("contrast0.5", ("contrast", 0.5)), ("jpeg50", ("jpeg", 50.0)),
                                          ("rotate90", ("rotate", 90.0)), ("gain1.45", ("gain", 1.45))])
def test_any_transform_can_be_named(name, parsed):
    assert robustness.parse_transform(name) == parsed
    assert robustness.transform_name(*parsed) == name


@pytest.mark.parametrize("bad", ["shear0.1", "scale", "scalex", ""])
def test_unknown_transform_names_are_refused(bad):
    with pytest.raises(ValueError, match="unknown transform"):
        robustness.parse_transform(bad)
