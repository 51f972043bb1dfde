"""Review and correct: ui.corrections through the vault API (storage, audit, undo, labelled export, figure and box
helpers) and the Review screen with AppTest (delete, change class, add a box, invalid box, History sees it)."""
from __future__ import annotations

import ast
import dataclasses
import io
from datetime import datetime, timezone
import zipfile
from pathlib import Path

import numpy as np
import pytest

from analysis.corrections import MANUAL_NOTE, CorrectionError, Edit
from analysis.io import load_image
from analysis.pipeline import AnalysisOptions, ClassicalDetector, analyze_bytes
from tests.app.conftest import FAST_KDF, PASSPHRASE, crystal_image, events, open_vault, pick_sample, png_bytes, titles
from ui import corrections
from ui.analyses import entry_name, list_analyses, load_analysis, new_analysis_id, read_report, save_analysis
from ui.archive import result_from_json
from ui.corrections import (
    DETECTED_PART,
    EDITS_PART,
    MAX_EXPORT_ANALYSES,
    add_box,
    box_from_selection,
    delete_particles,
    export_labelled_dataset,
    load_review,
    record_edits,
    review_figure,
    set_class,
    undo_last_edit,
)
from vault import EntryNotFoundError, Vault

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def analysed():
    """The six-rectangle test image and its classical analysis (6 crystals, 0.5 µm/px)."""
    data = png_bytes(crystal_image())
    result = analyze_bytes(data, name="good.png", detector=ClassicalDetector(),
                           options=AnalysisOptions(pixel_size_um=0.5))
    assert sum(p.excluded_reason is None for p in result.particles) == 6
    return data, result


@pytest.fixture
def vault(tmp_path):
    v, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    yield v
    v.lock()


def _save(vault, analysed, name="good.png", analysis_id=None):
    data, result = analysed
    return save_analysis(vault, data, dataclasses.replace(result, name=name), source="upload", user="setup",
                         analysis_id=analysis_id)


def _corrections(vault):
    return [r for r in vault.audit.entries() if r.event == "correction"]


# ------------------------------------------------------------------------------------------------ storage
def test_ui_corrections_is_streamlit_free():
    tree = ast.parse((ROOT / "ui" / "corrections.py").read_text(encoding="utf-8"))
    roots = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "streamlit" not in roots and "plotly" in roots  # the checker sees imports


def test_delete_is_stored_listed_reported_and_audited_and_the_detector_output_stays(vault, analysed):
    info = _save(vault, analysed)
    original_json = vault.get(entry_name(info.analysis_id, "result.json"))
    review = delete_particles(vault, info.analysis_id, [2], user="alice")
    assert [p.particle_id for p in review.result.particles if p.excluded_reason is None] == [1, 3, 4, 5, 6]

    stored = load_analysis(vault, info.analysis_id)  # what History and every export read
    assert 2 not in [p.particle_id for p in stored.result.particles]
    assert stored.info.n_crystals == 5 and stored.info.n_edits == 1
    [listed] = list_analyses(vault)
    assert (listed.n_crystals, listed.n_edits) == (5, 1)
    assert listed.d50 is not None and listed.product == info.product and listed.created == info.created
    particles_csv = read_report(vault, info.analysis_id, "particles").decode("utf-8").splitlines()
    assert len(particles_csv) == 1 + 5  # header + the five counted crystals
    summary_csv = read_report(vault, info.analysis_id, "summary").decode("utf-8").splitlines()
    assert summary_csv[1].split(",")[1] == "5"  # n_crystals column

    # the detector's output is kept byte for byte, with its index meta
    assert vault.get(entry_name(info.analysis_id, DETECTED_PART)) == original_json
    assert vault.info(entry_name(info.analysis_id, DETECTED_PART)).meta["n_crystals"] == 6
    assert len(load_review(vault, info.analysis_id).detected.particles) == 6

    [record] = _corrections(vault)
    assert record.user == "alice"
    assert record.details == {"analysis_id": info.analysis_id, "kind": "delete", "particle_id": 2, "class": None,
                              "box": None, "from_class": "crystal"}


def test_set_class_moves_the_counts_and_records_the_old_class(vault, analysed):
    info = _save(vault, analysed)
    set_class(vault, info.analysis_id, [1, 4], "agglomerate", user="bob")
    [listed] = list_analyses(vault)
    assert (listed.n_crystals, listed.n_agglomerates, listed.n_edits) == (4, 2, 2)
    assert listed.agglomerate_fraction == pytest.approx(2 / 6)
    assert [(r.details["particle_id"], r.details["from_class"], r.details["class"]) for r in _corrections(vault)] \
        == [(1, "crystal", "agglomerate"), (4, "crystal", "agglomerate")]
    # particles already of the class are left alone; all of them -> an error, nothing stored
    set_class(vault, info.analysis_id, [1, 2], "agglomerate", user="bob")
    assert list_analyses(vault)[0].n_edits == 3
    with pytest.raises(CorrectionError, match="already agglomerates"):
        set_class(vault, info.analysis_id, [1, 2], "agglomerate", user="bob")
    assert list_analyses(vault)[0].n_edits == 3 and len(_corrections(vault)) == 3


def test_add_box_re_adds_a_deleted_crystal_with_the_same_size(vault, analysed):
    info = _save(vault, analysed)
    gone = next(p for p in analysed[1].particles if p.particle_id == 3)
    delete_particles(vault, info.analysis_id, [3], user="alice")
    box = (gone.x_min - 6, gone.y_min - 6, gone.x_max + 6, gone.y_max + 6)
    review = add_box(vault, info.analysis_id, box, "crystal", user="alice")
    new = review.result.particles[-1]
    assert new.particle_id == 7 and review.manual_ids == {7}  # fresh id, 3 is not reused
    assert new.area_px == pytest.approx(gone.area_px, rel=0.05)
    assert new.confidence == 1.0 and new.excluded_reason is None
    stored = load_analysis(vault, info.analysis_id)
    assert stored.info.n_crystals == 6 and stored.result.detector == "classical" + MANUAL_NOTE
    assert stored.info.detector == "classical" + MANUAL_NOTE
    assert _corrections(vault)[-1].details == {"analysis_id": info.analysis_id, "kind": "add_box", "particle_id": 7,
                                               "class": "crystal", "box": list(box)}
    # the stored edit list carries the id it got
    assert [e.particle_id for e in load_review(vault, info.analysis_id).edits] == [3, 7]


@pytest.mark.parametrize("box, message", [
    ((600, 100, 700, 150), "reaches outside the 640 x 512 px image"),
    ((100, 100, 90, 150), "inverted"),
    ((100, 100, 101, 150), "at least 3 x 3 px"),
])
def test_an_invalid_box_changes_nothing(vault, analysed, box, message):
    info = _save(vault, analysed)
    name = entry_name(info.analysis_id, "result.json")
    before = vault.get(name)
    with pytest.raises(CorrectionError, match=message):
        add_box(vault, info.analysis_id, box, "crystal", user="alice")
    assert vault.get(name) == before
    assert not vault.exists(entry_name(info.analysis_id, EDITS_PART))
    assert not _corrections(vault)


def test_a_batch_is_all_or_nothing(vault, analysed):
    info = _save(vault, analysed)
    with pytest.raises(CorrectionError, match="Particle 99 is not in this analysis"):
        delete_particles(vault, info.analysis_id, [1, 99], user="alice")
    assert list_analyses(vault)[0].n_crystals == 6 and not _corrections(vault)
    with pytest.raises(CorrectionError, match="Choose what to correct"):
        record_edits(vault, info.analysis_id, [], user="alice")


def test_undo_replays_without_the_last_edit_and_is_audited(vault, analysed):
    info = _save(vault, analysed)
    delete_particles(vault, info.analysis_id, [5], user="alice")
    set_class(vault, info.analysis_id, [1], "agglomerate", user="alice")
    review = undo_last_edit(vault, info.analysis_id, user="carol")
    assert [e.kind for e in review.edits] == ["delete"]
    assert (list_analyses(vault)[0].n_agglomerates, list_analyses(vault)[0].n_edits) == (0, 1)
    undo_last_edit(vault, info.analysis_id, user="carol")
    stored = load_analysis(vault, info.analysis_id)
    assert stored.info.n_crystals == 6 and stored.info.n_edits == 0
    assert stored.result.particles == analysed[1].particles  # back to the detector's result
    last = _corrections(vault)[-1]
    assert last.user == "carol" and last.details == {
        "analysis_id": info.analysis_id, "kind": "undo",
        "undone": {"kind": "delete", "particle_id": 5, "class": None, "box": None, "from_class": "crystal"}}
    with pytest.raises(CorrectionError, match="no correction to undo"):
        undo_last_edit(vault, info.analysis_id, user="carol")


def test_a_damaged_edit_list_is_reported(vault, analysed):
    info = _save(vault, analysed)
    delete_particles(vault, info.analysis_id, [1], user="alice")
    vault.put(entry_name(info.analysis_id, EDITS_PART), b"{oops", kind="edits")
    with pytest.raises(CorrectionError, match="not valid JSON"):
        load_review(vault, info.analysis_id)


def test_unknown_analysis_is_reported(vault):
    with pytest.raises(EntryNotFoundError):
        load_review(vault, "20260101T000000Z-00000000")


# ------------------------------------------------------------------------------------------------ labelled export
def test_export_zip_has_matching_images_labels_and_yaml(vault, analysed):
    data, result = analysed
    first = _save(vault, analysed, name="a b/../c.png")  # an awkward name: the zip member stays a plain file name
    second = _save(vault, analysed, name="good.png")
    delete_particles(vault, first.analysis_id, [1, 2], user="alice")
    add_box(vault, second.analysis_id, (20, 20, 50, 50), "agglomerate", user="alice")
    blob = export_labelled_dataset(vault, [first.analysis_id, second.analysis_id], user="alice", file_name="t.zip")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = sorted(zf.namelist())
        assert names == sorted([f"images/{first.analysis_id}_a_b_.._c.png", f"labels/{first.analysis_id}_a_b_.._c.txt",
                                f"images/{second.analysis_id}_good.png", f"labels/{second.analysis_id}_good.txt",
                                "data.yaml"])
        assert all("/" not in n.split("/", 1)[1] for n in names if "/" in n)
        labels = {n: zf.read(n).decode() for n in names if n.startswith("labels/")}
        image = zf.read(f"images/{second.analysis_id}_good.png")
        yaml_text = zf.read("data.yaml").decode()
    first_lines = labels[f"labels/{first.analysis_id}_a_b_.._c.txt"].splitlines()
    second_lines = labels[f"labels/{second.analysis_id}_good.txt"].splitlines()
    assert len(first_lines) == 4 and {line.split()[0] for line in first_lines} == {"0"}
    assert len(second_lines) == 7 and second_lines[-1].split()[0] == "1"  # the agglomerate added by hand
    # the added box, normalised: the ellipse fallback or segment lies inside (20..50) / (640, 512)
    xc, yc = (float(v) for v in second_lines[-1].split()[1:3])
    assert 20 / 640 <= xc <= 50 / 640 and 20 / 512 <= yc <= 50 / 512
    pixels, meta = load_image(image)
    original, _ = load_image(data)
    assert pixels.shape == (512, 640) and meta.format == "png"
    assert np.abs(pixels - original).max() < 1 / 255 + 1e-6  # same pixels, re-encoded
    assert "nc: 2" in yaml_text and "0: crystal" in yaml_text and "1: agglomerate" in yaml_text
    [record] = [r for r in vault.audit.entries() if r.event == "export"]
    assert record.details == {"what": "labelled training data", "file": "t.zip",
                              "analysis_ids": [first.analysis_id, second.analysis_id], "images": 2, "objects": 11}


def test_export_refuses_bad_choices_and_audits_nothing(vault, analysed, monkeypatch):
    info = _save(vault, analysed)
    with pytest.raises(CorrectionError, match="at least one analysis"):
        export_labelled_dataset(vault, [], user="a")
    with pytest.raises(CorrectionError, match="chosen twice"):
        export_labelled_dataset(vault, [info.analysis_id] * 2, user="a")
    monkeypatch.setattr(corrections, "MAX_EXPORT_ANALYSES", 1)
    with pytest.raises(CorrectionError, match="At most 1 analyses"):
        export_labelled_dataset(vault, [info.analysis_id, "20260101T000000Z-00000000"], user="a")
    vault.delete(f"images/{info.image_sha256}")
    with pytest.raises(EntryNotFoundError):
        export_labelled_dataset(vault, [info.analysis_id], user="a")
    assert not [r for r in vault.audit.entries() if r.event == "export"]
    assert MAX_EXPORT_ANALYSES == 100


# ------------------------------------------------------------------------------------------------ figure and box
def test_box_from_selection_known_answers():
    def sel(x, y):
        return {"points": [], "box": [{"xref": "x", "yref": "y", "x": x, "y": y}], "lasso": []}

    assert box_from_selection(sel([10.2, 40.7], [5.5, 30.1]), width=100, height=50) == (10, 5, 41, 31)
    assert box_from_selection(sel([40.7, 10.2], [30.1, 5.5]), width=100, height=50) == (10, 5, 41, 31)  # any order
    assert box_from_selection(sel([-5, 120], [-3, 60]), width=100, height=50) == (0, 0, 100, 50)  # clipped
    assert box_from_selection(sel([200, 300], [10, 20]), width=100, height=50) is None  # misses the image
    assert box_from_selection(sel([1, float("nan")], [1, 2]), width=100, height=50) is None
    assert box_from_selection(sel("ab", [1, 2]), width=100, height=50) is None
    assert box_from_selection({"box": []}, width=100, height=50) is None
    assert box_from_selection(None, width=100, height=50) is None
    two = {"box": [{"x": [1, 2], "y": [1, 2]}, {"x": [5, 9], "y": [6, 8]}]}
    assert box_from_selection(two, width=100, height=50) == (5, 6, 9, 8)  # the last one dragged


def test_review_figure_is_in_full_image_pixels_with_ids(analysed):
    _, result = analysed
    fig = review_figure(result, manual_ids=frozenset({2}), max_side_px=320)  # picture downscaled by 2
    image, ids, frame = fig.data
    assert image.type == "image" and image.source.startswith("data:image/png;base64,")
    assert (image.dx, image.dy, image.x0, image.y0) == (2.0, 2.0, 1.0, 1.0)  # left/top edge at 0
    assert list(ids.text) == [str(p.particle_id) for p in result.particles]
    assert list(ids.x) == [p.x_min for p in result.particles]
    assert "added by hand" in ids.hovertext[1] and "added by hand" not in ids.hovertext[0]
    assert list(fig.layout.xaxis.range) == [0, 640] and list(fig.layout.yaxis.range) == [512, 0]
    assert fig.layout.dragmode == "select"
    assert list(frame.x) == [0, 640]


# ------------------------------------------------------------------------------------------------ the screen
def _saved(vault_path, analysed, *, times=1):
    with open_vault(vault_path) as v:  # ids a minute apart: a defined newest-first order
        return [_save(v, analysed, analysis_id=new_analysis_id(datetime(2026, 1, 1, 12, i, tzinfo=timezone.utc)))
                for i in range(times)]


def _review(at):
    at.switch_page("screens/review.py")
    return at.run()


def _metrics(at):
    return {m.label: m.value for m in at.metric}


def _rev(at) -> int:
    return at.session_state["review_revision"] if "review_revision" in at.session_state else 0


def _select_rows(at, rows):
    at.session_state[f"review_table_{_rev(at)}"] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def test_an_analysis_marked_invalid_elsewhere_shows_the_mark_and_refuses_corrections(app, vault_path, analysed):
    from ui.analyses import invalidate_analysis

    [info] = _saved(vault_path, analysed)
    at = _review(app)
    at = _select_rows(at, [1])
    assert not at.warning
    invalidate_analysis(at.session_state["vault"], info.analysis_id, reason="wrong lot", user="lead")
    at.run()  # same bytes, new mark: the screen reloads it
    assert any("marked INVALID (wrong lot; by lead)" in w.value for w in at.warning)
    at = _select_rows(at, [1])
    at.button(key="review_delete").click()
    at.run()
    assert not at.exception and _metrics(at)["Crystals"] == "6"
    assert any("restore it on the History screen" in e.value for e in at.error)


def test_empty_vault_says_how_to_fill_it(app):
    at = _review(app)
    assert not at.exception and titles(at) == ["Review and correct"]
    assert any("No saved analyses yet" in i.value for i in at.info)


def test_reruns_reuse_the_loaded_review_until_the_stored_analysis_changes(app, vault_path, analysed, monkeypatch):
    loads = []  # the screen loads (decrypts, replays) and draws an analysis in one step; only it draws
    real_figure = corrections.review_figure

    def counting(result, **kwargs):
        loads.append(len(result.particles))
        return real_figure(result, **kwargs)

    monkeypatch.setattr(corrections, "review_figure", counting)
    [info] = _saved(vault_path, analysed)
    at = _review(app)
    at.run()
    at = _select_rows(at, [1])  # clicks on the table or the chart rerun the screen
    assert len(loads) == 1 and _metrics(at)["Crystals"] == "6"
    at.button(key="review_delete").click()
    at.run()  # this session's correction: loaded afresh
    assert len(loads) == 2 and _metrics(at)["Crystals"] == "5"
    at.run()
    assert len(loads) == 2
    # a correction made elsewhere (another session on the same vault) changes the stored digests: loaded afresh
    corrections.undo_last_edit(at.session_state["vault"], info.analysis_id, user="bob")
    at.run()
    assert len(loads) == 3 and _metrics(at)["Crystals"] == "6"


def test_delete_a_detection_from_the_table(app, vault_path, analysed):
    [info] = _saved(vault_path, analysed)
    at = _review(app)
    assert not at.exception and not at.error
    assert _metrics(at)["Crystals"] == "6"
    assert list(at.dataframe[0].value["id"]) == [1, 2, 3, 4, 5, 6]
    assert at.button(key="review_delete").disabled  # nothing selected yet
    at = _select_rows(at, [1])
    assert at.button(key="review_delete").label == "Delete selected (1)"
    at.button(key="review_delete").click()
    at.run()
    assert not at.exception and not at.error
    assert _metrics(at)["Crystals"] == "5"
    assert any("Deleted particle 2" in s.value for s in at.success)
    assert list(at.dataframe[0].value["id"]) == [1, 3, 4, 5, 6]
    edits = at.dataframe[1].value
    assert list(edits["what"]) == ["deleted"] and list(edits["who"]) == ["alice"]
    with open_vault(vault_path) as v:
        assert list_analyses(v)[0].n_crystals == 5
    [record] = [r for r in events(vault_path) if r.event == "correction"]
    assert record.user == "alice" and record.details["particle_id"] == 2 and record.details["kind"] == "delete"


def test_change_class_from_the_table_and_undo(app, vault_path, analysed):
    _saved(vault_path, analysed)
    at = _select_rows(_review(app), [0, 3])
    at.button(key="review_make_agglomerate").click()
    at.run()
    assert not at.exception and not at.error
    assert (_metrics(at)["Crystals"], _metrics(at)["Agglomerates"]) == ("4", "2")
    table = at.dataframe[0].value
    assert list(table[table["class"] == "agglomerate"]["id"]) == [1, 4]
    assert at.button(key="review_delete").disabled  # the selection was reset with the new table
    at.button(key="review_undo").click()
    at.run()
    assert (_metrics(at)["Crystals"], _metrics(at)["Agglomerates"]) == ("5", "1")
    assert [r.details["kind"] for r in events(vault_path) if r.event == "correction"] == [
        "set_class", "set_class", "undo"]


def test_add_a_missed_crystal_with_the_box_inputs(app, vault_path, analysed):
    _saved(vault_path, analysed)
    at = _review(app)
    for key, value in zip(("review_box_x", "review_box_y", "review_box_w", "review_box_h"), (20, 20, 30, 30)):
        at.number_input(key=key).set_value(value)
    at.button(key="review_add_crystal").click()
    at.run()
    assert not at.exception and not at.error
    assert _metrics(at)["Crystals"] == "7"
    table = at.dataframe[0].value
    assert table.iloc[-1]["id"] == 7 and table.iloc[-1]["source"] == "added by hand"
    # on a blank spot the ellipse inscribed in the box is measured: ECD = sqrt(30 * 30) px * 0.5 µm/px
    assert table.iloc[-1]["ECD (µm)"] == pytest.approx(30 * 0.5, rel=0.05)
    [record] = [r for r in events(vault_path) if r.event == "correction"]
    assert record.details["box"] == [20, 20, 50, 50] and record.details["class"] == "crystal"


def test_an_invalid_box_shows_an_error_and_changes_nothing(app, vault_path, analysed):
    [info] = _saved(vault_path, analysed)
    at = _review(app)
    for key, value in zip(("review_box_x", "review_box_y", "review_box_w", "review_box_h"), (600, 100, 100, 40)):
        at.number_input(key=key).set_value(value)
    at.button(key="review_add_agglomerate").click()
    at.run()
    assert not at.exception
    assert any("Not changed" in e.value and "reaches outside the 640 x 512 px image" in e.value for e in at.error)
    assert _metrics(at)["Agglomerates"] == "0"
    with open_vault(vault_path) as v:
        assert list_analyses(v)[0].n_edits == 0
        assert not v.exists(entry_name(info.analysis_id, EDITS_PART))
    assert not [r for r in events(vault_path) if r.event == "correction"]


def test_a_dragged_box_fills_the_box_inputs(app, vault_path, analysed):
    _saved(vault_path, analysed)
    at = _review(app)
    at.session_state[f"review_figure_{_rev(at)}"] = {"selection": {"points": [], "point_indices": [], "lasso": [],
                                           "box": [{"xref": "x", "yref": "y", "x": [20.4, 49.6], "y": [60, 95.2]}]}}
    at.run()
    assert not at.exception
    assert [at.number_input(key=k).value for k in ("review_box_x", "review_box_y", "review_box_w", "review_box_h")] \
        == [20, 60, 30, 36]


def test_history_shows_the_corrected_result(app, vault_path, analysed):
    _saved(vault_path, analysed)
    at = _select_rows(_review(app), [0])
    at.button(key="review_delete").click()
    at.run()
    at.switch_page("screens/history.py")
    at.run()
    assert list(at.dataframe[0].value["crystals"]) == [5]
    at.button(key="history_open").click()
    at.run()
    assert not at.exception and _metrics(at)["Crystals"] == "5"


def test_another_screen_can_ask_for_an_analysis(app, vault_path, analysed):
    older, newer = _saved(vault_path, analysed, times=2)
    at = _review(app)
    assert at.selectbox(key="review_choice").value == newer.analysis_id  # newest by default
    at.session_state["review_analysis_id"] = older.analysis_id
    at.run()
    assert at.selectbox(key="review_choice").value == older.analysis_id
    assert "review_analysis_id" not in at.session_state


def test_a_damaged_record_gives_an_error_not_a_traceback(app, vault_path, analysed):
    [info] = _saved(vault_path, analysed)
    with open_vault(vault_path) as v:
        v.put(entry_name(info.analysis_id, EDITS_PART), b"[]", kind="edits")
    at = _review(app)
    assert not at.exception
    assert any("cannot be opened for review" in e.value and "not a crystal QC edit list" in e.value
               for e in at.error)


def test_the_labelled_data_download_offers_corrected_analyses(samples, app, vault_path, analysed):
    plain, corrected = _saved(vault_path, analysed, times=2)
    with open_vault(vault_path) as v:
        delete_particles(v, corrected.analysis_id, [1], user="alice")
    at = pick_sample(app, "good.png")  # one more, saved through the Analyze screen
    at = _review(at)
    assert not at.exception
    assert at.multiselect(key="review_export_ids_1").value == [corrected.analysis_id]
    assert len(at.multiselect(key="review_export_ids_1").options) == 3
    button = at.get("download_button")[0]
    assert button.proto.label == "Download labelled training data (zip)" and not button.proto.disabled
    at.multiselect(key="review_export_ids_1").set_value([])
    at.run()
    assert at.get("download_button")[0].proto.disabled
    # a newly corrected analysis is offered at once (the choice starts again from the corrected ones)
    at.selectbox(key="review_choice").select(plain.analysis_id)
    at = _select_rows(at.run(), [0])
    at.button(key="review_delete").click()
    at.run()
    assert sorted(at.multiselect(key="review_export_ids_2").value) == sorted([plain.analysis_id,
                                                                              corrected.analysis_id])
    assert not at.get("download_button")[0].proto.disabled


def test_edit_json_keeps_who_and_when(vault, analysed):
    info = _save(vault, analysed)
    delete_particles(vault, info.analysis_id, [1], user="dana")
    [edit] = load_review(vault, info.analysis_id).edits
    assert isinstance(edit, Edit) and edit.user == "dana"
    assert datetime.fromisoformat(edit.time).utcoffset().total_seconds() == 0
    raw, _ = result_from_json(vault.get(entry_name(info.analysis_id, "result.json")))
    assert len(raw.particles) == len(analysed[1].particles) - 1


# ------------------------------------------------------------------------------------------------ checked mark
def test_a_checked_mark_is_kept_in_the_index_audited_and_survives_later_corrections(vault, analysed):
    from ui.analyses import invalidate_analysis, restore_analysis, set_checked

    info = _save(vault, analysed)
    assert not info.reviewed and info.checked_at == ""
    checked = set_checked(vault, info.analysis_id, checked=True, user="alice")
    assert checked.checked_by == "alice" and checked.checked_at and checked.reviewed and checked.n_edits == 0
    assert list_analyses(vault)[0].checked_by == "alice"
    with pytest.raises(ValueError, match="already checked by alice"):
        set_checked(vault, info.analysis_id, checked=True, user="bob")
    # a correction after the check keeps the mark (the result is still a person's label) ...
    delete_particles(vault, info.analysis_id, [2], user="bob")
    after = list_analyses(vault)[0]
    assert after.checked_by == "alice" and after.n_edits == 1
    # ... and removing the mark is not undone by the copy of the first index kept with the detector's result
    set_checked(vault, info.analysis_id, checked=False, user="bob")
    set_checked(vault, info.analysis_id, checked=True, user="carol")
    set_checked(vault, info.analysis_id, checked=False, user="carol")
    delete_particles(vault, info.analysis_id, [3], user="bob")
    last = list_analyses(vault)[0]
    assert last.checked_at == "" and last.n_edits == 2 and last.reviewed  # corrected: still reviewed
    with pytest.raises(ValueError, match="not checked"):
        set_checked(vault, info.analysis_id, checked=False, user="bob")
    invalidate_analysis(vault, info.analysis_id, reason="wrong lot", user="lead")
    with pytest.raises(ValueError, match="marked invalid"):
        set_checked(vault, info.analysis_id, checked=True, user="alice")
    restore_analysis(vault, info.analysis_id, reason="right lot after all", user="lead")
    records = [(r.event, r.user) for r in vault.audit.entries() if r.event.startswith("analysis_")
               and r.event.endswith("checked")]
    assert records == [("analysis_checked", "alice"), ("analysis_unchecked", "bob"), ("analysis_checked", "carol"),
                       ("analysis_unchecked", "carol")]
    # marking rewrites the index only: the stored result keeps its bytes
    name = entry_name(info.analysis_id, "result.json")
    before = vault.info(name).sha256
    set_checked(vault, info.analysis_id, checked=True, user="alice")
    assert vault.info(name).sha256 == before and vault.info(name).meta["checked"]["by"] == "alice"


def test_mark_as_checked_on_the_review_screen(app, vault_path, analysed):
    [info] = _saved(vault_path, analysed)
    at = _review(app)
    assert not at.exception and not at.button(key="review_check").disabled
    at.button(key="review_check").click()
    at.run()
    assert not at.exception and any("Marked as checked" in s.value for s in at.success)
    assert any("Checked as right by alice" in c.value for c in at.caption)
    # a checked analysis is offered in the labelled-data export like a corrected one
    assert at.multiselect(key="review_export_ids_1").value == [info.analysis_id]
    at.button(key="review_uncheck").click()
    at.run()
    assert not at.exception and not any("Checked as right" in c.value for c in at.caption)
    assert [r.event for r in events(vault_path) if r.event.endswith("checked")] == ["analysis_checked",
                                                                                   "analysis_unchecked"]
