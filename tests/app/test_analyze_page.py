"""The Analyze screen (unlocked first), driven by Streamlit's AppTest (no browser): single images and batches,
calibration profiles and labels, and every analysis, upload and download going into the vault / audit log."""
from __future__ import annotations

import dataclasses
import hashlib
import io

import cv2
import numpy as np
import pypdf
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager

import ui.batch
from tests.app.conftest import crystal_image, events, new_app, open_vault, pick_sample, png_bytes, titles, unlock
from ui.analyses import list_analyses, load_analysis
from ui.settings import CalibrationProfile, load_settings, save_settings

BROKEN = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def deferred(monkeypatch) -> dict:
    """{file name: callable} of every deferred download the screen offers (the bytes are made on click)."""
    made: dict = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return made


@pytest.fixture
def analyses_run(monkeypatch) -> list[str]:
    """Names of the images ui.batch actually analysed (reruns must not add to it)."""
    names: list[str] = []
    real = ui.batch.analyze_bytes

    def counting(data, *, name, **kwargs):
        names.append(name)
        return real(data, name=name, **kwargs)

    monkeypatch.setattr(ui.batch, "analyze_bytes", counting)
    return names


@pytest.fixture
def profiled_app(recovery_key, vault_path):
    """Settings with two calibration profiles (default "Axio 10x" at 0.5 µm/px), then an unlocked session."""
    with open_vault(vault_path) as v:
        prefs = dataclasses.replace(load_settings(v), profiles=(CalibrationProfile("Axio 10x", 0.5),
                                                                CalibrationProfile("Axio 40x", 0.125)),
                                    default_profile="Axio 10x")
        save_settings(v, prefs, user="lead")
    at = unlock(new_app())
    assert not at.exception and titles(at) == ["Analyze an image"]
    return at


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def upload(at, *files: tuple[str, bytes]):
    at.file_uploader(key="upload").set_value([(name, data, "image/png") for name, data in files])
    return at.run()


def pdf_text(pdf: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return len(reader.pages), " ".join(p.extract_text() for p in reader.pages)


# ------------------------------------------------------------------------------------------------ single image
def test_start_screen_asks_for_an_image(samples, app):
    assert not app.exception
    assert any("Upload one or more micrographs" in i.value for i in app.info)
    uploader = app.file_uploader(key="upload")
    assert uploader.label.startswith("Micrograph") and uploader.accept_multiple_files


def test_sample_image_is_counted_and_offers_all_downloads(samples, app):
    at = pick_sample(app, "good.png")
    assert not at.exception
    assert not at.error
    shown = metrics(at)
    assert int(shown["Crystals"]) + int(shown["Agglomerates"]) == 6
    assert {"D10 (px)", "D50 (px)", "D90 (px)", "Span", "Agglomerate fraction", "Excluded"} <= set(shown)
    assert any("uncalibrated: sizes in px" in c.value for c in at.caption)
    buttons = {b.label for b in at.get("download_button")}
    assert {"Download particles CSV", "Download summary CSV", "Download overlay PNG",
            "Download PDF report"} <= buttons
    assert not any(s.label == "Image to view" for s in at.selectbox)  # one image: no batch view


def test_corrupt_image_shows_an_actionable_error_not_a_traceback(samples, app, vault_path):
    at = pick_sample(app, "broken.png")
    assert not at.exception
    assert at.error and "broken.png could not be analysed" in at.error[0].value
    with open_vault(vault_path) as v:
        assert list_analyses(v) == []  # nothing saved for an image that could not be analysed


def test_image_without_crystals_says_so_and_is_saved(samples, app, vault_path):
    at = pick_sample(app, "blank.png")
    assert not at.exception and not at.error
    assert metrics(at)["Crystals"] == "0" and metrics(at)["D50 (px)"] == "—"
    assert any("No crystals or agglomerates were found in blank.png" in w.value for w in at.warning)
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
    assert (info.image_name, info.n_crystals, info.n_agglomerates) == ("blank.png", 0, 0)


def test_analysis_is_saved_in_the_vault(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    shown = metrics(at)
    original = (samples / "good.png").read_bytes()
    sha = hashlib.sha256(original).hexdigest()
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
        assert (info.image_name, info.source, info.image_sha256) == ("good.png", "sample", sha)
        assert str(info.n_crystals) == shown["Crystals"]
        names = {e.name for e in v.list()}
        prefix = f"analyses/{info.analysis_id}/"
        assert {f"images/{sha}", prefix + "result.json", prefix + "cleaned.png", prefix + "particles.csv",
                prefix + "summary.csv"} <= names
        assert v.get(f"images/{sha}") == original
        stored = load_analysis(v, info.analysis_id)
        assert stored.result.cleaned is not None and stored.result.cleaned.shape == (512, 640)
        records = v.audit.entries()
    assert f"Saved in the vault as analysis {info.analysis_id} (see History)." in [c.value for c in at.caption]
    imported = [r for r in records if r.event == "import"]
    analysed = [r for r in records if r.event == "analysis"]
    assert [r.details["sha256"] for r in imported] == [sha]
    assert [r.details["analysis_id"] for r in analysed] == [info.analysis_id]
    assert analysed[0].user == "alice"


def test_reruns_do_not_analyse_or_save_again(samples, app, vault_path, analyses_run):
    at = pick_sample(app, "good.png")
    at.toggle(key="analyze_show_excluded").set_value(True).run()
    at.radio(key="analyze_weighting").set_value("volume").run()
    at.select_slider(key="analyze_zoom").set_value(4).run()
    at.text_input(key="label_lot").input("L-9").run()  # a label change applies to the next analysis only
    assert not at.exception
    assert analyses_run == ["good.png"]
    with open_vault(vault_path) as v:
        assert len(list_analyses(v)) == 1


def test_upload_is_analysed_at_once_and_saved_with_its_name(app, vault_path):
    data = png_bytes(crystal_image(3))
    at = upload(app, ("plate 7.png", data))
    assert not at.exception and not at.error
    assert not any(b.key == "analyze_run" for b in at.button)  # a single image needs no click
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
        assert (info.image_name, info.source) == ("plate 7.png", "upload")
        assert v.get(f"images/{hashlib.sha256(data).hexdigest()}") == data
        [imported] = [r for r in v.audit.entries() if r.event == "import"]
    assert imported.details["source"] == "upload" and imported.details["image"] == "plate 7.png"


# ------------------------------------------------------------------------------------------------ profiles, labels
def test_profile_selection_sets_micrometres_and_is_saved(samples, profiled_app, vault_path):
    at = profiled_app
    profile = at.selectbox(key="label_profile")
    assert profile.value == "Axio 10x"  # the settings' default profile
    assert profile.options == ["Axio 10x", "Axio 40x", "Uncalibrated (px)"]
    at = pick_sample(at, "good.png")
    assert not at.exception
    d50_10x = float(metrics(at)["D50 (µm)"])
    assert any("profile Axio 10x (0.5 µm/px)" in c.value for c in at.caption)
    at.selectbox(key="label_profile").select("Axio 40x").run()
    assert float(metrics(at)["D50 (µm)"]) == pytest.approx(d50_10x / 4, rel=0.01)
    at.selectbox(key="label_profile").select("").run()  # uncalibrated
    assert "D50 (px)" in metrics(at)
    with open_vault(vault_path) as v:
        infos = list_analyses(v)
        assert sorted((i.profile, i.pixel_size_um, i.unit) for i in infos) == [
            ("", None, "px"), ("Axio 10x", 0.5, "µm"), ("Axio 40x", 0.125, "µm")]
        assert len(v.list("images/")) == 1  # three analyses, the image stored once


def test_product_and_lot_are_saved_in_the_index_and_remembered(samples, app, vault_path):
    app.text_input(key="label_product").input("Paracetamol 500").run()
    app.text_input(key="label_lot").input("L-2024-117").run()
    at = pick_sample(app, "good.png")
    assert not at.exception
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
        [record] = [r for r in v.audit.entries() if r.event == "analysis"]
    assert (info.product, info.lot, info.operator) == ("Paracetamol 500", "L-2024-117", "alice")
    assert (record.details["product"], record.details["lot"]) == ("Paracetamol 500", "L-2024-117")
    assert any("product: Paracetamol 500 · lot: L-2024-117" in c.value for c in at.caption)
    # Another screen drops the widgets' state; the labels come back.
    at.switch_page("screens/history.py").run()
    at.switch_page("screens/analyze.py").run()
    assert not at.exception
    assert at.text_input(key="label_product").value == "Paracetamol 500"
    assert at.text_input(key="label_lot").value == "L-2024-117"


def test_a_bad_label_stops_the_analysis_with_a_message(samples, app, vault_path):
    app.text_input(key="label_lot").input("L-1\tpasted").run()
    at = pick_sample(app, "good.png")
    assert not at.exception
    assert at.error and "lot cannot contain control characters" in at.error[0].value
    with open_vault(vault_path) as v:
        assert list_analyses(v) == []


# ------------------------------------------------------------------------------------------------ batches
def test_batch_of_three_with_a_broken_file(app, vault_path, analyses_run):
    files = [("a.png", png_bytes(crystal_image(3))), ("broken.png", BROKEN), ("c.png", png_bytes(crystal_image(6)))]
    at = upload(app, *files)
    assert not at.exception
    run = at.button(key="analyze_run")
    assert run.label == "Analyse 3 images"
    with open_vault(vault_path) as v:
        assert list_analyses(v) == []  # nothing happens before the click
    at = run.click().run()
    assert not at.exception
    assert analyses_run == ["a.png", "broken.png", "c.png"]
    assert [e.value.split(":")[0] for e in at.error] == ["broken.png could not be analysed"]
    with open_vault(vault_path) as v:
        assert sorted(i.image_name for i in list_analyses(v)) == ["a.png", "c.png"]
    shown = metrics(at)
    assert shown["Crystals (batch)"] == "9"
    assert "D50 (batch, px)" in shown
    [overview] = [d.value for d in at.dataframe if "status" in d.value.columns]
    assert list(overview["image"]) == ["a.png", "broken.png", "c.png"]
    assert list(overview["status"]) == ["saved", "not analysed", "saved"]
    assert "2 analyses saved in the vault (see History)." in [c.value for c in at.caption]
    # The image selector offers the analysed images; each shows its own result.
    viewer = at.selectbox(key="analyze_view_image")
    assert len(viewer.options) == 2
    assert metrics(at)["Crystals"] == "3"
    at = viewer.select(1).run()
    assert not at.exception and metrics(at)["Crystals"] == "6"
    assert analyses_run == ["a.png", "broken.png", "c.png"]  # switching images analyses nothing
    assert {"Download batch particles CSV", "Download batch summary CSV",
            "Download batch PDF report"} <= {b.label for b in at.get("download_button")}


def test_adding_a_file_to_a_batch_analyses_only_the_new_one(app, analyses_run):
    a, b = ("a.png", png_bytes(crystal_image(2))), ("b.png", png_bytes(crystal_image(4)))
    at = upload(app, a, b)
    at.button(key="analyze_run").click().run()
    uploader = at.file_uploader(key="upload")
    # Keep the files already uploaded (same file ids) and add one.
    uploader._files = uploader._get_files_to_register() + [("new-id", "c.png", png_bytes(crystal_image(5)),
                                                            "image/png")]
    at = at.run()
    assert at.button(key="analyze_run").label == "Analyse 1 image"
    at.button(key="analyze_run").click().run()
    assert not at.exception
    assert analyses_run == ["a.png", "b.png", "c.png"]
    assert metrics(at)["Crystals (batch)"] == "11"


def test_batch_pdf_and_csv_downloads(app, vault_path, deferred):
    at = upload(app, ("a.png", png_bytes(crystal_image(3))), ("b.png", png_bytes(crystal_image(6))))
    at.button(key="analyze_run").click().run()
    [name] = [n for n in deferred if n.startswith("batch_") and n.endswith("_report.pdf")]
    pages, text = pdf_text(deferred[name]())
    assert pages == 1 and "Images pooled 2" in text and "Crystals 9" in text and "Operator alice" in text
    [button] = [b for b in at.get("download_button") if b.label == "Download batch summary CSV"]
    button.click()
    at.run()
    with open_vault(vault_path) as v:
        ids = sorted(i.analysis_id for i in list_analyses(v))
    [export] = [r for r in events(vault_path) if r.event == "export"]
    assert export.details["file"].endswith("_summary.csv") and sorted(export.details["analysis_ids"]) == ids


# ------------------------------------------------------------------------------------------------ result view
def test_pdf_report_download_is_produced_and_audited(samples, app, vault_path, deferred):
    app.text_input(key="label_product").input("Ibuprofen").run()
    app.text_input(key="label_lot").input("L-77").run()
    at = pick_sample(app, "good.png")
    pages, text = pdf_text(deferred["good_report.pdf"]())
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
    assert pages == 1
    for expected in ("good.png", "Product Ibuprofen", "Lot L-77", "Operator alice", info.analysis_id,
                     f"Crystals {info.n_crystals}", "uncalibrated (sizes in px)"):
        assert expected in text, expected
    [button] = [b for b in at.get("download_button") if b.label == "Download PDF report"]
    button.click()
    at.run()
    assert not at.exception
    [export] = [r for r in events(vault_path) if r.event == "export"]
    assert export.details == {"analysis_id": info.analysis_id, "image": "good.png", "file": "good_report.pdf"}
    assert export.user == "alice"


def test_overlay_download_follows_the_class_toggles(samples, app, deferred):
    at = pick_sample(app, "good.png")

    def green(png: bytes) -> int:
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert bgr.shape == (512, 640, 3)  # full resolution
        return int(np.sum((bgr[..., 1] > 140) & (bgr[..., 2] < 30) & (bgr[..., 0] > 90)))

    with_crystals = green(deferred["good_overlay.png"]())
    at.toggle(key="analyze_show_crystal").set_value(False).run()
    at.toggle(key="analyze_show_agglomerate").set_value(False).run()
    assert not at.exception
    assert with_crystals > 100 and green(deferred["good_overlay.png"]()) == 0


def test_download_click_records_an_export(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    [button] = [b for b in at.get("download_button") if b.label == "Download particles CSV"]
    button.click()
    at.run()
    assert not at.exception
    exports = [r for r in events(vault_path) if r.event == "export"]
    assert len(exports) == 1
    assert exports[0].details["file"] == "good_particles.csv" and exports[0].user == "alice"


def captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def test_before_after_toggle_shows_the_original(samples, app):
    at = pick_sample(app, "good.png")
    assert not at.exception
    assert "Cleaned image" in captions(at)
    at.toggle(key="analyze_show_original").set_value(True).run()
    assert not at.exception
    assert "Original image (before cleaning)" in captions(at)
    assert "Cleaned image" not in captions(at)


def test_zoom_shows_a_full_resolution_part(samples, app):
    at = pick_sample(app, "good.png")
    at.select_slider(key="analyze_zoom").set_value(4).run()
    at.slider(key="analyze_zoom_x").set_value(0).run()
    assert not at.exception
    assert "Cleaned image · 4× zoom, x 0–160 px, y 192–320 px" in captions(at)


def test_excluded_objects_are_listed_with_their_reason_on_demand(app):
    image = crystal_image(3)
    for x in range(40, 600, 60):  # specks far smaller than a crystal: dust
        cv2.circle(image, (x, 470), 4, 60, -1)
    at = upload(app, ("dusty.png", png_bytes(image)))
    assert not at.exception
    assert not any("reason" in d.value.columns for d in at.dataframe)
    assert int(metrics(at)["Excluded"]) > 0
    at.toggle(key="analyze_show_excluded").set_value(True).run()
    [table] = [d.value for d in at.dataframe if "reason" in d.value.columns]
    assert len(table) == int(metrics(at)["Excluded"])
    assert set(table["reason"]) <= {"dust", "fibre", "bubble", "out_of_focus", "faint", "low_confidence", "on_border"}
    assert len(table["reason"].dropna()) == len(table)
