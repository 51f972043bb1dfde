"""Tile geometry and seam merging (detection.tiling)."""
from __future__ import annotations

import numpy as np
import pytest

from detection.tiling import (coarse_support, merge_scales, merge_tile_detections, outside_boxes, overlap_over_smaller,
                              plan_tiles, round_up, tile_boxes, truncated_mask)


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(1112, 1000, 640, 128), (2592, 1944, 640, 128), (640, 640, 640, 96), (1300, 641, 640, 0), (5000, 700, 512, 200)],
)
def test_tiles_cover_image_with_constant_size_and_overlap(width, height, tile, overlap):
    tiles = tile_boxes(width, height, tile=tile, overlap=overlap)
    assert tiles.dtype == np.int64 and tiles.shape[1] == 4
    assert np.all(tiles[:, 2] - tiles[:, 0] == min(tile, width))
    assert np.all(tiles[:, 3] - tiles[:, 1] == min(tile, height))
    assert tiles[:, :2].min() == 0 and tiles[:, 2].max() == width and tiles[:, 3].max() == height
    cover = np.zeros((height, width), np.int32)
    for x0, y0, x1, y1 in tiles:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    # neighbours along each axis overlap by at least `overlap`
    for axis in (0, 1):
        starts = np.unique(tiles[:, axis])
        ends = np.unique(tiles[:, axis + 2])
        assert np.all(ends[:-1] - starts[1:] >= overlap)


def test_tile_layout_known_answer():
    tiles = tile_boxes(1112, 1000, tile=640, overlap=128)
    np.testing.assert_array_equal(
        tiles, [[0, 0, 640, 640], [472, 0, 1112, 640], [0, 360, 640, 1000], [472, 360, 1112, 1000]]
    )


def test_image_smaller_than_tile_gives_one_tile_of_image_size():
    np.testing.assert_array_equal(tile_boxes(300, 200, tile=640, overlap=96), [[0, 0, 300, 200]])
    # smaller along one axis only
    tiles = tile_boxes(1000, 200, tile=640, overlap=96)
    np.testing.assert_array_equal(tiles, [[0, 0, 640, 200], [360, 0, 1000, 200]])


def test_non_square_tile():
    tiles = tile_boxes(1000, 1000, tile=(480, 640), overlap=64)  # (height, width)
    assert np.all(tiles[:, 2] - tiles[:, 0] == 640) and np.all(tiles[:, 3] - tiles[:, 1] == 480)


@pytest.mark.parametrize(
    ("w", "h", "tile", "overlap"), [(0, 10, 64, 8), (10, 10, 0, 0), (100, 100, 64, 64), (100, 100, 64, -1)]
)
def test_tile_boxes_errors(w, h, tile, overlap):
    with pytest.raises(ValueError):
        tile_boxes(w, h, tile=tile, overlap=overlap)


# Two tiles side by side: [0, 100) and [60, 160) in x, full height 100.
TILES = np.array([[0, 0, 100, 100], [60, 0, 160, 100]])


def _merge(boxes, scores, cls, tile_idx, tiles=TILES, **kw):
    kw.setdefault("iou_threshold", 0.5)
    kw.setdefault("edge_margin_px", 2.0)
    return merge_tile_detections(
        np.asarray(boxes, np.float32), np.asarray(scores, np.float32), cls, np.asarray(tile_idx), tiles, **kw
    )


def test_truncated_mask_ignores_image_border():
    boxes = np.array([[0, 10, 20, 30], [80, 10, 100, 30], [60, 10, 70, 30], [140, 10, 160, 30]], np.float32)
    got = truncated_mask(boxes, np.array([0, 0, 1, 1]), TILES, edge_margin_px=2.0)
    np.testing.assert_array_equal(got, [False, True, True, False])


def test_seam_object_seen_whole_in_one_tile_is_counted_once():
    # object x 70..95: whole in both tiles -> duplicate in the overlap
    keep, boxes = _merge([[70, 10, 95, 30], [70.5, 10, 95, 30.5]], [0.8, 0.9], None, [0, 1])
    assert keep.tolist() == [1]
    # object x 40..90: whole in tile 0, cut at x=60 in tile 1 -> the whole box wins even with a lower score
    keep, boxes = _merge([[40, 10, 90, 30], [60, 10, 90, 30]], [0.6, 0.95], None, [0, 1])
    assert keep.tolist() == [0]
    np.testing.assert_allclose(boxes, [[40, 10, 90, 30]])


def test_object_wider_than_overlap_is_joined_from_its_parts():
    # object x 30..130: cut in both tiles (tile 0 ends at 100, tile 1 starts at 60)
    keep, boxes = _merge([[30, 10, 100, 30], [60, 11, 130, 30]], [0.7, 0.8], None, [0, 1])
    assert keep.tolist() == [1]
    np.testing.assert_allclose(boxes, [[30, 10, 130, 30]])


def test_distinct_objects_are_not_merged():
    # different objects near the seam (different rows) and a same-row pair that do not agree in the overlap
    boxes = [[70, 10, 99, 20], [70, 50, 99, 60], [75, 80, 100, 95], [60, 80, 72, 95]]
    keep, _ = _merge(boxes, [0.9, 0.8, 0.7, 0.6], None, [0, 1, 0, 1])
    assert sorted(keep.tolist()) == [0, 1, 2, 3]


def test_class_aware_merge_keeps_different_classes():
    boxes = [[40, 10, 90, 30], [60, 10, 90, 30]]
    keep, _ = _merge(boxes, [0.6, 0.95], np.array([0, 1]), [0, 1])
    assert sorted(keep.tolist()) == [0, 1]
    keep, _ = _merge(boxes, [0.6, 0.95], np.array([1, 1]), [0, 1])
    assert keep.tolist() == [0]


def test_partial_box_inside_full_box_is_removed():
    # the partial box in tile 1 is too poor to match in the overlap (IoU there < 0.5) but lies inside the full box
    keep, _ = _merge([[20, 10, 90, 40], [60, 15, 80, 25]], [0.6, 0.9], None, [0, 1])
    assert keep.tolist() == [0]


def test_object_at_tile_corner_seen_by_four_tiles_is_one_box():
    tiles = tile_boxes(160, 160, tile=100, overlap=40)  # starts 0 and 60 on both axes
    assert len(tiles) == 4
    obj = np.array([40, 45, 120, 110], np.float32)
    parts, idx = [], []
    for t, (x0, y0, x1, y1) in enumerate(tiles):
        parts.append([max(obj[0], x0), max(obj[1], y0), min(obj[2], x1), min(obj[3], y1)])
        idx.append(t)
    keep, boxes = _merge(parts, [0.5, 0.6, 0.7, 0.8], None, idx, tiles=tiles)
    assert keep.tolist() == [3]
    np.testing.assert_allclose(boxes, [obj])


def test_merge_empty_and_errors():
    keep, boxes = _merge(np.zeros((0, 4)), np.zeros(0), None, np.zeros(0, np.int64))
    assert keep.shape == (0,) and boxes.shape == (0, 4)
    with pytest.raises(ValueError):
        _merge([[0, 0, 1, 1]], [0.5, 0.6], None, [0])
    with pytest.raises(ValueError):
        _merge([[0, 0, 1, 1]], [0.5], None, [5])


def test_merge_does_not_modify_inputs():
    boxes = np.array([[30, 10, 100, 30], [60, 11, 130, 30]], np.float32)
    before = boxes.copy()
    merge_tile_detections(boxes, np.array([0.7, 0.8]), None, np.array([0, 1]), TILES, iou_threshold=0.5,
                          edge_margin_px=2.0)
    np.testing.assert_array_equal(boxes, before)


# ---------------------------------------------------------------- which passes a model runs (plan_tiles)
PLAN = {"stride": 32, "overlap": 128, "single_pass_max_pixels": 3_000_000}


def test_round_up_known_answers():
    assert [round_up(v, 32) for v in (1, 31, 32, 33, 1944, 2592)] == [32, 32, 32, 64, 1952, 2592]


def test_plan_fixed_model_uses_tiles_of_its_input_size():
    tiles, input_hw = plan_tiles(2592, 1944, fixed_input=(640, 640), **PLAN)
    np.testing.assert_array_equal(tiles, tile_boxes(2592, 1944, tile=640, overlap=128))
    assert input_hw == (640, 640) and len(tiles) == 20


def test_plan_dynamic_model_runs_the_whole_image_padded_to_the_stride():
    tiles, input_hw = plan_tiles(1280, 1024, fixed_input=None, **PLAN)
    np.testing.assert_array_equal(tiles, [[0, 0, 1280, 1024]])
    assert input_hw == (1024, 1280)
    tiles, input_hw = plan_tiles(2592, 1944, fixed_input=None, **{**PLAN, "single_pass_max_pixels": 6_000_000})
    np.testing.assert_array_equal(tiles, [[0, 0, 2592, 1944]])
    assert input_hw == (1952, 2592)  # (height, width); 1944 padded up to 61 x 32
    tiles, input_hw = plan_tiles(1112, 1000, fixed_input=None, **PLAN)
    np.testing.assert_array_equal(tiles, [[0, 0, 1112, 1000]])
    assert input_hw == (1024, 1120)
    # a small image is padded, never enlarged
    assert plan_tiles(50, 20, fixed_input=None, **PLAN)[1] == (32, 64)


def test_plan_dynamic_model_splits_an_image_above_the_budget_into_the_fewest_pixels():
    # 2592 x 1944 pads to 5.06 MP > 3 MP: two 1360 x 1944 tiles (2 x 2.69 MP) beat two rows (2 x 2.74 MP)
    tiles, input_hw = plan_tiles(2592, 1944, fixed_input=None, **PLAN)
    np.testing.assert_array_equal(tiles, [[0, 0, 1360, 1944], [1232, 0, 2592, 1944]])
    assert input_hw == (1952, 1376)
    tiles, input_hw = plan_tiles(2592, 1944, fixed_input=None, **{**PLAN, "single_pass_max_pixels": 1_500_000})
    assert len(tiles) == 4 and input_hw == (1056, 1376)  # 2 x 2 tiles of 1360 x 1036
    # a long strip lower than the overlap stays one row
    tiles, input_hw = plan_tiles(10000, 100, fixed_input=None, **PLAN)
    assert len(tiles) == 1 and input_hw == (128, 10016)


@pytest.mark.parametrize(
    ("width", "height", "budget"),
    [(4000, 3000, 3_000_000), (2592, 1944, 1_000_000), (7000, 5000, 2_000_000), (1300, 641, 500_000)],
)
def test_plan_dynamic_tiles_fit_the_budget_cover_the_image_and_overlap(width, height, budget):
    tiles, (in_h, in_w) = plan_tiles(width, height, fixed_input=None, stride=32, overlap=128,
                                     single_pass_max_pixels=budget)
    assert in_h * in_w <= budget and in_h % 32 == 0 and in_w % 32 == 0
    assert np.all(tiles[:, 2] - tiles[:, 0] <= in_w) and np.all(tiles[:, 3] - tiles[:, 1] <= in_h)
    cover = np.zeros((height, width), np.int32)
    for x0, y0, x1, y1 in tiles:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    for axis in (0, 1):
        starts, ends = np.unique(tiles[:, axis]), np.unique(tiles[:, axis + 2])
        assert np.all(ends[:-1] - starts[1:] >= 128)


def test_plan_tiles_errors():
    with pytest.raises(ValueError):
        plan_tiles(0, 10, fixed_input=None, **PLAN)
    with pytest.raises(ValueError):
        plan_tiles(100, 100, fixed_input=None, **{**PLAN, "stride": 0})
    with pytest.raises(ValueError, match="no grid"):
        plan_tiles(5000, 5000, fixed_input=None, **{**PLAN, "single_pass_max_pixels": 128 * 128})


# ---------------------------------------------------------------- merging a native and a downscaled pass


def _dets(boxes, scores, classes):
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(classes, np.int32)


def test_merge_scales_drops_the_parts_of_a_large_object():
    fine = _dets([[110, 110, 150, 140], [100, 100, 130, 120], [400, 400, 420, 420]], [0.9, 0.6, 0.5], [0, 0, 0])
    coarse = _dets([[90, 90, 210, 190]], [0.4], [0])
    boxes, scores, cls = merge_scales(fine, coarse, iou_threshold=0.5)
    # both facets lie inside the large box (even the one scoring higher than it); the far crystal stays
    assert boxes.tolist() == [[400, 400, 420, 420], [90, 90, 210, 190]]
    assert scores.tolist() == pytest.approx([0.5, 0.4])
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and cls.dtype == np.int32


def test_merge_scales_keeps_an_object_found_by_both_passes_once_with_the_better_score():
    fine = _dets([[100, 100, 200, 180]], [0.7], [0])
    coarse = _dets([[98, 102, 204, 182]], [0.8], [1])
    boxes, scores, cls = merge_scales(fine, coarse, iou_threshold=0.5)
    assert boxes.tolist() == [[98, 102, 204, 182]] and cls.tolist() == [1]
    # per-class NMS keeps both when the classes differ
    assert len(merge_scales(fine, coarse, iou_threshold=0.5, class_agnostic=False)[0]) == 2


def test_merge_scales_keeps_boxes_only_partly_inside_or_of_similar_size():
    coarse = _dets([[100, 100, 200, 200]], [0.5], [0])
    # a facet supports the large box; a neighbour reaching into it (1/3 inside) is another object and stays
    fine = _dets([[120, 120, 150, 150], [180, 140, 240, 170]], [0.8, 0.9], [0, 0])
    boxes, _, _ = merge_scales(fine, coarse, iou_threshold=0.5)
    assert boxes.tolist() == [[180, 140, 240, 170], [100, 100, 200, 200]]
    similar = _dets([[105, 105, 195, 190]], [0.9], [0])  # inside, but not 2 x smaller: the same object, NMS decides
    boxes, scores, _ = merge_scales(similar, coarse, iou_threshold=0.5)
    assert boxes.tolist() == [[105, 105, 195, 190]] and scores.tolist() == pytest.approx([0.9])


def test_merge_scales_drops_a_large_box_the_native_pass_does_not_support():
    # a large blurred crystal: boxed at half scale, but nothing sharp in it at native scale
    coarse = _dets([[100, 100, 200, 200], [300, 300, 420, 380]], [0.7, 0.6], [0, 0])
    fine = _dets([[310, 310, 340, 330], [150, 250, 170, 270]], [0.5, 0.5], [0, 0])
    boxes, _, _ = merge_scales(fine, coarse, iou_threshold=0.5)
    assert boxes.tolist() == [[300, 300, 420, 380], [150, 250, 170, 270]]


def test_merge_scales_with_an_empty_pass():
    some = _dets([[0, 0, 10, 10]], [0.5], [0])
    none = _dets([], [], [])
    assert merge_scales(some, none, iou_threshold=0.5)[0].tolist() == [[0, 0, 10, 10]]
    assert merge_scales(none, some, iou_threshold=0.5)[0].shape == (0, 4)  # nothing supports the coarse box
    assert merge_scales(none, none, iou_threshold=0.5)[0].shape == (0, 4)


def test_coarse_support_names_the_supported_boxes_and_their_parts():
    coarse = np.array([[100, 100, 200, 200], [300, 300, 420, 380], [500, 500, 540, 540]], float)
    # a facet inside the first; the third matched by a fine box of the same size; nothing sharp in the second
    fine = np.array([[120, 120, 150, 140], [501, 501, 540, 540], [150, 250, 170, 270]], float)
    supported, is_part = coarse_support(fine, coarse, iou_threshold=0.5)
    assert supported.tolist() == [True, False, True]
    assert is_part.tolist() == [[True, False, False], [False, False, False], [False, False, False]]
    supported, is_part = coarse_support(np.zeros((0, 4)), coarse, iou_threshold=0.5)
    assert supported.tolist() == [False] * 3 and is_part.shape == (0, 3)


def test_overlap_over_smaller_and_outside_boxes():
    big = np.array([[0, 0, 100, 100]], float)
    cands = np.array([[10, 10, 30, 30], [90, 90, 130, 130], [200, 200, 210, 210]], float)
    np.testing.assert_allclose(overlap_over_smaller(cands, big)[:, 0], [1.0, 100 / 1600, 0.0])
    assert outside_boxes(cands, big, max_overlap=0.3).tolist() == [False, True, True]
    assert outside_boxes(cands, np.zeros((0, 4)), max_overlap=0.3).tolist() == [True] * 3
    assert outside_boxes(np.zeros((0, 4)), big, max_overlap=0.3).shape == (0,)
