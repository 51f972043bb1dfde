"""Known-answer tests for detection.metrics (box IoU, one-to-one matching, count accuracy, pooled scores, the paired
bootstrap of two detectors)."""
from __future__ import annotations

import numpy as np
import pytest

from detection.metrics import (
    DetectionScores, box_iou, count_accuracy, match_boxes, paired_bootstrap, score_detections,
)


def test_iou_identical_boxes_is_one_and_disjoint_is_zero():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 40]], np.float32)
    b = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == 0.0 and iou[1, 0] == 0.0 and iou[1, 1] == 0.0


def test_iou_known_partial_overlap_and_touching_edges():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [10, 0, 20, 10]])  # half overlap; touching at x = 10 (exclusive edge)
    iou = box_iou(a, b)
    assert iou[0, 0] == pytest.approx(50 / 150)
    assert iou[0, 1] == 0.0


def test_iou_empty_inputs_and_degenerate_boxes():
    assert box_iou(np.zeros((0, 4)), np.array([[0, 0, 1, 1]])).shape == (0, 1)
    assert box_iou(np.array([[5, 5, 5, 9]]), np.array([[0, 0, 10, 10]]))[0, 0] == 0.0


def test_iou_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        box_iou(np.zeros((2, 3)), np.zeros((1, 4)))


def test_match_is_one_to_one_and_maximises_total_iou():
    true = np.array([[0, 0, 10, 10], [8, 0, 18, 10]], np.float64)
    # pred 0 overlaps both truths; greedy-by-pred would steal truth 1 from pred 1
    pred = np.array([[4, 0, 14, 10], [9, 0, 19, 10]], np.float64)
    pi, ti = match_boxes(pred, true, iou_threshold=0.3)
    assert list(zip(pi.tolist(), ti.tolist())) == [(0, 0), (1, 1)]


def test_match_drops_pairs_below_threshold_and_handles_duplicates():
    true = np.array([[0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    pi, ti = match_boxes(pred, true, iou_threshold=0.5)
    assert len(pi) == 1 and ti.tolist() == [0]
    pi, ti = match_boxes(np.array([[0, 0, 10, 10]]), np.array([[6, 0, 16, 10]]), iou_threshold=0.3)
    assert len(pi) == 0  # IoU 0.25


def test_match_rejects_bad_threshold():
    with pytest.raises(ValueError, match="iou_threshold"):
        match_boxes(np.zeros((1, 4)), np.zeros((1, 4)), iou_threshold=0.0)


def test_count_accuracy_formula():
    # image 1: 8 of 10 -> 0.8; image 2: 15 of 10 -> 0.5; image 3: 30 of 10 -> clipped to 0
    assert count_accuracy([8, 15, 30], [10, 10, 10]) == pytest.approx((0.8 + 0.5 + 0.0) / 3)


def test_count_accuracy_zero_truth_and_empty():
    assert count_accuracy([0, 2], [0, 0]) == pytest.approx(0.5)
    assert np.isnan(count_accuracy([], []))


def test_count_accuracy_rejects_mismatch_and_negative():
    with pytest.raises(ValueError, match="one predicted count per image"):
        count_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="negative"):
        count_accuracy([-1], [1])


def test_score_detections_pools_over_images():
    true = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 5, 5]])]
    pred = [np.array([[0, 0, 10, 10], [100, 100, 110, 110]]), np.zeros((0, 4))]
    s = score_detections(pred, true, iou_threshold=0.3)
    assert isinstance(s, DetectionScores)
    assert (s.tp, s.fp, s.fn) == (1, 1, 2)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert s.count_accuracy == pytest.approx((1.0 + 0.0) / 2)


def test_score_detections_rejects_length_mismatch():
    with pytest.raises(ValueError, match="predictions for every image"):
        score_detections([np.zeros((0, 4))], [], iou_threshold=0.3)


def _tallies(rows):
    return np.array(rows, np.int64).reshape(-1, 5)


def test_paired_bootstrap_of_a_detector_against_itself_is_exactly_zero():
    a = _tallies([[8, 2, 2, 10, 10], [5, 0, 5, 5, 10], [0, 3, 4, 3, 4]])
    d = paired_bootstrap(a, a.copy(), draws=200)
    assert (d.f1, d.f1_low, d.f1_high) == (0.0, 0.0, 0.0)
    assert (d.count_accuracy, d.count_accuracy_low, d.count_accuracy_high) == (0.0, 0.0, 0.0)
    assert (d.n_images, d.draws, d.confidence) == (3, 200, 0.95)


def test_paired_bootstrap_known_answer_on_two_images():
    """A misses 2 and finds 2 extra on image 1; B finds image 1 exactly; both find half of image 2.
    Pooled F1: A = 26 / 35, B = 30 / 35; count accuracy: both 1.0 and 0.5. Any draw of images gives B - A in
    [0, 0.2] for F1 (0.2 when image 1 is drawn twice: 32 / 40 against 1, 0 when image 2 is) and exactly 0 for the
    count accuracy."""
    a = _tallies([[8, 2, 2, 10, 10], [5, 0, 5, 5, 10]])
    b = _tallies([[10, 0, 0, 10, 10], [5, 0, 5, 5, 10]])
    d = paired_bootstrap(a, b, draws=500, seed=3)
    assert d.f1 == pytest.approx(30 / 35 - 26 / 35)
    assert 0.0 <= d.f1_low <= d.f1 <= d.f1_high <= 0.2 + 1e-12
    assert d.f1_low == pytest.approx(0.0) and d.f1_high == pytest.approx(0.2)  # both extremes are drawn
    assert (d.count_accuracy, d.count_accuracy_low, d.count_accuracy_high) == (0.0, 0.0, 0.0)
    assert paired_bootstrap(b, a, draws=500, seed=3).f1 == pytest.approx(-d.f1)


def test_paired_bootstrap_separates_a_consistent_gain_from_noise():
    """B finds one more crystal than A on each of 40 images: the interval lies above 0. Where B gains on half of
    the images and loses as much on the others, the interval holds 0."""
    rng = np.random.default_rng(0)
    n_true = rng.integers(20, 60, 40)
    tp_a = n_true - 5
    a = np.stack([tp_a, np.full(40, 2), n_true - tp_a, tp_a + 2, n_true], axis=1)
    better = a.copy()
    better[:, 0] += 1
    better[:, 2] -= 1
    better[:, 3] += 1
    d = paired_bootstrap(a, better, draws=1000)
    assert d.f1 > 0 and d.f1_low > 0 and d.count_accuracy_low > 0

    sign = np.where(np.arange(40) % 2 == 0, 1, -1)
    mixed = a.copy()
    mixed[:, 0] += sign
    mixed[:, 2] -= sign
    mixed[:, 3] += sign
    m = paired_bootstrap(a, mixed, draws=1000)
    assert m.f1_low < 0 < m.f1_high
    assert m.count_accuracy_low < 0 < m.count_accuracy_high


def test_paired_bootstrap_is_reproducible_for_a_seed_and_narrows_with_confidence():
    rng = np.random.default_rng(1)
    n_true = rng.integers(5, 30, 25)
    tp = np.minimum(n_true, rng.integers(0, 30, 25))
    a = np.stack([tp, rng.integers(0, 5, 25), n_true - tp, tp + 2, n_true], axis=1)
    tp_b = np.minimum(n_true, tp + rng.integers(-2, 3, 25)).clip(0)
    b = np.stack([tp_b, a[:, 1], n_true - tp_b, tp_b + a[:, 1], n_true], axis=1)
    first, again = paired_bootstrap(a, b, seed=7), paired_bootstrap(a, b, seed=7)
    assert first == again
    narrow = paired_bootstrap(a, b, seed=7, confidence=0.5)
    assert first.f1_low <= narrow.f1_low <= narrow.f1_high <= first.f1_high
    assert narrow.f1_high - narrow.f1_low < first.f1_high - first.f1_low


@pytest.mark.parametrize("a, b, kwargs, message", [
    (np.zeros((2, 5)), np.zeros((3, 5)), {}, "same images"),
    (np.zeros((2, 4)), np.zeros((2, 4)), {}, "same images"),
    (np.zeros((0, 5)), np.zeros((0, 5)), {}, "at least one image"),
    (_tallies([[1, 0, 0, 1, 1]]), _tallies([[1, 0, 1, 1, 2]]), {}, "true counts differ"),
    (np.zeros((2, 5)), np.zeros((2, 5)), {"draws": 0}, "draws >= 1"),
    (np.zeros((2, 5)), np.zeros((2, 5)), {"confidence": 1.0}, "confidence"),
])
def test_paired_bootstrap_refuses_tallies_that_cannot_be_compared(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)
