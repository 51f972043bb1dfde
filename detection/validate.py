"""Static checks of an untrusted ONNX model (bytes) before onnxruntime ever sees it.

The bytes are parsed with the protobuf runtime only (``onnx.ModelProto.ParseFromString``; never ``onnx.load`` with a
path, which would follow external-data references to other files) and walked in pure Python. Nothing in this module
executes the graph; the first inference happens in a separate, resource-limited process (:mod:`detection.sandbox`).

Checks, each with its own :class:`analysis.errors.ModelPackageError` message (see docs/model_packages.md):

* size cap before parsing; the protobuf parses; node/initializer/metadata counts and name lengths are capped;
* IR version and ai.onnx opset within :data:`IR_RANGE` / :data:`OPSET_RANGE`; no other operator domain imported;
* no model-local functions, no training_info, no subgraphs (If/Loop/Scan bodies), no sparse tensors;
* every node in the standard domain and its op type in :data:`ALLOWED_OPS` (what a yolo11 detect export uses, plus a
  few harmless element-wise/reduction ops);
* no tensor with external data (``data_location = EXTERNAL`` or ``external_data`` entries), allowed element types,
  element count capped, raw data length consistent with the declared shape;
* ConstantOfShape/Expand with a constant target shape must stay below :attr:`OnnxLimits.max_static_alloc_elements`
  (shapes computed at run time are left to the sandbox);
* one float image input (batch, 3, H, W) and one output (batch, 4 + classes, anchors);
* the ultralytics metadata parses (:func:`detection.modelmeta.parse_metadata`, literals only) and agrees with the
  input and output shapes (:func:`detection.modelmeta.check_output_shape`).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from analysis.errors import ModelPackageError
from detection.modelmeta import ModelMeta, check_output_shape, parse_metadata

logger = logging.getLogger(__name__)

#: IR versions we accept. onnxruntime 1.32 (measured) loads IR up to 14, but requirements.txt allows
#: onnxruntime >= 1.20, whose maximum is IR 10; detection/export.py writes IR <= 10.
IR_RANGE = (6, 10)
#: ai.onnx opset versions we accept. onnxruntime 1.32 (measured) runs up to opset 28, onnxruntime 1.20 up to 21;
#: opset 11 is the oldest with today's Resize semantics. detection/export.py writes opset 17.
OPSET_RANGE = (11, 21)
#: The standard operator domain under both of its names. 'ai.onnx.ml' and every custom domain are refused.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx"})

#: Op types of an ultralytics yolo11 detect export (opset 17, dynamic batch, nms=False), counted on a real export.
YOLO11_EXPORT_OPS = frozenset({
    "Add", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Expand", "Gather", "MatMul", "MaxPool",
    "Mul", "Range", "Reshape", "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sub", "Transpose",
    "Unsqueeze",
})
#: Harmless extras: static/fp16/other-YOLO exports and the test fixtures (element-wise, reductions, padding).
EXTRA_OPS = frozenset({
    "Identity", "Squeeze", "Flatten", "Pad", "Relu", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh", "Exp", "Log",
    "Sqrt", "Pow", "Neg", "Abs", "Floor", "Ceil", "Clip", "Min", "Max", "ReduceMean", "ReduceMax", "ReduceMin",
    "ReduceSum", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Not", "Where",
    "BatchNormalization", "AveragePool", "GlobalAveragePool", "ConvTranspose",
})
#: The two operators of a QDQ-quantised (INT8) model, as :mod:`detection.quantize` writes it: standard ONNX,
#: element-wise (scale and zero point per tensor or per channel); onnxruntime fuses them with their neighbours into
#: integer kernels.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
ALLOWED_OPS = YOLO11_EXPORT_OPS | EXTRA_OPS | QDQ_OPS

#: Element types a detector's tensors may have, with their size in bytes (raw_data layout).
_ITEMSIZE = {
    TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.DOUBLE: 8,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.INT32: 4, TensorProto.INT64: 8,
    TensorProto.BOOL: 1,
}
#: Which typed (non-raw) field holds the values of each element type.
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
    TensorProto.FLOAT16: "int32_data", TensorProto.BFLOAT16: "int32_data", TensorProto.INT8: "int32_data",
    TensorProto.UINT8: "int32_data", TensorProto.INT16: "int32_data", TensorProto.INT32: "int32_data",
    TensorProto.BOOL: "int32_data",
}
_IMAGE_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
_SUBGRAPH_ATTRS = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
_SPARSE_ATTRS = (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS)
_REMEDY = "re-export the model with detection/export.py (ultralytics, opset 17, nms=False)"


@dataclass(frozen=True)
class OnnxLimits:
    """Caps applied to an untrusted ONNX model. A yolo11n export: 10 MB, ~600 nodes, ~180 initializers."""

    max_model_bytes: int = 100 * 1024 * 1024
    max_nodes: int = 20_000
    max_initializers: int = 20_000
    max_tensor_elements: int = 64 * 1024 * 1024
    max_static_alloc_elements: int = 256 * 1024 * 1024
    max_metadata_props: int = 64
    max_name_chars: int = 1_000
    ir_range: tuple[int, int] = IR_RANGE
    opset_range: tuple[int, int] = OPSET_RANGE
    allowed_ops: frozenset[str] = ALLOWED_OPS


@dataclass(frozen=True)
class ValidatedModel:
    """What the static checks learnt about a model.

    ``input_shape``/``output_shape``: dimensions with None where symbolic (dynamic), e.g. (None, 3, 640, 640) and
    (None, 6, 8400). ``op_counts``: op type -> number of nodes, sorted by op type.
    """

    meta: ModelMeta
    ir_version: int
    opset: int
    input_name: str
    input_dtype: str
    input_shape: tuple[int | None, ...]
    output_name: str
    output_shape: tuple[int | None, ...]
    n_nodes: int
    n_parameters: int
    op_counts: tuple[tuple[str, int], ...] = field(default=())


def _shown(text: str | bytes, limit: int = 60) -> str:
    """A short, printable rendering of an untrusted string for an error message.

    protobuf returns a string field that is not valid UTF-8 as bytes, so both are accepted.
    """
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8", "replace")
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return repr(clean + ("..." if len(text) > limit else ""))


def parse_model(model_bytes: bytes, *, limits: OnnxLimits = OnnxLimits()) -> onnx.ModelProto:
    """Parse serialized ONNX bytes into a ModelProto (protobuf only; external data is never read).

    Raises ModelPackageError when the bytes are empty, larger than ``limits.max_model_bytes`` or not a protobuf
    ModelProto.
    """
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)) or len(model_bytes) == 0:
        raise ModelPackageError("The model file is empty; rebuild the model package.")
    if len(model_bytes) > limits.max_model_bytes:
        raise ModelPackageError(
            f"The model file is {len(model_bytes) / 2**20:.1f} MiB (at most {limits.max_model_bytes / 2**20:.0f} MiB)."
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(model_bytes))
    except Exception as e:  # protobuf raises DecodeError, RuntimeError or ValueError depending on the backend
        raise ModelPackageError(
            "The model file is not a valid ONNX model (corrupt or truncated protobuf); rebuild the model package."
        ) from e
    return model


def _check_versions(model: onnx.ModelProto, limits: OnnxLimits) -> int:
    lo, hi = limits.ir_range
    if not lo <= model.ir_version <= hi:
        raise ModelPackageError(
            f"The model has ONNX IR version {model.ir_version}; this app accepts IR {lo}..{hi} "
            f"(onnxruntime >= 1.20). Export with opset 17 and IR <= {hi}: {_REMEDY}."
        )
    seen: set[str] = set()
    opset = None
    for imp in model.opset_import:
        domain = imp.domain
        if domain not in ALLOWED_DOMAINS:
            raise ModelPackageError(
                f"The model imports the operator domain {_shown(domain)}; only the standard ONNX operators are "
                f"allowed (no custom or ML operators): {_REMEDY}."
            )
        key = "ai.onnx"
        if key in seen:
            raise ModelPackageError("The model imports the standard operator set twice; it is not a genuine export.")
        seen.add(key)
        opset = int(imp.version)
    lo, hi = limits.opset_range
    if opset is None:
        raise ModelPackageError("The model does not say which ONNX operator set it uses; it is not a genuine export.")
    if not lo <= opset <= hi:
        raise ModelPackageError(f"The model uses ONNX opset {opset}; this app accepts opset {lo}..{hi}: {_REMEDY}.")
    return opset


def _type_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


def _element_count(tensor: TensorProto, limits: OnnxLimits, what: str) -> int:
    n = 1
    for d in tensor.dims:
        if d < 0:
            raise ModelPackageError(f"{what} has a negative dimension; the model file is corrupt.")
        n *= d
        if n > limits.max_tensor_elements:
            raise ModelPackageError(
                f"{what} declares more than {limits.max_tensor_elements} elements; the model file is not a genuine "
                "detector export."
            )
    return n


def _check_tensor(tensor: TensorProto, limits: OnnxLimits, what: str) -> int:
    """Refuse external data, odd element types and inconsistent sizes; return the element count."""
    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        raise ModelPackageError(
            f"{what} refers to data in an outside file ({_shown(location) if location else 'no location'}); a model "
            "package must hold all its weights in model.onnx. Re-export without external data."
        )
    if tensor.data_type not in _ITEMSIZE:
        raise ModelPackageError(
            f"{what} has element type {_type_name(tensor.data_type)}; a detector uses numeric tensors only: {_REMEDY}."
        )
    n = _element_count(tensor, limits, what)
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != n * _ITEMSIZE[tensor.data_type]:
            raise ModelPackageError(f"{what} holds {len(tensor.raw_data)} bytes for {n} elements; the file is corrupt.")
    else:
        typed = len(getattr(tensor, _TYPED_FIELD[tensor.data_type]))
        if typed != n:
            raise ModelPackageError(f"{what} holds {typed} values for {n} elements; the model file is corrupt.")
    return n


def _node_tensors(node: onnx.NodeProto) -> Iterable[tuple[str, TensorProto]]:
    for attr in node.attribute:
        if attr.type in _SUBGRAPH_ATTRS or attr.HasField("g") or len(attr.graphs):
            raise ModelPackageError(
                f"The model has a sub-graph (node type {_shown(node.op_type)}); a YOLO detector has none: {_REMEDY}."
            )
        if attr.type in _SPARSE_ATTRS or attr.HasField("sparse_tensor") or len(attr.sparse_tensors):
            raise ModelPackageError("The model uses sparse tensors; a YOLO detector has none: " + _REMEDY + ".")
        if attr.HasField("t"):
            yield attr.name, attr.t
        for t in attr.tensors:
            yield attr.name, t


def _small_int_constant(tensor: TensorProto) -> list[int] | None:
    """Values of a 1-D int64 tensor of at most 16 elements (a target shape), else None."""
    if tensor.data_type != TensorProto.INT64 or len(tensor.dims) != 1 or not 0 < tensor.dims[0] <= 16:
        return None
    return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]


def _check_graph(model: onnx.ModelProto, limits: OnnxLimits) -> tuple[Counter, int]:
    graph = model.graph
    if len(model.functions):
        raise ModelPackageError("The model defines its own functions; a YOLO export has none: " + _REMEDY + ".")
    if len(model.training_info):
        raise ModelPackageError("The model carries training information (training_info); " + _REMEDY + ".")
    if len(graph.sparse_initializer):
        raise ModelPackageError("The model uses sparse tensors; a YOLO detector has none: " + _REMEDY + ".")
    if len(graph.node) > limits.max_nodes or len(graph.node) == 0:
        raise ModelPackageError(
            f"The model has {len(graph.node)} operators (1..{limits.max_nodes} allowed); it is not a YOLO detector."
        )
    if len(graph.initializer) > limits.max_initializers:
        raise ModelPackageError(f"The model has {len(graph.initializer)} weight tensors (at most "
                                f"{limits.max_initializers}).")
    n_params = 0
    constants: dict[str, list[int]] = {}
    for t in graph.initializer:
        if len(t.name) > limits.max_name_chars:
            raise ModelPackageError("A weight tensor of the model has an over-long name; the file is not genuine.")
        n_params += _check_tensor(t, limits, f"Weight tensor {_shown(t.name)}")
        values = _small_int_constant(t)
        if values is not None:
            constants[t.name] = values
    ops: Counter = Counter()
    for node in graph.node:
        if len(node.op_type) > 64 or any(len(s) > limits.max_name_chars for s in (*node.input, *node.output)):
            raise ModelPackageError("An operator of the model has an over-long name; the file is not genuine.")
        if node.domain not in ALLOWED_DOMAINS:
            raise ModelPackageError(
                f"The model uses the operator {_shown(node.op_type)} from the custom domain {_shown(node.domain)}; "
                f"only standard ONNX operators are allowed: {_REMEDY}."
            )
        if node.op_type not in limits.allowed_ops:
            raise ModelPackageError(
                f"The model uses the operator {_shown(node.op_type)}, which a YOLO detect export does not need and "
                f"this app does not accept (allowed: see docs/model_packages.md): {_REMEDY}."
            )
        ops[node.op_type] += 1
        for attr_name, t in _node_tensors(node):
            _check_tensor(t, limits, f"The constant {_shown(attr_name)} of operator {_shown(node.op_type)}")
            if node.op_type == "Constant" and node.output:
                values = _small_int_constant(t)
                if values is not None:
                    constants[node.output[0]] = values
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value_ints" and 0 < len(attr.ints) <= 16:
                    constants[node.output[0]] = [int(v) for v in attr.ints]
        shape_input = {"ConstantOfShape": 0, "Expand": 1}.get(node.op_type)
        if shape_input is not None and len(node.input) > shape_input:
            shape = constants.get(node.input[shape_input])
            if shape is not None and math.prod(max(d, 0) for d in shape) > limits.max_static_alloc_elements:
                raise ModelPackageError(
                    f"The operator {node.op_type} would create a tensor of shape {shape[:8]} "
                    f"(more than {limits.max_static_alloc_elements} elements); the model is refused."
                )
    return ops, n_params


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int, tuple[int | None, ...]]:
    ttype = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not ttype.HasField("shape"):
        raise ModelPackageError(
            f"The model's input/output {_shown(value_info.name)} is not a tensor with a known rank; " + _REMEDY + "."
        )
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    return ttype.elem_type, dims


def _check_io(model: onnx.ModelProto, meta: ModelMeta) -> tuple[str, str, tuple, str, tuple]:
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelPackageError(
            f"The model has {len(inputs)} inputs and {len(graph.output)} outputs; a YOLO detect export has one image "
            "input and one output (export with nms=False)."
        )
    if not isinstance(inputs[0].name, str) or not isinstance(graph.output[0].name, str):
        raise ModelPackageError("The model's input or output name is not valid text; the file is not genuine.")
    elem, in_shape = _dims(inputs[0])
    if elem not in _IMAGE_TYPES:
        raise ModelPackageError("The model input is not a float32/float16 image tensor; " + _REMEDY + ".")
    if len(in_shape) != 4 or in_shape[1] not in (None, 3):
        raise ModelPackageError(f"The model input has shape {in_shape}; (batch, 3, height, width) is expected.")
    if in_shape[0] is not None and in_shape[0] < 1:
        raise ModelPackageError(f"The model input has batch size {in_shape[0]}; it must be at least 1.")
    for got, want, axis in ((in_shape[2], meta.imgsz[0], "height"), (in_shape[3], meta.imgsz[1], "width")):
        if got is not None and got != want:
            raise ModelPackageError(
                f"The model input {axis} is {got} px but its metadata says {want} px; the metadata does not belong "
                "to this model."
            )
    out_elem, out_shape = _dims(graph.output[0])
    if out_elem != TensorProto.FLOAT:
        raise ModelPackageError("The model output is not a float32 tensor; " + _REMEDY + ".")
    check_output_shape(meta, out_shape)
    return inputs[0].name, _IMAGE_TYPES[elem], in_shape, graph.output[0].name, out_shape


def _metadata(model: onnx.ModelProto, limits: OnnxLimits) -> ModelMeta:
    props = model.metadata_props
    if len(props) > limits.max_metadata_props:
        raise ModelPackageError(
            f"The model has {len(props)} metadata entries (at most {limits.max_metadata_props}); it is not a genuine "
            "export."
        )
    table: dict[str, str] = {}
    for p in props:
        if p.key in table:
            raise ModelPackageError(f"The model metadata lists {_shown(p.key)} twice; it is not a genuine export.")
        table[p.key] = p.value
    return parse_metadata(table)


def validate_onnx(model_bytes: bytes, *, limits: OnnxLimits = OnnxLimits()) -> ValidatedModel:
    """Run every static check (module docstring) on serialized ONNX bytes; nothing is executed.

    Returns a :class:`ValidatedModel`. Raises ModelPackageError naming the first check that failed.
    """
    model = parse_model(model_bytes, limits=limits)
    opset = _check_versions(model, limits)
    ops, n_params = _check_graph(model, limits)
    meta = _metadata(model, limits)
    in_name, in_dtype, in_shape, out_name, out_shape = _check_io(model, meta)
    logger.debug("static checks passed: %d nodes, %d parameters, opset %d", len(model.graph.node), n_params, opset)
    return ValidatedModel(
        meta=meta,
        ir_version=int(model.ir_version),
        opset=opset,
        input_name=in_name,
        input_dtype=in_dtype,
        input_shape=in_shape,
        output_name=out_name,
        output_shape=out_shape,
        n_nodes=len(model.graph.node),
        n_parameters=n_params,
        op_counts=tuple(sorted(ops.items())),
    )
