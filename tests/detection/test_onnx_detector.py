"""Model metadata checks and the onnxruntime detector, end to end on tiny ONNX graphs (no torch)."""
from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import detection.onnx_detector as od
from analysis.errors import CrystalQCError, InvalidImageError, ModelPackageError
from detection.modelmeta import ModelMeta, check_output_shape, parse_metadata
from detection.onnx_detector import OnnxDetector, OnnxDetectorOptions, exclusion_for_class, inscribed_ellipse
from tests.detection.onnx_fixtures import band_model, constant_model, finish_model, ultralytics_props

NAMES = ("crystal", "agglomerate", "mimic")
OPTS = OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16)  # the tiny models take 64x64 inputs
CRYSTAL, AGGLOMERATE, MIMIC = 1.0, 0.7, 0.3  # grey levels the band model maps to classes 0, 1, 2
EMPTY = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


# ---------------------------------------------------------------- metadata


def good_props(**over):
    props = ultralytics_props(NAMES, (640, 640))
    props.update(over)
    return props


def test_parse_metadata_good():
    meta = parse_metadata(good_props())
    assert meta == ModelMeta(names=NAMES, imgsz=(640, 640), stride=32, task="detect")
    assert meta.n_classes == 3
    assert parse_metadata(good_props(imgsz="640")).imgsz == (640, 640)
    assert parse_metadata(good_props(imgsz="[480, 640]")).imgsz == (480, 640)


def test_parse_metadata_never_evaluates_code():
    payload = "__import__('os').environ.__setitem__('CRYSTALQC_PWNED', '1')"
    for key in ("names", "stride", "imgsz"):
        with pytest.raises(ModelPackageError, match="plain Python literal"):
            parse_metadata(good_props(**{key: payload}))
    assert "CRYSTALQC_PWNED" not in os.environ


def test_parse_metadata_refuses_huge_value_even_in_unused_key():
    with pytest.raises(ModelPackageError, match="characters long"):
        parse_metadata(good_props(description="x" * 10_000_000))
    with pytest.raises(ModelPackageError, match="characters long"):
        parse_metadata(good_props(names="{0: '" + "a" * 10_001 + "'}"))


def test_parse_metadata_deep_nesting_is_refused():
    with pytest.raises(ModelPackageError):
        parse_metadata(good_props(names="[" * 4000 + "]" * 4000))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"stride": "0"}, "stride"),
        ({"stride": "33"}, "stride"),
        ({"stride": "True"}, "stride"),
        ({"stride": "'32'"}, "stride"),
        ({"names": "{0: 'crystal', 2: 'mimic'}"}, "without gaps"),
        ({"names": "{1: 'crystal'}"}, "without gaps"),
        ({"names": "{}"}, "non-empty dict"),
        ({"names": "['crystal']"}, "non-empty dict"),
        ({"names": "{'0': 'crystal'}"}, "integer class ids"),
        ({"names": "{0: 'Crystal'}"}, "not allowed"),
        ({"names": "{0: 'crys tal'}"}, "not allowed"),
        ({"names": "{0: 'x' * 3}"}, "plain Python literal"),
        ({"names": "{0: 'a' + 'b'}"}, "plain Python literal"),
        ({"names": "{0: 'crystal', 1: 'crystal'}"}, "twice"),
        ({"names": "{0: 1}"}, "not allowed"),
        ({"imgsz": "[650, 640]"}, "multiple of the model stride"),
        ({"imgsz": "[8192, 8192]"}, "outside"),
        ({"imgsz": "[640]"}, "two integers"),
        ({"imgsz": "[640.0, 640.0]"}, "two integers"),
        ({"task": "segment"}, "detect model"),
    ],
)
def test_parse_metadata_schema_errors(over, message):
    with pytest.raises(ModelPackageError, match=message):
        parse_metadata(good_props(**over))


def test_parse_metadata_small_input_out_of_range():
    with pytest.raises(ModelPackageError, match="outside"):
        parse_metadata(good_props(stride="8", imgsz="[16, 16]"))


def test_parse_metadata_missing_keys_and_non_mapping():
    props = good_props()
    del props["imgsz"]
    with pytest.raises(ModelPackageError, match="'imgsz'"):
        parse_metadata(props)
    with pytest.raises(ModelPackageError):
        parse_metadata({})
    with pytest.raises(ModelPackageError):
        parse_metadata(None)  # type: ignore[arg-type]
    with pytest.raises(ModelPackageError):
        parse_metadata({"names": 5})  # type: ignore[dict-item]


def test_model_package_error_is_a_product_error():
    assert issubclass(ModelPackageError, CrystalQCError)


def test_check_output_shape():
    meta = parse_metadata(good_props())
    check_output_shape(meta, (1, 7, 8400))
    check_output_shape(meta, ("batch", 7, "anchors"))
    check_output_shape(meta, (4, 7, 8400 + 160 * 160))  # p2 head
    with pytest.raises(ModelPackageError, match="metadata names 3 classes"):
        check_output_shape(meta, (1, 6, 8400))
    with pytest.raises(ModelPackageError, match="anchors"):
        check_output_shape(meta, (1, 7, 2100))  # exported at 320 while metadata says 640
    with pytest.raises(ModelPackageError, match="nms=False"):
        check_output_shape(meta, (1, 300, 6, 1))
    with pytest.raises(ModelPackageError, match="batch"):
        check_output_shape(meta, (0, 7, 8400))
    # a dynamic-size model is checked against the size it was actually fed (height, width)
    check_output_shape(meta, (1, 7, 2100), input_size=(320, 320))
    check_output_shape(meta, (1, 7, 24 * 40 + 12 * 20 + 6 * 10), input_size=(192, 320))
    with pytest.raises(ModelPackageError, match="input size 192x320"):
        check_output_shape(meta, (1, 7, 8400), input_size=(192, 320))


# ---------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def detector() -> OnnxDetector:
    return OnnxDetector(band_model(names=NAMES), name="tiny-yolo", version="0.1")


def test_loads_and_reports_meta(detector):
    assert detector.meta == ModelMeta(names=NAMES, imgsz=(64, 64), stride=32, task="detect")
    assert detector.label == "onnx:tiny-yolo 0.1"
    assert OnnxDetector(band_model(), threads=1).label == "onnx:model"


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(4096), b"\x08\x09" + os.urandom(100)],
    ids=["empty", "random", "protobuf-like"],
)
def test_bad_model_bytes(data):
    with pytest.raises(ModelPackageError):
        OnnxDetector(data)


def test_truncated_model_bytes():
    data = band_model()
    with pytest.raises(ModelPackageError, match="not a valid ONNX model"):
        OnnxDetector(data[: len(data) // 2])


def test_too_large_model_is_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(od, "MAX_MODEL_BYTES", 100)
    with pytest.raises(ModelPackageError, match="MiB"):
        OnnxDetector(b"\0" * 101)


def test_model_without_metadata_is_refused():
    with pytest.raises(ModelPackageError, match="lacks"):
        OnnxDetector(band_model(props={}))


def test_output_disagreeing_with_metadata_is_refused():
    with pytest.raises(ModelPackageError, match="metadata names 3 classes"):
        OnnxDetector(band_model(names=NAMES, n_out_classes=2))
    with pytest.raises(ModelPackageError, match="anchors"):
        OnnxDetector(band_model(names=NAMES, n_anchors=50))


def test_input_size_disagreeing_with_metadata_is_refused():
    with pytest.raises(ModelPackageError, match="input height"):
        OnnxDetector(band_model(props=ultralytics_props(NAMES, (96, 64))))


def test_model_failing_to_run_is_refused():
    # Reshape of a (B, 3, 64, 64) input into (1, 7, 84) fails at run time
    shape = numpy_helper.from_array(np.array([1, 7, 84], np.int64), "shape")
    node = helper.make_node("Reshape", ["images", "shape"], ["output0"])
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 7, 84])
    data = finish_model([node], [shape], [inp], [out], ultralytics_props(NAMES, (64, 64)))
    with pytest.raises(ModelPackageError, match="failed to run"):
        OnnxDetector(data)


def test_model_with_wrong_inputs_is_refused():
    props = ultralytics_props(NAMES, (64, 64))
    a = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    b = helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, 3, 64, 64])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])
    two_inputs = finish_model([helper.make_node("Add", ["images", "other"], ["output0"])], [], [a, b], [out], props)
    with pytest.raises(ModelPackageError, match="2 inputs"):
        OnnxDetector(two_inputs)
    ints = helper.make_tensor_value_info("images", TensorProto.INT64, [1, 3, 64, 64])
    int_out = helper.make_tensor_value_info("output0", TensorProto.INT64, [1, 3, 64, 64])
    int_model = finish_model([helper.make_node("Identity", ["images"], ["output0"])], [], [ints], [int_out], props)
    with pytest.raises(ModelPackageError, match="float image tensor"):
        OnnxDetector(int_model)
    rank3 = helper.make_tensor_value_info("images", TensorProto.FLOAT, [3, 64, 64])
    r3_out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [3, 64, 64])
    r3_model = finish_model([helper.make_node("Identity", ["images"], ["output0"])], [], [rank3], [r3_out], props)
    with pytest.raises(ModelPackageError, match=r"\(batch, 3, height, width\)"):
        OnnxDetector(r3_model)
    one_ch = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, 64, 64])
    one_out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 1, 64, 64])
    one_model = finish_model([helper.make_node("Identity", ["images"], ["output0"])], [], [one_ch], [one_out], props)
    with pytest.raises(ModelPackageError, match="1 channels"):
        OnnxDetector(one_model)


def test_dynamic_input_size_model_uses_metadata_imgsz():
    raw = np.zeros((1, 7, 84), np.float32)
    raw[0, :, 5] = [32, 32, 10, 20, 0.0, 0.8, 0.0]  # class 1 at (27, 22, 37, 42)
    det = OnnxDetector(constant_model(raw, imgsz=("h", "w"), props=ultralytics_props(NAMES, (64, 64))))
    # symbolic height/width, but its output does not follow the input size: run at the metadata size only
    assert det.dynamic_input is False
    boxes, scores, cls = det.predict_boxes(np.random.default_rng(0).random((64, 64), dtype=np.float32), options=OPTS)
    np.testing.assert_allclose(boxes, [[27, 22, 37, 42]])
    np.testing.assert_allclose(scores, [0.8])
    np.testing.assert_array_equal(cls, [1])


# ---------------------------------------------------------------- detection


def _image(width, height, objects):
    img = np.zeros((height, width), np.float32)
    for x0, y0, x1, y1, level in objects:
        img[y0:y1, x0:x1] = level
    return img


def test_single_tile_known_boxes(detector):
    img = _image(64, 64, [(5, 10, 30, 20, CRYSTAL), (40, 40, 60, 50, AGGLOMERATE), (2, 30, 8, 35, MIMIC)])
    before = img.copy()
    boxes, scores, cls = detector.predict_boxes(img, options=OPTS)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and cls.dtype == np.int32
    got = sorted(zip(cls.tolist(), boxes.tolist()))
    assert got == [(0, [5, 10, 30, 20]), (1, [40, 40, 60, 50]), (2, [2, 30, 8, 35])]
    np.testing.assert_allclose(scores, 0.9)
    np.testing.assert_array_equal(img, before)


def test_image_smaller_than_input_is_padded_not_scaled(detector):
    img = _image(40, 30, [(3, 5, 12, 9, CRYSTAL)])
    boxes, _, cls = detector.predict_boxes(img, options=OPTS)
    np.testing.assert_allclose(boxes, [[3, 5, 12, 9]])
    assert cls.tolist() == [0]


def test_conf_threshold_is_an_argument(detector):
    img = _image(64, 64, [(5, 10, 30, 20, CRYSTAL)])
    strict = OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, conf_threshold=0.95)
    assert len(detector.predict_boxes(img, options=strict)[0]) == 0
    assert len(detector.predict_boxes(img, options=OPTS)[0]) == 1


def test_seams_count_each_object_once(detector):
    # 112 x 64 with 64 px tiles and overlap 16: tiles x [0, 64) and [48, 112)
    img = _image(
        112,
        64,
        [
            (44, 10, 72, 20, CRYSTAL),  # cut in both tiles -> joined
            (30, 40, 56, 50, AGGLOMERATE),  # whole in tile 0, cut in tile 1 -> whole box
            (50, 25, 60, 32, MIMIC),  # inside the overlap: whole in both -> one
        ],
    )
    boxes, _, cls = detector.predict_boxes(img, options=OPTS)
    got = sorted(zip(cls.tolist(), boxes.tolist()))
    assert got == [(0, [44, 10, 72, 20]), (1, [30, 40, 56, 50]), (2, [50, 25, 60, 32])]


def test_object_at_four_tile_corner_counted_once(detector):
    img = _image(112, 112, [(44, 40, 72, 70, CRYSTAL)])
    boxes, _, cls = detector.predict_boxes(img, options=OPTS)
    np.testing.assert_allclose(boxes, [[44, 40, 72, 70]])


def test_separate_objects_in_different_tiles_are_kept(detector):
    img = _image(112, 64, [(5, 10, 15, 20, CRYSTAL), (90, 10, 100, 20, CRYSTAL)])
    boxes, _, _ = detector.predict_boxes(img, options=OPTS)
    assert sorted(boxes.tolist()) == [[5, 10, 15, 20], [90, 10, 100, 20]]


def test_fixed_batch_models_and_batch_sizes_agree():
    img = _image(
        160, 112, [(44, 10, 72, 20, CRYSTAL), (100, 60, 140, 90, AGGLOMERATE), (10, 70, 20, 80, MIMIC)]
    )
    results = []
    for batch, batch_size in (("batch", 1), ("batch", 4), (1, 4), (2, 4)):
        det = OnnxDetector(band_model(batch=batch))
        boxes, _, cls = det.predict_boxes(img, options=OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, batch_size=batch_size))
        results.append(sorted(zip(cls.tolist(), boxes.tolist())))
    assert all(r == results[0] for r in results)
    assert results[0] == [(0, [44, 10, 72, 20]), (1, [100, 60, 140, 90]), (2, [10, 70, 20, 80])]


def test_tiles_run_side_by_side_with_the_same_result():
    # 4 tiles, one per run: with 2 threads the runs go two at a time on a 1-thread session, in other threads
    img = _image(160, 112, [(44, 10, 72, 20, CRYSTAL), (100, 60, 140, 90, AGGLOMERATE), (10, 70, 20, 80, MIMIC)])
    opts = OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, batch_size=1)
    serial, parallel = OnnxDetector(band_model(), threads=1), OnnxDetector(band_model(), threads=2)
    seen = []
    real_run = parallel._run

    def run(batch, session=None):
        seen.append((threading.current_thread().name, session))
        return real_run(batch, session)

    parallel._run = run
    a, b = serial.predict_boxes(img, options=opts), parallel.predict_boxes(img, options=opts)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert len(seen) == 6  # plan: 3 x 2 tiles of 64 px at overlap 16
    assert all(name.startswith("cqc-tiles") and session is not None for name, session in seen)
    assert [k for k in parallel._tile_sessions] == [1] and serial._tile_sessions == {}
    one_run = OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, batch_size=8)
    seen.clear()
    parallel.predict_boxes(img, options=one_run)  # a single run keeps all threads in the main session
    assert seen == [(threading.current_thread().name, None)]


def test_fp16_input_model():
    det = OnnxDetector(band_model(fp16_input=True))
    boxes, _, _ = det.predict_boxes(_image(64, 64, [(5, 10, 30, 20, CRYSTAL)]), options=OPTS)
    np.testing.assert_allclose(boxes, [[5, 10, 30, 20]])


def test_blank_tiles_are_skipped(detector, monkeypatch):
    calls = []
    real_run = detector._run

    def counting_run(batch, session=None):
        calls.append(batch.shape[0])
        return real_run(batch, session)

    monkeypatch.setattr(detector, "_run", counting_run)
    img = np.full((64, 208), 0.5, np.float32)  # 4 tiles at overlap 16: starts 0, 48, 96, 144
    img[10:20, 5:15] = CRYSTAL  # only in the first tile
    boxes, _, _ = detector.predict_boxes(img, options=OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, batch_size=8))
    assert calls == [1]
    np.testing.assert_allclose(boxes, [[5, 10, 15, 20]])
    calls.clear()
    detector.predict_boxes(img, options=OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, batch_size=8, skip_empty_tiles=False))
    assert calls == [4]
    calls.clear()
    boxes, scores, cls = detector.predict_boxes(np.full((64, 64), 0.5, np.float32), options=OPTS)
    assert calls == [] and boxes.shape == (0, 4) and scores.shape == (0,) and cls.shape == (0,)


def test_blank_check_keeps_noisy_tile_with_small_faint_object():
    rng = np.random.default_rng(0)
    tile = (0.6 + rng.normal(0, 0.005, (640, 640))).astype(np.float32)
    assert od._tile_is_blank(tile)
    tile[300:310, 300:310] -= 0.15  # a 10 px object with a weak rim
    assert not od._tile_is_blank(tile)


def test_detect_returns_detections_with_classes_and_exclusions(detector):
    img = _image(112, 64, [(44, 10, 72, 20, CRYSTAL), (30, 40, 56, 50, AGGLOMERATE), (50, 25, 60, 32, MIMIC)])
    dets = detector.detect(img, options=OPTS)
    by_class = {d.class_name: d for d in dets}
    assert set(by_class) == set(NAMES) and len(dets) == 3
    c = by_class["crystal"]
    assert (c.x_min, c.y_min, c.x_max, c.y_max) == (44, 10, 72, 20)
    assert c.mask.shape == (10, 28) and c.mask.dtype == bool and c.mask[5, 14] and not c.mask[0, 0]
    assert c.excluded_reason is None and by_class["agglomerate"].excluded_reason is None
    assert by_class["mimic"].excluded_reason == "out_of_focus"
    assert c.confidence == pytest.approx(0.9)


def test_detect_uses_refine_and_checks_its_mask(detector):
    img = _image(64, 64, [(5, 10, 30, 20, CRYSTAL), (40, 40, 60, 50, AGGLOMERATE)])
    seen = []

    def refine(image, box):
        seen.append(box.tolist())
        x0, y0, x1, y1 = (int(v) for v in box)
        mask = np.ones((y1 - y0, x1 - x0), bool)
        if x0 == 40:
            mask[:] = False  # an empty mask drops the object
        return x0, y0, x1, y1, mask

    dets = detector.detect(img, options=OPTS, refine=refine)
    assert sorted(seen) == [[5, 10, 30, 20], [40, 40, 60, 50]]
    assert len(dets) == 1 and dets[0].mask.all()

    def bad_refine(image, box):
        return 0, 0, 5, 5, np.ones((3, 3), bool)

    with pytest.raises(ValueError, match="mask of shape"):
        detector.detect(img, options=OPTS, refine=bad_refine)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3), np.float32), np.zeros((0, 8), np.float32), np.full((8, 8), np.nan, np.float32), [[0.0]]],
    ids=["rgb", "empty", "nan", "list"],
)
def test_bad_images(detector, bad):
    with pytest.raises(InvalidImageError):
        detector.predict_boxes(bad, options=OPTS)  # type: ignore[arg-type]


def test_overlap_not_below_input_size(detector):
    with pytest.raises(ValueError, match="tile_overlap_px"):
        detector.predict_boxes(np.zeros((64, 64), np.float32), options=OnnxDetectorOptions(tile_overlap_px=64))


@pytest.mark.parametrize(
    "kwargs",
    [{"conf_threshold": 1.0}, {"conf_threshold": -0.1}, {"iou_threshold": 0.0}, {"tile_overlap_px": -1},
     {"batch_size": 0}, {"single_pass_max_pixels": 1000}, {"coarse_scale": 1.0}, {"coarse_scale": 0.05},
     {"coarse_min_side_px": -1}],
)
def test_options_validation(kwargs):
    with pytest.raises(ValueError):
        OnnxDetectorOptions(**kwargs)


def test_exclusion_for_class():
    assert exclusion_for_class("crystal") is None and exclusion_for_class("agglomerate") is None
    assert exclusion_for_class("bubble") == "bubble" and exclusion_for_class("air_bubble") == "bubble"
    assert exclusion_for_class("fibre") == "fibre" and exclusion_for_class("dust") == "dust"
    assert exclusion_for_class("mimic") == "out_of_focus"
    assert exclusion_for_class("low_confidence") == "out_of_focus"


def test_inscribed_ellipse_mask():
    img = np.zeros((50, 50), np.float32)
    x0, y0, x1, y1, mask = inscribed_ellipse(img, np.array([10.2, 5.0, 30.0, 25.0], np.float32))
    assert (x0, y0, x1, y1) == (10, 5, 30, 25) and mask.shape == (20, 20)
    assert abs(mask.sum() - np.pi * 10 * 10) < 0.05 * np.pi * 100
    assert mask[10, 10] and not mask[0, 0] and not mask[19, 19]
    *_, clipped = inscribed_ellipse(img, np.array([45, 45, 60, 60], np.float32))
    assert clipped.shape == (5, 5)
    *_, empty = inscribed_ellipse(img, np.array([55, 55, 60, 60], np.float32))
    assert empty.size == 0


# ---------------------------------------------------------------- dynamic input size, session settings


@pytest.fixture(scope="module")
def dynamic_detector() -> OnnxDetector:
    return OnnxDetector(band_model(names=NAMES, dynamic_size=True), name="tiny-dyn", version="0.2")


def _recording(monkeypatch, det):
    shapes = []
    real_run = det._run

    def run(batch, session=None):
        shapes.append(batch.shape)
        return real_run(batch, session)

    monkeypatch.setattr(det, "_run", run)
    return shapes


def test_fixed_model_is_not_dynamic(detector):
    assert detector.dynamic_input is False


def test_dynamic_model_runs_the_whole_image_in_one_padded_pass(dynamic_detector, monkeypatch):
    assert dynamic_detector.dynamic_input is True
    shapes = _recording(monkeypatch, dynamic_detector)
    # objects where 64 px tiles would have seams (x 48..64, y 48..64); each class once
    img = _image(200, 150, [(40, 44, 70, 60, CRYSTAL), (150, 100, 190, 140, AGGLOMERATE), (5, 120, 15, 130, MIMIC)])
    boxes, scores, cls = dynamic_detector.predict_boxes(img, options=OPTS)
    assert shapes == [(1, 3, 160, 224)]  # 150 x 200 padded up to multiples of 32, one run
    assert sorted(zip(cls.tolist(), boxes.tolist())) == [
        (0, [40, 44, 70, 60]), (1, [150, 100, 190, 140]), (2, [5, 120, 15, 130])]
    np.testing.assert_allclose(scores, 0.9)


def test_dynamic_and_fixed_exports_of_one_model_find_the_same_boxes(detector, dynamic_detector):
    img = _image(160, 112, [(10, 10, 30, 20, CRYSTAL), (100, 60, 140, 90, AGGLOMERATE), (10, 70, 20, 80, MIMIC)])
    fixed = detector.predict_boxes(img, options=OPTS)
    dynamic = dynamic_detector.predict_boxes(img, options=OPTS)
    assert sorted(zip(fixed[2].tolist(), fixed[0].tolist())) == sorted(zip(dynamic[2].tolist(), dynamic[0].tolist()))


def test_dynamic_model_tiles_above_the_pixel_budget_and_merges_seams(dynamic_detector, monkeypatch):
    shapes = _recording(monkeypatch, dynamic_detector)
    options = OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, single_pass_max_pixels=18432, batch_size=8)
    # 200 x 150 pads to 224 x 160 = 35840 > 18432 px; fewest pixels: 3 rows of 200 x 61 (inputs 64 x 224)
    tiles, input_hw = dynamic_detector.plan(150, 200, options=options)
    assert tiles.tolist() == [[0, 0, 200, 61], [0, 45, 200, 106], [0, 89, 200, 150]] and input_hw == (64, 224)
    img = _image(200, 150, [(20, 40, 60, 70, CRYSTAL)])  # crosses the seam between the first two rows
    boxes, _, cls = dynamic_detector.predict_boxes(img, options=options)
    # one 64 x 224 input per run fits the budget; the third row is blank and skipped
    assert shapes == [(1, 3, 64, 224), (1, 3, 64, 224)]
    assert boxes.tolist() == [[20, 40, 60, 70]] and cls.tolist() == [0]


def test_batches_stay_within_the_pixel_budget(detector, monkeypatch):
    shapes = _recording(monkeypatch, detector)
    img = np.random.default_rng(0).random((64, 208), dtype=np.float32)  # 4 tiles of 64 x 64
    options = OnnxDetectorOptions(coarse_scale=0.0, tile_overlap_px=16, batch_size=8, single_pass_max_pixels=2 * 64 * 64)
    detector.predict_boxes(img, options=options)
    assert [s[0] for s in shapes] == [2, 2]


def test_session_uses_one_thread_per_usable_core_without_spinning():
    det = OnnxDetector(band_model())
    assert det.threads == od.usable_cores() >= 1
    assert OnnxDetector(band_model(), threads=1).threads == 1
    opts = od.session_options(3)
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1 and opts.enable_mem_pattern
    assert opts.graph_optimization_level == od.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert od.session_options(1, allow_spinning=True).get_session_config_entry(
        "session.intra_op.allow_spinning") == "1"


# ---------------------------------------------------------------- coarse pass for large objects


def test_coarse_pass_replaces_the_parts_of_a_large_object_by_its_whole_box(detector, monkeypatch):
    """The native pass sees only a facet of a large crystal; the half-scale pass sees the crystal (its boxes are
    scaled back to full-image pixels); small coarse boxes are ignored; a separate small crystal stays."""
    calls = []

    def fake_native(self, img, options, low=None):
        calls.append(img.shape)
        if img.shape == (200, 300):  # native: a facet of the big crystal and a small crystal elsewhere
            return (np.array([[60, 60, 90, 80], [250, 150, 262, 160]], np.float32), np.array([0.6, 0.7], np.float32),
                    np.array([0, 0], np.int32)), EMPTY
        assert img.shape == (100, 150)  # half scale: the big crystal (60 px -> 120 px long) and a 30 px box
        return (np.array([[20, 20, 80, 60], [120, 70, 135, 85]], np.float32), np.array([0.9, 0.8], np.float32),
                np.array([0, 0], np.int32)), EMPTY

    monkeypatch.setattr(OnnxDetector, "_predict_native", fake_native)
    options = OnnxDetectorOptions(coarse_scale=0.5, coarse_min_side_px=80)
    boxes, scores, cls = detector.predict_boxes(np.zeros((200, 300), np.float32), options=options)
    assert calls == [(200, 300), (100, 150)]
    assert boxes.tolist() == [[40, 40, 160, 120], [250, 150, 262, 160]]
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert boxes.dtype == np.float32 and cls.dtype == np.int32
    # off: the native pass alone
    calls.clear()
    off = detector.predict_boxes(np.zeros((200, 300), np.float32), options=OnnxDetectorOptions(coarse_scale=0.0))
    assert calls == [(200, 300)] and len(off[0]) == 2


def test_coarse_pass_skipped_when_the_downscaled_image_is_below_one_stride(detector, monkeypatch):
    shapes = []
    monkeypatch.setattr(OnnxDetector, "_predict_native", lambda self, img, options, low=None: (
        shapes.append(img.shape) or (EMPTY, EMPTY)))
    detector.predict_boxes(np.zeros((40, 200), np.float32), options=OnnxDetectorOptions(coarse_scale=0.5))
    assert shapes == [(40, 200)]  # 20 px high at half scale < stride 32
    detector.predict_boxes(np.zeros((64, 200), np.float32), options=OnnxDetectorOptions(coarse_scale=0.5))
    assert shapes[1:] == [(64, 200), (32, 100)]


# ---------------------------------------------------------------- candidates (uncertain boxes, kept when confirmed)


def test_candidates_are_low_native_boxes_and_unsupported_large_coarse_boxes(detector, monkeypatch):
    lows = []

    def fake_native(self, img, options, low=None):
        lows.append(low)
        if img.shape == (200, 300):  # native: a facet of a big crystal; below the threshold a small crystal and a
            # second box on the facet (inside the big crystal's kept box: not a candidate)
            low_boxes = (np.array([[250, 150, 262, 160], [62, 61, 88, 79]], np.float32),
                         np.array([0.1, 0.2], np.float32), np.array([0, 0], np.int32))
            return (np.array([[60, 60, 90, 80]], np.float32), np.array([0.6], np.float32),
                    np.array([0], np.int32)), (low_boxes if low else EMPTY)
        # half scale: the big crystal (holds the facet: supported) and a large box with nothing sharp in it
        return (np.array([[20, 20, 80, 60], [100, 5, 145, 45]], np.float32), np.array([0.9, 0.5], np.float32),
                np.array([0, 1], np.int32)), EMPTY

    monkeypatch.setattr(OnnxDetector, "_predict_native", fake_native)
    image = np.zeros((200, 300), np.float32)
    options = OnnxDetectorOptions(coarse_scale=0.5, coarse_min_side_px=80, candidate_threshold=0.05)
    (boxes, scores, cls), (c_boxes, c_scores, c_cls) = detector.predict_candidates(image, options=options)
    assert lows == [0.05, None]  # the native pass decodes down to the candidate threshold, the coarse pass does not
    assert boxes.tolist() == [[40, 40, 160, 120]] and scores.tolist() == pytest.approx([0.9])
    assert [b.tolist() for b in detector.predict_boxes(image, options=options)] == [boxes.tolist(), scores.tolist(),
                                                                                    cls.tolist()]
    assert c_boxes.tolist() == [[200, 10, 290, 90], [250, 150, 262, 160]]  # highest score first
    assert c_scores.tolist() == pytest.approx([0.5, 0.1]) and c_cls.tolist() == [1, 0]
    assert c_boxes.dtype == np.float32 and c_scores.dtype == np.float32 and c_cls.dtype == np.int32
    # off: no candidates, and the native pass is not asked for low boxes
    lows.clear()
    off = detector.predict_candidates(image, options=dataclasses.replace(options, candidate_threshold=0.0))
    assert lows == [None, None] and off[1][0].shape == (0, 4) and off[0][0].tolist() == boxes.tolist()


def test_candidate_threshold_is_checked():
    with pytest.raises(ValueError, match="candidate_threshold"):
        OnnxDetectorOptions(candidate_threshold=0.3)  # above conf_threshold 0.25
    with pytest.raises(ValueError, match="candidate_threshold"):
        OnnxDetectorOptions(candidate_threshold=-0.1)
    assert OnnxDetectorOptions(candidate_threshold=0.0).candidate_threshold == 0.0


def test_a_real_model_s_uncertain_boxes_count_only_when_confirmed():
    unsure = OnnxDetector(band_model(names=NAMES, score=0.1))  # every box scores 0.1, below conf_threshold 0.25
    img = _image(128, 128, [(10, 20, 40, 50, CRYSTAL), (70, 70, 100, 110, CRYSTAL)])
    assert len(unsure.predict_boxes(img, options=OPTS)[0]) == 0
    kept, (c_boxes, c_scores, _) = unsure.predict_candidates(img, options=OPTS)
    assert len(kept[0]) == 0 and len(c_boxes) == 2 and c_scores == pytest.approx([0.1, 0.1], abs=1e-3)
    assert unsure.detect(img, options=OPTS) == []  # no confirm function: candidates are not tried
    tried = []

    def only_the_first(image, box):
        tried.append(box.tolist())
        return inscribed_ellipse(image, box) if box[0] < 50 else None

    dets = unsure.detect(img, options=OPTS, confirm=only_the_first)
    assert len(tried) == 2 and len(dets) == 1
    assert (dets[0].x_min, dets[0].y_min, dets[0].x_max, dets[0].y_max) == pytest.approx((10, 20, 40, 50), abs=2)
    assert dets[0].confidence == pytest.approx(0.1, abs=1e-3) and dets[0].class_name == "crystal"
    assert unsure.detect(img, options=dataclasses.replace(OPTS, candidate_threshold=0.0), confirm=only_the_first) == []
    # a sure model gives the same kept boxes with and without candidates
    sure = OnnxDetector(band_model(names=NAMES))
    kept_sure, cand_sure = sure.predict_candidates(img, options=OPTS)
    for a, b in zip(kept_sure, sure.predict_boxes(img, options=OPTS)):
        np.testing.assert_array_equal(a, b)
    assert len(cand_sure[0]) == 0


def test_confirmed_candidates_follow_the_kept_boxes_without_doubles(detector, monkeypatch):
    kept = (np.array([[10, 10, 30, 30]], np.float32), np.array([0.8], np.float32), np.array([0], np.int32))
    cands = (np.array([[50, 50, 80, 80], [52, 52, 80, 82], [100, 10, 120, 30]], np.float32),
             np.array([0.2, 0.15, 0.1], np.float32), np.array([0, 0, 1], np.int32))
    monkeypatch.setattr(OnnxDetector, "_predict", lambda self, img, options, *, candidates: (kept, cands))
    dets = detector.detect(np.zeros((128, 128), np.float32), confirm=inscribed_ellipse)
    # the second candidate lies on the first (confirmed) one: one object, kept once
    assert [(d.x_min, d.y_min, d.confidence) for d in dets] == [(10, 10, pytest.approx(0.8)),
                                                               (50, 50, pytest.approx(0.2)),
                                                               (100, 10, pytest.approx(0.1))]
    assert dets[2].class_name == "agglomerate"
    with pytest.raises(ValueError, match="mask of shape"):
        detector.detect(np.zeros((128, 128), np.float32),
                        confirm=lambda image, box: (0, 0, 5, 5, np.ones((2, 2), bool)))


def test_coarse_pass_on_a_real_model_finds_the_same_object_once(detector):
    img = _image(128, 128, [(10, 20, 110, 90, CRYSTAL)])
    boxes, _, cls = detector.predict_boxes(img, options=OnnxDetectorOptions(tile_overlap_px=16, coarse_scale=0.5,
                                                                            coarse_min_side_px=80))
    assert cls.tolist() == [0]
    np.testing.assert_allclose(boxes, [[10, 20, 110, 90]], atol=2)
