"""Rebuild an ultralytics checkpoint (.pt) from a float ONNX export, for the speed comparison in bench_onnx.py.

    .venv-train/bin/python bench/pt_from_onnx.py --onnx model.onnx --yaml yolo11n.yaml --out runs/x.pt
    .venv-train/bin/python bench/pt_from_onnx.py --onnx model.onnx --out runs/x-train.pt --trainable DATA/images/train

(``model.onnx`` of a float export folder, or taken out of a float package with ``detection.package.unpack``.)

The comparison with ultralytics needs the ``.pt`` a model was exported from, and training output (``runs/``) is not
kept in the repository. An ultralytics ONNX export holds the network's weights after Conv+BatchNorm fusion, under
the torch parameter names (``model.0.conv.weight``, ...), and ultralytics fuses the same way before it predicts.
So: build the model from its yaml with the export's class names, fuse it, load the ONNX initializers into it (every
parameter must be matched, shapes equal), check that torch and onnxruntime give the same raw output on a random
input, and save a checkpoint ultralytics loads like its own (``YOLO(path)``). Float exports only (an INT8 QDQ model
has no float weights to load). Runs in the training venv (torch, ultralytics); never used by the app. A network
trained with ``detection.train --activation relu`` is rebuilt with ReLU (``--activation auto`` sees its Relu nodes),
one trained with ``--relu-layers`` with ReLU in the layers whose nodes hold a Relu (and SiLU elsewhere).

``--trainable IMAGES``: a checkpoint to fine-tune from (``detection.train --init-weights``) instead. Fusion removed
the BatchNorm layers, and a network trained without them behaves differently, so they are put back such that the
network computes the same function: for every Conv, the per-channel mean mu and variance var of its convolution's
output (without bias) over up to 64 of the given training images become the BatchNorm's running statistics, its
scale sqrt(var + eps) and its shift mu + the fused bias. In eval mode that reproduces the fused convolution exactly;
in training, where BatchNorm uses each batch's statistics, it starts close to it (checked like the fused model).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from detection.modelmeta import parse_metadata  # noqa: E402
from detection.train import RELU_LAYERS_KEY, configure_offline, model_config, set_relu_layers  # noqa: E402


def relu_layers_of(graph) -> tuple[str | None, list[int] | None]:
    """(activation, relu layers) of an ultralytics export: ("relu", None) when every activation is a Relu, (None,
    [layer indices]) when only some layers (node names ``/model.N/...``) hold one, (None, None) when none does."""
    import re

    def layers(op: str) -> set[int]:
        found = set()
        for node in graph.node:
            m = re.match(r"/model\.(\d+)/", node.name)
            if node.op_type == op and m and (op == "Relu" or "/act/" in node.name):
                found.add(int(m.group(1)))
        return found

    relu, silu = layers("Relu"), layers("Sigmoid")
    if not relu:
        return None, None
    return ("relu", None) if not silu else (None, sorted(relu))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path, required=True, help="a float ultralytics ONNX export")
    ap.add_argument("--yaml", default="yolo11n.yaml", help="the model yaml it was trained from")
    ap.add_argument("--activation", choices=("auto", "silu", "relu"), default="auto",
                    help="the network's activation; auto: relu when the export has Relu nodes (a model trained with "
                         "detection.train --activation relu), else the yaml's own")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--trainable", type=Path, default=None, metavar="IMAGES",
                    help="rebuild with BatchNorm layers for fine-tuning; statistics from images in this folder")
    args = ap.parse_args()
    configure_offline()

    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    model_bytes = args.onnx.read_bytes()
    proto = onnx.load_model_from_string(model_bytes)
    meta = parse_metadata({p.key: p.value for p in proto.metadata_props})
    names = list(meta.names)
    graph = proto.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    if any(n.op_type == "QuantizeLinear" for n in graph.node):
        print("error: an INT8 (QDQ) model holds no float weights; use the float package it was made from",
              file=sys.stderr)
        return 2

    activation, relu_layers = args.activation, None
    if activation == "auto":
        activation, relu_layers = relu_layers_of(graph)
    cfg = model_config(args.yaml, activation, relu_layers)
    model = _network(cfg, len(names))
    if relu_layers:
        print(f"ReLU in layers {relu_layers}, SiLU elsewhere")
    model.names = dict(enumerate(names))
    model = model.fuse(verbose=False).eval()
    state = model.state_dict()
    missing = [k for k in state if k not in weights and state[k].dtype.is_floating_point]
    wrong = [k for k in state if k in weights and tuple(weights[k].shape) != tuple(state[k].shape)]
    if missing or wrong:
        print(f"error: the ONNX weights do not fit {args.yaml}: missing {missing[:5]}, shape mismatch {wrong[:5]}",
              file=sys.stderr)
        return 2
    model.load_state_dict({k: torch.from_numpy(weights[k].copy()) if k in weights else v for k, v in state.items()})

    if args.trainable is not None:
        model = _with_batchnorm(model, cfg, names, _calibration_batches(args.trainable))

    x = np.random.default_rng(0).random((1, 3, 320, 416), dtype=np.float32)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    ours = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        theirs = model(torch.from_numpy(x))[0].numpy()
    diff = float(np.abs(ours - theirs).max())
    print(f"torch vs onnxruntime, raw output {ours.shape}: max abs difference {diff:.2e}")
    if ours.shape != theirs.shape or diff > 1e-2:
        print("error: the rebuilt model does not reproduce the ONNX model", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {"task": "detect", "imgsz": int(max(meta.imgsz))},
                "version": f"rebuilt from {args.onnx.name}"}, args.out)
    print(f"wrote {args.out}")
    return 0


def _network(cfg: dict, n_classes: int):
    """The DetectionModel of ``cfg`` (a :func:`model_config` dict), with the ReLU layers the config lists."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(cfg, nc=n_classes, verbose=False)
    if cfg.get(RELU_LAYERS_KEY):
        set_relu_layers(model, cfg[RELU_LAYERS_KEY])
    return model


def _calibration_batches(folder: Path, *, n: int = 64, batch: int = 16, size: int = 320):
    """Up to ``n`` images of ``folder`` (sorted), grey -> 3 channels in [0, 1], their top-left ``size`` x ``size``
    px (smaller images padded with grey 114), in batches (float32 numpy (B, 3, size, size))."""
    import cv2

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:n]
    if not paths:
        raise SystemExit(f"error: no PNG/JPEG images in {folder}")
    images = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        canvas = np.full((size, size), 114, np.uint8)
        h, w = min(size, img.shape[0]), min(size, img.shape[1])
        canvas[:h, :w] = img[:h, :w]
        images.append(np.repeat(canvas[None].astype(np.float32) / 255.0, 3, axis=0))
    return [np.stack(images[i:i + batch]) for i in range(0, len(images), batch)]


def _with_batchnorm(fused, yaml, names: list[str], batches):
    """The unfused model computing what ``fused`` computes (module docstring, ``--trainable``)."""
    import torch
    from ultralytics.nn.modules import Conv

    convs = {name: m.conv for name, m in fused.named_modules() if isinstance(m, Conv)}
    sums = {name: [0.0, 0.0, 0] for name in convs}  # per channel: sum, sum of squares, count

    def hook(name):
        def record(_module, _inputs, output):
            y = output.detach().double() - convs[name].bias.detach().double()[None, :, None, None]
            acc = sums[name]
            acc[0] = acc[0] + y.sum(dim=(0, 2, 3))
            acc[1] = acc[1] + (y * y).sum(dim=(0, 2, 3))
            acc[2] += y.shape[0] * y.shape[2] * y.shape[3]
        return record

    handles = [conv.register_forward_hook(hook(name)) for name, conv in convs.items()]
    with torch.no_grad():
        for b in batches:
            fused(torch.from_numpy(b))
    for h in handles:
        h.remove()

    model = _network(yaml, len(names))
    model.names = dict(enumerate(names))
    fused_state = fused.state_dict()
    state = model.state_dict()
    for key in state:
        if key in fused_state and fused_state[key].shape == state[key].shape:
            state[key] = fused_state[key].clone()
    model.load_state_dict(state)
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, Conv):
                continue
            total, squares, count = sums[name]
            mean = total / count
            var = (squares / count - mean * mean).clamp(min=0.0)
            m.bn.running_mean.copy_(mean.float())
            m.bn.running_var.copy_(var.float())
            m.bn.weight.copy_(torch.sqrt(var + m.bn.eps).float())
            m.bn.bias.copy_((mean + convs[name].bias.double()).float())
    print(f"BatchNorm put back in {len(convs)} convolutions (statistics of {sum(len(b) for b in batches)} images)")
    return model.eval()


if __name__ == "__main__":
    sys.exit(main())
