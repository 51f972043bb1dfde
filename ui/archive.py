"""(De)serialisation of an analysis for the vault: ImageResult <-> JSON bytes, cleaned image <-> 16-bit PNG bytes.

Pure Python (no Streamlit import), so it can move into a package later.

JSON layout (UTF-8, sorted keys; Python's ``NaN``/``Infinity`` tokens are used for non-finite floats so every value
round-trips exactly)::

    {"schema": "crystal-qc/image-result", "version": 1,
     "name": str, "meta": {format, width, height, bit_depth, channels, n_pages, notes: [str]},
     "particles": [{<every field of analysis.records.Particle>}, ...],
     "pixel_size_um": float | null, "include_border": bool, "detector": str, "seconds": float,
     "extra": {...}}            # caller's JSON dict (e.g. analysis id, time, source); {} when none

The cleaned image (float32 (H, W) in [0, 1]) is kept as a separate 16-bit grey PNG (quantisation step 1/65535).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from analysis.errors import CrystalQCError, InvalidImageError
from analysis.io import encode_png, load_image
from analysis.records import ImageMeta, ImageResult, Particle

SCHEMA = "crystal-qc/image-result"
VERSION = 1

_PARTICLE_FIELDS = {f.name: f.type for f in dataclasses.fields(Particle)}
_META_FIELDS = {f.name: f.type for f in dataclasses.fields(ImageMeta)}


class ArchiveFormatError(CrystalQCError, ValueError):
    """A stored analysis record cannot be read back (not JSON, another schema, a missing or mistyped field)."""


# ---------------------------------------------------------------------------------------------------- encoding
def result_to_json(result: ImageResult, *, extra: dict | None = None) -> bytes:
    """JSON bytes of ``result`` without its cleaned image (see :func:`cleaned_to_png`); ``extra`` is stored as is.

    Raises:
        ArchiveFormatError: ``extra`` is not a dict of JSON values.
    """
    doc = {
        "schema": SCHEMA,
        "version": VERSION,
        "name": result.name,
        "meta": {**{k: getattr(result.meta, k) for k in _META_FIELDS}, "notes": list(result.meta.notes)},
        "particles": [{k: _plain(getattr(p, k)) for k in _PARTICLE_FIELDS} for p in result.particles],
        "pixel_size_um": None if result.pixel_size_um is None else float(result.pixel_size_um),
        "include_border": bool(result.include_border),
        "detector": result.detector,
        "seconds": float(result.seconds),
        "extra": {} if extra is None else extra,
    }
    if not isinstance(doc["extra"], dict):
        raise ArchiveFormatError("The extra information of an analysis must be a dict.")
    try:
        return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ArchiveFormatError("The extra information of an analysis must contain only JSON values.") from e


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (json cannot encode numpy types)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def cleaned_to_png(cleaned: np.ndarray) -> bytes:
    """16-bit grey PNG of a float32 (H, W) image in [0, 1] (values outside are clipped; the input is not modified).

    Raises:
        ValueError: not a non-empty 2-D array.
    """
    a = np.asarray(cleaned, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"the cleaned image must be a non-empty (H, W) array, got shape {a.shape}")
    return encode_png(np.round(np.clip(a, 0.0, 1.0) * 65535.0).astype(np.uint16))


def cleaned_from_png(data: bytes) -> np.ndarray:
    """float32 (H, W) in [0, 1] from :func:`cleaned_to_png` bytes.

    Raises:
        ArchiveFormatError: the bytes are not a readable PNG.
    """
    try:
        image, _ = load_image(bytes(data), name="cleaned image")
    except InvalidImageError as e:
        raise ArchiveFormatError(f"The stored cleaned image cannot be read: {e}") from e
    return image


# ---------------------------------------------------------------------------------------------------- decoding
def result_from_json(data: bytes, *, cleaned: np.ndarray | None = None) -> tuple[ImageResult, dict]:
    """``(ImageResult, extra)`` from :func:`result_to_json` bytes; ``cleaned`` becomes ``result.cleaned``.

    Raises:
        ArchiveFormatError: not UTF-8 JSON, another schema or version, or a missing, extra or mistyped field.
    """
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ArchiveFormatError("The stored analysis is not valid JSON; the record is damaged.") from e
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ArchiveFormatError("The stored record is not a crystal QC analysis result.")
    if doc.get("version") != VERSION:
        raise ArchiveFormatError(f"The stored analysis has format version {doc.get('version')!r}; this app reads"
                                 f" version {VERSION}. Update the app to open it.")
    _keys(doc, {"schema", "version", "name", "meta", "particles", "pixel_size_um", "include_border", "detector",
                "seconds", "extra"}, "analysis")
    meta = _meta(doc["meta"])
    if not isinstance(doc["particles"], list):
        raise ArchiveFormatError("The stored analysis has no particle list.")
    particles = tuple(_particle(p, i) for i, p in enumerate(doc["particles"]))
    pixel_size = doc["pixel_size_um"]
    if pixel_size is not None:
        pixel_size = _float(pixel_size, "pixel_size_um")
        if not (0 < pixel_size < 1e4):
            raise ArchiveFormatError(f"The stored pixel size {pixel_size!r} µm is out of range.")
    if not isinstance(doc["extra"], dict):
        raise ArchiveFormatError("The stored analysis has malformed extra information.")
    result = ImageResult(
        name=_str(doc["name"], "name"), meta=meta, particles=particles, pixel_size_um=pixel_size,
        include_border=_bool(doc["include_border"], "include_border"), detector=_str(doc["detector"], "detector"),
        seconds=_float(doc["seconds"], "seconds"),
        cleaned=None if cleaned is None else np.asarray(cleaned, dtype=np.float32),
    )
    return result, doc["extra"]


def _keys(doc: Any, expected: set[str], what: str) -> None:
    if not isinstance(doc, dict):
        raise ArchiveFormatError(f"The stored {what} is not a JSON object.")
    missing, unknown = expected - doc.keys(), doc.keys() - expected
    if missing or unknown:
        raise ArchiveFormatError(f"The stored {what} has missing fields {sorted(missing)} or unknown fields"
                                 f" {sorted(unknown)}.")


def _meta(doc: Any) -> ImageMeta:
    _keys(doc, set(_META_FIELDS), "image information")
    notes = doc["notes"]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ArchiveFormatError("The stored image notes must be a list of text.")
    return ImageMeta(format=_str(doc["format"], "meta.format"), width=_int(doc["width"], "meta.width"),
                     height=_int(doc["height"], "meta.height"), bit_depth=_int(doc["bit_depth"], "meta.bit_depth"),
                     channels=_int(doc["channels"], "meta.channels"), n_pages=_int(doc["n_pages"], "meta.n_pages"),
                     notes=tuple(notes))


def _particle(doc: Any, i: int) -> Particle:
    _keys(doc, set(_PARTICLE_FIELDS), f"particle {i}")
    values = {}
    for name, typ in _PARTICLE_FIELDS.items():
        label = f"particle {i}: {name}"
        v = doc[name]
        if typ == "int":
            values[name] = _int(v, label)
        elif typ == "float":
            values[name] = _float(v, label)
        elif typ == "bool":
            values[name] = _bool(v, label)
        elif typ == "str":
            values[name] = _str(v, label)
        elif typ == "str | None":
            values[name] = None if v is None else _str(v, label)
        else:  # pragma: no cover - a new Particle field type needs a reader here
            raise TypeError(f"no reader for Particle field {name}: {typ}")
    return Particle(**values)


def _int(v: Any, label: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ArchiveFormatError(f"The stored value {label} must be an integer.")
    return v


def _float(v: Any, label: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArchiveFormatError(f"The stored value {label} must be a number.")
    return float(v)


def _bool(v: Any, label: str) -> bool:
    if not isinstance(v, bool):
        raise ArchiveFormatError(f"The stored value {label} must be true or false.")
    return v


def _str(v: Any, label: str) -> str:
    if not isinstance(v, str):
        raise ArchiveFormatError(f"The stored value {label} must be text.")
    return v


__all__ = ["SCHEMA", "VERSION", "ArchiveFormatError", "result_to_json", "result_from_json", "cleaned_to_png",
           "cleaned_from_png"]
