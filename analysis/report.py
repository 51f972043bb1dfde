"""Report tables: the ONE place where pandas tables and CSV bytes are made from ImageResult records.

* :func:`particles_table`: one row per COUNTED particle (see :func:`analysis.stats.counted`), columns
  :data:`PARTICLE_COLUMNS`. µm columns are NaN (empty in CSV) when the image has no pixel size.
* :func:`excluded_table`: one row per object that is not counted, with its reason (detector exclusions and, when the
  border rule applies, ``"on_border"``), columns :data:`EXCLUDED_COLUMNS`.
* :func:`summary_table`: one row per image plus a final batch row ``image="__batch__"`` that pools all images
  (:func:`analysis.stats.summarize_results`), columns :data:`SUMMARY_COLUMNS`. Plain ``d10_um``.. are
  number-weighted, ``_v_`` ones volume-weighted; ``span`` is the number-weighted span (unit-free; taken from
  the µm sizes when calibrated, which matters only for a batch of images with different pixel sizes). ``notes``
  carries what loading and analysis noted about the image (colour converted to grey, further TIFF pages skipped,
  analysed enlarged because its crystals are small), "; "-joined; empty in the batch row.
* :func:`to_csv_bytes`: stable CSV encoding (see there).

Units: ``_px`` pixels, ``_um`` µm, ``_um2`` µm², ``seconds`` wall time, ``particles_per_mm2`` counted per mm².
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.records import ImageResult, Particle
from analysis.stats import DValues, SizeSummary, not_counted_reason, summarize_particles, summarize_results

BATCH_ROW: str = "__batch__"

PARTICLE_COLUMNS: tuple[str, ...] = (
    "image", "particle_id", "class", "confidence", "x_min", "y_min", "x_max", "y_max",
    "area_px", "ecd_px", "ecd_um", "feret_max_um", "feret_min_um", "aspect_ratio", "circularity", "solidity",
    "focus_score", "on_border",
    "perimeter_px", "feret_max_px", "feret_min_px", "area_um2",
)  # fmt: skip

EXCLUDED_COLUMNS: tuple[str, ...] = (
    "image", "particle_id", "class", "reason", "confidence", "x_min", "y_min", "x_max", "y_max",
    "area_px", "ecd_px", "ecd_um", "aspect_ratio", "circularity", "focus_score", "on_border",
)  # fmt: skip

SUMMARY_COLUMNS: tuple[str, ...] = (
    "image", "n_crystals", "n_agglomerates", "n_total", "d10_um", "d50_um", "d90_um", "span",
    "agglomerate_fraction", "seconds",
    "d10_px", "d50_px", "d90_px",
    "d10_v_um", "d50_v_um", "d90_v_um", "d10_v_px", "d50_v_px", "d90_v_px",
    "agglomerate_volume_fraction", "n_excluded", "particles_per_mm2", "pixel_size_um", "detector", "warnings",
    "notes",
)  # fmt: skip

_TEXT = {"image", "class", "reason", "detector", "warnings", "notes"}
_INT = {"particle_id", "x_min", "y_min", "x_max", "y_max", "n_crystals", "n_agglomerates", "n_total", "n_excluded"}
_BOOL = {"on_border"}

#: Characters that make a spreadsheet treat a cell as a formula (CSV injection); such text cells get a leading "'".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def particles_table(results: Sequence[ImageResult]) -> pd.DataFrame:
    """One row per counted particle of every result, in result then particle order; columns PARTICLE_COLUMNS."""
    rows = []
    for res in results:
        for p in res.particles:
            if not_counted_reason(p, include_border=res.include_border) is None:
                rows.append(_particle_row(res, p))
    return _frame(rows, PARTICLE_COLUMNS)


def excluded_table(results: Sequence[ImageResult]) -> pd.DataFrame:
    """One row per object that is not counted, with ``reason``; columns EXCLUDED_COLUMNS."""
    rows = []
    for res in results:
        for p in res.particles:
            reason = not_counted_reason(p, include_border=res.include_border)
            if reason is not None:
                row = _particle_row(res, p)
                row["reason"] = reason
                rows.append(row)
    return _frame(rows, EXCLUDED_COLUMNS)


def summary_table(results: Sequence[ImageResult]) -> pd.DataFrame:
    """One row per image plus the batch row (``image="__batch__"``); columns SUMMARY_COLUMNS.

    The batch row pools the counted particles of all images; its ``seconds`` is the total, ``pixel_size_um`` the
    common pixel size (NaN when images differ or any is uncalibrated) and ``detector`` the distinct detectors joined
    by "; ". Raises ValueError as :func:`analysis.stats.summarize_particles` does.
    """
    rows = []
    for res in results:
        summary = summarize_particles(
            res.particles,
            pixel_size_um=res.pixel_size_um,
            include_border=res.include_border,
            image_area_px=float(res.meta.width * res.meta.height),
        )
        rows.append(_summary_row(res.name, summary, res.seconds, res.pixel_size_um, res.detector,
                                 notes="; ".join(res.meta.notes)))
    scales = {res.pixel_size_um for res in results}
    common_scale = scales.pop() if len(scales) == 1 else None
    detectors = "; ".join(dict.fromkeys(res.detector for res in results))
    total_seconds = float(sum(res.seconds for res in results))
    rows.append(_summary_row(BATCH_ROW, summarize_results(results), total_seconds, common_scale, detectors))
    return _frame(rows, SUMMARY_COLUMNS)


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """Encode a table as CSV: UTF-8 (no BOM), comma separated, '.' decimal, '\\n' line ends, header row, no index.

    Floats are written with 6 significant digits (``%.6g``), missing values as empty cells, booleans as
    ``true``/``false`` (pandas ``read_csv`` reads them back as booleans). Text cells that a spreadsheet would run as a
    formula (starting with = + - @ or a tab/CR) get a leading apostrophe. The input is not modified.
    """
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if pd.api.types.is_bool_dtype(col):
            out[name] = col.map({True: "true", False: "false"})
        elif pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
            out[name] = col.map(_defuse, na_action="ignore")
    text = out.to_csv(index=False, float_format="%.6g", na_rep="", lineterminator="\n")
    return text.encode("utf-8")


# --- internals -----------------------------------------------------------------------------------------------------


def _particle_row(res: ImageResult, p: Particle) -> dict:
    scale = res.pixel_size_um
    um = (lambda v: v * scale) if scale is not None else (lambda v: math.nan)
    return {
        "image": res.name,
        "particle_id": p.particle_id,
        "class": p.class_name,
        "confidence": p.confidence,
        "x_min": p.x_min,
        "y_min": p.y_min,
        "x_max": p.x_max,
        "y_max": p.y_max,
        "area_px": p.area_px,
        "ecd_px": p.ecd_px,
        "ecd_um": um(p.ecd_px),
        "feret_max_um": um(p.feret_max_px),
        "feret_min_um": um(p.feret_min_px),
        "aspect_ratio": p.aspect_ratio,
        "circularity": p.circularity,
        "solidity": p.solidity,
        "focus_score": p.focus_score,
        "on_border": p.on_border,
        "perimeter_px": p.perimeter_px,
        "feret_max_px": p.feret_max_px,
        "feret_min_px": p.feret_min_px,
        "area_um2": p.area_px * scale * scale if scale is not None else math.nan,
    }


def _summary_row(
    name: str, s: SizeSummary, seconds: float, pixel_size_um: float | None, detector: str, *, notes: str = ""
) -> dict:
    nan = DValues(math.nan, math.nan, math.nan, math.nan, math.nan)
    n_um, v_um = s.number_um or nan, s.volume_um or nan
    return {
        "image": name,
        "n_crystals": s.n_crystals,
        "n_agglomerates": s.n_agglomerates,
        "n_total": s.n_total,
        "d10_um": n_um.d10,
        "d50_um": n_um.d50,
        "d90_um": n_um.d90,
        "span": (s.number_um or s.number).span,
        "agglomerate_fraction": s.agglomerate_fraction,
        "seconds": float(seconds),
        "d10_px": s.number.d10,
        "d50_px": s.number.d50,
        "d90_px": s.number.d90,
        "d10_v_um": v_um.d10,
        "d50_v_um": v_um.d50,
        "d90_v_um": v_um.d90,
        "d10_v_px": s.volume.d10,
        "d50_v_px": s.volume.d50,
        "d90_v_px": s.volume.d90,
        "agglomerate_volume_fraction": s.agglomerate_volume_fraction,
        "n_excluded": s.n_excluded,
        "particles_per_mm2": math.nan if s.particles_per_mm2 is None else s.particles_per_mm2,
        "pixel_size_um": math.nan if pixel_size_um is None else float(pixel_size_um),
        "detector": detector,
        "warnings": "; ".join(s.warnings),
        "notes": notes,
    }


def _frame(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    """Build a table with fixed column order and dtypes (also when empty): str, int64, bool or float64."""
    data = {}
    for name in columns:
        values = [row[name] for row in rows]
        if name in _TEXT:
            dtype = "str"
        elif name in _INT:
            dtype = np.int64
        elif name in _BOOL:
            dtype = bool
        else:
            dtype = np.float64
        data[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data, columns=list(columns))


def _defuse(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
