"""Export a trained YOLO checkpoint to an ONNX model package (training venv only, never the app).

Usage (training venv)::

    python -m detection.export --weights runs/NAME/weights/best.pt --out weights/crystal-yolo11n \\
        --name crystal-yolo11n --version 1.0.0 [--dynamic-size]

Writes ``OUT/model.onnx`` and ``OUT/manifest.json``.

The ONNX file is ultralytics' own export (``format='onnx'``, no NMS, fp32, ``simplify=False`` so nothing is
installed), opset 17, IR version <= 10, with ultralytics' ``metadata_props`` (names, stride, imgsz, task, ...).
Input ``images`` float32 (batch, 3, H, W) RGB in [0, 1]; output ``output0`` float32 (batch, 4 + nc, N): per anchor
cx, cy, w, h in input pixels and nc sigmoid class scores; N = (H/8)(W/8) + (H/16)(W/16) + (H/32)(W/32) (8400 at
640 x 640).

Input size, two kinds (the manifest's ``input.shape`` says which; the detector reads the model's own input shape):

* fixed (default): H = W = S, the export size (default the training size). The batch dimension is dynamic, the
  spatial size is fixed, so onnxruntime rejects any other size and the detector runs S x S tiles.
* ``--dynamic-size``: H and W are symbolic ('height', 'width'; any multiple of the stride), so the detector runs a
  whole image in one pass (padded to the stride) up to a pixel budget. The graph is the same (ultralytics exports
  with ``dynamic=True`` in both cases; the fixed kind only pins the dimensions), the metadata ``imgsz`` stays S.

Before anything is written to OUT the export is checked: onnx checker, opset/IR limits, shapes, and the outputs of
onnxruntime against the torch model on a random batch of 2 at S x S (and, for a dynamic export, on a non-square
input of another size too).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.errors import CrystalQCError, ModelPackageError
from detection.modelmeta import expected_anchor_counts
from detection.train import (
    DEFAULT_CONFIG_DIR, RECORD_NAME, RELU_LAYERS_KEY, configure_offline, read_record, write_json_atomic,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MAX_OPSET = 17
MAX_IR_VERSION = 10
#: Largest |torch - onnxruntime| accepted on a random batch: class scores (0..1) and boxes (input pixels).
SCORE_TOLERANCE = 1e-3
BOX_TOLERANCE_PX = 0.05
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path`` (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def anchor_count(imgsz: int, strides: tuple[int, ...] = (8, 16, 32)) -> int:
    """Number of anchors N of a YOLO detect head at square input ``imgsz`` pixels: sum of (imgsz/stride)^2."""
    return sum((imgsz // s) ** 2 for s in strides)


def check_package_args(name: str, version: str) -> None:
    """Raise ModelPackageError unless ``name`` is a lower-case slug and ``version`` is MAJOR.MINOR.PATCH."""
    if not _NAME_RE.fullmatch(name):
        raise ModelPackageError(f"--name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'.")
    if not _VERSION_RE.fullmatch(version):
        raise ModelPackageError(f"--version {version!r}: use MAJOR.MINOR.PATCH, e.g. 1.0.0.")


def build_manifest(
    *,
    name: str,
    version: str,
    classes: tuple[str, ...],
    imgsz: int,
    stride: int,
    opset: int,
    ir_version: int,
    sha256: str,
    size_bytes: int,
    recipe: Mapping[str, Any],
    metrics: Mapping[str, Any],
    dynamic_size: bool = False,
) -> dict[str, Any]:
    """The manifest.json content of a model package (pure; see the module docstring for the tensor layout).

    ``input_size`` is [height, width] in pixels (the export size); the ``input``/``output`` shapes use 'batch' for
    the dynamic batch and, with ``dynamic_size``, 'height', 'width' and 'anchors' for the dynamic spatial size.
    """
    n = anchor_count(imgsz)
    in_hw: list[Any] = ["height", "width"] if dynamic_size else [imgsz, imgsz]
    size_text = (f"dynamic: any height and width that are multiples of {stride} px (exported at {imgsz})"
                 if dynamic_size else f"fixed: {imgsz} x {imgsz} px")
    return {
        "name": name,
        "version": version,
        "format": "onnx",
        "task": "detect",
        "file": MODEL_FILE,
        "sha256": sha256,
        "size_bytes": size_bytes,
        "classes": list(classes),
        "input_size": [imgsz, imgsz],
        "stride": stride,
        "opset": opset,
        "ir_version": ir_version,
        "input": {"name": "images", "shape": ["batch", 3, *in_hw], "dtype": "float32", "size": size_text,
                  "layout": "RGB in [0, 1] (grey images copied to 3 channels), letterbox padding 114/255"},
        "output": {"name": "output0", "shape": ["batch", 4 + len(classes), "anchors" if dynamic_size else n],
                   "dtype": "float32",
                   "layout": "per anchor: cx, cy, w, h (input pixels), then one sigmoid score per class; no NMS"},
        "training": dict(recipe),
        "metrics": dict(metrics),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def recipe_from(record: Mapping[str, Any], ckpt: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training recipe and metrics for the manifest, from the run record (training.json) and the checkpoint.

    The record is authoritative; the checkpoint's ``train_args`` fill in what a missing record cannot say. The
    activation function is the one the checkpoint's network was built with (its yaml's ``activation``; without one,
    ultralytics' default SiLU); None when the checkpoint holds no model to tell. ``relu_layers``: the layers that
    ``detection.train --relu-layers`` gave ReLU instead (None: none).
    Returns (recipe, metrics); metrics is {} when the record has none (never invented).
    """
    args = ckpt.get("train_args") or {}
    data = record.get("data") or {}
    model_yaml = getattr(ckpt.get("model"), "yaml", None)
    recipe = {
        "model_yaml": record.get("model_yaml", args.get("model")),
        "imgsz": record.get("imgsz", args.get("imgsz")),
        "epochs_planned": record.get("epochs_planned", args.get("epochs")),
        "epochs_completed": record.get("epochs_completed"),
        "batch": record.get("batch", args.get("batch")),
        "activation": model_yaml.get("activation", "nn.SiLU()") if isinstance(model_yaml, Mapping) else None,
        "relu_layers": model_yaml.get(RELU_LAYERS_KEY) if isinstance(model_yaml, Mapping) else None,
        "seed": record.get("seed", args.get("seed")),
        "data_seed": data.get("seed"),
        "images": data.get("images"),
        "wall_s": record.get("wall_s_total"),
        "device": record.get("device"),
        "versions": record.get("versions") or {"ultralytics": ckpt.get("version")},
        "status": record.get("status"),  # 'finished', or 'running' for a run that was stopped
        "record_found": bool(record),
    }
    return recipe, dict(record.get("metrics") or {})


def fix_spatial_dims(model: Any, *, imgsz: int, n_outputs: int, dynamic_size: bool = False) -> None:
    """Name the dimensions of an onnx ModelProto's input and output.

    Fixed (default): input ('batch', 3, imgsz, imgsz), output ('batch', n_outputs, N). With ``dynamic_size``:
    input ('batch', 3, 'height', 'width'), output ('batch', n_outputs, 'anchors').
    Mutates ``model`` (the freshly exported file, owned by the caller). Raises ModelPackageError when the graph does
    not have one 4-D input and one 3-D output.
    """
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelPackageError("The export has more than one input or output; it is not a plain YOLO detect model.")
    in_dims = graph.input[0].type.tensor_type.shape.dim
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if len(in_dims) != 4 or len(out_dims) != 3:
        raise ModelPackageError("The export's input is not 4-D or its output not 3-D; re-export without NMS.")
    if dynamic_size:
        in_values: tuple[int | str, ...] = ("batch", 3, "height", "width")
        out_values: tuple[int | str, ...] = ("batch", n_outputs, "anchors")
    else:
        in_values = ("batch", 3, imgsz, imgsz)
        out_values = ("batch", n_outputs, anchor_count(imgsz))
    for dims, values in ((in_dims, in_values), (out_dims, out_values)):
        for dim, value in zip(dims, values):
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value


def check_sizes(imgsz: int, stride: int, *, dynamic_size: bool) -> list[tuple[int, int, int]]:
    """(batch, height, width) inputs the export is compared with torch on: a batch of 2 at the export size, and for
    a dynamic export also one non-square input of another size (half the height, one stride wider)."""
    sizes = [(2, imgsz, imgsz)]
    if dynamic_size:
        sizes.append((1, max(stride, (imgsz // 2) // stride * stride), imgsz + stride))
    return sizes


def _onnx_opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _check_against_torch(onnx_path: Path, torch_model: Any, *, sizes: list[tuple[int, int, int]], stride: int,
                         n_outputs: int) -> dict[str, float]:
    import numpy as np
    from detection.ort import ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    box_diff = score_diff = 0.0
    for batch, h, w in sizes:
        x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
        try:
            y_ort = session.run(None, {session.get_inputs()[0].name: x})[0]
        except Exception as e:  # onnxruntime raises its own exception types, none of them shared
            raise ModelPackageError(f"onnxruntime cannot run the export on a {h}x{w} input: {e}") from e
        expected = (batch, n_outputs, min(expected_anchor_counts((h, w), stride)))
        if y_ort.shape != expected:
            raise ModelPackageError(f"onnxruntime output shape {y_ort.shape} for a {h}x{w} input, expected {expected}.")
        with torch.inference_mode():
            y_torch = torch_model(torch.from_numpy(x))
        y_torch = (y_torch[0] if isinstance(y_torch, (tuple, list)) else y_torch).float().numpy()
        box_diff = max(box_diff, float(np.abs(y_ort[:, :4] - y_torch[:, :4]).max()))
        score_diff = max(score_diff, float(np.abs(y_ort[:, 4:] - y_torch[:, 4:]).max()))
    if box_diff > BOX_TOLERANCE_PX or score_diff > SCORE_TOLERANCE:
        raise ModelPackageError(
            f"The ONNX model disagrees with the torch model (boxes {box_diff:.4f} px, scores {score_diff:.5f}); "
            "do not ship it - check the onnx/torch versions."
        )
    return {"max_box_diff_px": round(box_diff, 6), "max_score_diff": round(score_diff, 7),
            "inputs": [list(v) for v in sizes]}


def export(
    weights: Path,
    *,
    out_dir: Path,
    name: str,
    version: str,
    opset: int = MAX_OPSET,
    imgsz: int | None = None,
    force: bool = False,
    config_dir: Path = DEFAULT_CONFIG_DIR,
    dynamic_size: bool = False,
) -> dict[str, Any]:
    """Export ``weights`` (an ultralytics .pt) to ``out_dir/model.onnx`` + ``manifest.json``; return the manifest.

    ``imgsz`` defaults to the training size stored in the checkpoint. ``dynamic_size``: leave the input height and
    width symbolic (module docstring); the export is then also checked on a non-square input of another size.
    The training record is read from ``weights/../../training.json`` (the run folder of :mod:`detection.train`) when
    present.
    Raises ModelPackageError for bad arguments, an existing package without ``force``, or an export that fails its
    checks (nothing is written to ``out_dir`` then).
    """
    check_package_args(name, version)
    if not 11 <= opset <= MAX_OPSET:
        raise ModelPackageError(f"--opset must be 11..{MAX_OPSET} (onnxruntime in the app), got {opset}.")
    weights = weights.resolve()
    if not weights.is_file():
        raise ModelPackageError(f"No checkpoint {weights}; train first (python -m detection.train).")
    if (out_dir / MODEL_FILE).exists() and not force:
        raise ModelPackageError(f"{out_dir / MODEL_FILE} exists; add --force to replace it or bump --version.")

    configure_offline(config_dir)
    import onnx
    from ultralytics import YOLO

    yolo = YOLO(str(weights))
    ckpt = yolo.ckpt or {}
    if yolo.task != "detect":
        raise ModelPackageError(f"{weights} is a '{yolo.task}' model; a detect model is required.")
    size = int(imgsz or (ckpt.get("train_args") or {}).get("imgsz") or 640)
    if size % 32:
        raise ModelPackageError(f"--imgsz must be a multiple of 32, got {size}.")
    names = yolo.model.names
    classes = tuple(names[i] for i in range(len(names)))
    stride = int(max(yolo.model.stride))
    n_outputs = 4 + len(classes)

    with tempfile.TemporaryDirectory(prefix="crystal-export-") as tmp:
        tmp_weights = Path(tmp) / "model.pt"
        shutil.copyfile(weights, tmp_weights)  # ultralytics writes the .onnx next to the .pt
        exported = YOLO(str(tmp_weights)).export(
            format="onnx", imgsz=size, opset=opset, dynamic=True, simplify=False, nms=False, batch=1, device="cpu"
        )
        model = onnx.load(exported)
        fix_spatial_dims(model, imgsz=size, n_outputs=n_outputs, dynamic_size=dynamic_size)
        model.ir_version = min(model.ir_version, MAX_IR_VERSION)
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise ModelPackageError(f"The exported ONNX model is invalid: {e}") from e
        got_opset = _onnx_opset(model)
        if got_opset > MAX_OPSET:
            raise ModelPackageError(f"The export used opset {got_opset}; at most {MAX_OPSET} is allowed.")
        for prop in model.metadata_props:
            if prop.key == "description":  # ultralytics puts the training machine's data path here
                prop.value = f"{name} {version}: YOLO crystal detector ({', '.join(classes)})"
        meta = {p.key: p.value for p in model.metadata_props}
        for key in ("names", "stride", "imgsz", "task"):
            if key not in meta:
                raise ModelPackageError(f"The export lacks the '{key}' metadata; update ultralytics.")
        staged = Path(tmp) / MODEL_FILE
        onnx.save(model, str(staged))
        torch_model = yolo.model.float().eval()
        sizes = check_sizes(size, stride, dynamic_size=dynamic_size)
        agreement = _check_against_torch(staged, torch_model, sizes=sizes, stride=stride, n_outputs=n_outputs)
        logger.info("onnxruntime agrees with torch: %s", agreement)

        record = read_record(weights.parent.parent)
        if not record:
            logger.warning("No %s next to %s; the manifest recipe comes from the checkpoint only", RECORD_NAME, weights)
        recipe, metrics = recipe_from(record, ckpt)
        recipe["export"] = {"onnx": onnx.__version__, "check": agreement, "from": weights.name}
        manifest = build_manifest(
            name=name,
            version=version,
            classes=classes,
            imgsz=size,
            stride=stride,
            opset=got_opset,
            ir_version=int(model.ir_version),
            sha256=sha256_file(staged),
            size_bytes=staged.stat().st_size,
            recipe=recipe,
            metrics=metrics,
            dynamic_size=dynamic_size,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / MODEL_FILE
        shutil.copyfile(staged, target.with_name(MODEL_FILE + ".tmp"))
        target.with_name(MODEL_FILE + ".tmp").replace(target)
    if sha256_file(target) != manifest["sha256"]:
        raise ModelPackageError(f"{target} changed while it was written; run the export again.")
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    logger.info("Wrote %s (%.1f MB) and %s", target, manifest["size_bytes"] / 1e6, MANIFEST_FILE)
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detection.export", description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="runs/NAME/weights/best.pt")
    p.add_argument("--out", type=Path, required=True, help="package folder, e.g. weights/crystal-yolo11n")
    p.add_argument("--name", required=True, help="package name, e.g. crystal-yolo11n")
    p.add_argument("--version", required=True, help="MAJOR.MINOR.PATCH")
    p.add_argument("--opset", type=int, default=MAX_OPSET)
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the training size)")
    p.add_argument("--force", action="store_true", help="replace an existing model.onnx in --out")
    p.add_argument("--dynamic-size", action="store_true",
                   help="symbolic input height/width: the app runs whole images in one pass (default: fixed size)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifest = export(
            args.weights,
            out_dir=args.out,
            name=args.name,
            version=args.version,
            opset=args.opset,
            imgsz=args.imgsz,
            force=args.force,
            dynamic_size=args.dynamic_size,
        )
    except CrystalQCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: manifest[k] for k in ("name", "version", "sha256", "input_size", "opset", "ir_version")}
    summary["input_shape"] = manifest["input"]["shape"]
    print(json.dumps({"out": str(args.out), **summary, "metrics": manifest["metrics"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
