"""The Settings screen (unlocked first), driven by Streamlit's AppTest: calibration profiles (add, edit, default,
delete, invalid input refused), the stage micrometer measurement, and threshold changes - each saved in the vault
and audited."""
from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from tests.analysis.test_calibration import render_ruling
from tests.app.conftest import events, open_vault, png_bytes
from ui.settings import DEFAULTS, CalibrationProfile, analysis_options, load_settings


@pytest.fixture
def at(app):
    app.switch_page("screens/settings.py")
    app.run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Settings"]
    return app


def saved(vault_path):
    with open_vault(vault_path) as v:
        return load_settings(v)


def setting_changes(vault_path) -> list[dict]:
    return [r.details["changed"] for r in events(vault_path) if r.event == "settings_change"]


def submit_profile(at, *, name: str | None = None, um: float | None = None, **fields):
    if name is not None:
        at.text_input(key="profile_name").input(name)
    if um is not None:
        at.number_input(key="profile_um_per_px").set_value(um)
    for key, value in fields.items():
        widget = at.date_input(key=key) if key == "profile_date" else (
            at.checkbox(key=key) if key == "profile_make_default" else
            at.number_input(key=key) if key == "profile_scale" else at.text_input(key=key))
        widget.set_value(value)
    [button] = [b for b in at.button if b.label == "Save profile"]
    button.click()
    at.run()
    assert not at.exception
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_sections_and_defaults(at):
    headers = [h.value for h in at.header]
    assert headers == ["Calibration profiles", "Detection thresholds", "Image cleaning", "Border rule",
                       "Image size cap", "Idle lock", "Detector"]
    assert at.slider(key="set_confidence").value == DEFAULTS.confidence_threshold
    assert at.number_input(key="set_min_ecd").value == pytest.approx(8.74, abs=0.01)
    assert at.number_input(key="set_max_mp").value == 50.0
    assert at.selectbox(key="set_default_profile").value == ""
    assert "No calibration profile yet" in at.info[0].value
    for key in ("set_confidence", "set_cleaning"):
        assert at.slider(key=key).help  # every threshold explains itself
    for key in ("set_min_ecd", "set_focus", "set_max_mp"):
        assert at.number_input(key=key).help


def test_add_a_profile_is_saved_in_the_vault_and_audited(at, vault_path):
    submit_profile(at, name="Axio 10x", um=0.65, profile_microscope="Axio Imager", profile_objective="10x",
                   profile_date=date(2026, 3, 1), profile_note="checked by AB")
    assert errors(at) == []
    assert any("'Axio 10x' saved" in s.value for s in at.success)
    expected = CalibrationProfile("Axio 10x", 0.65, microscope="Axio Imager", objective="10x",
                                  calibrated_on="2026-03-01", note="checked by AB")
    prefs = saved(vault_path)
    assert prefs.profiles == (expected,) and prefs.default_profile == ""
    assert setting_changes(vault_path) == [{"profiles": {"added": {"Axio 10x": 0.65}}}]
    [row] = at.dataframe[0].value.to_dict("records")
    assert (row["name"], row["µm per px"], row["objective"], row["default"]) == ("Axio 10x", 0.65, "10x", False)
    # the form now edits the saved profile
    assert at.selectbox(key="profile_pick").value == "Axio 10x"
    # edit it: a new pixel size, saved as a change of that profile
    submit_profile(at, um=0.66)
    assert saved(vault_path).profiles[0].um_per_px == 0.66
    assert setting_changes(vault_path)[-1] == {"profiles": {"changed": {"Axio 10x": {"um_per_px": [0.65, 0.66]}}}}


def test_choose_the_default_profile(at, vault_path):
    submit_profile(at, name="Axio 10x", um=0.65)
    submit_profile(at.selectbox(key="profile_pick").select("\u2795 New profile").run(), name="BX53 40x", um=0.1625,
                   profile_make_default=True)
    prefs = saved(vault_path)
    assert prefs.default_profile == "BX53 40x" and analysis_options(prefs).pixel_size_um == 0.1625
    at.selectbox(key="set_default_profile").select("Axio 10x").run()
    assert not at.exception and saved(vault_path).default_profile == "Axio 10x"
    assert setting_changes(vault_path)[-1] == {"default_profile": ["BX53 40x", "Axio 10x"]}
    assert at.selectbox(key="set_default_profile").value == "Axio 10x"
    at.selectbox(key="set_default_profile").select("").run()
    assert saved(vault_path).default_profile == "" and analysis_options(saved(vault_path)).pixel_size_um is None
    # the caption converts the minimum size with the default profile
    at.selectbox(key="set_default_profile").select("Axio 10x").run()
    assert any("µm with the profile 'Axio 10x'" in c.value for c in at.caption)


def test_delete_the_default_profile_makes_analyses_uncalibrated(at, vault_path):
    submit_profile(at, name="Axio 10x", um=0.65, profile_make_default=True)
    assert saved(vault_path).default_profile == "Axio 10x"
    assert at.button(key="profile_delete").disabled  # needs the confirmation first
    at.checkbox(key="profile_delete_confirm").check().run()
    at.button(key="profile_delete").click().run()
    assert not at.exception
    assert saved(vault_path) == DEFAULTS
    assert setting_changes(vault_path)[-1] == {"profiles": {"removed": {"Axio 10x": 0.65}},
                                               "default_profile": ["Axio 10x", ""]}
    assert at.selectbox(key="profile_pick").value == "\u2795 New profile"


@pytest.mark.parametrize("name, um, message", [
    ("axio 10X", 0.5, "already exists"),
    ("Zeiss 20x", 0.0, "above 0"),
    ("", 0.5, "Give the calibration profile a name"),
    ("Zeiss 20x", None, "Enter the pixel size"),
])
def test_invalid_profiles_show_an_error_and_change_nothing(at, vault_path, name, um, message):
    submit_profile(at, name="Axio 10x", um=0.65)
    before, n_changes = saved(vault_path), len(setting_changes(vault_path))
    at.selectbox(key="profile_pick").select("\u2795 New profile").run()
    submit_profile(at, name=name, um=um)
    assert len(errors(at)) == 1 and message in errors(at)[0]
    assert saved(vault_path) == before and len(setting_changes(vault_path)) == n_changes


def test_renaming_onto_another_profile_is_refused(at, vault_path):
    submit_profile(at, name="Axio 10x", um=0.65)
    submit_profile(at.selectbox(key="profile_pick").select("\u2795 New profile").run(), name="BX53 40x", um=0.16)
    before = saved(vault_path)
    submit_profile(at, name="Axio 10x")  # the form edits BX53 40x
    assert "already exists" in errors(at)[0] and saved(vault_path) == before


def test_stage_micrometer_image_gives_the_pixel_size_and_becomes_a_profile(at, vault_path):
    image = render_ruling((300, 360), 16.0, 30.0, noise=0.03, uneven=0.3)
    data = png_bytes(np.round(image * 255).astype(np.uint8))
    at.number_input(key="micrometer_division").set_value(10.0)
    at.file_uploader(key="micrometer_upload").set_value(("micrometer.png", data, "image/png"))
    at.run()
    assert not at.exception and errors(at) == []
    pixel = next(m for m in at.metric if m.label == "Pixel size")
    measured = float(pixel.value.split()[0])
    assert measured == pytest.approx(10.0 / 16.0, rel=0.01)
    [record] = [r for r in events(vault_path) if r.event == "calibration_measured"]
    assert record.details["division_um"] == 10.0 and record.details["um_per_px"] == pytest.approx(0.625, rel=0.01)
    # into the profile form, then saved as a profile
    at.button(key="micrometer_use").click().run()
    assert at.number_input(key="profile_um_per_px").value == pytest.approx(0.625, rel=0.01)
    assert at.date_input(key="profile_date").value == date.today()
    assert "10 µm divisions" in at.text_input(key="profile_note").value
    submit_profile(at, name="Axio 10x")
    [profile] = saved(vault_path).profiles
    assert profile.um_per_px == pytest.approx(0.625, rel=0.01) and profile.calibrated_on == date.today().isoformat()
    # the image itself is not kept: the vault holds only the settings entry (and the audit log)
    with open_vault(vault_path) as v:
        assert [e.name for e in v.list("")] == ["settings.json"]
    # a different division spacing scales the result
    at.number_input(key="micrometer_division").set_value(5.0).run()
    pixel = next(m for m in at.metric if m.label == "Pixel size")
    assert float(pixel.value.split()[0]) == pytest.approx(5.0 / 16.0, rel=0.01)


@pytest.mark.parametrize("data, division, message", [
    (None, 10.0, "No clear ruling"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 10.0, "No pixel size measured"),
    ("ruling", 0.0, "spacing of one division"),
])
def test_micrometer_errors_are_shown_not_raised(at, data, division, message):
    if data is None:
        data = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 240), dtype=np.uint8))
    elif data == "ruling":
        data = png_bytes(np.round(render_ruling((200, 240), 12.0, 0.0) * 255).astype(np.uint8))
    at.number_input(key="micrometer_division").set_value(division)
    at.file_uploader(key="micrometer_upload").set_value(("m.png", data, "image/png"))
    at.run()
    assert not at.exception
    assert len(errors(at)) == 1 and message in errors(at)[0]
    assert not [b for b in at.button if b.key == "micrometer_use"]


def test_threshold_changes_are_saved_and_audited(at, vault_path):
    at.slider(key="set_confidence").set_value(0.4).run()
    at.number_input(key="set_min_ecd").set_value(12.0).run()
    at.number_input(key="set_focus").set_value(2.5).run()
    at.slider(key="set_cleaning").set_value(1.5).run()
    at.checkbox(key="set_include_border").check().run()
    at.number_input(key="set_max_mp").set_value(20.0).run()
    at.selectbox(key="set_detector").select("classical").run()
    assert not at.exception and errors(at) == []
    prefs = saved(vault_path)
    assert (prefs.confidence_threshold, prefs.min_ecd_px, prefs.focus_threshold, prefs.cleaning_strength,
            prefs.include_border, prefs.max_megapixels, prefs.detector) == (0.4, 12.0, 2.5, 1.5, True, 20.0,
                                                                            "classical")
    assert setting_changes(vault_path) == [
        {"confidence_threshold": [DEFAULTS.confidence_threshold, 0.4]}, {"min_ecd_px": [DEFAULTS.min_ecd_px, 12.0]},
        {"focus_threshold": [3.0, 2.5]}, {"cleaning_strength": [1.0, 1.5]}, {"include_border": [False, True]},
        {"max_megapixels": [50.0, 20.0]}, {"detector": ["auto", "classical"]}]
    options = analysis_options(prefs)
    assert options.exclusion.confidence_threshold == 0.4 and options.max_pixels == 20_000_000


def test_idle_lock_from_the_settings_screen_updates_the_sidebar(at, vault_path):
    at.number_input(key="set_idle").set_value(30.0).run()
    assert not at.exception
    assert saved(vault_path).idle_lock_minutes == 30.0
    assert at.number_input(key="idle_minutes").value == 30.0
    # and the sidebar's change shows on the screen
    at.number_input(key="idle_minutes").set_value(45.0).run()
    assert at.number_input(key="set_idle").value == 45.0


def test_a_refused_change_snaps_back(at, vault_path, monkeypatch):
    import ui.session

    def refuse(vault, settings, *, user):
        raise OSError("disk full")

    monkeypatch.setattr(ui.session, "save_settings", refuse)
    at.slider(key="set_confidence").set_value(0.9).run()
    assert not at.exception
    assert "Not saved: disk full" in errors(at)[0]
    assert at.slider(key="set_confidence").value == DEFAULTS.confidence_threshold
    assert saved(vault_path) == DEFAULTS


def test_a_profile_can_set_an_analysis_scale_and_it_reaches_the_analysis(at, vault_path):
    assert at.number_input(key="profile_scale").value == 1.0 and at.number_input(key="profile_scale").help
    submit_profile(at, name="BX53 40x", um=0.1625, profile_scale=0.5, profile_make_default=True)
    assert errors(at) == []
    prefs = saved(vault_path)
    assert prefs.profiles[0].analysis_scale == 0.5
    assert analysis_options(prefs).scale == 0.5
    [row] = at.dataframe[0].value.to_dict("records")
    assert row["analysis scale"] == 0.5
