"""Run a YOLO detect model without its in-graph box decoding (numpy decodes only the anchors that can pass).

An ultralytics detect export ends with the head's decoding: for every anchor (55 000 on a 1376x1952 tile) a
softmax over 16 bins per box side (DFL), a 1x1 convolution, the distance-to-box arithmetic and a sigmoid. With the
INT8 model that float tail took ~18 % of the network's time on this CPU (onnxruntime profile: one Softmax node
14 %), yet only a few hundred anchors score above the threshold. :func:`split_head` cuts the graph just before
the decoding, so it outputs the raw box logits (B, 64, A) and class logits (B, nc, A); then
:func:`detection.yolo.decode_raw_head` decodes the anchors whose best class can pass.

The cut is only taken when the graph has the ultralytics pattern (the output is Concat(boxes, Sigmoid(class
logits)), the boxes come from the Softmax nearest the output (the DFL's), fed by Transpose(Reshape(box logits))),
and the detector adopts it only after checking on a probe input that the cut model plus numpy reproduce the full
model's output for every anchor (:meth:`detection.onnx_detector.OnnxDetector`); otherwise the full graph runs.
"""
from __future__ import annotations

import logging
from collections import deque

logger = logging.getLogger(__name__)


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _head_tensors(graph) -> tuple[str, str] | None:
    """(box logits, class logits) tensor names of an ultralytics detect head, or None."""
    if len(graph.output) != 1:
        return None
    producers = _producers(graph)
    final = producers.get(graph.output[0].name)
    if final is None or final.op_type != "Concat" or len(final.input) != 2:
        return None
    sigmoid = producers.get(final.input[1])
    if sigmoid is None or sigmoid.op_type != "Sigmoid":
        return None
    softmax, seen, todo = None, set(), deque([final.input[0]])
    while todo and softmax is None:  # breadth first: the Softmax nearest the output is the DFL's
        node = producers.get(todo.popleft())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Softmax":
            softmax = node
        elif node.op_type != "Shape":  # a Shape reads only the size of its input (the anchor grid)
            todo.extend(i for i in node.input if i)
    if softmax is None:
        return None
    transpose = producers.get(softmax.input[0])
    reshape = producers.get(transpose.input[0]) if transpose is not None and transpose.op_type == "Transpose" else None
    if reshape is None or reshape.op_type != "Reshape":
        return None
    return reshape.input[0], sigmoid.input[0]


def split_head(model_bytes: bytes) -> bytes | None:
    """The model cut before its head's decoding, with outputs (box logits, class logits) in that order; None when
    the graph is not an ultralytics detect export of the expected shape (never raises for a valid ONNX model)."""
    import onnx
    from onnx import helper

    model = onnx.load_model_from_string(bytes(model_bytes))
    graph = model.graph
    names = _head_tensors(graph)
    if names is None:
        logger.info("model head not recognised; its own decoding is kept")
        return None
    needed, kept = set(names), []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    values = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(values)
    return model.SerializeToString()
