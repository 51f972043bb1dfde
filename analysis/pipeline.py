"""Image -> ImageResult: the one path every front end (CLI, app, benchmarks) goes through.

    bytes --io.load_image--> float32 (H, W) --preprocess.clean_image--> cleaned
          --detector.detect--> detections --exclude.apply_exclusions--> detections with reasons
          --measure.measure_particles--> particles --> ImageResult (stats/report derive the rest)

An image whose crystals are all small is analysed once more at twice the size and its particles mapped back
(``analysis.rescale``; ``AnalysisOptions.upscale_small``); a calibration profile's analysis scale
(``AnalysisOptions.scale``) resizes every image of that microscope instead. An over-exposed image is analysed as it is,
with a note that says so (``analysis.exposure``).

Detectors are small stateless objects with a ``label`` and ``detect(cleaned) -> list[Detection]``; they are chosen
by :func:`make_detector` ("auto" = the shipped, signed ONNX model package when present, else the classical detector;
a shipped package that fails verification is an error, never a silent fallback).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from analysis.errors import CrystalQCError, DetectorUnavailableError, ModelPackageError
from analysis.exclude import ExclusionOptions, apply_exclusions
from analysis.exposure import exposure_note
from analysis.focus import focus_scores
from analysis.io import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, load_image
from analysis.measure import measure_particles
from analysis.preprocess import CleaningOptions, clean_image
from analysis.records import Detection, ImageMeta, ImageResult, Particle
from analysis.rescale import (MAX_SCALE, MIN_SCALE, chosen_factor, resized, scaled_exclusion, scaled_particle,
                              upscale_factor)
from analysis.segment import ClassicalOptions, detect_classical
from analysis.timing import stage

log = logging.getLogger(__name__)

#: Where shipped model packages live: signed ``weights/<name>.cqcpkg`` files (detection/package.py).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: The public keys a shipped package must be signed with (the project key).
SHIPPED_KEYS_DIR = WEIGHTS_DIR / "trusted_keys"
#: Suffix of a signed model package (detection.package.SUFFIX; repeated so this module needs no cryptography).
PACKAGE_SUFFIX = ".cqcpkg"

DETECTOR_CHOICES: tuple[str, ...] = ("auto", "onnx", "classical", "hybrid")

#: What "auto" runs when a model is available ("onnx" or "hybrid"); chosen by measurement (README, Figures).
AUTO_WITH_MODEL = "onnx"


@dataclass(frozen=True)
class AnalysisOptions:
    """Everything that changes a result. Defaults need no configuration."""

    pixel_size_um: float | None = None
    include_border: bool = False
    cleaning: CleaningOptions = field(default_factory=CleaningOptions)
    classical: ClassicalOptions = field(default_factory=ClassicalOptions)
    exclusion: ExclusionOptions = field(default_factory=ExclusionOptions)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    #: Analyse small-crystal images again at twice the size (``analysis.rescale``); False = one pass at the
    #: image's own scale.
    upscale_small: bool = True
    #: Analyse the image resized by this factor (0.25-4; a calibration profile's analysis scale, for a microscope
    #: whose crystals look much larger or smaller than the model was made for); 1.0 = its own size, with the
    #: automatic small-crystal pass when ``upscale_small``.
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.pixel_size_um is not None and not (0 < self.pixel_size_um < 1e4):
            raise ValueError(f"pixel size must be a positive number of µm per pixel, got {self.pixel_size_um!r}")
        if not (MIN_SCALE <= self.scale <= MAX_SCALE):
            raise ValueError(f"analysis scale must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got {self.scale!r}")


class Detector(Protocol):
    """A detector turns a cleaned image into detections (countable and mimics)."""

    @property
    def label(self) -> str: ...

    def detect(self, image: np.ndarray) -> list[Detection]: ...


@dataclass(frozen=True)
class ClassicalDetector:
    """The classical (no neural network) detector: baseline, fallback and reference."""

    options: ClassicalOptions = field(default_factory=ClassicalOptions)

    @property
    def label(self) -> str:
        return "classical"

    def detect(self, image: np.ndarray) -> list[Detection]:
        return detect_classical(image, options=self.options)


def find_shipped_model(weights_dir: Path = WEIGHTS_DIR) -> Path | None:
    """Return the first signed package ``weights/<name>.cqcpkg`` (sorted by name), or None when none is shipped.

    Only signed packages count as shipped models: a bare ``weights/<name>/model.onnx`` is never loaded by "auto".
    """
    if not weights_dir.is_dir():
        return None
    packages = sorted(p for p in weights_dir.glob(f"*{PACKAGE_SUFFIX}") if p.is_file())
    return packages[0] if packages else None


def make_detector(kind: str = "auto", *, model_path: Path | None = None,
                  options: AnalysisOptions | None = None) -> Detector:
    """Build a detector by name.

    kind: "classical"; "onnx" (needs ``model_path`` or a shipped model); "hybrid" (the model's detections plus the
    classical ones no model box covers); "auto" (:data:`AUTO_WITH_MODEL` when a model is available, else classical).
    ``model_path``: a ``.cqcpkg`` (verified against the shipped trusted keys like the shipped package) or a bare
    ``.onnx`` file (explicit research use). The shipped package is verified at every load (sha256 of the model and
    one Ed25519 signature against ``weights/trusted_keys``).

    Decision: when a shipped package exists but fails verification (unsigned, signed by another key, altered),
    every kind that uses the model - "auto" included - raises ModelPackageError; "auto" never falls back to the
    classical detector then, because silently worse results are worse than a clear error (the technician can still
    choose "classical" explicitly). "auto" is classical only when no package is shipped at all (results name their
    detector either way).
    Raises DetectorUnavailableError when "onnx"/"hybrid" is asked for and no model exists or the file cannot be
    read, ModelPackageError when the model or package is refused.
    """
    options = options or AnalysisOptions()
    if kind not in DETECTOR_CHOICES:
        raise DetectorUnavailableError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTOR_CHOICES)}")
    if kind == "classical":
        return ClassicalDetector(options.classical)
    path = Path(model_path) if model_path is not None else find_shipped_model()
    if path is None:
        if kind != "auto":
            raise DetectorUnavailableError("no model found: pass --model FILE (.cqcpkg or .onnx) or install the "
                                           f"signed model package in {WEIGHTS_DIR}")
        return ClassicalDetector(options.classical)
    # imports onnxruntime (and, for packages, cryptography) only when a model is used
    from analysis.onnx_adapter import HybridDetector, load_onnx_detector, load_package_detector

    if path.suffix == PACKAGE_SUFFIX:
        from detection.package import load_trusted_keys

        try:
            model = load_package_detector(path, trusted_keys=load_trusted_keys(SHIPPED_KEYS_DIR))
        except ModelPackageError as e:
            raise ModelPackageError(f"The model package {path.name} cannot be used: {e} The analysis was not run "
                                    "(choose the classical detector explicitly to work without the model).") from e
    else:
        model = load_onnx_detector(path)
    if (AUTO_WITH_MODEL if kind == "auto" else kind) == "hybrid":
        return HybridDetector(model, classical_options=options.classical)
    return model


def analyze_image(image: np.ndarray, *, name: str, meta: ImageMeta, detector: Detector,
                  options: AnalysisOptions | None = None, keep_cleaned: bool = True) -> ImageResult:
    """Analyse one decoded image (float32 (H, W) in [0, 1]); returns a new ImageResult."""
    options = options or AnalysisOptions()
    start = time.perf_counter()
    with stage("exposure"):
        note_exposure = exposure_note(image)
    with stage("clean"):
        cleaned = clean_image(image, options=options.cleaning)
    if options.scale != 1.0:
        factor = chosen_factor(options.scale, cleaned.shape)
        particles = _resized_pass(cleaned, detector, options, factor)
        note = (f"Analysed at {factor:.2g} x its size, as the calibration profile's analysis scale says; positions "
                "and sizes are given in the image's own pixels." if factor != 1.0 else
                f"The calibration profile's analysis scale ({options.scale:g} x) was not applied: the image is too "
                "large to enlarge.")
    else:
        particles = _particles(cleaned, detector, options)
        factor = upscale_factor(particles, cleaned.shape) if options.upscale_small else 1.0
        note = None
        if factor > 1.0:
            particles = _resized_pass(cleaned, detector, options, factor)
            note = (f"Small crystals: this image was analysed enlarged {factor:.2g} x so that they are found and "
                    "judged reliably; positions and sizes are given in the image's own pixels.")
    added = tuple(n for n in (note_exposure, note) if n)
    if added:
        meta = dataclasses.replace(meta, notes=meta.notes + added)
    seconds = time.perf_counter() - start
    # No file names or pixel data in logs: names can be confidential too.
    log.debug("%d objects in %.2f s (%s)", len(particles), seconds, detector.label)
    return ImageResult(
        name=name, meta=meta, particles=tuple(particles), pixel_size_um=options.pixel_size_um,
        include_border=options.include_border, detector=detector.label, seconds=seconds,
        cleaned=cleaned if keep_cleaned else None,
    )


def _particles(cleaned: np.ndarray, detector: Detector, options: AnalysisOptions, *,
               border_margin_px: float = 1.0) -> list[Particle]:
    """One pass: detect, exclude, measure (``border_margin_px``: how near an edge is on the border)."""
    with stage("detect"):
        detections = detector.detect(cleaned)
    with stage("focus"):
        focus = focus_scores(cleaned, detections)  # one score per object, used by the focus rule and the table
    with stage("exclude"):
        detections = apply_exclusions(cleaned, detections, options=options.exclusion, focus_scores=focus)
    with stage("measure"):
        return measure_particles(cleaned, detections, focus_scores=focus,
                                 border_margin_px=max(1, int(round(border_margin_px))))


def _resized_pass(cleaned: np.ndarray, detector: Detector, options: AnalysisOptions, factor: float
                  ) -> list[Particle]:
    """One pass over ``cleaned`` resized by ``factor`` (``factor`` 1.0: the image itself), particles in the
    image's own pixels; the exclusions' pixel limits keep their meaning there (``analysis.rescale``)."""
    if factor == 1.0:
        return _particles(cleaned, detector, options)
    scaled = dataclasses.replace(options, exclusion=scaled_exclusion(options.exclusion, factor))
    with stage("resize"):
        image = resized(cleaned, factor)
    return [scaled_particle(p, factor, cleaned.shape)
            for p in _particles(image, detector, scaled, border_margin_px=factor)]


def analyze_bytes(data: bytes, *, name: str, detector: Detector, options: AnalysisOptions | None = None,
                  keep_cleaned: bool = True) -> ImageResult:
    """Load untrusted image bytes safely, then analyse. Raises InvalidImageError (and subclasses) on bad input."""
    options = options or AnalysisOptions()
    start = time.perf_counter()
    with stage("load"):
        image, meta = load_image(data, name=name, max_pixels=options.max_pixels, max_bytes=options.max_bytes)
    result = analyze_image(image, name=name, meta=meta, detector=detector, options=options,
                           keep_cleaned=keep_cleaned)
    total = time.perf_counter() - start
    return dataclasses.replace(result, seconds=total)


def analyze_many(items: Sequence[tuple[str, Callable[[], bytes]]], *, detector: Detector,
                 options: AnalysisOptions | None = None, keep_cleaned: bool = False,
                 progress: Callable[[int, int, str], None] | None = None,
                 ) -> tuple[list[ImageResult], list[tuple[str, str]]]:
    """Analyse several images one at a time; a bad one is reported by name and skipped.

    items: (name, read) pairs; ``read()`` returns the file's bytes (so only one image is in memory at a time).
    progress: optional callback ``progress(done, total, name)`` after each image.
    Returns (results, failures) where failures are (name, message) pairs with a message a technician can act on.
    """
    results: list[ImageResult] = []
    failures: list[tuple[str, str]] = []
    for i, (name, read) in enumerate(items):
        try:
            results.append(analyze_bytes(read(), name=name, detector=detector, options=options,
                                         keep_cleaned=keep_cleaned))
        except CrystalQCError as e:
            failures.append((name, str(e)))
        except OSError as e:
            failures.append((name, f"cannot read the file: {e.strerror or e}"))
        if progress is not None:
            progress(i + 1, len(items), name)
    return results, failures
