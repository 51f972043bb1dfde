"""Rebuild an ultralytics checkpoint (.pt) from a float ONNX export, for the speed comparison in bench_onnx.py.

    .venv-train/bin/python bench/pt_from_onnx.py --onnx model.onnx --yaml yolo11n.yaml --out runs/x.pt

(``model.onnx`` of a float export folder, or taken out of a float package with ``detection.package.unpack``.)

The comparison with ultralytics needs the ``.pt`` a model was exported from, and training output (``runs/``) is not
kept in the repository. An ultralytics ONNX export holds the network's weights after Conv+BatchNorm fusion, under
the torch parameter names (``model.0.conv.weight``, ...), and ultralytics fuses the same way before it predicts.
So: build the model from its yaml with the export's class names, fuse it, load the ONNX initializers into it (every
parameter must be matched, shapes equal), check that torch and onnxruntime give the same raw output on a random
input, and save a checkpoint ultralytics loads like its own (``YOLO(path)``). Float exports only (an INT8 QDQ model
has no float weights to load). Runs in the training venv (torch, ultralytics); never used by the app.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from detection.modelmeta import parse_metadata  # noqa: E402
from detection.train import configure_offline  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path, required=True, help="a float ultralytics ONNX export")
    ap.add_argument("--yaml", default="yolo11n.yaml", help="the model yaml it was trained from")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    configure_offline()

    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.tasks import DetectionModel

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

    model = DetectionModel(args.yaml, nc=len(names), verbose=False)
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


if __name__ == "__main__":
    sys.exit(main())
