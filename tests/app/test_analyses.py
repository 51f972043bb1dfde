"""ui.analyses: saving, listing and loading analyses through the vault API (no Streamlit)."""
from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timezone

import numpy as np
import pytest

from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from tests.app.conftest import FAST_KDF, PASSPHRASE, crystal_image, png_bytes
from ui.analyses import (check_analysis_id, entry_name, export_original, list_analyses, load_analysis,
                         new_analysis_id, read_original, read_report, report_csvs, save_analysis)
from ui.archive import ArchiveFormatError
from vault import EntryNotFoundError, Vault


@pytest.fixture
def vault(tmp_path):
    v, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    yield v
    v.lock()


@pytest.fixture(scope="module")
def analysed():
    data = png_bytes(crystal_image())
    return data, analyze_bytes(data, name="good.png", detector=ClassicalDetector(),
                               options=AnalysisOptions(pixel_size_um=0.5))


def test_ids_sort_by_time_and_are_checked():
    a = new_analysis_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert a.startswith("20260102T030405Z-") and len(a) == 25
    assert check_analysis_id(a) == a
    for bad in ("../x", "20260102T030405Z-ABCDEF12", "", None, "20260102T030405Z-abcdef1"):
        with pytest.raises(ArchiveFormatError):
            check_analysis_id(bad)
    with pytest.raises(ArchiveFormatError):
        entry_name("../../settings.json", "result.json")


def test_save_list_load_round_trip(vault, analysed):
    data, result = analysed
    info = save_analysis(vault, data, result, source="upload", user="bob")
    assert list_analyses(vault) == [info]
    assert (info.image_name, info.source, info.unit, info.pixel_size_um) == ("good.png", "upload", "µm", 0.5)
    assert info.image_sha256 == hashlib.sha256(data).hexdigest()
    assert info.n_crystals + info.n_agglomerates == 6

    stored = load_analysis(vault, info.analysis_id)
    assert stored.info == info
    assert len(stored.result.particles) == len(result.particles)
    assert stored.result.particles[0] == result.particles[0]
    assert np.max(np.abs(stored.result.cleaned - result.cleaned)) < 1e-4
    light = load_analysis(vault, info.analysis_id, with_cleaned=False)
    assert light.info == info and light.result.cleaned is None
    assert light.result.particles == stored.result.particles
    assert read_report(vault, info.analysis_id, "particles") == report_csvs(result)["particles"]
    assert read_report(vault, info.analysis_id, "summary") == report_csvs(result)["summary"]
    assert read_original(vault, info) == data
    events = [(r.event, r.user) for r in vault.audit.entries()]
    assert events[-2:] == [("import", "bob"), ("analysis", "bob")]


def test_list_is_newest_first_and_skips_incomplete_analyses(vault, analysed):
    data, result = analysed
    old = save_analysis(vault, data, result, source="sample", user="a", analysis_id="20250101T000000Z-00000000")
    new = save_analysis(vault, data, result, source="sample", user="a", analysis_id="20260101T000000Z-00000000")
    vault.put("analyses/20270101T000000Z-00000000/cleaned.png", b"x", kind="image")  # interrupted save: no result
    vault.put("analyses/not-an-id/result.json", b"{}", kind="result")
    vault.put(entry_name("20240101T000000Z-00000000", "result.json"), b"{}", kind="result", meta={"image": "x"})
    assert [a.analysis_id for a in list_analyses(vault)] == [new.analysis_id, old.analysis_id]
    assert len(vault.list("images/")) == 1  # the same original is stored once


def test_export_original_records_the_export(vault, analysed):
    data, result = analysed
    info = save_analysis(vault, data, result, source="sample", user="a")
    assert export_original(vault, info, user="carol") == data
    last = vault.audit.entries()[-1]
    assert (last.event, last.user, last.details["file"]) == ("export", "carol", "good.png")


def test_error_paths(vault, analysed):
    data, result = analysed
    with pytest.raises(ValueError, match="source must be one of"):
        save_analysis(vault, data, result, source="disk", user="a")
    with pytest.raises(EntryNotFoundError):
        load_analysis(vault, "20260101T000000Z-00000000")
    info = save_analysis(vault, data, result, source="sample", user="a")
    with pytest.raises(ValueError, match="report must be one of"):
        read_report(vault, info.analysis_id, "excluded")
    vault.delete(f"images/{info.image_sha256}")
    with pytest.raises(EntryNotFoundError):
        read_original(vault, info)
    name = entry_name(info.analysis_id, "result.json")
    vault.put(name, vault.get(name), kind="result", meta={"image": "only this"})
    with pytest.raises(ArchiveFormatError, match="incomplete index information"):
        load_analysis(vault, info.analysis_id)


def test_result_without_cleaned_image_is_saved_and_loaded(vault, analysed):
    data, result = analysed
    info = save_analysis(vault, data, dataclasses.replace(result, cleaned=None), source="sample", user="a")
    assert not vault.exists(entry_name(info.analysis_id, "cleaned.png"))
    assert load_analysis(vault, info.analysis_id).result.cleaned is None


def test_labels_are_saved_listed_and_validated(vault, analysed):
    data, result = analysed
    info = save_analysis(vault, data, result, source="upload", user="bob", product=" Sugar A ", lot="L-17",
                         profile="10x")
    listed = list_analyses(vault)[0]
    assert (listed.product, listed.lot, listed.operator, listed.profile) == ("Sugar A", "L-17", "bob", "10x")
    assert listed == info
    with pytest.raises(ValueError, match="lot"):
        save_analysis(vault, data, result, source="upload", user="bob", lot="a\nb")
    with pytest.raises(ValueError, match="product"):
        save_analysis(vault, data, result, source="upload", user="bob", product="x" * 81)
    assert len(list_analyses(vault)) == 1  # refused labels wrote nothing that is listed
