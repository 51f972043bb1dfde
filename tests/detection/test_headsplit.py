"""The split detect head: the graph cut before its decoding plus numpy decoding gives the model's own output."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import detection.headsplit as hs
import detection.onnx_detector as od
from analysis.pipeline import find_shipped_model
from detection.onnx_detector import OnnxDetector, OnnxDetectorOptions
from detection.package import unpack
from detection.yolo import REG_MAX, decode_raw_head, head_anchors
from tests.detection.onnx_fixtures import band_model

MODEL = find_shipped_model()


def test_head_anchors_run_level_by_level_row_by_row_at_cell_centres():
    points, steps = head_anchors((64, 96), (32, 64))
    assert points.shape == (2 * 3 + 1 * 1, 2) and points.dtype == np.float32
    np.testing.assert_array_equal(points[:4], [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5]])
    np.testing.assert_array_equal(points[6], [0.5, 0.5])
    np.testing.assert_array_equal(steps, [32] * 6 + [64])


def _peaked(sides_bins: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Box logits (1, 4 * REG_MAX, A) whose distributions put (almost) all weight on one bin per side."""
    logits = np.full((1, 4, REG_MAX, len(sides_bins)), -30.0, np.float32)
    for a, bins in enumerate(sides_bins):
        for side, k in enumerate(bins):
            logits[0, side, k, a] = 30.0
    return logits.reshape(1, 4 * REG_MAX, len(sides_bins))


def test_decode_raw_head_known_boxes_scores_and_threshold():
    anchors, steps = head_anchors((16, 16), (8,))  # 4 anchors at (0.5, 0.5), (1.5, 0.5), (0.5, 1.5), (1.5, 1.5)
    box = _peaked([(0, 0, 1, 1), (1, 0, 0, 2), (0, 0, 0, 0), (3, 1, 2, 0)])
    cls = np.array([[[4.0, -4.0, -9.0, 0.0], [-9.0, 3.0, -9.0, -9.0]]], np.float32)  # sigmoid 0.98, 0.95, ~0, 0.5
    out = decode_raw_head(box, cls, anchors=anchors, anchor_strides=steps, conf_threshold=None)
    assert out.shape == (1, 6, 4)
    # anchor 0: l=t=0, r=b=1 grid cells -> x 0.5..1.5 -> centre 1.0 * 8, size 1 * 8
    np.testing.assert_allclose(out[0, :4, 0], [8.0, 8.0, 8.0, 8.0], atol=1e-4)
    np.testing.assert_allclose(out[0, :4, 1], [(1.5 - 1 + 1.5) / 2 * 8, (0.5 + 0.5 + 2) / 2 * 8, 8.0, 16.0],
                               atol=1e-4)
    np.testing.assert_allclose(out[0, 4:, 0], 1 / (1 + np.exp(-cls[0, :, 0])), rtol=1e-6)
    kept = decode_raw_head(box, cls, anchors=anchors, anchor_strides=steps, conf_threshold=0.6)
    assert kept.shape == (1, 6, 2)  # only the anchors whose best class can pass 0.6
    np.testing.assert_allclose(kept[0], out[0][:, :2], atol=1e-6)


def test_decode_raw_head_pads_a_batch_with_scores_no_threshold_passes():
    anchors, steps = head_anchors((16, 16), (8,))
    box = np.concatenate([_peaked([(1, 1, 1, 1)] * 4)] * 2)
    cls = np.full((2, 1, 4), -9.0, np.float32)
    cls[0, 0, :3] = 5.0  # item 0: three anchors pass, item 1: none
    out = decode_raw_head(box, cls, anchors=anchors, anchor_strides=steps, conf_threshold=0.0)
    assert out.shape == (2, 5, 4)  # conf 0: every anchor of a sigmoid > 0 can pass
    out = decode_raw_head(box, cls, anchors=anchors, anchor_strides=steps, conf_threshold=0.5)
    assert out.shape == (2, 5, 3)
    assert (out[1, 4] == -1).all() and (out[0, 4] > 0.99).all()


def test_decode_raw_head_refuses_shapes_that_do_not_fit():
    anchors, steps = head_anchors((16, 16), (8,))
    with pytest.raises(ValueError, match="do not fit"):
        decode_raw_head(np.zeros((1, 4 * REG_MAX, 5)), np.zeros((1, 2, 5)), anchors=anchors, anchor_strides=steps,
                        conf_threshold=0.25)
    with pytest.raises(ValueError, match="do not fit"):
        decode_raw_head(np.zeros((1, 4 * 8, 4)), np.zeros((1, 2, 4)), anchors=anchors, anchor_strides=steps,
                        conf_threshold=0.25)


def test_a_graph_without_the_ultralytics_head_is_left_whole():
    assert hs.split_head(band_model()) is None
    assert OnnxDetector(band_model())._head_split is False


shipped = pytest.mark.skipif(MODEL is None, reason="no model shipped in weights/")


@pytest.fixture(scope="module")
def model_bytes():
    return unpack(MODEL.read_bytes()).model_bytes


@pytest.fixture(scope="module")
def image():
    from analysis.preprocess import clean_image
    from detection.synthetic import render_image

    # a crowded scene (68 crystals), so that the two decodings are compared on many boxes whatever the model version
    rendered, _ = render_image(79, size=(800, 600), difficulty="medium")
    return clean_image(rendered.astype(np.float32) / 255.0)


@shipped
def test_split_head_outputs_the_raw_logits(model_bytes):
    import onnxruntime as ort

    cut = hs.split_head(model_bytes)
    session = ort.InferenceSession(cut, providers=["CPUExecutionProvider"])
    box, cls = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 96), np.float32)})
    assert box.shape == (1, 4 * REG_MAX, 8 * 12 + 4 * 6 + 2 * 3) and cls.shape == (1, 2, box.shape[2])


@shipped
def test_split_detector_finds_the_same_boxes_as_the_whole_graph(model_bytes, image, monkeypatch):
    split = OnnxDetector(model_bytes)
    monkeypatch.setattr(hs, "split_head", lambda data: None)
    whole = OnnxDetector(model_bytes)
    assert split._head_split and not whole._head_split
    for opts in (OnnxDetectorOptions(), OnnxDetectorOptions(single_pass_max_pixels=320 * 320, coarse_scale=0.0)):
        (a, sa, ca), (b, sb, cb) = whole.predict_boxes(image, options=opts), split.predict_boxes(image, options=opts)
        assert len(a) > 30 and a.shape == b.shape
        np.testing.assert_allclose(b, a, atol=1e-3)
        np.testing.assert_allclose(sb, sa, atol=1e-6)
        np.testing.assert_array_equal(cb, ca)


@shipped
def test_a_split_that_does_not_reproduce_the_model_is_not_used(model_bytes, monkeypatch, caplog):
    real = od.decode_raw_head
    monkeypatch.setattr(od, "decode_raw_head", lambda *a, **k: real(*a, **k) * np.float32(1.01))
    with caplog.at_level(logging.WARNING, logger="detection.onnx_detector"):
        det = OnnxDetector(model_bytes)
    assert det._head_split is False and "does not reproduce" in caplog.text
