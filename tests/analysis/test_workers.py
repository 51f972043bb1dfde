"""analysis.workers: mask refinement shared with helper processes gives exactly the sequential result."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

import analysis.workers as wk
from analysis.preprocess import clean_image
from analysis.segment import REFINE_REACH_PX, refine_mask
from detection.synthetic import render_image


# module-level, so a helper process can unpickle them by reference
def refine_with_pid(image, box):
    return os.getpid(), refine_mask(image, box)


def fail_on_box_seven(image, box):
    if int(box[0]) == 7:
        raise ValueError("box seven is refused")
    return int(box[0])


def die_in_helper(image, box):
    if os.getpid() != int(box[1]):  # box[1] carries the test process's pid
        os._exit(3)
    return int(box[0])


@pytest.fixture(scope="module")
def scene():
    rendered, truth = render_image(4242, size=(640, 512), difficulty="medium")
    cleaned = clean_image(rendered.astype(np.float32) / 255.0)
    boxes = [np.asarray(b, np.float32) for b in truth_boxes(truth)]
    assert len(boxes) >= wk.MIN_BOXES
    return cleaned, boxes


def truth_boxes(truth) -> list[list[float]]:
    return [[float(v) + d for v, d in zip(obj["box"], (-1.5, -1.5, 1.5, 1.5))] for obj in truth["objects"]]


@pytest.fixture
def fresh_pool(monkeypatch):
    """Helpers on (one), module state reset before and after, so a test that breaks the pool leaves no trace."""
    monkeypatch.setenv(wk.HELPERS_ENV, "1")
    monkeypatch.setattr(wk, "_disabled_reason", None)
    monkeypatch.setattr(wk, "_pool", None)
    yield
    if wk._pool is not None:
        wk._pool.shutdown(wait=True, cancel_futures=True)


def same(a, b) -> bool:
    return a[:4] == b[:4] and a[4].dtype == b[4].dtype and np.array_equal(a[4], b[4])


def test_helpers_give_the_sequential_result_box_for_box(scene, fresh_pool):
    image, boxes = scene
    sequential = [refine_mask(image, b) for b in boxes]
    shared = wk.map_boxes(refine_with_pid, image, boxes, reach_px=REFINE_REACH_PX)
    pids = {pid for pid, _ in shared}
    assert os.getpid() in pids and len(pids) == 2  # this process and one helper did part of the work
    assert all(same(r, s) for (_, r), s in zip(shared, sequential))


def test_refine_mask_reads_nothing_beyond_its_reach(scene):
    # the helpers' contract: pixels farther than REFINE_REACH_PX from the box do not change refine_mask's result
    image, boxes = scene
    rng = np.random.default_rng(0)
    for b in boxes[:12] + [np.array([0.0, 0.0, 30.5, 20.2], np.float32), np.array([600.3, 490.0, 640.0, 512.0])]:
        garbage = rng.random(image.shape, dtype=np.float32)
        (x0, y0, x1, y1), = wk.box_windows(image.shape, [b], REFINE_REACH_PX)
        garbage[y0:y1, x0:x1] = image[y0:y1, x0:x1]
        assert same(refine_mask(garbage, b), refine_mask(image, b))


def test_box_windows_round_outwards_and_clip():
    assert wk.box_windows((100, 200), [(10.5, 20.2, 30.0, 40.7)], 3) == [(7, 17, 33, 44)]
    assert wk.box_windows((100, 200), [(-5.0, 1.0, 250.0, 99.5)], 10) == [(0, 0, 200, 100)]


def test_few_boxes_stay_in_this_process(scene, fresh_pool):
    image, boxes = scene
    out = wk.map_boxes(refine_with_pid, image, boxes[: wk.MIN_BOXES - 1], reach_px=REFINE_REACH_PX)
    assert {pid for pid, _ in out} == {os.getpid()}
    assert wk._pool is None


def test_an_error_raised_in_a_helper_reaches_the_caller(scene, fresh_pool):
    image, _ = scene
    boxes = [np.array([k, 0, k + 5, 5], np.float32) for k in range(40)]  # box 7 goes to the helper (odd index)
    with pytest.raises(ValueError, match="box seven"):
        wk.map_boxes(fail_on_box_seven, image, boxes, reach_px=0)
    assert wk.helper_count() == 1  # a refusal by fn is not a broken helper


def test_a_dead_helper_is_switched_off_and_its_boxes_done_here(scene, fresh_pool, caplog):
    image, _ = scene
    boxes = [np.array([k, os.getpid(), k + 5, os.getpid() + 5], np.float64) for k in range(40)]
    with caplog.at_level(logging.WARNING, logger="analysis.workers"):
        out = wk.map_boxes(die_in_helper, image, boxes, reach_px=0)
    assert out == list(range(40))
    assert wk.helper_count() == 0 and "switched off" in caplog.text


def test_work_cancelled_by_a_pool_shutdown_is_done_here_without_switching_helpers_off(scene, fresh_pool,
                                                                                      monkeypatch):
    from concurrent.futures import Future

    class Cancelling:
        def submit(self, *args, **kwargs):
            f = Future()
            f.cancel()
            return f

    monkeypatch.setattr(wk, "_get_pool", lambda n: Cancelling())
    image, boxes = scene
    out = wk.map_boxes(refine_with_pid, image, boxes, reach_px=REFINE_REACH_PX)
    assert {pid for pid, _ in out} == {os.getpid()} and len(out) == len(boxes)
    assert wk.helper_count() == 1


@pytest.mark.parametrize("raw, expected", [("0", 0), ("2", 2), ("99", wk.MAX_HELPERS), ("-1", 0)])
def test_helper_count_follows_the_environment(monkeypatch, raw, expected):
    monkeypatch.setattr(wk, "_disabled_reason", None)
    monkeypatch.setenv(wk.HELPERS_ENV, raw)
    assert wk.helper_count() == expected


def test_a_bad_helper_setting_falls_back_to_the_cores(monkeypatch, caplog):
    monkeypatch.setattr(wk, "_disabled_reason", None)
    monkeypatch.setattr(wk, "usable_cores", lambda: 4)
    monkeypatch.setenv(wk.HELPERS_ENV, "many")
    with caplog.at_level(logging.WARNING, logger="analysis.workers"):
        assert wk.helper_count() == 3
    assert "not a number" in caplog.text
    monkeypatch.setattr(wk, "usable_cores", lambda: 1)
    assert wk.helper_count() == 0
