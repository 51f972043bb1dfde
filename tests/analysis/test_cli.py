"""The batch CLI contract: `python -m analysis PATH... --out DIR ...`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
PARTICLE_CONTRACT = ["image", "particle_id", "class", "confidence", "x_min", "y_min", "x_max", "y_max", "area_px",
                     "ecd_px", "ecd_um", "feret_max_um", "feret_min_um", "aspect_ratio", "circularity", "solidity",
                     "focus_score", "on_border"]
SUMMARY_CONTRACT = ["image", "n_crystals", "n_agglomerates", "n_total", "d10_um", "d50_um", "d90_um", "span",
                    "agglomerate_fraction", "seconds"]


def _write_field(path: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    img = np.full((480, 640), 165, np.uint8)
    for i in range(n):
        x, y = 50 + (i % 4) * 140, 60 + (i // 4) * 150
        cv2.rectangle(img, (x, y), (x + 60, y + 35), 55, 2)
    img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _write_field(folder / "a.png", 5)
    _write_field(folder / "b.tif", 8)
    return folder


def test_folder_in_csvs_out_with_contract_columns(images, tmp_path):
    out = tmp_path / "out"
    assert main([str(images), "--out", str(out), "--detector", "classical"]) == 0
    particles = pd.read_csv(out / "particles.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert list(particles.columns[: len(PARTICLE_CONTRACT)]) == PARTICLE_CONTRACT
    assert list(summary.columns[: len(SUMMARY_CONTRACT)]) == SUMMARY_CONTRACT
    counts = particles.groupby("image").size().to_dict()
    assert counts == {"a.png": 5, "b.tif": 8}
    assert set(particles["class"]) <= {"crystal", "agglomerate"}
    assert particles["ecd_um"].isna().all()  # uncalibrated: µm columns empty
    assert list(summary["image"]) == ["a.png", "b.tif", "__batch__"]
    assert summary.loc[summary.image == "__batch__", "n_total"].item() == 13


def test_calibration_fills_micrometre_columns(images, tmp_path):
    out = tmp_path / "out"
    assert main([str(images / "a.png"), "--out", str(out), "--pixel-size-um", "0.5",
                 "--detector", "classical"]) == 0
    particles = pd.read_csv(out / "particles.csv")
    np.testing.assert_allclose(particles["ecd_um"], particles["ecd_px"] * 0.5, rtol=1e-4)


def test_bad_file_is_reported_by_name_and_skipped(images, tmp_path, capsys):
    (images / "c.png").write_bytes(b"this is not an image")
    out = tmp_path / "out"
    assert main([str(images), "--out", str(out), "--detector", "classical", "--overlays"]) == 1
    err = capsys.readouterr().err
    assert "c.png" in err
    particles = pd.read_csv(out / "particles.csv")
    assert set(particles["image"]) == {"a.png", "b.tif"}
    assert (out / "a_overlay.png").stat().st_size > 0 and (out / "b_overlay.png").is_file()


def test_missing_path_and_no_images_are_usage_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_onnx_without_a_model_is_a_clear_usage_error(images, tmp_path, capsys):
    rc = main([str(images), "--out", str(tmp_path / "o"), "--detector", "onnx", "--model",
               str(tmp_path / "missing.onnx")])
    assert rc == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_runs_as_a_module(images, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "analysis", str(images / "a.png"), "--out", str(out),
                           "--detector", "classical"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1/1" in proc.stderr  # progress bar on stderr
    assert (out / "particles.csv").is_file()


def test_same_file_name_in_two_folders_stays_apart(tmp_path):
    for sub, n in (("day1", 3), ("day2", 4)):
        (tmp_path / sub).mkdir()
        _write_field(tmp_path / sub / "field.png", n)
    out = tmp_path / "out"
    assert main([str(tmp_path / "day1"), str(tmp_path / "day2"), "--out", str(out), "--detector", "classical",
                 "--overlays"]) == 0
    particles = pd.read_csv(out / "particles.csv")
    assert sorted(particles.groupby("image").size().tolist()) == [3, 4]
    assert len(list(out.glob("*_overlay.png"))) == 2


def test_image_notes_are_printed_and_written_to_the_summary(tmp_path, capsys):
    grey = tmp_path / "in" / "grey.png"
    grey.parent.mkdir()
    _write_field(grey, 4)
    colour = tmp_path / "in" / "colour.png"
    assert cv2.imwrite(str(colour), cv2.cvtColor(cv2.imread(str(grey), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR))
    assert main([str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--detector", "classical"]) == 0
    err = capsys.readouterr().err
    assert "note: colour.png: colour converted to grey" in err and "note: grey.png" not in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("image")
    assert summary.loc["colour.png", "notes"].startswith("colour converted to grey")
    assert summary.loc["grey.png", "notes"] == ""
