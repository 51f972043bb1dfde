"""Post-training INT8 quantisation of a detector model (packaging side; the app only runs the result).

Usage (app venv: onnxruntime's own quantisation tools, no torch)::

    python -m detection.quantize --package weights/sources/crystal-yolo11n-1.5.0-float.cqcpkg --version 1.5.1 \\
        --out /tmp/int8
    python -m detection.package pack-folder /tmp/int8 --unsigned --out /tmp/int8.cqcpkg   # then release-sign it to ship

Writes ``OUT/model.onnx`` and ``OUT/manifest.json`` (the source manifest, with the new version, a description and
``training.quantization`` recording how it was made and how far it moved from the float model).

What it does:

* **Calibration data** are model inputs built exactly as the app builds them: micrographs rendered by
  :mod:`detection.synthetic` (seeds from :data:`CALIBRATION_SEED`, a range no training, tuning or held-out set uses;
  never real images), decoded and cleaned by the analysis pipeline, cut into fixed windows at native scale and at the
  detector's half scale.
* **Static QDQ quantisation** (``QuantizeLinear``/``DequantizeLinear`` pairs around int8 convolutions; standard ONNX
  operators only, so the package validator can keep refusing custom domains): weights int8 per output channel,
  activations uint8 with ranges from the 99.999th percentile of the calibration activations (min/max ranges lost
  more recall on the rendered hard set).
* **The stem, the attention core and the detect head's decoding stay float**: the two full-resolution stem
  convolutions (see :data:`FLOAT_STEM_MODULES`); in the C2PSA block's self-attention the product of queries and keys,
  its scaling, softmax and the product with the values (:data:`ATTENTION_FLOAT_OPS`: the attention weights average 1 /
  (number of stride-32 cells), 1/1280 on a 1280x1024 input, far below one uint8 step of a 0..1 range, so quantised they
  collapse onto the few largest; measured on the real tiles re-imaged at 1.5 x / 2 x magnification: F1 0.799 / 0.714
  quantised, 0.827 / 0.779 in float, the float model 0.829 / 0.782; docs/model_history.md); and in the head everything
  after the box and class convolutions (distribution focal loss decode, anchor arithmetic, final concatenation).
  Quantising the decoding put pixel coordinates (0..1280) and class scores (0..1) on one uint8 scale, which zeroed every
  score (measured: no detections at all).
* **Checked before anything is written**: on the calibration inputs the INT8 model's detections (score >=
  :data:`CHECK_CONF`, NMS) must agree with the float model's at IoU 0.5 with F1 >= :data:`MIN_AGREEMENT_F1`, and
  the result must pass the package validator (:func:`detection.validate.validate_onnx`).

Measured on this project's model (2-core AMD EPYC with AVX-512 VNNI): the network runs 1.6-1.9 x faster at
1280x1024; see the README for the accuracy table.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from analysis.errors import CrystalQCError, ModelPackageError

logger = logging.getLogger(__name__)

#: First seed of the calibration renderings (training tiles use their own data seeds, the rendered tuning set
#: 800000+, the held-out evaluation set 900000+).
CALIBRATION_SEED = 700_000
#: 64 images since 1.4.0 (24 for 1.2.0). The session-10 candidate lost less real-tile F1 to quantisation with 64
#: (docs/model_history.md). The defaults write 1.5.1's (and 1.4.1's) exact bytes from their float sources; 1.2.0 and
#: 1.4.0 quantised the attention core too, so they are re-made by this module as of commit 10ed6c3 (1.2.0 with
#: ``--images 24 --chunk-windows 72``).
CALIBRATION_IMAGES = 64
#: Fixed calibration window (height, width): percentile calibration needs inputs of one shape.
WINDOW = (512, 640)
#: Windows cut from each calibration image (:func:`calibration_inputs`).
WINDOWS_PER_IMAGE = 3
PERCENTILE = 99.999
#: Most calibration windows whose activations are held in memory at once. onnxruntime's histogram calibrater keeps
#: every intermediate tensor of every input it is given before building its histograms (72 windows of 640x512 px
#: took most of 24 GiB, 108 did not fit; 48 peak at 12.5 GB), so the windows are fed in equal chunks whose
#: histograms it merges (:func:`quantize_model`). All windows in one chunk gives exactly the unchunked ranges.
CHUNK_WINDOWS = 48
#: Modules at the start of the network kept in float (measured on 36 calibration windows: detections agree with the
#: float model's at F1 0.978 with the two stem convolutions in float, 0.969 with them quantised, same speed).
FLOAT_STEM_MODULES = 2
#: Operators of a self-attention block (a node scope containing ``/attn/``) kept in float (module docstring); the
#: attention's convolutions (qkv, positional encoding, projection) are quantised. Since 1.4.1.
ATTENTION_FLOAT_OPS = frozenset({"MatMul", "Softmax", "Mul", "Transpose"})
#: Detections compared between the float and the INT8 model: score threshold, NMS IoU, match IoU, required F1.
CHECK_CONF = 0.25
CHECK_IOU = 0.5
MIN_AGREEMENT_F1 = 0.9

_MODULE_RE = re.compile(r"^/model\.(\d+)/")


def float_nodes(nodes: Sequence[tuple[str, str]]) -> list[str]:
    """Names of the nodes to leave in float, from the model's ``(name, op_type)`` pairs: the stem (the first
    :data:`FLOAT_STEM_MODULES` modules, full-resolution convolutions that see the raw grey levels), the attention
    core (:data:`ATTENTION_FLOAT_OPS` inside an ``/attn/`` scope) and the detect head's decoding, i.e. every node of
    the last ``/model.K/`` module (an ultralytics export's Detect head) except its box and class convolution towers
    (``cv2``/``cv3``).

    Raises ModelPackageError when the names are not those of an ultralytics YOLO detect export.
    """
    modules = [int(m.group(1)) for m in (_MODULE_RE.match(name) for name, _ in nodes) if m]
    if not modules or max(modules) < FLOAT_STEM_MODULES:
        raise ModelPackageError("The model's node names are not those of an ultralytics YOLO export; the detect head "
                                "cannot be located, so it cannot be quantised safely.")
    prefix = f"/model.{max(modules)}/"
    towers = (prefix + "cv2.", prefix + "cv3.")
    stem = tuple(f"/model.{k}/" for k in range(FLOAT_STEM_MODULES))
    return [name for name, op in nodes
            if name.startswith(stem) or (name.startswith(prefix) and not name.startswith(towers))
            or ("/attn/" in name and op in ATTENTION_FLOAT_OPS)]


def calibration_inputs(n_images: int = CALIBRATION_IMAGES, *, seed: int = CALIBRATION_SEED,
                       window: tuple[int, int] = WINDOW, coarse_scale: float = 0.5) -> list[np.ndarray]:
    """Model inputs (1, 3, H, W) float32 as the app feeds them: rendered micrographs (easy/medium/hard in turn,
    1280x1024 and 2592x1944 alternately), loaded and cleaned by the analysis pipeline, then per image two windows
    at native scale (top-left, bottom-right) and one of the image downscaled by ``coarse_scale``."""
    from analysis.io import load_image
    from analysis.preprocess import clean_image
    from detection.synthetic import render_image
    from detection.yolo import padded_batch

    wh, ww = window
    out = []
    for i in range(n_images):
        size = (1280, 1024) if i % 2 == 0 else (2592, 1944)
        rendered, _ = render_image(seed + i, size=size, difficulty=("easy", "medium", "hard")[i % 3])
        ok, png = cv2.imencode(".png", rendered)
        if not ok:
            raise CrystalQCError("could not encode a calibration image")
        image, _ = load_image(png.tobytes(), name="calibration.png")
        cleaned = clean_image(image)
        h, w = cleaned.shape
        small = cv2.resize(cleaned, (round(w * coarse_scale), round(h * coarse_scale)), interpolation=cv2.INTER_AREA)
        crops = [cleaned[:wh, :ww], cleaned[h - wh:, w - ww:], small[:wh, :ww]]  # WINDOWS_PER_IMAGE
        out += [padded_batch([c], size=window)[0] for c in crops]
    return out


def _strip_unused_domains(model: Any) -> None:
    """Drop operator-set imports no node uses (onnxruntime's optimiser adds its own domains to the import list;
    the package validator refuses any non-standard domain)."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [imp for imp in model.opset_import if imp.domain in used or imp.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def chunk_size(total: int, limit: int = CHUNK_WINDOWS) -> int:
    """The largest chunk of at most ``limit`` inputs that divides ``total`` (onnxruntime's chunked calibration
    needs equal chunks)."""
    if total < 1 or limit < 1:
        raise ValueError("total and limit must be positive")
    return max(d for d in range(1, min(total, limit) + 1) if total % d == 0)


def quantize_model(model_bytes: bytes, inputs: Sequence[np.ndarray], *, percentile: float = PERCENTILE,
                   chunk_limit: int = CHUNK_WINDOWS) -> bytes:
    """INT8 (QDQ) model bytes from float ONNX ``model_bytes``, calibrated on ``inputs`` (module docstring), fed to
    the calibrater in chunks of at most ``chunk_limit`` inputs (see :data:`CHUNK_WINDOWS`)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = onnx.load_model_from_string(bytes(model_bytes))
    input_name = src.graph.input[0].name

    class Reader(CalibrationDataReader):
        """All inputs, or the range onnxruntime selects for the current chunk (``set_range``)."""

        def __init__(self) -> None:
            self.set_range(0, len(inputs))

        def __len__(self) -> int:
            return len(inputs)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(inputs[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    chunk = chunk_size(len(inputs), chunk_limit)

    with tempfile.TemporaryDirectory(prefix="cqc-quant-") as tmp:
        fp32, pre, q = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        fp32.write_bytes(model_bytes)
        # fold BatchNorm/constants first so each Conv gets one weight scale; symbolic shape inference needs sympy
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        nodes = [(n.name, n.op_type) for n in onnx.load(str(pre)).graph.node]
        quantize_static(
            str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=float_nodes(nodes),
            # "CalibStridedMinMax" is onnxruntime's name for chunked collection; it applies to every calibrater, and
            # the histogram collector merges the chunks' histograms
            extra_options={"CalibPercentile": percentile,
                           **({"CalibStridedMinMax": chunk} if chunk < len(inputs) else {})},
        )
        model = onnx.load(str(q))
    _strip_unused_domains(model)
    model.ir_version = min(model.ir_version, src.ir_version)
    del model.metadata_props[:]
    model.metadata_props.extend(src.metadata_props)  # class names, stride, input size: as exported
    return model.SerializeToString()


def agreement(fp32_bytes: bytes, int8_bytes: bytes, inputs: Sequence[np.ndarray]) -> dict[str, float]:
    """How closely the INT8 model reproduces the float model's detections on ``inputs``: F1 of INT8 boxes against
    float boxes (score >= CHECK_CONF, NMS, matched at IoU CHECK_IOU), largest score difference over all anchors,
    and the median speed ratio of the two networks."""
    import onnxruntime as ort

    from detection.metrics import match_boxes
    from detection.modelmeta import parse_metadata
    from detection.onnx_detector import session_options, usable_cores
    from detection.yolo import decode_output, nms

    sessions = [ort.InferenceSession(b, session_options(usable_cores()), providers=["CPUExecutionProvider"])
                for b in (fp32_bytes, int8_bytes)]
    n_classes = len(parse_metadata(dict(sessions[0].get_modelmeta().custom_metadata_map)).names)
    name = sessions[0].get_inputs()[0].name
    tp = n_ref = n_new = 0
    max_score = 0.0
    times: list[list[float]] = [[], []]
    for x in inputs:
        found = []
        raws = []
        for k, s in enumerate(sessions):
            t0 = time.perf_counter()
            raw = s.run(None, {name: x})[0]
            times[k].append(time.perf_counter() - t0)
            raws.append(raw)
            boxes, scores, cls = decode_output(raw, n_classes=n_classes, conf_threshold=CHECK_CONF)[0]
            found.append(boxes[nms(boxes, scores, iou_threshold=CHECK_IOU)])
        max_score = max(max_score, float(np.abs(raws[0][:, 4:] - raws[1][:, 4:]).max()))
        pi, _ = match_boxes(found[1], found[0], iou_threshold=CHECK_IOU)
        tp, n_new, n_ref = tp + len(pi), n_new + len(found[1]), n_ref + len(found[0])
    f1 = 2 * tp / (n_new + n_ref) if n_new + n_ref else 1.0
    return {"detections_f1_vs_float": round(f1, 4), "float_detections": n_ref, "int8_detections": n_new,
            "max_score_diff": round(max_score, 4),
            "network_speedup": round(float(np.median(times[0]) / np.median(times[1])), 2)}


def quantized_manifest(source: Mapping[str, Any], *, version: str, check: Mapping[str, Any],
                       n_images: int, seed: int, chunk_limit: int = CHUNK_WINDOWS,
                       windows: int | None = None) -> dict[str, Any]:
    """The source manifest's fields for the INT8 model: new version and date, the model-dependent fields removed
    (the package builder recomputes them), training data and recipe extended with the quantisation. ``windows``:
    the number of calibration inputs actually fed (default :data:`WINDOWS_PER_IMAGE` per image); the recorded
    chunking is derived from it the way :func:`quantize_model` derives it."""
    data = {k: v for k, v in source.items() if k not in {"sha256", "size_bytes", "opset", "ir_version"}}
    data["version"] = version
    data["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data["description"] = (f"{source.get('name', 'model')} {source.get('version', '?')} quantised to INT8 "
                           "(QDQ, per-channel int8 weights, uint8 activations; stem, attention core and "
                           "detect-head decoding in float)")
    data["training_data"] = (f"{source.get('training_data', '')}; then post-training INT8 quantisation calibrated on "
                             f"{n_images} rendered micrographs (seeds {seed}+)").lstrip("; ")
    training = dict(source.get("training") or {})
    windows = WINDOWS_PER_IMAGE * n_images if windows is None else windows
    chunk = chunk_size(windows, chunk_limit)
    training["quantization"] = {
        "from_version": source.get("version"), "format": "QDQ", "weights": "int8 per channel",
        "activations": "uint8", "calibration": f"percentile {PERCENTILE}",
        "float": (f"stem ({FLOAT_STEM_MODULES} modules), attention core ({', '.join(sorted(ATTENTION_FLOAT_OPS))}), "
                  "detect-head decoding"),
        "calibration_images": n_images, "calibration_seed": seed,
        "calibration_inputs": f"{windows} windows of {WINDOW[1]}x{WINDOW[0]} px (2 native, 1 half scale each)",
        "check": dict(check),
    }
    if chunk < windows:
        training["quantization"]["calibration_chunks"] = f"{windows // chunk} chunks of {chunk} windows"
    data["training"] = training
    return data


def quantize_package(source_manifest: Mapping[str, Any], model_bytes: bytes, *, version: str,
                     n_images: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED,
                     chunk_limit: int = CHUNK_WINDOWS) -> tuple[bytes, dict[str, Any]]:
    """INT8 model bytes and manifest fields for a float model; raises ModelPackageError when the INT8 model
    disagrees with the float one (F1 < MIN_AGREEMENT_F1) or fails the package validator."""
    from detection.validate import validate_onnx

    inputs = calibration_inputs(n_images, seed=seed)
    logger.info("calibrating on %d inputs of %s", len(inputs), inputs[0].shape)
    int8 = quantize_model(model_bytes, inputs, chunk_limit=chunk_limit)
    validate_onnx(int8)
    check = agreement(model_bytes, int8, inputs)
    logger.info("INT8 vs float: %s", check)
    if check["detections_f1_vs_float"] < MIN_AGREEMENT_F1:
        raise ModelPackageError(f"The INT8 model's detections agree with the float model's only at F1 "
                                f"{check['detections_f1_vs_float']:.3f} (< {MIN_AGREEMENT_F1}); not written.")
    return int8, quantized_manifest(source_manifest, version=version, check=check, n_images=n_images, seed=seed,
                                    chunk_limit=chunk_limit, windows=len(inputs))


def main(argv: list[str] | None = None) -> int:
    from detection.package import MANIFEST_MEMBER, MODEL_MEMBER, parse_version, unpack

    ap = argparse.ArgumentParser(prog="python -m detection.quantize", description=__doc__.split("\n")[0])
    ap.add_argument("--package", type=Path, required=True, help="source .cqcpkg (float model)")
    ap.add_argument("--version", required=True, help="version of the INT8 model, newer than the source's")
    ap.add_argument("--out", type=Path, required=True, help="folder for model.onnx + manifest.json (must not exist)")
    ap.add_argument("--images", type=int, default=CALIBRATION_IMAGES)
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    ap.add_argument("--chunk-windows", type=int, default=CHUNK_WINDOWS,
                    help="most calibration windows held in memory at once (lower it when memory runs out)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        contents = unpack(args.package.read_bytes())
        source = json.loads(contents.manifest_bytes)
        if parse_version(args.version) <= parse_version(str(source.get("version", "0.0.0"))):
            raise ModelPackageError(f"--version {args.version} must be newer than the source's {source.get('version')}.")
        if args.out.exists():
            raise ModelPackageError(f"{args.out} exists; choose a new folder.")
        if args.images < 1 or args.chunk_windows < 1:
            raise ModelPackageError("--images and --chunk-windows must be at least 1.")
        model, fields = quantize_package(source, contents.model_bytes, version=args.version,
                                         n_images=args.images, seed=args.seed, chunk_limit=args.chunk_windows)
    except (CrystalQCError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True)
    (args.out / MODEL_MEMBER).write_bytes(model)
    (args.out / MANIFEST_MEMBER).write_text(json.dumps(fields, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"out": str(args.out), "size_bytes": len(model), **fields["training"]["quantization"]["check"]},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
