"""Known-answer tests for YOLO pre/post-processing (detection.yolo)."""
from __future__ import annotations

import numpy as np
import pytest

from detection.yolo import (
    PAD_VALUE,
    centre_padding,
    decode_output,
    letterbox,
    nms,
    padded_batch,
    pairwise_iou,
    to_input_tensor,
    unletterbox_boxes,
)


def test_letterbox_pads_small_image_centred_without_scaling():
    img = np.random.default_rng(0).random((300, 500), dtype=np.float32)
    before = img.copy()
    out, scale, (px, py) = letterbox(img, size=(640, 640))
    assert out.shape == (640, 640) and out.dtype == np.float32
    assert scale == 1.0 and (px, py) == (70.0, 170.0)
    np.testing.assert_array_equal(out[170:470, 70:570], img)
    assert np.all(out[:170] == np.float32(PAD_VALUE)) and np.all(out[:, 570:] == np.float32(PAD_VALUE))
    np.testing.assert_array_equal(img, before)  # input untouched


def test_letterbox_shrinks_large_image_and_boxes_round_trip():
    img = np.zeros((800, 1280), np.float32)
    img[100:300, 200:600] = 1.0  # object box (200, 100, 600, 300)
    out, scale, pad = letterbox(img, size=(640, 640))
    assert scale == pytest.approx(0.5)
    assert pad == (0.0, 120.0)
    ys, xs = np.nonzero(out > 0.5)
    in_box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    np.testing.assert_allclose(in_box, [[100, 170, 300, 270]], atol=1)
    back = unletterbox_boxes(in_box, scale=scale, pad=pad)
    np.testing.assert_allclose(back, [[200, 100, 600, 300]], atol=2)


def test_letterbox_upscale_only_when_allowed():
    img = np.ones((100, 200), np.float32)
    _, scale, _ = letterbox(img, size=(640, 640))
    assert scale == 1.0
    out, scale, pad = letterbox(img, size=(640, 640), allow_upscale=True)
    assert scale == pytest.approx(3.2) and pad == (0.0, 160.0)
    assert out[160:480].min() == 1.0


def test_letterbox_odd_padding_puts_extra_pixel_right():
    out, _, (px, py) = letterbox(np.ones((640, 499), np.float32), size=(640, 640))
    assert px == 70.0 and py == 0.0  # 141 px of padding: 70 left, 71 right
    assert out[:, 70].min() == 1.0 and out[:, 568].min() == 1.0
    assert out[:, 69].max() == np.float32(PAD_VALUE) and out[:, 569].max() == np.float32(PAD_VALUE)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((0, 5), np.float32)])
def test_letterbox_rejects_bad_image(bad):
    with pytest.raises(ValueError):
        letterbox(bad, size=(64, 64))


def test_letterbox_rejects_bad_size():
    with pytest.raises(ValueError):
        letterbox(np.zeros((4, 4), np.float32), size=(0, 64))


def test_to_input_tensor_replicates_grey_to_rgb():
    a = np.full((4, 6), 0.25, np.float32)
    b = np.arange(24, dtype=np.float32).reshape(4, 6) / 24
    t = to_input_tensor([a, b])
    assert t.shape == (2, 3, 4, 6) and t.dtype == np.float32 and t.flags.c_contiguous
    for ch in range(3):
        np.testing.assert_array_equal(t[1, ch], b)
        np.testing.assert_array_equal(t[0, ch], a)


def test_to_input_tensor_errors():
    with pytest.raises(ValueError):
        to_input_tensor([])
    with pytest.raises(ValueError):
        to_input_tensor([np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32)])
    with pytest.raises(ValueError):
        to_input_tensor([np.zeros((4, 4, 3), np.float32)])


def test_decode_output_known_answer():
    # batch of 2, 2 classes, 4 anchors
    raw = np.zeros((2, 6, 4), np.float32)
    raw[0, :, 0] = [50, 40, 20, 10, 0.9, 0.1]  # class 0, box (40, 35, 60, 45)
    raw[0, :, 1] = [10, 10, 4, 4, 0.2, 0.25]  # not above threshold
    raw[0, :, 2] = [100, 100, 10, 20, 0.1, 0.6]  # class 1, box (95, 90, 105, 110)
    raw[1, :, 3] = [5, 6, 2, 2, 0.0, 0.26]
    out = decode_output(raw, n_classes=2, conf_threshold=0.25)
    assert len(out) == 2
    boxes, scores, cls = out[0]
    np.testing.assert_allclose(boxes, [[40, 35, 60, 45], [95, 90, 105, 110]])
    np.testing.assert_allclose(scores, [0.9, 0.6])
    np.testing.assert_array_equal(cls, [0, 1])
    assert boxes.dtype == np.float32 and cls.dtype == np.int32
    boxes1, scores1, cls1 = out[1]
    np.testing.assert_allclose(boxes1, [[4, 5, 6, 7]])
    np.testing.assert_array_equal(cls1, [1])


def test_decode_output_empty_and_shape_error():
    raw = np.zeros((1, 5, 10), np.float32)
    boxes, scores, cls = decode_output(raw, n_classes=1, conf_threshold=0.25)[0]
    assert boxes.shape == (0, 4) and scores.shape == (0,) and cls.shape == (0,)
    with pytest.raises(ValueError):
        decode_output(raw, n_classes=2, conf_threshold=0.25)


def test_nms_known_answer():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best
            [1, 0, 11, 10],  # 1: IoU 0.818 with 0 -> dropped
            [5, 0, 15, 10],  # 2: IoU 0.333 with 0 -> kept
            [50, 50, 60, 60],  # 3: alone
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.5], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold=0.5), [0, 2, 3])
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold=0.3), [0, 3])
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold=0.5, max_det=2), [0, 2])


def test_nms_class_aware():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.6, 0.9, 0.8], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, iou_threshold=0.5), [1])
    kept = nms(boxes, scores, iou_threshold=0.5, class_ids=np.array([0, 1, 1]))
    np.testing.assert_array_equal(kept, [1, 0])


def test_nms_empty_and_errors():
    assert nms(np.zeros((0, 4)), np.zeros(0), iou_threshold=0.5).shape == (0,)
    with pytest.raises(ValueError):
        nms(np.zeros((2, 4)), np.zeros(3), iou_threshold=0.5)
    with pytest.raises(ValueError):
        nms(np.zeros((2, 4)), np.zeros(2), iou_threshold=0.5, class_ids=np.zeros(1))


def test_nms_matches_bruteforce_on_random_boxes():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (200, 2))
    wh = rng.uniform(5, 30, (200, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.random(200).astype(np.float32)
    kept = nms(boxes, scores, iou_threshold=0.4)
    iou = pairwise_iou(boxes, boxes)
    expected = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou[i, j] <= 0.4 for j in expected):
            expected.append(i)
    np.testing.assert_array_equal(kept, expected)


def test_unletterbox_inverse_of_letterbox_mapping():
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    scale, pad = 0.5, (3.0, 7.0)
    fwd = boxes * scale + np.array([3, 7, 3, 7], np.float32)
    np.testing.assert_allclose(unletterbox_boxes(fwd, scale=scale, pad=pad), boxes)


def test_padded_batch_equals_letterbox_without_scaling_and_replicates_channels():
    rng = np.random.default_rng(1)
    crops = [rng.random((300, 500), dtype=np.float32), rng.random((64, 64), dtype=np.float32)]
    before = [c.copy() for c in crops]
    x, pads = padded_batch(crops, size=(320, 512))
    assert x.shape == (2, 3, 320, 512) and x.dtype == np.float32 and x.flags.c_contiguous
    for i, crop in enumerate(crops):
        expected, scale, pad = letterbox(crop, size=(320, 512))
        assert scale == 1.0 and pads[i] == pad
        for c in range(3):
            np.testing.assert_array_equal(x[i, c], expected)
        np.testing.assert_array_equal(crop, before[i])  # inputs untouched
    assert pads[0] == (6.0, 10.0)


def test_padded_batch_fills_a_fixed_batch_with_padding_and_casts():
    crop = np.full((32, 32), 0.25, np.float32)
    x, pads = padded_batch([crop], size=(32, 32), batch=3, dtype=np.float16)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float16 and pads == [(0.0, 0.0)]
    assert np.all(x[0] == np.float16(0.25)) and np.all(x[1:] == np.float16(PAD_VALUE))


def test_centre_padding_and_padded_batch_errors():
    assert centre_padding((31, 30), (32, 32)) == (1, 0)  # odd pixel right/bottom, as letterbox
    with pytest.raises(ValueError, match="does not fit"):
        centre_padding((33, 10), (32, 32))
    with pytest.raises(ValueError, match="does not fit"):
        padded_batch([np.zeros((10, 40), np.float32)], size=(32, 32))
    with pytest.raises(ValueError):
        padded_batch([], size=(32, 32))
    with pytest.raises(ValueError):
        padded_batch([np.zeros((8, 8), np.float32)] * 2, size=(32, 32), batch=1)
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        padded_batch([np.zeros((8, 8, 3), np.float32)], size=(32, 32))
