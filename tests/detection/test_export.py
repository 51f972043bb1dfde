"""Export with a fixed or a dynamic input size (detection.export helpers, no torch), and what the app makes of the
exported folder once it is signed into a package."""
from __future__ import annotations

import hashlib
import json
import sys

import pytest

import detection.package as pkg
from analysis.onnx_adapter import load_package_detector, manifest_input_kind
from detection import export as ex
from detection import package_cli
from tests.detection.onnx_fixtures import band_model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

KEY = pkg.generate_private_key()
TRUSTED = {pkg.private_key_id(KEY): pkg.public_key_of(KEY)}
NAMES = ("crystal", "agglomerate", "mimic")


def _toy_export():
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, "h", "w"])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["b", "c", "n"])
    graph = helper.make_graph([helper.make_node("Flatten", ["images"], ["output0"], axis=2)], "toy", [inp], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_fix_spatial_dims_dynamic_keeps_height_width_and_anchors_symbolic():
    model = _toy_export()
    ex.fix_spatial_dims(model, imgsz=320, n_outputs=6, dynamic_size=True)
    assert _dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(model.graph.output[0]) == ["batch", 6, "anchors"]
    ex.fix_spatial_dims(model, imgsz=320, n_outputs=6)  # the fixed kind pins them again
    assert _dims(model.graph.input[0]) == ["batch", 3, 320, 320]
    assert _dims(model.graph.output[0]) == ["batch", 6, 2100]


def test_check_sizes_add_a_non_square_input_for_dynamic_exports():
    assert ex.check_sizes(640, 32, dynamic_size=False) == [(2, 640, 640)]
    assert ex.check_sizes(640, 32, dynamic_size=True) == [(2, 640, 640), (1, 320, 672)]
    assert ex.check_sizes(320, 32, dynamic_size=True) == [(2, 320, 320), (1, 160, 352)]
    assert ex.check_sizes(32, 32, dynamic_size=True)[1] == (1, 32, 64)


def _manifest(dynamic_size: bool, model: bytes) -> dict:
    return ex.build_manifest(name="crystal-test", version="2.0.0", classes=NAMES, imgsz=64, stride=32, opset=17,
                             ir_version=9, sha256=hashlib.sha256(model).hexdigest(), size_bytes=len(model),
                             recipe={"epochs": 1}, metrics={"mAP50": 0.5}, dynamic_size=dynamic_size)


def test_build_manifest_says_which_input_kind():
    fixed = _manifest(False, b"x")
    dyn = _manifest(True, b"x")
    assert fixed["input"]["shape"] == ["batch", 3, 64, 64] and fixed["output"]["shape"] == ["batch", 7, 84]
    assert dyn["input"]["shape"] == ["batch", 3, "height", "width"]
    assert dyn["output"]["shape"] == ["batch", 7, "anchors"]
    assert dyn["input_size"] == [64, 64]  # the export size stays in the manifest (and the model's imgsz metadata)
    assert "dynamic" in dyn["input"]["size"] and "fixed" in fixed["input"]["size"]
    assert (manifest_input_kind(fixed), manifest_input_kind(dyn)) == ("fixed", "dynamic")
    json.dumps(dyn)


@pytest.mark.parametrize("dynamic_size", [False, True], ids=["fixed", "dynamic"])
def test_exported_folder_signs_into_a_package_the_app_verifies_and_runs(tmp_path, dynamic_size):
    model = band_model(names=NAMES, dynamic_size=dynamic_size)
    folder = tmp_path / "crystal-test"
    folder.mkdir()
    (folder / ex.MODEL_FILE).write_bytes(model)
    (folder / ex.MANIFEST_FILE).write_text(json.dumps(_manifest(dynamic_size, model)), encoding="utf-8")
    out = package_cli.package_folder(folder, key=KEY, fields={"author": "test", "training_data": "rendered"})
    vp = pkg.validate_package(out.read_bytes(), trusted_keys=TRUSTED, accepted_versions={})
    assert vp.model.input_shape[2:] == ((None, None) if dynamic_size else (64, 64))
    det = load_package_detector(out, trusted_keys=TRUSTED)
    assert det.model.dynamic_input is dynamic_size and det.label == "onnx:crystal-test 2.0.0"


def test_cli_has_the_dynamic_size_flag():
    args = ex.build_parser().parse_args(["--weights", "w.pt", "--out", "o", "--name", "n", "--version", "1.0.0",
                                         "--dynamic-size"])
    assert args.dynamic_size is True
    assert ex.build_parser().parse_args(["--weights", "w.pt", "--out", "o", "--name", "n", "--version",
                                         "1.0.0"]).dynamic_size is False
    assert "ultralytics" not in sys.modules
