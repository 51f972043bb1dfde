"""Schema-checked reading of the metadata ultralytics writes into an exported ONNX model.

Ultralytics stores ``metadata_props`` as strings, e.g. ``names="{0: 'crystal', 1: 'agglomerate'}"``,
``stride="32"``, ``imgsz="[640, 640]"``, ``task="detect"``. The model file is untrusted input, so values are parsed
with :func:`ast.literal_eval` only (never ``eval``), every value string is length-capped before parsing, and the
parsed values are checked against a strict schema. Every failure raises
:class:`analysis.errors.ModelPackageError` with a message a technician can act on.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from analysis.errors import ModelPackageError

#: Longest metadata value we agree to parse (characters). Real values are < 200 characters.
MAX_VALUE_CHARS = 10_000
#: Strides a YOLO detect head can have as its largest stride.
ALLOWED_STRIDES = frozenset({8, 16, 32, 64})
#: Input size limits (pixels, per side).
MIN_IMGSZ, MAX_IMGSZ = 32, 4096
#: Most classes we accept (ours has a handful).
MAX_CLASSES = 256
#: Class names: lower-case letters, digits and underscores, starting with a letter, at most 32 characters.
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_REQUIRED = ("names", "stride", "imgsz")

_REMEDY = "re-export the model with ultralytics (model.export(format='onnx')) or use the shipped model package"


@dataclass(frozen=True)
class ModelMeta:
    """What the detector needs to know about an exported YOLO detect model.

    ``names``: class names by class id (id = position). ``imgsz``: model input (height, width) in pixels.
    ``stride``: the largest stride of the detect head (pixels). ``task``: always ``'detect'`` once parsed.
    """

    names: tuple[str, ...]
    imgsz: tuple[int, int]
    stride: int
    task: str = "detect"

    @property
    def n_classes(self) -> int:
        return len(self.names)


def _literal(key: str, text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ModelPackageError(
            f"Model metadata '{key}' is not a plain Python literal; {_REMEDY}."
        ) from e


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, dict) or not value:
        raise ModelPackageError(f"Model metadata 'names' must be a non-empty dict {{id: name}}; {_REMEDY}.")
    if len(value) > MAX_CLASSES:
        raise ModelPackageError(f"Model metadata 'names' lists {len(value)} classes (at most {MAX_CLASSES}).")
    if not all(_is_int(k) for k in value):
        raise ModelPackageError(f"Model metadata 'names' must have integer class ids; {_REMEDY}.")
    if sorted(value) != list(range(len(value))):
        raise ModelPackageError(
            f"Model metadata 'names' class ids must be 0..{len(value) - 1} without gaps, got {sorted(value)[:10]}."
        )
    names = tuple(value[i] for i in range(len(value)))
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            shown = repr(name)[:40]
            raise ModelPackageError(
                f"Model metadata class name {shown} is not allowed: use 1-32 lower-case letters, digits or '_', "
                "starting with a letter."
            )
    if len(set(names)) != len(names):
        raise ModelPackageError("Model metadata 'names' contains the same class name twice.")
    return names


def _parse_stride(value: object) -> int:
    # ultralytics writes str(int(max stride)); tolerate a float with an integral value ("32.0").
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or value not in ALLOWED_STRIDES:
        raise ModelPackageError(
            f"Model metadata 'stride' must be one of {sorted(ALLOWED_STRIDES)}, got {str(value)[:20]!r}."
        )
    return int(value)


def _parse_imgsz(value: object, stride: int) -> tuple[int, int]:
    if _is_int(value):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) for v in value):
        raise ModelPackageError(f"Model metadata 'imgsz' must be [height, width] (two integers); {_REMEDY}.")
    h, w = int(value[0]), int(value[1])
    for side in (h, w):
        if not MIN_IMGSZ <= side <= MAX_IMGSZ:
            raise ModelPackageError(
                f"Model input size {h}x{w} is outside {MIN_IMGSZ}..{MAX_IMGSZ} pixels per side."
            )
        if side % stride:
            raise ModelPackageError(f"Model input size {h}x{w} is not a multiple of the model stride {stride}.")
    return h, w


def parse_metadata(props: Mapping[str, str]) -> ModelMeta:
    """Parse and check ultralytics ONNX ``metadata_props`` (a str -> str mapping).

    Required keys: 'names', 'stride', 'imgsz'. 'task', when present, must be 'detect'. Other keys are ignored but
    still length-capped. Raises ModelPackageError on any missing, oversized, unparsable or out-of-schema value.
    """
    if not isinstance(props, Mapping):
        raise ModelPackageError("Model metadata is missing or not a key/value table.")
    for key, text in props.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise ModelPackageError("Model metadata keys and values must be text.")
        if len(text) > MAX_VALUE_CHARS or len(key) > 200:
            raise ModelPackageError(
                f"Model metadata '{key[:40]}' is {len(text)} characters long (at most {MAX_VALUE_CHARS}); "
                "the model file is not a genuine export."
            )
    missing = [k for k in _REQUIRED if k not in props]
    if missing:
        raise ModelPackageError(
            f"Model metadata lacks {', '.join(repr(k) for k in missing)}; this is not an ultralytics YOLO export "
            f"- {_REMEDY}."
        )
    task = props.get("task", "detect").strip()
    if task != "detect":
        raise ModelPackageError(
            f"The model is a '{task[:20]}' model; a YOLO detect model (task 'detect') is required."
        )
    names = _parse_names(_literal("names", props["names"]))
    stride = _parse_stride(_literal("stride", props["stride"]))
    imgsz = _parse_imgsz(_literal("imgsz", props["imgsz"]), stride)
    return ModelMeta(names=names, imgsz=imgsz, stride=stride, task=task)


def head_level_strides(stride: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The level strides, in head order, of a YOLO detect head whose largest stride is ``stride``: the standard
    head (8, 16, ... stride; P3-P5 for stride 32) and the 'p2' variant, which adds a stride-4 level first."""
    levels = tuple(s for s in (8, 16, 32, 64) if s <= stride)
    return levels, (4, *levels)


def expected_anchor_counts(imgsz: tuple[int, int], stride: int) -> set[int]:
    """Anchor counts a YOLO detect head can produce at ``imgsz`` (height, width) with largest stride ``stride``:
    those of both heads of :func:`head_level_strides` (80x80 + 40x40 + 20x20 = 8400 at 640 for the standard one)."""
    h, w = imgsz
    return {sum((h // s) * (w // s) for s in levels) for levels in head_level_strides(stride)}


def check_output_shape(
    meta: ModelMeta, output_shape: Sequence[int | str | None], *, input_size: tuple[int, int] | None = None
) -> None:
    """Check a model output shape ``(B, 4 + nc, N)`` against the metadata.

    Dimensions given as None or a string (symbolic, dynamic) are not checked. N is checked against
    :func:`expected_anchor_counts` for ``input_size`` (height, width) — the size actually fed to a model with
    dynamic input size — or ``meta.imgsz`` by default. Raises ModelPackageError when anything disagrees.
    """
    shape = tuple(output_shape)
    if len(shape) != 3:
        raise ModelPackageError(
            f"Model output has shape {shape}; a YOLO detect export gives (batch, 4 + classes, anchors). "
            "Export without NMS (nms=False) and without end2end post-processing."
        )
    batch, channels, anchors = shape
    if _is_int(batch) and batch < 1:
        raise ModelPackageError(f"Model output batch size {batch} is invalid.")
    if _is_int(channels) and channels != 4 + meta.n_classes:
        raise ModelPackageError(
            f"Model output has {channels} values per anchor but the metadata names {meta.n_classes} classes "
            f"(expected {4 + meta.n_classes}); the metadata does not belong to this model, or it was exported "
            "with NMS (nms=True)."
        )
    if _is_int(anchors):
        size = meta.imgsz if input_size is None else (int(input_size[0]), int(input_size[1]))
        expected = expected_anchor_counts(size, meta.stride)
        if anchors not in expected:
            raise ModelPackageError(
                f"Model output has {anchors} anchors but input size {size[0]}x{size[1]} with stride "
                f"{meta.stride} gives {min(expected)}; the 'imgsz' metadata does not match the model."
            )
