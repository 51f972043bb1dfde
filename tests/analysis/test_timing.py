"""analysis.timing: stage clocks are silent unless asked for, add up repeated stages, and cover the pipeline."""
from __future__ import annotations

import time

import cv2
import pytest

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from analysis.timing import stage, stage_clock
from tests.analysis.test_rescale import crystal_field


def test_a_stage_outside_a_clock_records_nothing_and_runs_its_block():
    ran = []
    with stage("clean"):
        ran.append(1)
    with stage_clock() as clock:
        pass
    assert ran == [1] and clock == {}


def test_a_clock_adds_up_a_stage_that_runs_twice():
    with stage_clock() as clock:
        with stage("detect"):
            time.sleep(0.02)
        with stage("detect"):
            time.sleep(0.02)
        with stage("focus"):
            pass
    assert set(clock) == {"detect", "focus"}
    assert 0.04 <= clock["detect"] < 1.0 and 0.0 <= clock["focus"] < clock["detect"]


def test_a_stage_that_raises_is_still_timed_and_the_clock_is_closed_afterwards():
    with stage_clock() as clock:
        with pytest.raises(ValueError):
            with stage("load"):
                raise ValueError("bad image")
    assert "load" in clock
    with stage("load"):  # no clock active any more: nothing is added to the closed one
        pass
    assert list(clock) == ["load"]


def test_nested_clocks_keep_their_own_stages():
    with stage_clock() as outer:
        with stage("load"):
            pass
        with stage_clock() as inner:
            with stage("clean"):
                pass
        with stage("measure"):
            pass
    assert set(outer) == {"load", "measure"} and set(inner) == {"clean"}


def _png(img) -> bytes:
    ok, data = cv2.imencode(".png", (img * 255).round().astype("uint8"))
    assert ok
    return data.tobytes()


def test_the_pipeline_marks_every_stage_and_they_fit_in_the_analysis_time():
    img, _ = crystal_field(1, radius=(13.0, 17.0), n=12)
    with stage_clock() as clock:
        result = analyze_bytes(_png(img), name="field.png", detector=ClassicalDetector())
    assert {"load", "exposure", "clean", "detect", "focus", "exclude", "measure"} <= set(clock)
    assert "resize" not in clock  # ordinary crystals: one pass at the image's own size
    assert all(v >= 0 for v in clock.values())
    assert sum(clock.values()) <= result.seconds


def test_the_enlarged_pass_of_a_small_crystal_image_is_timed_too():
    img, _ = crystal_field(0, radius=(5.5, 7.5))
    with stage_clock() as once:
        analyze_bytes(_png(img), name="small.png", detector=ClassicalDetector(),
                      options=AnalysisOptions(upscale_small=False))
    with stage_clock() as twice:
        result = analyze_bytes(_png(img), name="small.png", detector=ClassicalDetector())
    assert any("enlarged" in note for note in result.meta.notes)
    assert "resize" in twice and "resize" not in once
