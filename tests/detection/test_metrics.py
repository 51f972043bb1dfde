"""Known-answer tests for detection.metrics (box IoU, one-to-one matching, count accuracy, pooled scores)."""
from __future__ import annotations

import numpy as np
import pytest

from detection.metrics import DetectionScores, box_iou, count_accuracy, match_boxes, score_detections


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
