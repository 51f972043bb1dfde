"""Run an exported YOLO detect model with onnxruntime (CPU) on one grey image, whole or in tiles.

The detector is stateless: thresholds travel in :class:`OnnxDetectorOptions` with each call, so one instance (one
onnxruntime session, whose ``run`` is thread-safe) can be shared by every app session.

Flow for one image (float32 (H, W) in [0, 1]): plan the passes (:func:`detection.tiling.plan_tiles`):

* a model exported with a fixed input size (e.g. 640x640) runs on full-size tiles of that size with an overlap;
* a model exported with dynamic height/width runs on the whole image in one pass (padded up to a multiple of the
  stride) while that stays within ``OnnxDetectorOptions.single_pass_max_pixels``, else on the fewest equal large
  tiles that do.

The native pass never rescales pixels (the model was trained at the native pixel scale; a tile smaller than the
input is padded). Blank tiles are skipped; tiles run in batches written straight into the input tensor; decode;
per-tile NMS; merge across seams (:func:`detection.tiling.merge_tile_detections`). Boxes come back in full-image pixels.
Then, by default, the same on the image downscaled to half size, for objects too large for the model at native
scale; its large boxes are merged with the native ones where the native pass supports them
(:func:`detection.tiling.merge_scales`; ``OnnxDetectorOptions.coarse_scale``).

Classes: 'crystal' and 'agglomerate' (:data:`analysis.records.COUNTED_CLASSES`) are counted. A class named like an
exclusion reason ('dust', 'fibre', 'bubble', 'out_of_focus') gives a Detection excluded for that reason; a name
containing 'bubble' gives 'bubble'; any other class (e.g. 'mimic': a defocused crystal or crystal look-alike at
another depth, which the training data labels so the model learns not to count it) gives 'out_of_focus'.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from detection.ort import ort

from analysis.errors import InvalidImageError, ModelPackageError
from analysis.records import COUNTED_CLASSES, EXCLUSION_REASONS, Detection
from analysis.timing import stage
from analysis.workers import usable_cores
from detection.modelmeta import ModelMeta, check_output_shape, head_level_strides, parse_metadata
from detection.tiling import coarse_support, merge_scales, merge_tile_detections, outside_boxes, plan_tiles
from detection.yolo import decode_output, decode_raw_head, ellipse_in_box, head_anchors, nms, padded_batch

logger = logging.getLogger(__name__)

#: Largest model file we load (bytes). A yolo11n export is ~10 MB, yolo11x ~220 MB.
MAX_MODEL_BYTES = 512 * 1024 * 1024
#: A detection whose box lies within this distance (px) of an interior tile edge is treated as cut by the seam.
EDGE_MARGIN_PX = 4.0
#: A tile is blank when, after 4x4 block averaging, max - min grey level is below this (see ``_tile_is_blank``).
BLANK_RANGE = 0.03
_BLANK_BLOCK = 4
#: Smallest pass budget accepted (pixels): one 64 x 64 input.
MIN_PASS_PIXELS = 64 * 64
#: Most model runs of one pass that go side by side (in threads, each run with threads // runs intra-op threads).
#: Measured with the INT8 yolo11n on 2 cores (two 1376x1952 tiles of a 2592x1944 image): side by side with one
#: thread each 0.38 s, one after the other with two threads each 0.48 s (onnxruntime's intra-op threads scale 1.5x
#: here, separate runs ~1.9x); the outputs are identical.
MAX_TILE_WORKERS = 4
#: Largest differences allowed between the split head (cut graph + numpy decoding) and the model's own output on
#: the probe input, boxes in input pixels and scores; the shipped INT8 model differs by ~1e-5 px and ~1e-7.
HEAD_SPLIT_TOLERANCE_PX = 1e-2
HEAD_SPLIT_TOLERANCE_SCORE = 1e-4
#: Peak activation memory of a yolo11n pass per input megapixel, measured with onnxruntime 1.32 (RSS growth: 5.1 MP
#: -> ~690 MB, 1.3 MP -> ~80-170 MB); onnxruntime's arena keeps the peak for the session's lifetime.
MB_PER_MEGAPIXEL = 135

#: Default second, downscaled pass for large objects (see OnnxDetectorOptions, detection.tiling.merge_scales). Measured
#: with model 1.1.0 (`python -m detection.evaluate --synthetic 5`, docs/model_history.md): real tiles recall 0.841 ->
#: 0.850, F1 0.855 -> 0.865, count accuracy 0.879 -> 0.886 (large L-alanine crystals the native pass boxed only a facet
#: of); rendered F1 0.896 / 0.698 / 0.731 -> 0.890 / 0.707 / 0.713 (easy / medium / hard). Without the native-support
#: rule of merge_scales real F1 was 0.874 but rendered F1 fell by 0.05 / 0.01 / 0.02: at half scale large, mildly
#: blurred crystals that the renderer labels out of focus look sharp enough to be boxed.
COARSE_SCALE = 0.5
COARSE_MIN_SIDE_PX = 80.0

#: Candidates (``OnnxDetectorOptions.candidate_threshold``): boxes the model scores between this and ``conf_threshold``,
#: and large half-scale boxes without native support, are counted only when the classical segmentation inside the box
#: confirms an object there (``detect(confirm=...)``); only candidates overlapping no kept box by more than
#: CANDIDATE_MAX_OVERLAP of the smaller box are tried. Measured with 1.2.0 (docs/model_history.md, session 6; rendered
#: tuning set, seeds 800000+, 8 images per difficulty, and the real tiles): real F1 0.861 -> 0.880, count accuracy 0.879
#: -> 0.893 (soft but labelled crystals the model scores low); rendered F1 0.827 / 0.845 / 0.484 -> 0.824 / 0.845 /
#: 0.497. Without the confirmation (every box from 0.05): real F1 0.855, precision 0.882 -> 0.834.
CANDIDATE_THRESHOLD = 0.05
CANDIDATE_MAX_OVERLAP = 0.3

_EMPTY = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

#: refine(image, box) -> (x_min, y_min, x_max, y_max, mask); box is float32 (4,) xyxy in image pixels.
RefineFn = Callable[[np.ndarray, np.ndarray], tuple[int, int, int, int, np.ndarray]]
#: confirm(image, box) -> the same as RefineFn when an object is outlined inside the box, else None.
ConfirmFn = Callable[[np.ndarray, np.ndarray], "tuple[int, int, int, int, np.ndarray] | None"]
RefineAllFn = Callable[[RefineFn, np.ndarray, list[np.ndarray]], list[tuple[int, int, int, int, np.ndarray]]]


@dataclass(frozen=True)
class OnnxDetectorOptions:
    """Per-call detector settings.

    ``tile_overlap_px``: minimum overlap between tiles. 128 px holds whole 92 % of the labelled crystals of the real
    development set (largest side, 1112x1000 images; 85 % at 96 px) and costs no extra tile at 1280x1024 or
    2592x1944 with 640 px tiles; larger crystals are joined from their parts by the seam rule.
    ``batch_size``: tiles per model run (a fixed-batch model uses its own); also capped so that one run holds at
    most ``single_pass_max_pixels`` input pixels.
    ``class_agnostic_nms``: suppress overlapping boxes whatever their class, so one object is never counted twice
    as both 'crystal' and 'agglomerate'.
    ``skip_empty_tiles``: do not run the model on tiles that are blank (flat background, see BLANK_RANGE).
    ``single_pass_max_pixels``: most input pixels in one model run (a pass of a dynamic-size model, or a batch of
    fixed-size tiles). A run holds about MB_PER_MEGAPIXEL MB of activations per input megapixel, kept afterwards by
    onnxruntime's memory arena; 3 MP (~0.4 GB) runs 1280x1024 whole and 2592x1944 as two 1360x1944 tiles.
    ``coarse_scale`` / ``coarse_min_side_px``: a second pass on the image downscaled by ``coarse_scale`` (0 = off)
    finds objects too large for the model at native scale (it was trained on 320 px tiles and, on a 240 px real
    crystal, boxes only a bright facet); of that pass only boxes whose longer side is at least
    ``coarse_min_side_px`` (full-image px; 80 = a quarter of the training tile) are used, merged by
    :func:`detection.tiling.merge_scales`. Costs ``coarse_scale ** 2`` of a native pass.
    ``candidate_threshold``: native boxes scoring from this up to ``conf_threshold``, and the large coarse boxes the
    native pass does not support, are candidates: :meth:`OnnxDetector.detect` keeps one only when its ``confirm``
    function outlines an object inside the box (CANDIDATE_THRESHOLD; 0 = no candidates). They come from the same
    model runs (decoded at the lower threshold); the boxes at or above ``conf_threshold`` are exactly those of a
    run without candidates.
    """

    conf_threshold: float = 0.25
    iou_threshold: float = 0.5
    tile_overlap_px: int = 128
    batch_size: int = 4
    skip_empty_tiles: bool = True
    class_agnostic_nms: bool = True
    single_pass_max_pixels: int = 3_000_000
    coarse_scale: float = COARSE_SCALE
    coarse_min_side_px: float = COARSE_MIN_SIDE_PX
    candidate_threshold: float = CANDIDATE_THRESHOLD

    def __post_init__(self) -> None:
        if not (self.coarse_scale == 0.0 or 0.1 <= self.coarse_scale < 1.0):
            raise ValueError(f"coarse_scale must be 0 (off) or in [0.1, 1), got {self.coarse_scale}")
        if self.coarse_min_side_px < 0:
            raise ValueError(f"coarse_min_side_px must be >= 0, got {self.coarse_min_side_px}")
        if not 0.0 <= self.conf_threshold < 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1), got {self.conf_threshold}")
        if not 0.0 <= self.candidate_threshold <= self.conf_threshold:
            raise ValueError(f"candidate_threshold must be 0 (off) or up to conf_threshold {self.conf_threshold}, "
                             f"got {self.candidate_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.tile_overlap_px < 0:
            raise ValueError(f"tile_overlap_px must be >= 0, got {self.tile_overlap_px}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.single_pass_max_pixels < MIN_PASS_PIXELS:
            raise ValueError(f"single_pass_max_pixels must be >= {MIN_PASS_PIXELS}, got {self.single_pass_max_pixels}")


def exclusion_for_class(name: str) -> str | None:
    """None for a counted class, otherwise the exclusion reason given to the class (rule in the module docstring)."""
    if name in COUNTED_CLASSES:
        return None
    if name in EXCLUSION_REASONS and name != "low_confidence":
        return name
    if "bubble" in name:
        return "bubble"
    return "out_of_focus"


def inscribed_ellipse(image: np.ndarray, box: np.ndarray) -> tuple[int, int, int, int, np.ndarray]:
    """Default mask: the filled ellipse inscribed in the box rounded outwards to whole pixels, clipped to the image."""
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(box[0]), 0, w))
    y0 = int(np.clip(np.floor(box[1]), 0, h))
    x1 = int(np.clip(np.ceil(box[2]), 0, w))
    y1 = int(np.clip(np.ceil(box[3]), 0, h))
    bw, bh = x1 - x0, y1 - y0
    if bw <= 0 or bh <= 0:
        return x0, y0, x1, y1, np.zeros((max(bh, 0), max(bw, 0)), dtype=bool)
    return x0, y0, x1, y1, ellipse_in_box(bw, bh)


def _tile_is_blank(tile: np.ndarray) -> bool:
    """True when the tile holds nothing a model could detect: grey range of the 4x4 block means < BLANK_RANGE.

    Block averaging removes pixel noise (its range shrinks ~4x) but keeps the rim of even a 10 px crystal.
    """
    h, w = tile.shape
    small = cv2.resize(tile, (max(1, w // _BLANK_BLOCK), max(1, h // _BLANK_BLOCK)), interpolation=cv2.INTER_AREA)
    return float(small.max() - small.min()) < BLANK_RANGE


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.size == 0:
        shape = getattr(image, "shape", None)
        raise InvalidImageError(f"The detector needs a grey (height, width) image, got shape {shape}.")
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise InvalidImageError("The image contains NaN or infinite values; reload it.")
    return image


def session_options(threads: int, *, allow_spinning: bool = False) -> ort.SessionOptions:
    """onnxruntime CPU session settings (measured in bench/bench_onnx.py --sessions).

    All graph optimisations (constant folding, Conv+BN/activation fusion, layout transforms), one intra-op thread
    per core, sequential execution (a YOLO graph is a chain; inter-op parallelism only adds contention), memory
    pattern and arena on (same shapes are run again and again). Spinning off by default: worker threads that
    busy-wait between operators steal the CPU from anything else on a 2-core machine (another session's
    post-processing, Streamlit, a background job) and gained nothing measurable here.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = True
    opts.enable_cpu_mem_arena = True
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return opts


class OnnxDetector:
    """Stateless: thresholds are arguments; one onnxruntime session shared across app sessions (thread-safe run)."""

    def __init__(
        self,
        model_bytes: bytes,
        *,
        threads: int | None = None,
        name: str = "",
        version: str = "",
        allow_spinning: bool = False,
    ) -> None:
        """Load an ultralytics YOLO detect ONNX export from memory and check it.

        ``threads``: intra-op threads, default one per usable core. A model whose input height and width are both
        symbolic is probed at a second, non-square size; only if it runs there with the right anchor count is it
        treated as dynamic-size (:attr:`dynamic_input`), otherwise it is run like a fixed-size model at the
        metadata's ``imgsz``.
        Raises ModelPackageError when the bytes are not a loadable ONNX model, the metadata is missing or invalid,
        or the model's inputs/outputs do not fit the metadata (checked with one blank inference).
        """
        if not isinstance(model_bytes, (bytes, bytearray, memoryview)) or len(model_bytes) == 0:
            raise ModelPackageError("The model file is empty; reinstall the model package.")
        if len(model_bytes) > MAX_MODEL_BYTES:
            raise ModelPackageError(
                f"The model file is {len(model_bytes) / 2**20:.0f} MiB (at most {MAX_MODEL_BYTES // 2**20} MiB)."
            )
        self._name, self._version = name, version
        self._threads = max(1, int(threads)) if threads else usable_cores()
        self._allow_spinning = allow_spinning
        opts = session_options(self._threads, allow_spinning=allow_spinning)
        try:
            self._model_bytes = bytes(model_bytes)
            self._session = ort.InferenceSession(self._model_bytes, opts, providers=["CPUExecutionProvider"])
            props = dict(self._session.get_modelmeta().custom_metadata_map)
        except Exception as e:  # onnxruntime raises its own exception types, none of them shared
            raise ModelPackageError(
                "The model file is not a valid ONNX model (corrupt or truncated); reinstall the model package."
            ) from e
        self._meta = parse_metadata(props)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelPackageError(
                f"The model has {len(inputs)} inputs and {len(outputs)} outputs; a YOLO detect export has one "
                "image input and one output."
            )
        inp = inputs[0]
        self._input_name, self._output_names = inp.name, [outputs[0].name]
        self._head_split = False  # set by _split_head: the session outputs raw head logits, numpy decodes
        if inp.type not in ("tensor(float)", "tensor(float16)"):
            raise ModelPackageError(f"The model input is {inp.type}; a float image tensor is expected.")
        self._input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ModelPackageError(f"The model input has shape {shape}; (batch, 3, height, width) is expected.")
        static = [d if isinstance(d, int) else None for d in shape]
        if static[1] is not None and static[1] != 3:
            raise ModelPackageError(f"The model input has {static[1]} channels; 3 (RGB) are expected.")
        for got, want, axis in ((static[2], self._meta.imgsz[0], "height"), (static[3], self._meta.imgsz[1], "width")):
            if got is not None and got != want:
                raise ModelPackageError(
                    f"The model input {axis} is {got} px but the metadata says {want} px; the metadata does not "
                    "belong to this model."
                )
        self._fixed_batch = static[0]
        self._lock = threading.Lock()
        self._tile_sessions: dict[int, ort.InferenceSession] = {}
        self._tile_pool: ThreadPoolExecutor | None = None
        self._tile_pool_size = 0
        probe_batch = self._fixed_batch or 1
        probe = np.full((probe_batch, 3, *self._meta.imgsz), 0.5, dtype=self._input_dtype)
        out = self._run(probe)
        check_output_shape(self._meta, out.shape)
        self._dynamic = static[2] is None and static[3] is None and self._accepts_other_sizes(probe_batch)
        self._level_strides: tuple[int, ...] = ()
        self._anchor_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._head_split = self._split_head(probe_batch)
        logger.info(
            "loaded %s: classes %s, input %s (%s), %d threads",
            self.label, self._meta.names, self._meta.imgsz, "dynamic size" if self._dynamic else "fixed size",
            self._threads,
        )

    def _accepts_other_sizes(self, batch: int) -> bool:
        """Run a blank (batch, 3, 2*stride, 3*stride) input; True when it gives the anchors of that size."""
        size = (2 * self._meta.stride, 3 * self._meta.stride)
        try:
            out = self._run(np.full((batch, 3, *size), 0.5, dtype=self._input_dtype))
            check_output_shape(self._meta, out.shape, input_size=size)
        except ModelPackageError as e:
            logger.warning("model input size is declared dynamic but the model does not run at %s (%s); "
                           "running it at %s only", size, e, self._meta.imgsz)
            return False
        return True

    @property
    def meta(self) -> ModelMeta:
        return self._meta

    @property
    def dynamic_input(self) -> bool:
        """True when the model runs at any input size (multiple of the stride), so whole images run in one pass."""
        return self._dynamic

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def label(self) -> str:
        """Short provenance text, e.g. 'onnx:crystal-yolo11n 1.0.0'."""
        return f"onnx:{self._name or 'model'} {self._version}".strip()

    def _tile_runner(self, n_chunks: int) -> tuple[ThreadPoolExecutor, ort.InferenceSession] | None:
        """For ``n_chunks`` model runs of one pass: a thread pool and a session with fewer intra-op threads, so
        the runs go side by side (at most MAX_TILE_WORKERS), or None to run them one after the other with all threads."""
        workers = min(self._threads, n_chunks, MAX_TILE_WORKERS)
        if workers < 2:
            return None
        intra = max(1, self._threads // workers)
        with self._lock:
            session = self._tile_sessions.get(intra)
            if session is None:
                opts = session_options(intra, allow_spinning=self._allow_spinning)
                session = ort.InferenceSession(self._model_bytes, opts, providers=["CPUExecutionProvider"])
                self._tile_sessions[intra] = session
            if self._tile_pool is None or self._tile_pool_size < workers:
                self._tile_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cqc-tiles")
                self._tile_pool_size = workers
            return self._tile_pool, session

    def _split_head(self, batch: int) -> bool:
        """Switch to the model cut before its head's decoding (:mod:`detection.headsplit`) when the cut model plus
        :func:`decode_raw_head` reproduce the full model's output for every anchor of a random probe input
        (boxes within HEAD_SPLIT_TOLERANCE_PX, scores within HEAD_SPLIT_TOLERANCE_SCORE); else keep the full
        graph. Returns True when switched."""
        from detection.headsplit import split_head

        size = tuple(self._meta.imgsz) if not self._dynamic else (4 * self._meta.stride, 5 * self._meta.stride)
        x = np.random.default_rng(0).random((batch, 3, *size)).astype(self._input_dtype)
        try:
            cut = split_head(self._model_bytes)
            if cut is None:
                return False
            opts = session_options(self._threads, allow_spinning=self._allow_spinning)
            session = ort.InferenceSession(cut, opts, providers=["CPUExecutionProvider"])
            full = self._run(x)
            box, cls = (np.asarray(o, np.float32) for o in session.run(None, {self._input_name: x}))
        except Exception as e:  # onnx / onnxruntime raise their own types; the full graph still works
            logger.warning("the model's head could not be split (%s); its own decoding is used", type(e).__name__)
            return False
        for strides in head_level_strides(self._meta.stride):
            anchors, steps = head_anchors(size, strides)
            if anchors.shape[0] == box.shape[-1]:
                break
        else:
            logger.info("model head has %d anchors at %s; its own decoding is used", box.shape[-1], size)
            return False
        try:
            mine = decode_raw_head(box, cls, anchors=anchors, anchor_strides=steps, conf_threshold=None)
        except ValueError as e:
            logger.info("model head not decodable here (%s); its own decoding is used", e)
            return False
        if (mine.shape != full.shape or np.abs(mine[:, :4] - full[:, :4]).max() > HEAD_SPLIT_TOLERANCE_PX
                or np.abs(mine[:, 4:] - full[:, 4:]).max() > HEAD_SPLIT_TOLERANCE_SCORE):
            logger.warning("the split model head does not reproduce the model's output; its own decoding is used")
            return False
        self._session, self._model_bytes = session, cut
        self._output_names = [o.name for o in session.get_outputs()]
        self._level_strides = tuple(strides)
        logger.info("model head split: boxes decoded in numpy for the anchors that can pass the threshold")
        return True

    def _anchors(self, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        found = self._anchor_cache.get(input_hw)
        if found is None:
            found = head_anchors(input_hw, self._level_strides)
            if len(self._anchor_cache) < 64:  # a few tile sizes per image size
                self._anchor_cache[input_hw] = found
        return found

    def _infer(self, batch: np.ndarray, input_hw: tuple[int, int], conf_threshold: float,
               session: ort.InferenceSession | None = None) -> np.ndarray:
        """The standard output (B, 4 + nc, N) for a model input of ``input_hw``, checked against the metadata; with
        a split head only the anchors that can pass ``conf_threshold`` (:func:`decode_raw_head`)."""
        out = self._run(batch, session)
        if not self._head_split:
            check_output_shape(self._meta, out.shape, input_size=input_hw)
            return out
        box, cls = out
        anchors, steps = self._anchors(input_hw)
        try:
            return decode_raw_head(box, cls, anchors=anchors, anchor_strides=steps, conf_threshold=conf_threshold)
        except ValueError as e:
            raise ModelPackageError(f"The model's raw output does not fit its input size {input_hw}: {e}") from e

    def _run(self, batch: np.ndarray, session: ort.InferenceSession | None = None):
        """The session's output for ``batch``: the (B, 4 + nc, N) array, or with a split head the (box logits, class
        logits) pair."""
        try:
            outs = (session or self._session).run(self._output_names, {self._input_name: batch})
        except Exception as e:  # onnxruntime raises its own exception types, none of them shared
            raise ModelPackageError(
                f"The model failed to run on an input of shape {tuple(batch.shape)}; the model package is broken "
                "or not a YOLO detect export."
            ) from e
        if self._head_split:
            return tuple(np.asarray(o, dtype=np.float32) for o in outs)
        return np.asarray(outs[0], dtype=np.float32)

    def plan(self, height: int, width: int, *, options: OnnxDetectorOptions = OnnxDetectorOptions()
             ) -> tuple[np.ndarray, tuple[int, int]]:
        """Tiles (int64 (T, 4) xyxy) and model input (height, width) for an image of this size (module docstring).

        Raises ValueError when the tile overlap is not smaller than a fixed model's input, or no tiling fits
        ``options.single_pass_max_pixels``.
        """
        in_h, in_w = self._meta.imgsz
        if not self._dynamic and options.tile_overlap_px >= min(in_h, in_w):
            raise ValueError(f"tile_overlap_px {options.tile_overlap_px} must be below the model input {in_h}x{in_w}")
        return plan_tiles(
            width,
            height,
            fixed_input=None if self._dynamic else (in_h, in_w),
            stride=self._meta.stride,
            overlap=options.tile_overlap_px,
            single_pass_max_pixels=options.single_pass_max_pixels,
        )

    def predict_boxes(
        self, image: np.ndarray, *, options: OnnxDetectorOptions = OnnxDetectorOptions()
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect objects in a grey image: the native-scale pass, plus the coarse pass for large objects when
        ``options.coarse_scale`` is set and the downscaled image is still at least one stride on each side.

        image: float32 (H, W) in [0, 1]. Returns ``(boxes, scores, class_ids)``: float32 (K, 4) xyxy in image
        pixels (clipped to the image), float32 (K,), int32 (K,); highest score first.
        Raises InvalidImageError for a non-2-D or non-finite image, ValueError when the tile overlap is not smaller
        than the tile, ModelPackageError when the model fails to run.
        """
        return self._predict(_check_image(image), options, candidates=False)[0]

    def predict_candidates(
        self, image: np.ndarray, *, options: OnnxDetectorOptions = OnnxDetectorOptions()
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(kept, candidates)``: ``kept`` exactly as :meth:`predict_boxes`; ``candidates`` the boxes that count only
        when confirmed (``OnnxDetectorOptions.candidate_threshold``): native boxes scoring below ``conf_threshold``
        and large coarse boxes without native support, none overlapping a kept box by more than
        CANDIDATE_MAX_OVERLAP of the smaller box; same array types, highest score first. Raises as
        :meth:`predict_boxes`."""
        return self._predict(_check_image(image), options, candidates=True)

    def _predict(self, img: np.ndarray, options: OnnxDetectorOptions, *, candidates: bool):
        low = options.candidate_threshold if candidates and options.candidate_threshold > 0 else None
        fine, fine_low = self._predict_native(img, options, low=low)
        h, w = img.shape
        sw, sh = round(w * options.coarse_scale), round(h * options.coarse_scale)
        coarse = _EMPTY
        if options.coarse_scale != 0.0 and min(sw, sh) >= self._meta.stride:
            small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
            boxes, scores, cls = self._predict_native(small, options)[0]
            boxes = boxes * np.array([w / sw, h / sh, w / sw, h / sh], dtype=np.float32)
            large = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= options.coarse_min_side_px
            logger.debug("coarse pass at %dx%d: %d large of %d boxes", sw, sh, int(large.sum()), len(boxes))
            coarse = (boxes[large], scores[large], cls[large])
            kept = merge_scales(fine, coarse, iou_threshold=options.iou_threshold,
                                class_agnostic=options.class_agnostic_nms)
        else:
            kept = fine
        if low is None:
            return kept, _EMPTY
        supported, _ = coarse_support(fine[0], coarse[0], iou_threshold=options.iou_threshold)
        unsupported = tuple(a[~supported] for a in coarse)
        cand = tuple(np.concatenate([x, y]) for x, y in zip(fine_low, unsupported))
        ok = outside_boxes(cand[0], kept[0], max_overlap=CANDIDATE_MAX_OVERLAP)
        order = np.argsort(-cand[1][ok], kind="stable")
        cand = tuple(a[ok][order] for a in cand)
        logger.debug("%d candidates (%d below the threshold, %d unsupported large)", len(order), len(fine_low[1]),
                     len(unsupported[1]))
        return kept, (cand[0].astype(np.float32), cand[1].astype(np.float32), cand[2].astype(np.int32))

    def _predict_native(self, img: np.ndarray, options: OnnxDetectorOptions, *, low: float | None = None
                        ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One pass over the image at its own pixel scale (whole or tiled, seams merged): ``(kept, low_boxes)``,
        each as :meth:`predict_boxes`. ``low``: also decode the boxes scoring from ``low`` up to ``conf_threshold``
        (NMS runs over both, so a low box never suppresses a kept one: the kept boxes are those of a run without
        ``low``); seams are merged separately in the two groups. Without ``low`` the second group is empty."""
        h, w = img.shape
        tiles, input_hw = self.plan(h, w, options=options)
        todo = [
            t for t, (x0, y0, x1, y1) in enumerate(tiles.tolist())
            if not (options.skip_empty_tiles and _tile_is_blank(img[y0:y1, x0:x1]))
        ]
        logger.debug("%d tiles of input %s, %d run, %d blank", len(tiles), input_hw, len(todo), len(tiles) - len(todo))
        if not todo:
            return _EMPTY, _EMPTY
        threshold = options.conf_threshold if low is None else min(low, options.conf_threshold)
        step = self._fixed_batch or max(1, min(options.batch_size,
                                               options.single_pass_max_pixels // (input_hw[0] * input_hw[1])))
        chunks = [todo[start : start + step] for start in range(0, len(todo), step)]

        def run_chunk(chunk: list[int], session: ort.InferenceSession | None = None) -> list[tuple]:
            """(tile index, boxes in image pixels, scores, class ids) of each tile of one model run."""
            crops = [img[y0:y1, x0:x1] for x0, y0, x1, y1 in tiles[chunk].tolist()]
            x, pads = padded_batch(crops, size=input_hw, batch=self._fixed_batch or len(chunk),
                                   dtype=self._input_dtype)
            raw = self._infer(x, input_hw, threshold, session)
            decoded = decode_output(raw[: len(chunk)], n_classes=self._meta.n_classes, conf_threshold=threshold)
            out = []
            for t_idx, (pad_x, pad_y), (boxes, scores, cls) in zip(chunk, pads, decoded):
                x0, y0, x1, y1 = tiles[t_idx].tolist()
                boxes -= np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)
                np.clip(boxes[:, 0::2], 0, x1 - x0, out=boxes[:, 0::2])
                np.clip(boxes[:, 1::2], 0, y1 - y0, out=boxes[:, 1::2])
                ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
                boxes, scores, cls = boxes[ok], scores[ok], cls[ok]
                keep = nms(
                    boxes,
                    scores,
                    iou_threshold=options.iou_threshold,
                    class_ids=None if options.class_agnostic_nms else cls,
                )
                out.append((t_idx, boxes[keep] + np.array([x0, y0, x0, y0], dtype=np.float32), scores[keep],
                            cls[keep]))
            return out

        runner = self._tile_runner(len(chunks))
        if runner is None:
            per_tile = [r for chunk in chunks for r in run_chunk(chunk)]
        else:  # side by side, each run with fewer threads; results in tile order, as one after the other
            pool, session = runner
            per_tile = [r for done in pool.map(lambda c: run_chunk(c, session), chunks) for r in done]
        boxes = np.concatenate([r[1] for r in per_tile]).astype(np.float32)
        scores = np.concatenate([r[2] for r in per_tile]).astype(np.float32)
        cls = np.concatenate([r[3] for r in per_tile]).astype(np.int32)
        tile_of = np.concatenate([np.full(len(r[2]), r[0], dtype=np.int64) for r in per_tile])
        high = scores > options.conf_threshold  # decode_output's rule: a kept box scores above the threshold
        groups = []
        for sel in (high, ~high):
            b, sc, c = boxes[sel], scores[sel], cls[sel]
            if len(tiles) > 1 and b.shape[0]:
                keep, merged = merge_tile_detections(
                    b, sc, None if options.class_agnostic_nms else c, tile_of[sel], tiles,
                    iou_threshold=options.iou_threshold, edge_margin_px=EDGE_MARGIN_PX,
                )
                groups.append((merged, sc[keep], c[keep]))
            else:
                order = np.argsort(-sc, kind="stable")
                groups.append((b[order], sc[order], c[order]))
        return groups[0], groups[1]

    def detect(
        self,
        image: np.ndarray,
        *,
        options: OnnxDetectorOptions = OnnxDetectorOptions(),
        refine: RefineFn | None = None,
        refine_all: RefineAllFn | None = None,
        confirm: ConfirmFn | None = None,
    ) -> list[Detection]:
        """Detect and outline objects; one :class:`Detection` per object, highest confidence first.

        ``refine(image, box)`` turns a float32 (4,) xyxy box into ``(x_min, y_min, x_max, y_max, mask)`` with a
        bool mask of shape (y_max - y_min, x_max - x_min); default :func:`inscribed_ellipse`. ``refine_all(refine,
        image, boxes)``, when given, returns ``[refine(image, b) for b in boxes]`` its own way (e.g. on several
        cores, :func:`analysis.workers.map_boxes`). ``confirm(image, box)``, when given (and
        ``options.candidate_threshold`` is not 0), is tried on every candidate (:meth:`predict_candidates`) and
        returns its outline as ``refine`` does, or None when it finds no object there; confirmed candidates follow
        the kept boxes (by score; a candidate overlapping an earlier confirmed one by more than
        CANDIDATE_MAX_OVERLAP of the smaller box is left out) with the model's own, lower score as confidence.
        Objects whose mask is empty are dropped. Raises as :meth:`predict_boxes`, and ValueError when ``refine`` or
        ``confirm`` returns a mask whose shape does not match its box.
        """
        img = _check_image(image)
        refine_fn = refine or inscribed_ellipse
        with stage("detect.network"):  # model passes, seams and scales merged (analysis.timing)
            (boxes, scores, cls), (c_boxes, c_scores, c_cls) = self._predict(img, options,
                                                                             candidates=confirm is not None)
        with stage("detect.outlines"):
            detections = self._outlined(img, refine_fn, refine_all, boxes, scores, cls)
        if len(c_boxes):
            with stage("detect.outlines"):
                confirmed = self._outlined(img, confirm, refine_all, c_boxes, c_scores, c_cls)
            chosen: list[Detection] = []
            accepted = np.zeros((0, 4), np.float32)
            for box, det in zip(c_boxes, confirmed):
                if det is None or not outside_boxes(box[None], accepted, max_overlap=CANDIDATE_MAX_OVERLAP)[0]:
                    continue
                chosen.append(det)
                accepted = np.vstack([accepted, box[None]])
            logger.debug("%d of %d candidates confirmed, %d kept", sum(d is not None for d in confirmed), len(c_boxes),
                         len(chosen))
            detections += chosen
        return [d for d in detections if d is not None]

    def _outlined(self, img: np.ndarray, fn, refine_all: RefineAllFn | None, boxes: np.ndarray, scores: np.ndarray,
                  cls: np.ndarray) -> list[Detection | None]:
        """A Detection per box outlined by ``fn`` (None where ``fn`` returns None or an empty mask)."""
        box_list = [box.copy() for box in boxes]
        if refine_all is not None:
            refined = refine_all(fn, img, box_list)
        else:
            refined = [fn(img, box) for box in box_list]
        detections: list[Detection | None] = []
        for box, score, c, outline in zip(box_list, scores, cls.tolist(), refined):
            if outline is None:
                detections.append(None)
                continue
            x0, y0, x1, y1, mask = outline
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (y1 - y0, x1 - x0):
                raise ValueError(f"refine returned a mask of shape {mask.shape} for box {(x0, y0, x1, y1)}")
            if mask.size == 0 or not mask.any():
                logger.debug("dropped box %s: empty mask", box.tolist())
                detections.append(None)
                continue
            name = self._meta.names[c]
            detections.append(
                Detection(
                    x_min=int(x0),
                    y_min=int(y0),
                    x_max=int(x1),
                    y_max=int(y1),
                    mask=mask,
                    class_name=name,
                    confidence=float(score),
                    excluded_reason=exclusion_for_class(name),
                )
            )
        return detections
