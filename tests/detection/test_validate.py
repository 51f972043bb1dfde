"""Static ONNX checks (detection.validate) on real bad models built with onnx.helper; nothing is executed."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from analysis.errors import ModelPackageError
from detection.validate import ALLOWED_OPS, YOLO11_EXPORT_OPS, OnnxLimits, parse_model, validate_onnx
from tests.detection.onnx_fixtures import band_model, ultralytics_props

NAMES = ("crystal", "agglomerate", "mimic")


def _proto(**kw) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(band_model(**kw))
    return model


def _refused(model: onnx.ModelProto | bytes, match: str, **limits) -> None:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    with pytest.raises(ModelPackageError, match=match):
        validate_onnx(data, limits=OnnxLimits(**limits))


def _const_node(name: str, values, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, dtype), name))


def _external_tensor(name: str, location: str) -> TensorProto:
    """A float tensor whose 4 values live in an outside file, as onnx.save(save_as_external_data=True) writes it."""
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), name)
    external_data_helper.set_external_data(tensor, location=location, offset=0, length=16)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return tensor


# ---------------------------------------------------------------------------------------------- good models


def test_good_yolo_like_model_passes():
    vm = validate_onnx(band_model())
    assert vm.meta.names == NAMES and vm.meta.imgsz == (64, 64) and vm.meta.stride == 32
    assert (vm.ir_version, vm.opset) == (9, 17)
    assert vm.input_shape == (None, 3, 64, 64) and vm.output_shape == (None, 7, 84)
    assert vm.input_dtype == "float32" and vm.input_name == "images" and vm.output_name == "output0"
    assert vm.n_nodes == sum(n for _, n in vm.op_counts) and vm.n_parameters > 0


def test_fp16_input_and_fixed_batch_pass():
    assert validate_onnx(band_model(fp16_input=True)).input_dtype == "float16"
    assert validate_onnx(band_model(batch=1)).input_shape[0] == 1


def test_allowlist_covers_a_yolo11_export():
    # Counted on a real ultralytics 8.4 yolo11n export (opset 17, dynamic batch, nms=False).
    assert {"Conv", "Sigmoid", "Mul", "Concat", "Split", "Resize", "MaxPool", "Softmax", "MatMul",
            "ConstantOfShape", "Range", "Expand"} <= YOLO11_EXPORT_OPS <= ALLOWED_OPS
    for op in ("Loop", "If", "Scan", "NonMaxSuppression", "TopK", "NonZero", "StringNormalizer"):
        assert op not in ALLOWED_OPS


# ---------------------------------------------------------------------------------------------- parsing and caps


def test_empty_and_oversized_bytes_are_refused():
    _refused(b"", "empty")
    _refused(band_model(), "MiB", max_model_bytes=1000)


def test_garbage_is_refused():
    _refused(b"\xff" * 100, "not a valid ONNX model")
    with pytest.raises(ModelPackageError):
        parse_model(b"\x0a\xff\xff\xff\xff\x0f")  # a length prefix beyond the end


def test_truncated_protobuf_is_always_refused():
    data = band_model()
    cuts = sorted(set(range(0, len(data), max(1, len(data) // 300))) | {len(data) - 1, len(data) - 2})
    for cut in cuts:
        with pytest.raises(ModelPackageError):
            validate_onnx(data[:cut])


def test_fuzzed_protobuf_never_escapes_as_another_error():
    """300 seeded random mutations: each is refused with ModelPackageError or (a change inside the weights, which
    leaves a well-formed model) passes; no other exception, no hang."""
    data = band_model()
    rng = np.random.default_rng(20261127)
    refused = 0
    for _ in range(300):
        buf = bytearray(data)
        kind = rng.integers(3)
        if kind == 0:  # overwrite 1-4 bytes
            for pos in rng.integers(0, len(buf), size=rng.integers(1, 5)):
                buf[pos] = int(rng.integers(256))
        elif kind == 1:  # delete a short run
            pos = int(rng.integers(len(buf)))
            del buf[pos : pos + int(rng.integers(1, 8))]
        else:  # insert random bytes
            pos = int(rng.integers(len(buf)))
            buf[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 8)), dtype=np.uint8).tobytes()
        try:
            validate_onnx(bytes(buf))
        except ModelPackageError:
            refused += 1
    assert refused >= 150  # most mutations break the structure; the rest hit weight bytes


def test_too_many_nodes_or_initializers_are_refused():
    _refused(_proto(), "operators", max_nodes=10)
    _refused(_proto(), "weight tensors", max_initializers=5)


# ---------------------------------------------------------------------------------------------- versions, domains


@pytest.mark.parametrize("ir", [5, 11, 14])
def test_ir_version_outside_the_supported_range_is_refused(ir):
    model = _proto()
    model.ir_version = ir
    _refused(model, f"IR version {ir}")


@pytest.mark.parametrize("opset", [10, 22, 28])
def test_opset_outside_the_supported_range_is_refused(opset):
    model = _proto()
    model.opset_import[0].version = opset
    _refused(model, f"opset {opset}")


def test_missing_or_duplicate_standard_opset_is_refused():
    model = _proto()
    del model.opset_import[:]
    _refused(model, "operator set")
    model = _proto()
    model.opset_import.append(helper.make_opsetid("ai.onnx", 17))
    _refused(model, "twice")


def test_custom_domain_import_is_refused():
    model = _proto()
    model.opset_import.append(helper.make_opsetid("com.evil", 1))
    model.graph.node.append(helper.make_node("Backdoor", ["images"], ["evil"], domain="com.evil"))
    _refused(model, "operator domain 'com.evil'")


def test_ml_domain_is_refused():
    model = _proto()
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    _refused(model, "operator domain 'ai.onnx.ml'")


def test_custom_domain_node_without_import_is_refused():
    model = _proto()
    model.graph.node.append(helper.make_node("Backdoor", ["images"], ["evil"], domain="com.microsoft"))
    _refused(model, "custom domain 'com.microsoft'")


def test_operator_outside_the_allowlist_is_refused():
    model = _proto()
    model.graph.node.append(helper.make_node("NonZero", ["images"], ["nz"]))
    _refused(model, "operator 'NonZero'")


def test_subgraph_is_refused_even_for_an_allowed_op():
    model = _proto()
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])
    branch = helper.make_graph([helper.make_node("Constant", [], ["b"], value_float=1.0)], "br", [], [out])
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "c"))
    model.graph.node.extend([cond, helper.make_node("If", ["cond"], ["r"], then_branch=branch, else_branch=branch)])
    _refused(model, "operator 'If'")
    _refused(model, "sub-graph", allowed_ops=ALLOWED_OPS | {"If"})


def test_model_local_function_is_refused():
    model = _proto()
    fn = helper.make_function("com.evil", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                              opset_imports=[helper.make_opsetid("", 17)])
    model.functions.append(fn)
    _refused(model, "defines its own functions")


def test_training_info_is_refused():
    model = _proto()
    model.training_info.add()
    _refused(model, "training_info")


# ---------------------------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("location", ["../../etc/passwd", "weights.bin", "/etc/shadow"])
def test_initializer_with_external_data_is_refused(location):
    model = _proto()
    model.graph.initializer.append(_external_tensor("stolen", location))
    _refused(model, "outside file")


def test_external_flag_without_location_is_refused():
    model = _proto()
    tensor = helper.make_tensor("t", TensorProto.FLOAT, [1], [0.0])
    tensor.data_location = TensorProto.EXTERNAL
    model.graph.initializer.append(tensor)
    _refused(model, "outside file")


def test_constant_node_with_external_data_is_refused():
    model = _proto()
    tensor = _external_tensor("v", "../../etc/passwd")
    model.graph.node.append(helper.make_node("Constant", [], ["leak"], value=tensor))
    _refused(model, "outside file")


def test_inconsistent_or_huge_tensors_are_refused():
    model = _proto()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    _refused(model, "corrupt")
    model = _proto()
    huge = helper.make_tensor("huge", TensorProto.FLOAT, [1], [0.0])
    del huge.dims[:]
    huge.dims.extend([1_000_000, 1_000_000])
    model.graph.initializer.append(huge)
    _refused(model, "elements")
    model = _proto()
    neg = helper.make_tensor("neg", TensorProto.FLOAT, [1], [0.0])
    neg.dims[0] = -1
    model.graph.initializer.append(neg)
    _refused(model, "negative")
    model = _proto()
    model.graph.initializer.append(helper.make_tensor("s", TensorProto.STRING, [1], [b"x"]))
    _refused(model, "STRING")


def test_sparse_tensors_are_refused():
    model = _proto()
    values = helper.make_tensor("sv", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("si", TensorProto.INT64, [1], [0])
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    _refused(model, "sparse")


def test_constant_of_shape_with_a_huge_constant_shape_is_refused_statically():
    for node_shape in (True, False):
        model = _proto()
        if node_shape:
            model.graph.node.append(_const_node("shp", [1_000_000, 1_000_000]))
        else:
            model.graph.initializer.append(numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "shp"))
        model.graph.node.append(helper.make_node("ConstantOfShape", ["shp"], ["bomb"]))
        _refused(model, "ConstantOfShape would create")
    model = _proto()
    model.graph.node.extend([helper.make_node("Constant", [], ["shp"], value_ints=[100_000, 100_000, 100]),
                             helper.make_node("Expand", ["images", "shp"], ["bomb"])])
    _refused(model, "Expand would create")


def test_a_shape_computed_at_run_time_is_left_to_the_sandbox():
    model = _proto()
    model.graph.node.extend([
        helper.make_node("Shape", ["images"], ["s"]),
        _const_node("k", [1, 1, 10_000, 10_000]),
        helper.make_node("Mul", ["s", "k"], ["big_shape"]),
        helper.make_node("ConstantOfShape", ["big_shape"], ["bomb"]),
    ])
    assert validate_onnx(model.SerializeToString()).n_nodes == len(model.graph.node)


# ---------------------------------------------------------------------------------------------- metadata and shapes


def test_ten_megabyte_metadata_string_is_refused():
    _refused(band_model(props=ultralytics_props(NAMES, (64, 64), args="x" * 10_000_000)), "characters long")


def test_stride_zero_is_refused():
    props = ultralytics_props(NAMES, (64, 64))
    props["stride"] = "0"
    _refused(band_model(props=props), "'stride' must be one of")


def test_class_count_not_matching_the_output_is_refused():
    _refused(band_model(n_out_classes=2), "names 3 classes")


def test_missing_or_duplicate_metadata_is_refused():
    _refused(band_model(props={"task": "detect"}), "lacks")
    model = _proto()
    model.metadata_props.add(key="stride", value="16")
    _refused(model, "twice")
    model = _proto()
    for i in range(70):
        model.metadata_props.add(key=f"k{i}", value="v")
    _refused(model, "metadata entries")


def test_metadata_is_never_evaluated(monkeypatch):
    monkeypatch.delenv("CRYSTALQC_PWNED", raising=False)
    props = ultralytics_props(NAMES, (64, 64))
    props["names"] = "__import__('os').environ.__setitem__('CRYSTALQC_PWNED', '1')"
    _refused(band_model(props=props), "literal")
    import os

    assert "CRYSTALQC_PWNED" not in os.environ


def test_wrong_output_shape_is_refused():
    _refused(band_model(n_anchors=100), "anchors")
    model = _proto()
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_value = 1
    _refused(model, "output has shape")
    model = _proto()
    model.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    _refused(model, "2 outputs")
    model = _proto()
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    _refused(model, "not a float32")


def test_input_that_does_not_fit_the_metadata_is_refused():
    _refused(band_model(props=ultralytics_props(NAMES, (128, 128))), "input height is 64 px")
    model = _proto()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    _refused(model, "input has shape")
    model = _proto()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    _refused(model, "float32/float16")
    model = _proto()
    model.graph.input.append(helper.make_tensor_value_info("second", TensorProto.FLOAT, [1]))
    _refused(model, "2 inputs")
