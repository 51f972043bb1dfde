"""Tiny ONNX graphs (built with onnx.helper) that behave like an ultralytics YOLO detect export.

``band_model``: for each class c, the pixels whose grey value lies in ``bands[c]`` = [lo, hi) form "the object of
class c"; the graph outputs, at anchor c, the bounding box of those pixels (cx, cy, w, h in input pixels, with
x_max/y_max exclusive) and a one-hot score ``score`` for class c (0 when no pixel is in the band). All other anchors
are zero. So a test image with one object per class per tile yields known boxes, and an object cut by a tile seam
yields a truncated box in each tile, like a real model.

Output shape (batch, 4 + nc, N) with N = the anchor count of a stride-32 head at imgsz (84 for 64x64).
With ``dynamic_size=True`` the input height/width are symbolic and the graph computes its coordinate ramps and N
from the actual input shape (like a YOLO export with dynamic height/width).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9
_BIG = 1.0e4


def ultralytics_props(
    names: Sequence[str], imgsz: tuple[int, int], *, stride: int = 32, **extra: str
) -> dict[str, str]:
    """Metadata strings as ultralytics writes them."""
    props = {
        "description": "Ultralytics YOLO11n model",
        "author": "Ultralytics",
        "task": "detect",
        "batch": "1",
        "stride": str(stride),
        "imgsz": str(list(imgsz)),
        "names": str(dict(enumerate(names))),
    }
    props.update(extra)
    return props


def default_anchor_count(imgsz: tuple[int, int], stride: int = 32) -> int:
    h, w = imgsz
    return sum((h // s) * (w // s) for s in (8, 16, 32, 64) if s <= stride)


def finish_model(nodes, inits, inputs, outputs, props: Mapping[str, str] | None) -> bytes:
    """Serialize a graph as opset 17 / IR 9 with ``props`` as metadata (checked with onnx.checker)."""
    graph = helper.make_graph(nodes, "tiny_yolo", list(inputs), list(outputs), initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = IR_VERSION
    if props:
        helper.set_model_props(model, dict(props))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def band_model(
    *,
    imgsz: tuple[int, int] = (64, 64),
    names: Sequence[str] = ("crystal", "agglomerate", "mimic"),
    bands: Sequence[tuple[float, float]] = ((0.85, 1.01), (0.6, 0.85), (0.2, 0.4)),
    score: float = 0.9,
    batch: int | str = "batch",
    props: Mapping[str, str] | None = None,
    n_anchors: int | None = None,
    n_out_classes: int | None = None,
    fp16_input: bool = False,
    dynamic_size: bool = False,
) -> bytes:
    """Serialized ONNX model (see module docstring). ``props`` replaces the ultralytics metadata when given;
    ``n_anchors``/``n_out_classes`` let a test build a model whose output disagrees with its metadata;
    ``fp16_input`` makes the input float16 (as ``export(half=True)`` does); ``dynamic_size`` makes the input
    height/width symbolic (``imgsz`` then only goes into the metadata)."""
    h, w = imgsz
    nc = len(names) if n_out_classes is None else n_out_classes
    n = default_anchor_count(imgsz) if n_anchors is None else n_anchors
    assert nc <= len(bands) and n >= nc
    inits = [
        numpy_helper.from_array(np.array(_BIG, dtype=np.float32), "big"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array(score, dtype=np.float32), "score"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
    ]
    nodes = [helper.make_node("ReduceMean", ["images_f"], ["grey"], axes=[1], keepdims=0)]  # (B, H, W)
    if dynamic_size:
        inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), f"i{v}")
                  for v in (0, 1, 2, 3, 8, 16, 32)]
        inits += [numpy_helper.from_array(np.array([0, 0, 0, 0, 0], dtype=np.int64), "pads0"),
                  numpy_helper.from_array(np.array(nc, dtype=np.int64), "nc"),
                  numpy_helper.from_array(np.array([0], dtype=np.int64), "ax0")]
        nodes += [helper.make_node("Shape", ["images"], ["shape"]),
                  helper.make_node("Gather", ["shape", "i2"], ["H"]),
                  helper.make_node("Gather", ["shape", "i3"], ["W"])]
        for dim, name in (("W", "xs"), ("H", "ys")):
            nodes += [helper.make_node("Range", ["i0", dim, "i1"], [name + "_i"]),
                      helper.make_node("Cast", [name + "_i"], [name], to=TensorProto.FLOAT),
                      helper.make_node("Add", [name, "one"], [name + "1"])]
        levels = []
        for s in (8, 16, 32):
            nodes += [helper.make_node("Div", ["H", f"i{s}"], [f"h{s}"]),
                      helper.make_node("Div", ["W", f"i{s}"], [f"w{s}"]),
                      helper.make_node("Mul", [f"h{s}", f"w{s}"], [f"n{s}"])]
            levels.append(f"n{s}")
        nodes += [helper.make_node("Add", levels[:2], ["n_16"]), helper.make_node("Add", ["n_16", levels[2]], ["n_all"]),
                  helper.make_node("Sub", ["n_all", "nc"], ["n_pad"]),
                  helper.make_node("Unsqueeze", ["n_pad", "ax0"], ["n_pad1"]),
                  helper.make_node("Concat", ["pads0", "n_pad1"], ["pads"], axis=0)]
    else:
        inits += [
            numpy_helper.from_array(np.arange(w, dtype=np.float32), "xs"),
            numpy_helper.from_array(np.arange(1, w + 1, dtype=np.float32), "xs1"),
            numpy_helper.from_array(np.arange(h, dtype=np.float32), "ys"),
            numpy_helper.from_array(np.arange(1, h + 1, dtype=np.float32), "ys1"),
            numpy_helper.from_array(np.array([0, 0, 0, 0, 0, n - nc], dtype=np.int64), "pads"),
        ]
    if fp16_input:
        nodes.insert(0, helper.make_node("Cast", ["images"], ["images_f"], to=TensorProto.FLOAT))
    else:
        nodes.insert(0, helper.make_node("Identity", ["images"], ["images_f"]))
    anchors = []
    for c in range(nc):
        lo, hi = bands[c]
        p = f"c{c}_"
        inits += [
            numpy_helper.from_array(np.array(lo, dtype=np.float32), p + "lo"),
            numpy_helper.from_array(np.array(hi, dtype=np.float32), p + "hi"),
            numpy_helper.from_array(np.eye(nc, dtype=np.float32)[c][None, :], p + "onehot"),
        ]
        nodes += [
            helper.make_node("GreaterOrEqual", ["grey", p + "lo"], [p + "ge"]),
            helper.make_node("Less", ["grey", p + "hi"], [p + "lt"]),
            helper.make_node("And", [p + "ge", p + "lt"], [p + "mb"]),
            helper.make_node("Cast", [p + "mb"], [p + "m"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", [p + "m"], [p + "col"], axes=[1], keepdims=0),  # (B, W)
            helper.make_node("ReduceMax", [p + "m"], [p + "row"], axes=[2], keepdims=0),  # (B, H)
            helper.make_node("ReduceMax", [p + "col"], [p + "any"], axes=[1], keepdims=1),  # (B, 1)
        ]
        for prof, lo_c, hi_c, tag in ((p + "col", "xs", "xs1", "x"), (p + "row", "ys", "ys1", "y")):
            q = p + tag
            nodes += [
                helper.make_node("Sub", ["one", prof], [q + "inv"]),
                helper.make_node("Mul", [q + "inv", "big"], [q + "pen"]),
                helper.make_node("Mul", [prof, lo_c], [q + "a"]),
                helper.make_node("Add", [q + "a", q + "pen"], [q + "a2"]),
                helper.make_node("ReduceMin", [q + "a2"], [q + "min"], axes=[1], keepdims=1),
                helper.make_node("Mul", [prof, hi_c], [q + "b"]),
                helper.make_node("Sub", [q + "b", q + "pen"], [q + "b2"]),
                helper.make_node("ReduceMax", [q + "b2"], [q + "max"], axes=[1], keepdims=1),
                helper.make_node("Add", [q + "min", q + "max"], [q + "sum"]),
                helper.make_node("Mul", [q + "sum", "half"], [q + "c"]),
                helper.make_node("Sub", [q + "max", q + "min"], [q + "len"]),
            ]
        nodes += [
            helper.make_node("Mul", [p + "any", "score"], [p + "s"]),  # (B, 1)
            helper.make_node("Mul", [p + "s", p + "onehot"], [p + "cls"]),  # (B, nc)
            helper.make_node("Concat", [p + "xc", p + "yc", p + "xlen", p + "ylen", p + "cls"], [p + "vec"], axis=1),
            helper.make_node("Unsqueeze", [p + "vec", "ax2"], [p + "anchor"]),  # (B, 4 + nc, 1)
        ]
        anchors.append(p + "anchor")
    nodes += [
        helper.make_node("Concat", anchors, ["dense"], axis=2),  # (B, 4 + nc, nc)
        helper.make_node("Pad", ["dense", "pads"], ["output0"], mode="constant"),
    ]
    in_type = TensorProto.FLOAT16 if fp16_input else TensorProto.FLOAT
    in_hw = ["height", "width"] if dynamic_size else [h, w]
    inp = helper.make_tensor_value_info("images", in_type, [batch, 3, *in_hw])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                        [batch, 4 + nc, "anchors" if dynamic_size else n])
    if props is None:
        props = ultralytics_props(names, imgsz)
    return finish_model(nodes, inits, [inp], [out], props)


def constant_model(
    output: np.ndarray,
    *,
    imgsz: tuple[int, int] | tuple[str, str],
    props: Mapping[str, str] | None,
    batch: int | str = "batch",
) -> bytes:
    """A model ignoring its input and returning ``output`` (shape (1, C, N)) repeated over the batch.

    ``imgsz`` may be symbolic (e.g. ("h", "w")) for a model exported with dynamic input size."""
    out_arr = np.asarray(output, dtype=np.float32)
    _, ch, n = out_arr.shape
    inits = [numpy_helper.from_array(out_arr, "const")]
    # Multiply a (B, 1, 1) zero-derived tensor of ones by the constant to broadcast it over the batch.
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),  # (B, 1, 1, 1)
        helper.make_node("Squeeze", ["m", "zero_idx_sq"], ["m3"]),
        helper.make_node("Mul", ["m3", "zero_f"], ["z"]),
        helper.make_node("Add", ["z", "one_f"], ["ones"]),  # (B, 1, 1)
        helper.make_node("Mul", ["ones", "const"], ["output0"]),
    ]
    inits += [
        numpy_helper.from_array(np.array([3], dtype=np.int64), "zero_idx_sq"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero_f"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_f"),
    ]
    h, w = imgsz
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, ch, n])
    return finish_model(nodes, inits, [inp], [out], props)


def conv_head_model(names: Sequence[str] = ("crystal", "agglomerate"), *, imgsz: int = 64, seed: int = 0) -> bytes:
    """A small random-weight convolutional network named like an ultralytics export: stem ``/model.0/`` and
    ``/model.1/`` (3x3 convolutions + SiLU), then a head ``/model.2/`` whose ``cv2.k``/``cv3.k`` convolutions
    (strides 8, 16, 32 from the stem) give 4 box and nc class channels, decoded by Reshape/Sigmoid/Concat nodes to
    the (batch, 4 + nc, anchors) output of a detect export (84 anchors at 64x64). Dynamic batch, fixed size. For the
    quantisation tests: real convolutions for onnxruntime to quantise, and decode nodes that must stay float."""
    rng = np.random.default_rng(seed)
    nc = len(names)
    nodes, inits = [], []

    def conv(name: str, src: str, cin: int, cout: int, k: int, stride: int) -> str:
        w = numpy_helper.from_array(rng.normal(0, 0.3, (cout, cin, k, k)).astype(np.float32), name + ".w")
        b = numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), name + ".b")
        inits.extend([w, b])
        nodes.append(helper.make_node("Conv", [src, w.name, b.name], [name + "_out"], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        return name + "_out"

    def silu(name: str, src: str) -> str:
        nodes.append(helper.make_node("Sigmoid", [src], [name + "_sig"], name=name + "/Sigmoid"))
        nodes.append(helper.make_node("Mul", [src, name + "_sig"], [name + "_out"], name=name + "/Mul"))
        return name + "_out"

    x = silu("/model.0/act", conv("/model.0/conv/Conv", "images", 3, 8, 3, 2))
    x = silu("/model.1/act", conv("/model.1/conv/Conv", x, 8, 8, 3, 2))
    boxes, scores = [], []
    for k, stride in enumerate((2, 4, 8)):  # total strides 8, 16, 32
        for tower, ch, out in (("cv2", 4, boxes), ("cv3", nc, scores)):
            y = conv(f"/model.2/{tower}.{k}/Conv", x, 8, ch, 3, stride)
            shape = numpy_helper.from_array(np.array([-1, ch, (imgsz // (4 * stride)) ** 2], np.int64),
                                            f"/model.2/{tower}.{k}/shape")
            inits.append(shape)
            nodes.append(helper.make_node("Reshape", [y, shape.name], [y + "_flat"], name=f"/model.2/Reshape_{tower}{k}"))
            out.append(y + "_flat")
    nodes.append(helper.make_node("Concat", boxes, ["box_raw"], name="/model.2/Concat_box", axis=2))
    scale = numpy_helper.from_array(np.array(float(imgsz), np.float32), "/model.2/scale")
    inits.append(scale)
    nodes.append(helper.make_node("Sigmoid", ["box_raw"], ["box_unit"], name="/model.2/Sigmoid_box"))
    nodes.append(helper.make_node("Mul", ["box_unit", scale.name], ["box_px"], name="/model.2/Mul_box"))
    nodes.append(helper.make_node("Concat", scores, ["cls_raw"], name="/model.2/Concat_cls", axis=2))
    nodes.append(helper.make_node("Sigmoid", ["cls_raw"], ["cls"], name="/model.2/Sigmoid"))
    nodes.append(helper.make_node("Concat", ["box_px", "cls"], ["output0"], name="/model.2/Concat_out", axis=1))
    n = default_anchor_count((imgsz, imgsz))
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, imgsz, imgsz])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + nc, n])
    return finish_model(nodes, inits, [inp], [out], ultralytics_props(names, (imgsz, imgsz)))
