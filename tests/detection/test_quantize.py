"""INT8 quantisation (detection.quantize) on a small convolutional model named like an ultralytics export."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from analysis.errors import ModelPackageError
from detection import quantize as dq
from detection.package import build_package, generate_private_key, unpack
from detection.validate import validate_onnx
from tests.detection.onnx_fixtures import conv_head_model

HEAD_DECODE = {"/model.2/Reshape_cv20", "/model.2/Concat_box", "/model.2/Sigmoid_box", "/model.2/Mul_box",
               "/model.2/Concat_cls", "/model.2/Sigmoid", "/model.2/Concat_out"}


def _inputs(n: int = 6, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(n)]


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def test_float_nodes_are_the_stem_the_attention_core_and_the_head_decoding() -> None:
    nodes = [("/model.0/conv/Conv", "Conv"), ("/model.1/conv/Conv", "Conv"), ("/model.2/m.0/Conv", "Conv"),
             ("/model.10/m/m.0/attn/qkv/conv/Conv", "Conv"), ("/model.10/m/m.0/attn/Mul_1", "Mul"),
             ("/model.10/m/m.0/attn/Transpose", "Transpose"), ("/model.10/m/m.0/attn/MatMul", "MatMul"),
             ("/model.10/m/m.0/attn/Softmax", "Softmax"), ("/model.10/m/m.0/attn/MatMul_1", "MatMul"),
             ("/model.10/m/m.0/attn/Add", "Add"), ("/model.10/m/m.0/attn/proj/conv/Conv", "Conv"),
             ("/model.10/m/m.0/ffn/ffn.0/act/Mul", "Mul"),
             ("/model.23/cv2.0/cv2.0.0/conv/Conv", "Conv"), ("/model.23/cv3.2/cv3.2.2/Conv", "Conv"),
             ("/model.23/dfl/conv/Conv", "Conv"), ("/model.23/Concat_26", "Concat"), ("/model.23/Sigmoid", "Sigmoid")]
    assert dq.float_nodes(nodes) == [
        "/model.0/conv/Conv", "/model.1/conv/Conv", "/model.10/m/m.0/attn/Mul_1", "/model.10/m/m.0/attn/Transpose",
        "/model.10/m/m.0/attn/MatMul", "/model.10/m/m.0/attn/Softmax", "/model.10/m/m.0/attn/MatMul_1",
        "/model.23/dfl/conv/Conv", "/model.23/Concat_26", "/model.23/Sigmoid"]


@pytest.mark.parametrize("names", [[], ["Conv_0", "Concat_1"], ["/model.0/conv/Conv", "/model.1/x"]])
def test_float_nodes_refuses_models_not_named_like_an_export(names: list[str]) -> None:
    with pytest.raises(ModelPackageError, match="ultralytics YOLO export"):
        dq.float_nodes([(n, "Conv") for n in names])


def test_quantized_model_passes_the_validator_and_keeps_the_decoding_float() -> None:
    fp32 = conv_head_model()
    int8 = dq.quantize_model(fp32, _inputs())
    vm = validate_onnx(int8)  # standard domain only, QDQ ops allowed, metadata kept
    counts = dict(vm.op_counts)
    assert counts.get("QuantizeLinear", 0) > 0 and counts.get("DequantizeLinear", 0) > 0
    assert vm.meta.names == ("crystal", "agglomerate")
    model = onnx.load_model_from_string(int8)
    assert {imp.domain for imp in model.opset_import} <= {"", "ai.onnx"}
    produced_by = {out: n for n in model.graph.node for out in n.output}
    # every decode node is still there, and no decode node's output is re-quantised
    names = {n.name for n in model.graph.node}
    assert HEAD_DECODE <= names
    consumers = {n.op_type for n in model.graph.node for i in n.input
                 if i in produced_by and produced_by[i].name in HEAD_DECODE - {"/model.2/Reshape_cv20"}}
    assert "QuantizeLinear" not in consumers
    # the stem convolution reads the float input directly (not through a QuantizeLinear)
    stem = next(n for n in model.graph.node if n.name.startswith("/model.0/") and n.op_type == "Conv")
    assert stem.input[0] == "images"


def test_quantized_model_stays_close_to_the_float_model() -> None:
    fp32 = conv_head_model()
    calib = _inputs()
    int8 = dq.quantize_model(fp32, calib)
    x = _inputs(1)[0] * 0.9 + 0.05
    a, b = _run(fp32, x), _run(int8, x)
    assert a.shape == b.shape == (1, 6, 84)
    boxes_err = np.abs(a[:, :4] - b[:, :4])
    scores_err = np.abs(a[:, 4:] - b[:, 4:])
    # int8 steps of a few per cent of each activation's range, not a broken model (a uint8-quantised output would
    # move boxes by 64/255 px steps and is caught here as well)
    assert float(np.median(boxes_err)) < 1.0 and float(np.median(scores_err)) < 0.05
    assert not np.array_equal(a, b)  # it really is a different (quantised) model


def _activation_ranges(model_bytes: bytes) -> dict[str, tuple[float, float]]:
    """(min, max) represented by every uint8 QuantizeLinear fed by an activation (not a weight), by tensor name."""
    model = onnx.load_model_from_string(model_bytes)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            scale, zero = float(inits[n.input[1]]), int(inits[n.input[2]])
            out[n.input[0]] = (-zero * scale, (255 - zero) * scale)
    return out


@pytest.mark.parametrize(("total", "limit", "expected"),
                         [(72, 72, 72), (192, 72, 64), (6, 4, 3), (7, 4, 1), (3, 72, 3)])
def test_chunk_size_is_the_largest_divisor_within_the_limit(total: int, limit: int, expected: int) -> None:
    assert dq.chunk_size(total, limit) == expected


def test_chunked_calibration_merges_every_chunk() -> None:
    fp32 = conv_head_model()
    # three chunks of two inputs with different ranges (negative, full, faint): only their union covers every range
    base = _inputs(6)
    calib = [x - 1.0 for x in base[:2]] + base[2:4] + [x * 0.2 for x in base[4:]]
    whole = _activation_ranges(dq.quantize_model(fp32, calib))
    chunked = _activation_ranges(dq.quantize_model(fp32, calib, chunk_limit=2))
    assert whole.keys() == chunked.keys() and len(whole) > 3
    span = {k: hi - lo for k, (lo, hi) in whole.items()}
    # merged histograms re-bin, so some ranges move a little, far less than with any one chunk alone
    worst = max(max(abs(a - b) for a, b in zip(chunked[k], whole[k], strict=True)) / span[k] for k in whole)
    assert worst < 0.05
    for c in range(3):
        alone = _activation_ranges(dq.quantize_model(fp32, calib[2 * c: 2 * c + 2]))
        moved = max(max(abs(a - b) for a, b in zip(alone[k], whole[k], strict=True)) / span[k] for k in whole)
        assert moved > 0.15, c  # measured 0.27 / 0.36 / 0.79


def test_one_chunk_reproduces_the_unchunked_model() -> None:
    fp32 = conv_head_model()
    assert dq.quantize_model(fp32, _inputs(), chunk_limit=6) == dq.quantize_model(fp32, _inputs(), chunk_limit=100)


def test_agreement_reports_identical_models_as_full_agreement() -> None:
    fp32 = conv_head_model()
    check = dq.agreement(fp32, fp32, _inputs(2))
    assert check["detections_f1_vs_float"] == 1.0 and check["max_score_diff"] == 0.0
    assert check["float_detections"] == check["int8_detections"]


def test_agreement_detects_a_different_model() -> None:
    a, b = conv_head_model(seed=0), conv_head_model(seed=5)
    check = dq.agreement(a, b, _inputs(3))
    assert check["max_score_diff"] > 0.05
    assert check["detections_f1_vs_float"] < 1.0


def test_quantized_manifest_builds_a_valid_package() -> None:
    fp32 = conv_head_model()
    int8 = dq.quantize_model(fp32, _inputs())
    source = {"name": "tiny", "version": "1.1.0", "author": "tests", "training_data": "random", "metrics": {},
              "sha256": "0" * 64, "size_bytes": 1, "opset": 17, "ir_version": 9, "training": {"epochs": 3}}
    fields = dq.quantized_manifest(source, version="1.2.0", check={"detections_f1_vs_float": 0.97},
                                   n_images=4, seed=dq.CALIBRATION_SEED)
    assert fields["version"] == "1.2.0" and fields["training"]["epochs"] == 3
    assert fields["training"]["quantization"]["from_version"] == "1.1.0"
    assert "INT8" in fields["training_data"] and fields["training_data"].startswith("random")
    assert "calibration_chunks" not in fields["training"]["quantization"]  # 12 windows: one chunk
    chunked = dq.quantized_manifest(source, version="1.2.0", check={}, n_images=64, seed=1, chunk_limit=48)
    assert chunked["training"]["quantization"]["calibration_chunks"] == "4 chunks of 48 windows"
    fed = dq.quantized_manifest(source, version="1.2.0", check={}, n_images=64, seed=1, chunk_limit=48, windows=100)
    assert fed["training"]["quantization"]["calibration_chunks"] == "4 chunks of 25 windows"
    assert fed["training"]["quantization"]["calibration_inputs"].startswith("100 windows")
    data = build_package(fields, int8, key=generate_private_key())
    manifest = json.loads(unpack(data).manifest_bytes)
    assert manifest["version"] == "1.2.0" and manifest["size_bytes"] == len(int8)


def test_calibration_inputs_are_cleaned_windows_of_one_shape() -> None:
    inputs = dq.calibration_inputs(1, window=(256, 320))
    assert len(inputs) == 3 == dq.WINDOWS_PER_IMAGE
    for x in inputs:
        assert x.shape == (1, 3, 256, 320) and x.dtype == np.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert np.array_equal(x[:, 0], x[:, 1])  # grey copied to the three channels
    assert not np.array_equal(inputs[0], inputs[1])


def test_cli_refuses_an_older_version_and_an_existing_folder(tmp_path, capsys) -> None:
    fields = {"name": "tiny", "version": "1.1.0", "author": "tests", "training_data": "random",
              "created": "2026-11-28T00:00:00+00:00"}
    pkg = tmp_path / "m.cqcpkg"
    pkg.write_bytes(build_package(fields, conv_head_model()))
    assert dq.main(["--package", str(pkg), "--version", "1.0.9", "--out", str(tmp_path / "o")]) == 2
    assert "must be newer" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert dq.main(["--package", str(pkg), "--version", "1.2.0", "--out", str(tmp_path / "exists")]) == 2
    assert "exists" in capsys.readouterr().err
    assert dq.main(["--package", str(pkg), "--version", "1.2.0", "--out", str(tmp_path / "c"),
                    "--chunk-windows", "0"]) == 2
    assert "--chunk-windows must be at least 1" in capsys.readouterr().err
