"""The Analyze screen (unlocked first), driven by Streamlit's AppTest (no browser): results as before, and every
analysis, upload, setting and download goes into the vault / audit log."""
from __future__ import annotations

import hashlib

from tests.app.conftest import crystal_image, events, new_app, open_vault, pick_sample, png_bytes, unlock
from ui.analyses import list_analyses, load_analysis
from ui.settings import load_settings


def test_start_screen_asks_for_an_image(samples, app):
    assert not app.exception
    assert any("Upload a micrograph" in i.value for i in app.info)


def test_sample_image_is_counted_and_offers_both_csvs(samples, app):
    at = pick_sample(app, "good.png")
    assert not at.exception
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Crystals"]) + int(metrics["Agglomerates"]) == 6
    assert "D50 (px)" in metrics
    buttons = {b.label for b in at.get("download_button")}
    assert {"Download particles CSV", "Download summary CSV"} <= buttons


def test_calibration_switches_units_to_micrometres(samples, app):
    at = pick_sample(app, "good.png")
    at.number_input(key="pixel_size").set_value(0.5)
    at.run()
    assert not at.exception
    labels = {m.label for m in at.metric}
    assert "D50 (µm)" in labels


def test_corrupt_image_shows_an_actionable_error_not_a_traceback(samples, app, vault_path):
    at = pick_sample(app, "broken.png")
    assert not at.exception
    assert at.error and "broken.png" in at.error[0].value
    with open_vault(vault_path) as v:
        assert list_analyses(v) == []  # nothing saved for an image that could not be analysed


def test_image_without_crystals_reports_zero(samples, app):
    at = pick_sample(app, "blank.png")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Crystals"] == "0"


# ------------------------------------------------------------------------------------------------ vault
def test_analysis_is_saved_in_the_vault(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    shown = {m.label: m.value for m in at.metric}
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
        particles_csv = v.get(prefix + "particles.csv")
        records = v.audit.entries()
    assert f"Saved in the vault as analysis {info.analysis_id} (see History)." in [c.value for c in at.caption]
    assert particles_csv.startswith(b"image,particle_id,")
    imported = [r for r in records if r.event == "import"]
    analysed = [r for r in records if r.event == "analysis"]
    assert [r.details["sha256"] for r in imported] == [sha]
    assert [r.details["analysis_id"] for r in analysed] == [info.analysis_id]
    assert analysed[0].user == "alice"


def test_reruns_of_the_same_analysis_save_it_once(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    at.toggle(key="analyze_show_excluded").set_value(True)
    at.run()
    at.radio(key="analyze_weighting").set_value("volume")
    at.run()
    assert not at.exception
    with open_vault(vault_path) as v:
        assert len(list_analyses(v)) == 1


def test_a_new_option_is_a_new_analysis_but_the_image_is_stored_once(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    at.checkbox(key="include_border").check()
    at.run()
    with open_vault(vault_path) as v:
        assert len(list_analyses(v)) == 2
        assert len(v.list("images/")) == 1
        assert [r.event for r in v.audit.entries()].count("import") == 1


def test_upload_is_saved_with_its_name_and_source(app, vault_path):
    data = png_bytes(crystal_image(3))
    app.file_uploader(key="upload").set_value(("plate 7.png", data, "image/png"))
    at = app.run()
    assert not at.exception and not at.error
    with open_vault(vault_path) as v:
        [info] = list_analyses(v)
        assert (info.image_name, info.source) == ("plate 7.png", "upload")
        assert v.get(f"images/{hashlib.sha256(data).hexdigest()}") == data
        [imported] = [r for r in v.audit.entries() if r.event == "import"]
    assert imported.details["source"] == "upload" and imported.details["image"] == "plate 7.png"


def test_settings_changes_are_persisted_and_audited(samples, app, vault_path):
    app.number_input(key="pixel_size").set_value(0.25)
    app.run()
    app.checkbox(key="include_border").check()
    app.run()
    assert not app.exception
    with open_vault(vault_path) as v:
        prefs = load_settings(v)
        changes = [r.details["changed"] for r in v.audit.entries() if r.event == "settings_change"]
    assert (prefs.pixel_size_um, prefs.include_border) == (0.25, True)
    assert changes == [{"pixel_size_um": [0.0, 0.25]}, {"include_border": [False, True]}]
    # A new session starts with the saved settings.
    again = unlock(new_app(), name="bob")
    assert again.number_input(key="pixel_size").value == 0.25
    assert again.checkbox(key="include_border").value is True


def test_download_click_records_an_export(samples, app, vault_path):
    at = pick_sample(app, "good.png")
    at.get("download_button")[0].click()
    at.run()
    assert not at.exception
    exports = [r for r in events(vault_path) if r.event == "export"]
    assert len(exports) == 1
    assert exports[0].details["file"] == "good_particles.csv" and exports[0].user == "alice"



def test_before_after_toggle_shows_the_original(samples, app):
    at = pick_sample(app, "good.png")
    assert not at.exception

    def captions():
        return [img.caption for element in at.get("image") for img in element.proto.imgs]

    assert "Cleaned image" in captions()
    at.toggle(key="analyze_show_original").set_value(True).run()
    assert not at.exception
    assert "Original image (before cleaning)" in captions()
    assert "Cleaned image" not in captions()
