"""detection/device_train.sh end to end on the CPU, tiny (make test-train; needs .venv-train): renders, trains 1 epoch
from the yaml, exports, and leaves a loadable dynamic-size model package folder, the training record and the data
set's recipe in OUT."""
from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import onnx

from analysis.onnx_adapter import load_onnx_detector
from tests_training.test_round_trip import REPO, TRAIN_PY


def test_device_script_tiny_cpu_run(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "PY": str(TRAIN_PY), "N_TILES": "24",
           "TILE_PX": "128", "EPOCHS": "1", "TRAIN_MINUTES": "5", "BATCH": "4", "LOADERS": "0", "RENDER_WORKERS": "1",
           "DATA_SEED": "11", "MODEL_VERSION": "0.0.1", "OMP_NUM_THREADS": "1", "BLUR_RULE": "large-tight",
           "NEAR_OOF": "0.2", "ACTIVATION": "relu"}
    done = subprocess.run(["nice", "-n", "19", "bash", str(REPO / "detection" / "device_train.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "manifest.json", "model.onnx", "results.csv",
                                                     "training.json"]
    recipe = json.loads((out / "dataset.json").read_text())
    assert (recipe["seed"], recipe["blur_rule"], recipe["near_oof"]) == (11, "large-tight", 0.2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "0.0.1" and manifest["input"]["shape"][2:] == ["height", "width"]
    record = json.loads((out / "training.json").read_text())
    assert record["data"]["seed"] == 11 and record["activation"] == "relu"
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "Relu" in ops, sorted(ops)  # the network was rebuilt with ReLU; only the head's class scores use Sigmoid
    detector = load_onnx_detector(out / "model.onnx")
    assert detector.model.dynamic_input and detector.label == "onnx:crystal-yolo11n 0.0.1"


def test_device_script_relu_in_some_layers_only(tmp_path):
    """RELU_LAYERS from scratch: the yaml copy carries the layer list, the trainer builds the network with it, and the
    export has ReLU in those layers and SiLU (Sigmoid * x) in the others. LR0 / WARMUP_EPOCHS reach the optimizer:
    without a warm-up the first epoch runs at exactly the chosen rate (ultralytics' own choice would be 0.00167,
    warmed up from 0)."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"), "PY": str(TRAIN_PY), "N_TILES": "16",
           "TILE_PX": "128", "EPOCHS": "1", "TRAIN_MINUTES": "5", "BATCH": "4", "LOADERS": "0", "RENDER_WORKERS": "1",
           "DATA_SEED": "12", "MODEL_VERSION": "0.0.2", "OMP_NUM_THREADS": "1", "RELU_LAYERS": "0-2,23",
           "LR0": "0.0004", "WARMUP_EPOCHS": "0"}
    done = subprocess.run(["nice", "-n", "19", "bash", str(REPO / "detection" / "device_train.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "training.json").read_text())
    assert record["relu_layers"] == [0, 1, 2, 23] and record["activation"] is None
    assert (record["lr0"], record["warmup_epochs"]) == (0.0004, 0.0)
    with open(out / "results.csv", newline="") as f:
        first = {k.strip(): v for k, v in next(csv.DictReader(f)).items()}
    assert [float(first[f"lr/pg{i}"]) for i in range(3)] == [0.0004] * 3, first
    assert json.loads((out / "manifest.json").read_text())["training"]["relu_layers"] == [0, 1, 2, 23]
    relu, silu = set(), set()
    for node in onnx.load(str(out / "model.onnx")).graph.node:
        parts = node.name.split("/")
        if len(parts) > 2 and parts[1].startswith("model.") and "act" in parts:
            (relu if node.op_type == "Relu" else silu if node.op_type == "Sigmoid" else set()).add(int(parts[1][6:]))
    assert relu == {0, 1, 2, 23}, (relu, silu)
    assert silu and not silu & relu and min(silu) == 3
