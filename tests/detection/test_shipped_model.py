"""Integration: the shipped, signed ONNX model package in weights/ counts rendered images (no torch needed).

Each test runs twice: with the default options (a dynamic-size model then sees a whole 1600x1200 image in one pass)
and with passes capped at 640 x 640 pixels, so seams are crossed whatever kind of model is shipped.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.onnx_adapter import OnnxPipelineDetector
from analysis.pipeline import AnalysisOptions, analyze_bytes, find_shipped_model, make_detector
from detection.evaluate import particle_boxes
from detection.metrics import match_boxes
from detection.onnx_detector import OnnxDetectorOptions

MODEL = find_shipped_model()
pytestmark = pytest.mark.skipif(MODEL is None, reason="no model shipped in weights/")


@pytest.fixture(scope="module")
def shipped():
    return make_detector("onnx", model_path=MODEL)


@pytest.fixture(scope="module", params=["default", "tiled"])
def detector(request, shipped):
    if request.param == "default":
        return shipped
    return OnnxPipelineDetector(shipped.model, OnnxDetectorOptions(single_pass_max_pixels=640 * 640))


def _rendered(seed: int, size=(1600, 1200), difficulty="easy"):
    from detection.synthetic import render_image

    image, truth = render_image(seed, size=size, difficulty=difficulty)
    ok, png = cv2.imencode(".png", image)
    assert ok
    boxes = np.array([o["box"] for o in truth["objects"] if o["counted"]], float).reshape(-1, 4)
    return png.tobytes(), boxes


def test_auto_uses_the_shipped_model(detector):
    assert make_detector("auto").label.startswith("onnx:")
    assert detector.label.startswith("onnx:")


def test_rendered_multi_tile_image_is_counted_within_tolerance(detector):
    # 1600x1200: 640 px tiles with 128 px overlap = 3 x 3 tiles (fixed model, or any model when tiled): seams cross
    # the field in both directions; a dynamic-size model with default options runs it in one pass.
    found, true = 0, 0
    matched = 0
    for seed in (910_001, 910_002, 910_003):
        data, boxes = _rendered(seed)
        result = analyze_bytes(data, name="r.png", detector=detector, options=AnalysisOptions(include_border=True))
        kept = [p for p in result.particles if p.counted]
        pred = particle_boxes(kept)
        found += len(pred)
        true += len(boxes)
        matched += len(match_boxes(pred, boxes, iou_threshold=0.5)[0])
    assert true > 30
    assert abs(found - true) / true <= 0.30
    assert matched / true >= 0.6


def test_small_crystals_at_half_magnification_are_found_by_the_enlarged_pass(shipped):
    # Rendered easy images re-imaged at half size (crystals ~5-30 px): the pipeline notices the small crystals and
    # analyses the image enlarged twice (analysis.rescale); boxes come back in the image's own pixels.
    true = found_single = found_double = 0
    for seed in (910_011, 910_021, 910_023):
        data, boxes = _rendered(seed, size=(1280, 1024))
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        ok, png = cv2.imencode(".png", cv2.resize(image, (640, 512), interpolation=cv2.INTER_AREA))
        boxes = boxes / 2
        true += len(boxes)
        for upscale in (False, True):
            result = analyze_bytes(png.tobytes(), name="half.png", detector=shipped,
                                   options=AnalysisOptions(include_border=True, upscale_small=upscale))
            assert any("analysed enlarged" in note for note in result.meta.notes) == upscale
            kept = [p for p in result.particles if p.counted]
            assert all(p.x_max <= 640 and p.y_max <= 512 for p in kept)
            pred = particle_boxes(kept)
            matched = len(match_boxes(pred, boxes, iou_threshold=0.5)[0])
            if upscale:
                found_double += matched
            else:
                found_single += matched
    assert true > 100
    assert found_double / true >= 0.6
    assert found_double - found_single >= 0.1 * true


def test_a_crystal_on_a_seam_is_counted_once(detector):
    # One large, high-contrast crystal centred on the vertical seam region of two tiles (640 px tiles, overlap 128:
    # tile 2 starts at x = 512; a dynamic model capped at 640 x 640 px also cuts this 1152 x 640 image in two),
    # drawn on a flat background.
    img = np.full((640, 1152), 0.72, np.float32)
    pts = np.array([[530, 260], [640, 230], [700, 300], [660, 380], [540, 370]], np.int32)
    cv2.fillPoly(img, [pts], 0.62)
    cv2.polylines(img, [pts], True, 0.25, 3, lineType=cv2.LINE_AA)
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 0.004, img.shape).astype(np.float32), 0, 1)
    ok, png = cv2.imencode(".png", (img * 255).astype(np.uint8))
    result = analyze_bytes(png.tobytes(), name="seam.png", detector=detector,
                           options=AnalysisOptions(include_border=True))
    kept = [p for p in result.particles if p.counted]
    assert len(kept) == 1
    p = kept[0]
    assert p.x_min <= 535 and p.x_max >= 695


def test_a_quantised_shipped_model_keeps_its_attention_core_in_float():
    """Quantised attention weights collapse (detection.quantize.ATTENTION_FLOAT_OPS; 1.4.0 lost F1 0.03-0.07 at
    1.5-2 x magnification): in an INT8 shipped model no output of an attention operator that
    detection.quantize keeps in float is re-quantised."""
    import onnx

    from detection.package import unpack
    from detection.quantize import ATTENTION_FLOAT_OPS

    model = onnx.load_model_from_string(unpack(MODEL.read_bytes()).model_bytes)
    ops = [n.op_type for n in model.graph.node]
    attention = [n for n in model.graph.node if "/attn/" in n.name and n.op_type in ATTENTION_FLOAT_OPS]
    if "QuantizeLinear" not in ops or not attention:
        pytest.skip("the shipped model is not an INT8 model with self-attention")
    quantised_inputs = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
    assert [n.name for n in attention if set(n.output) & quantised_inputs] == []


def test_the_model_passes_and_the_outlines_are_timed_inside_the_detect_stage(shipped):
    from analysis.timing import stage_clock

    data, _ = _rendered(7, size=(640, 512))
    with stage_clock() as clock:
        analyze_bytes(data, name="r.png", detector=shipped)
    assert {"detect", "detect.network", "detect.outlines"} <= set(clock)
    assert clock["detect.network"] + clock["detect.outlines"] <= clock["detect"]
