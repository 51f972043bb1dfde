"""Adapter from the ONNX detector (detection.onnx_detector) to the pipeline's Detector protocol.

Boxes from the model are refined to masks by the classical segmentation inside each box
(``analysis.segment.refine_mask``), so every measurement comes from a mask; boxes the model is unsure of (scores
0.05-0.25, large half-scale boxes without native support) are kept only when that segmentation confirms an object
in them (``analysis.segment.confirm_mask``; ``detection.onnx_detector.CANDIDATE_THRESHOLD``). Imported lazily: only a pipeline that
actually uses a model pays for importing onnxruntime.

Loading: a signed model package (``.cqcpkg``, :func:`load_package_detector`) is verified before the model is
built: container layout and size caps, canonical manifest, Ed25519 signature by one of the given trusted keys,
sha256 and size of model.onnx against the signed manifest, then the manifest's classes / input size / stride and
its fixed- or dynamic-size input must agree with the model itself. Any failure raises ModelPackageError; the
caller never falls back to another detector silently. A bare ``model.onnx`` (:func:`load_onnx_detector`) is for
explicit research use (``--model FILE``) only.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.errors import DetectorUnavailableError, ModelPackageError
from analysis.records import Detection
from analysis.segment import REFINE_REACH_PX, ClassicalOptions, confirm_mask, detect_classical, refine_mask
from analysis.workers import map_boxes, warm_up
from detection.onnx_detector import OnnxDetector, OnnxDetectorOptions
from detection.tiling import outside_boxes

log = logging.getLogger(__name__)

#: Largest model file we load (the shipped yolo11n is ~10 MB).
MAX_MODEL_BYTES = 200 * 1024 * 1024


def _refine_all(refine, image: np.ndarray, boxes: list[np.ndarray]) -> list:
    """Every box refined by :func:`refine_mask`, the work shared with the helper processes."""
    return map_boxes(refine, image, boxes, reach_px=REFINE_REACH_PX)


@dataclass(frozen=True)
class OnnxPipelineDetector:
    """A loaded ONNX model plus the thresholds to run it with (stateless, shareable across sessions)."""

    model: OnnxDetector
    options: OnnxDetectorOptions = field(default_factory=OnnxDetectorOptions)

    def __post_init__(self) -> None:
        warm_up()  # start the mask-refinement helpers while the model is being put to use

    @property
    def label(self) -> str:
        return self.model.label

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.model.detect(image, options=self.options, refine=refine_mask, refine_all=_refine_all,
                                 confirm=confirm_mask)


def load_onnx_detector(path: Path, *, options: OnnxDetectorOptions | None = None,
                       threads: int | None = None) -> OnnxPipelineDetector:
    """Load ``model.onnx`` (and the ``manifest.json`` beside it, when present, for name and version).

    Raises DetectorUnavailableError when the file is missing/unreadable/too large, ModelPackageError when it is
    not a usable YOLO detector.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise DetectorUnavailableError(f"model file {path} is {size / 2**20:.0f} MB; the limit is "
                                           f"{MAX_MODEL_BYTES / 2**20:.0f} MB")
        data = path.read_bytes()
    except OSError as e:
        raise DetectorUnavailableError(f"cannot read the model file {path}: {e.strerror or e}") from e
    name, version = path.parent.name, ""
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
            name, version = str(info.get("name", name))[:80], str(info.get("version", ""))[:40]
        except (OSError, ValueError, AttributeError) as e:
            log.warning("ignoring unreadable manifest %s: %s", manifest, e)
    model = OnnxDetector(data, threads=threads, name=name, version=version)  # raises ModelPackageError
    return OnnxPipelineDetector(model=model, options=options or OnnxDetectorOptions())


def load_onnx_detector_from_bytes(data: bytes, *, name: str, version: str,
                                  options: OnnxDetectorOptions | None = None,
                                  threads: int | None = None) -> OnnxPipelineDetector:
    """Load a model held in memory (e.g. a validated package from the vault); nothing is written to disk.

    name/version: shown in the detector's label ('onnx:NAME VERSION'). Raises DetectorUnavailableError when the bytes
    are over :data:`MAX_MODEL_BYTES`, ModelPackageError when they are not a usable YOLO detector.
    """
    if len(data) > MAX_MODEL_BYTES:
        raise DetectorUnavailableError(f"the model is {len(data) / 2**20:.0f} MB; the limit is "
                                       f"{MAX_MODEL_BYTES / 2**20:.0f} MB")
    model = OnnxDetector(bytes(data), threads=threads, name=str(name)[:80], version=str(version)[:40])
    return OnnxPipelineDetector(model=model, options=options or OnnxDetectorOptions())


def manifest_input_kind(manifest: Mapping[str, object]) -> str | None:
    """'dynamic' or 'fixed' as the manifest's ``input.shape`` states it (symbolic vs integer height/width), None
    when the manifest does not describe the input (packages built without an export manifest)."""
    info = manifest.get("input")
    shape = info.get("shape") if isinstance(info, Mapping) else None
    if not isinstance(shape, list) or len(shape) != 4:
        return None
    spatial = shape[2:]
    if all(isinstance(v, str) for v in spatial):
        return "dynamic"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in spatial):
        return "fixed"
    return None


def load_package_detector(path: Path, *, trusted_keys: Mapping[str, bytes],
                          options: OnnxDetectorOptions | None = None,
                          threads: int | None = None) -> OnnxPipelineDetector:
    """Load a signed ``.cqcpkg`` after verifying it against ``trusted_keys`` (fingerprint -> public key).

    Checks (module docstring): a hash and one signature verification, then the model is built from memory (nothing
    is extracted to disk). Raises DetectorUnavailableError when the file cannot be read, ModelPackageError when the
    package is unsigned, signed by an untrusted key, altered, or its model disagrees with its manifest.
    """
    from detection import package as pkg  # the only runtime importer of `cryptography` besides vault/crypto.py

    path = Path(path)
    limits = pkg.PackageLimits()
    try:
        size = path.stat().st_size
        if size > limits.max_package_bytes:
            raise ModelPackageError(f"The model package {path.name} is {size / 2**20:.0f} MiB; at most "
                                    f"{limits.max_package_bytes / 2**20:.0f} MiB is accepted.")
        data = path.read_bytes()
    except OSError as e:
        raise DetectorUnavailableError(f"cannot read the model package {path}: {e.strerror or e}") from e
    if not trusted_keys:
        raise ModelPackageError(f"No trusted key to verify the model package {path.name} with; the installation "
                                "lacks its project key (weights/trusted_keys/*.pub). Reinstall the application.")
    contents = pkg.unpack(data, limits=limits)
    manifest = pkg.parse_manifest(contents.manifest_bytes)
    pkg.verify_signature(contents.manifest_bytes, contents.signature_bytes, trusted_keys)
    model_bytes = contents.model_bytes
    pkg.check_model_hash(manifest, model_bytes, remedy="Reinstall the model package.")
    model = OnnxDetector(model_bytes, threads=threads, name=manifest.name, version=manifest.version)
    if model.meta.names != manifest.meta.names or model.meta.imgsz != manifest.meta.imgsz \
            or model.meta.stride != manifest.meta.stride:
        raise ModelPackageError("The signed manifest does not describe the model inside the package (classes, input "
                                "size or stride differ); rebuild the package from the exported model.")
    kind = manifest_input_kind(manifest.data)
    if kind is not None and kind != ("dynamic" if model.dynamic_input else "fixed"):
        raise ModelPackageError(f"The manifest says the model input size is {kind}, but the model "
                                f"{'runs at any size' if model.dynamic_input else 'accepts one size only'}; "
                                "rebuild the package from the exported model.")
    log.info("model package %s %s verified (%s input)", manifest.name, manifest.version,
             "dynamic" if model.dynamic_input else "fixed")
    return OnnxPipelineDetector(model=model, options=options or OnnxDetectorOptions())


@dataclass(frozen=True)
class HybridDetector:
    """Model detections plus the classical detections that no model box covers.

    The model finds faint and touching crystals the edge-based classical detector misses; the classical detector
    finds crystal shapes the rendered training data did not show the model. A classical object is added when its box
    overlaps no model box by more than ``overlap_max`` of the smaller box (intersection over smaller area).
    The exclusion filters (dust, fibre, bubble, focus) run afterwards on the union, as for any detector.
    """

    model: OnnxPipelineDetector
    classical_options: ClassicalOptions = field(default_factory=ClassicalOptions)
    overlap_max: float = 0.3

    @property
    def label(self) -> str:
        return f"hybrid({self.model.label} + classical)"

    def detect(self, image: np.ndarray) -> list[Detection]:
        learned = self.model.detect(image)
        extra = detect_classical(image, options=self.classical_options)
        if not learned or not extra:
            return learned + extra
        a = np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in extra], float)
        b = np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in learned], float)
        keep = outside_boxes(a, b, max_overlap=self.overlap_max)
        return learned + [d for d, k in zip(extra, keep) if k]
