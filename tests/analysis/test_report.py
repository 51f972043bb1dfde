"""Tests for analysis.report: column sets, counted/excluded rows, µm columns, batch row, CSV round trip."""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pandas as pd
import pytest

from analysis.records import ImageMeta, ImageResult, Particle
from analysis.report import (
    EXCLUDED_COLUMNS,
    PARTICLE_COLUMNS,
    SUMMARY_COLUMNS,
    excluded_table,
    particles_table,
    summary_table,
    to_csv_bytes,
)
from analysis.stats import summarize_particles


def _p(ecd: float, *, pid: int = 1, cls: str = "crystal", border: bool = False, reason: str | None = None) -> Particle:
    return Particle(
        particle_id=pid, class_name=cls, confidence=0.875, x_min=pid, y_min=2, x_max=pid + 10, y_max=14,
        area_px=math.pi * ecd * ecd / 4, perimeter_px=math.pi * ecd, ecd_px=ecd, feret_max_px=ecd * 1.2,
        feret_min_px=ecd * 0.8, aspect_ratio=2 / 3, circularity=0.9, solidity=0.95, focus_score=0.12,
        on_border=border, excluded_reason=reason,
    )  # fmt: skip


def _result(particles, *, name="a.png", px_um=None, include_border=False, detector="classical", seconds=0.25):
    meta = ImageMeta(format="png", width=1000, height=500, bit_depth=8, channels=1)
    return ImageResult(name, meta, tuple(particles), px_um, include_border, detector, seconds)


def _two_results():
    a = [_p(10.0 + i, pid=i) for i in range(1, 6)] + [_p(3.0, pid=6, reason="dust"), _p(9.0, pid=7, border=True)]
    b = [_p(20.0, pid=1, cls="agglomerate"), _p(12.0, pid=2, border=True), _p(8.0, pid=3, reason="bubble")]
    return [_result(a, px_um=0.5), _result(b, name="b.tif", include_border=True, detector="onnx:m 1")]


def test_column_sets_start_as_specified():
    assert PARTICLE_COLUMNS == (
        "image", "particle_id", "class", "confidence", "x_min", "y_min", "x_max", "y_max", "area_px", "ecd_px",
        "ecd_um", "feret_max_um", "feret_min_um", "aspect_ratio", "circularity", "solidity", "focus_score",
        "on_border", "perimeter_px", "feret_max_px", "feret_min_px", "area_um2",
    )  # fmt: skip
    assert SUMMARY_COLUMNS[:10] == (
        "image", "n_crystals", "n_agglomerates", "n_total", "d10_um", "d50_um", "d90_um", "span",
        "agglomerate_fraction", "seconds",
    )  # fmt: skip
    for name in ("d10_px", "d90_v_um", "d50_v_px", "agglomerate_volume_fraction", "n_excluded",
                 "particles_per_mm2", "pixel_size_um", "detector", "warnings"):  # fmt: skip
        assert name in SUMMARY_COLUMNS
    assert len(set(SUMMARY_COLUMNS)) == len(SUMMARY_COLUMNS)
    assert "reason" in EXCLUDED_COLUMNS


def test_particles_table_counted_only_with_border_rule():
    df = particles_table(_two_results())
    assert tuple(df.columns) == PARTICLE_COLUMNS
    assert list(zip(df["image"], df["particle_id"])) == [("a.png", i) for i in range(1, 6)] + [
        ("b.tif", 1),
        ("b.tif", 2),
    ]
    assert df["on_border"].tolist() == [False] * 6 + [True]
    assert df["class"].tolist() == ["crystal"] * 5 + ["agglomerate", "crystal"]
    assert df["particle_id"].dtype == np.int64 and df["on_border"].dtype == bool


def test_particles_table_um_columns():
    df = particles_table(_two_results())
    a, b = df[df["image"] == "a.png"], df[df["image"] == "b.tif"]
    assert np.allclose(a["ecd_um"], a["ecd_px"] * 0.5)
    assert np.allclose(a["feret_max_um"], a["feret_max_px"] * 0.5)
    assert np.allclose(a["feret_min_um"], a["feret_min_px"] * 0.5)
    assert np.allclose(a["area_um2"], a["area_px"] * 0.25)
    for col in ("ecd_um", "feret_max_um", "feret_min_um", "area_um2"):
        assert b[col].isna().all()
    assert not b["ecd_px"].isna().any()


def test_excluded_table_reasons():
    df = excluded_table(_two_results())
    assert tuple(df.columns) == EXCLUDED_COLUMNS
    assert list(zip(df["image"], df["particle_id"], df["reason"])) == [
        ("a.png", 6, "dust"),
        ("a.png", 7, "on_border"),
        ("b.tif", 3, "bubble"),
    ]


def test_summary_table_rows_and_batch():
    results = _two_results()
    df = summary_table(results)
    assert tuple(df.columns) == SUMMARY_COLUMNS
    assert df["image"].tolist() == ["a.png", "b.tif", "__batch__"]
    assert df["n_total"].tolist() == [5, 2, 7]
    assert df["n_agglomerates"].tolist() == [0, 1, 1]
    assert df["n_excluded"].tolist() == [2, 1, 3]
    a, b, batch = (df.iloc[i] for i in range(3))
    assert a["d50_um"] == pytest.approx(0.5 * 13.0) and a["d50_px"] == 13.0
    assert a["span"] == pytest.approx((np.percentile(range(11, 16), 90) - np.percentile(range(11, 16), 10)) / 13)
    # 1000 x 500 px at 0.5 µm = 0.125 mm²
    assert a["particles_per_mm2"] == pytest.approx(5 / 0.125)
    assert math.isnan(b["d50_um"]) and math.isnan(b["particles_per_mm2"]) and math.isnan(b["pixel_size_um"])
    assert b["agglomerate_fraction"] == 0.5
    pooled = [11, 12, 13, 14, 15, 20, 12]
    assert batch["d50_px"] == np.percentile(pooled, 50)
    assert math.isnan(batch["d50_um"])  # one image is uncalibrated
    assert batch["seconds"] == pytest.approx(0.5)
    assert batch["detector"] == "classical; onnx:m 1"
    assert "only 7 particles counted" in batch["warnings"]
    assert "1 of 2 images have no pixel size" in batch["warnings"]
    s = summarize_particles(results[0].particles, pixel_size_um=0.5, image_area_px=500_000)
    assert a["d90_v_um"] == s.volume_um.d90 and a["agglomerate_volume_fraction"] == 0.0


def test_summary_table_batch_calibrated_in_um():
    ps = [_p(10.0, pid=i) for i in range(1, 4)]
    df = summary_table([_result(ps, px_um=1.0), _result(ps, name="b", px_um=1.0)])
    assert df.iloc[-1]["d50_um"] == 10.0 and df.iloc[-1]["pixel_size_um"] == 1.0


def test_empty_tables_keep_columns_and_dtypes():
    df = particles_table([])
    assert tuple(df.columns) == PARTICLE_COLUMNS and len(df) == 0
    assert df["ecd_um"].dtype == np.float64 and df["x_min"].dtype == np.int64
    summary = summary_table([])
    assert summary["image"].tolist() == ["__batch__"] and summary["n_total"].tolist() == [0]


def test_csv_round_trip_same_columns_and_values():
    results = _two_results()
    for df in (particles_table(results), excluded_table(results), summary_table(results)):
        back = pd.read_csv(io.BytesIO(to_csv_bytes(df)))
        assert list(back.columns) == list(df.columns)
        assert len(back) == len(df)
        for col in df.columns:
            if pd.api.types.is_float_dtype(df[col]):
                assert np.allclose(back[col], df[col], rtol=1e-5, equal_nan=True), col
            elif pd.api.types.is_bool_dtype(df[col]):
                assert back[col].tolist() == df[col].tolist(), col
            elif col in ("warnings", "notes"):  # empty text cells read back as NaN
                assert back[col].astype(object).fillna("").tolist() == df[col].tolist()
            else:
                assert back[col].tolist() == df[col].tolist(), col


def test_csv_format_details():
    df = pd.DataFrame(
        {"image": ["=cmd()", "ok.png"], "x": [1 / 3, math.nan], "flag": [True, False], "n": [1, 2]}
    )
    before = df.copy()
    text = to_csv_bytes(df).decode("utf-8")
    assert text == "image,x,flag,n\n'=cmd(),0.333333,true,1\nok.png,,false,2\n"
    pd.testing.assert_frame_equal(df, before)


def test_csv_is_utf8():
    df = pd.DataFrame({"image": ["Kristall_µm_ä.png"]})
    assert to_csv_bytes(df) == "image\nKristall_µm_ä.png\n".encode()


def test_summary_notes_say_what_loading_and_analysis_did_to_each_image():
    a, b = _two_results()
    a = dataclasses.replace(a, meta=dataclasses.replace(a.meta, notes=(
        "colour converted to grey", "Small crystals: this image was analysed enlarged 2 x")))
    df = summary_table([a, b])
    assert df["notes"].tolist() == [
        "colour converted to grey; Small crystals: this image was analysed enlarged 2 x", "", ""]
    assert SUMMARY_COLUMNS[-1] == "notes"
    text = to_csv_bytes(df).decode()
    assert "analysed enlarged 2 x" in text.splitlines()[1]
