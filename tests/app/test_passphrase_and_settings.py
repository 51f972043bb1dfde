"""ui.passphrase (rules, strength hint, user name) and ui.settings (the settings entry in the vault)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from analysis.exclude import ExclusionOptions
from analysis.io import DEFAULT_MAX_PIXELS
from analysis.pipeline import AnalysisOptions
from analysis.preprocess import CleaningOptions
from tests.app.conftest import FAST_KDF, PASSPHRASE
from ui.passphrase import InputRejectedError, check_new_passphrase, check_user_name, passphrase_strength
from ui.settings import (DEFAULTS, LEGACY_CONFIDENCE_THRESHOLD, MIGRATED_PROFILE, SETTINGS_NAME, SETTINGS_VERSION,
                         AppSettings, CalibrationProfile, SettingsError, add_profile, analysis_options, area_from_ecd,
                         load_settings, migrate_stored_settings, profile_by_name, remove_profile, save_settings,
                         set_default_profile, settings_from_json, settings_to_json, update_profile)
from vault import Vault


@pytest.mark.parametrize("passphrase, length, classes, level", [
    ("", 0, 0, 0),
    ("abcdefghijk", 11, 1, 0),  # one short of the minimum
    ("abcdefghijkl", 12, 1, 1),
    ("abcdefGHIJ12", 12, 3, 2),
    ("Abcdefgh1234!", 13, 4, 2),
    ("abcdefghijklmnopqrst", 20, 1, 3),  # long enough whatever the classes
    ("Abcdefgh 12345678", 17, 4, 3),
    ("ÄÖÜ äöü ßéèê", 12, 3, 2),  # non-ASCII letters count as letters, the spaces as "other"
])
def test_strength_levels(passphrase, length, classes, level):
    s = passphrase_strength(passphrase)
    assert (s.length, s.classes, s.level) == (length, classes, level)
    assert str(length) in s.hint


def test_new_passphrase_rules():
    check_new_passphrase("twelve chars", "twelve chars")
    with pytest.raises(InputRejectedError, match="at least 12 characters \\(you typed 11\\)"):
        check_new_passphrase("eleven char", "eleven char")
    with pytest.raises(InputRejectedError, match="differ"):
        check_new_passphrase("twelve chars", "twelve charz")
    with pytest.raises(InputRejectedError, match="at most 1024"):
        check_new_passphrase("x" * 1025, "x" * 1025)
    with pytest.raises(InputRejectedError, match="must be text"):
        check_new_passphrase(None, None)


def test_error_messages_never_contain_the_passphrase():
    for a, b in (("secretsecret1", "secretsecret2"), ("secret", "secret")):
        with pytest.raises(InputRejectedError) as err:
            check_new_passphrase(a, b)
        assert "secret" not in str(err.value)


def test_user_name_rules():
    assert check_user_name("  Alice Müller ") == "Alice Müller"
    for bad in ("", "   ", None, "a\nb", "x" * 129):
        with pytest.raises(InputRejectedError):
            check_user_name(bad)


# ------------------------------------------------------------------------------------------------ settings
ZEISS = CalibrationProfile("Axio 10x", 0.65, microscope="Axio Imager", objective="10x", calibrated_on="2026-03-01",
                           note="stage micrometer 10 µm")
OLYMPUS = CalibrationProfile("BX53 40x", 0.1625, microscope="BX53", objective="40x", analysis_scale=0.5)


def test_settings_json_round_trip():
    s = AppSettings(pixel_size_um=0.25, include_border=True, detector="classical", idle_lock_minutes=5.0,
                    profiles=(ZEISS, OLYMPUS), default_profile="BX53 40x", confidence_threshold=0.4,
                    min_ecd_px=12.5, focus_threshold=2.0, cleaning_strength=0.5, max_megapixels=20.0)
    raw = settings_to_json(s)
    assert json.loads(raw) == {
        "version": 3, "pixel_size_um": 0.25, "include_border": True, "detector": "classical",
        "idle_lock_minutes": 5.0, "default_profile": "BX53 40x", "confidence_threshold": 0.4, "min_ecd_px": 12.5,
        "focus_threshold": 2.0, "cleaning_strength": 0.5, "max_megapixels": 20.0,
        "profiles": [{"name": "Axio 10x", "um_per_px": 0.65, "microscope": "Axio Imager", "objective": "10x",
                      "calibrated_on": "2026-03-01", "note": "stage micrometer 10 µm", "analysis_scale": 1.0},
                     {"name": "BX53 40x", "um_per_px": 0.1625, "microscope": "BX53", "objective": "40x",
                      "calibrated_on": "", "note": "", "analysis_scale": 0.5}]}
    assert settings_from_json(raw) == s
    assert settings_from_json(settings_to_json(DEFAULTS)) == DEFAULTS


def test_defaults_are_the_pipeline_defaults():
    assert analysis_options(DEFAULTS) == AnalysisOptions()
    assert DEFAULTS.confidence_threshold == ExclusionOptions().confidence_threshold
    assert DEFAULTS.focus_threshold == ExclusionOptions().focus_threshold
    assert math.isclose(math.pi / 4 * DEFAULTS.min_ecd_px ** 2, ExclusionOptions().min_area_px)
    assert DEFAULTS.max_megapixels * 1e6 == DEFAULT_MAX_PIXELS and DEFAULTS.cleaning_strength == 1.0


def test_version_1_files_keep_loading_and_the_pixel_size_becomes_a_profile():
    v1 = json.dumps({"version": 1, "pixel_size_um": 0.5, "include_border": True, "detector": "classical",
                     "idle_lock_minutes": 5.0}).encode()
    s = settings_from_json(v1)
    assert (s.pixel_size_um, s.include_border, s.detector, s.idle_lock_minutes) == (0.5, True, "classical", 5.0)
    [p] = s.profiles
    assert (p.name, p.um_per_px, s.default_profile) == (MIGRATED_PROFILE, 0.5, MIGRATED_PROFILE)
    assert analysis_options(s).pixel_size_um == 0.5
    # the new fields take their defaults; the migrated file is written back as the current version, reads the same
    assert (s.confidence_threshold, s.min_ecd_px, s.max_megapixels) == (
        DEFAULTS.confidence_threshold, DEFAULTS.min_ecd_px, DEFAULTS.max_megapixels)
    assert settings_from_json(settings_to_json(s)) == s
    # uncalibrated version 1 (and no version at all = version 1): no profile
    for raw in (json.dumps({"version": 1, "pixel_size_um": 0.0}).encode(), json.dumps({"pixel_size_um": 0}).encode()):
        assert settings_from_json(raw) == DEFAULTS
    assert settings_from_json(json.dumps({"pixel_size_um": 2.0}).encode()).default_profile == MIGRATED_PROFILE
    # a version 2 file's pixel_size_um is NOT turned into a profile (it is the Analyze screen's legacy field)
    v2 = json.dumps({"version": 2, "pixel_size_um": 0.5}).encode()
    assert settings_from_json(v2) == AppSettings(pixel_size_um=0.5)
    assert analysis_options(settings_from_json(v2)).pixel_size_um is None


@pytest.mark.parametrize("raw", [b"not json", b"\xff", b"[]"])
def test_unreadable_settings_fall_back_to_defaults(raw):
    assert settings_from_json(raw) == DEFAULTS


def test_invalid_fields_fall_back_one_by_one():
    raw = json.dumps({"pixel_size_um": -1, "include_border": "yes", "detector": "magic", "idle_lock_minutes": 3,
                      "unknown": 1}).encode()
    assert settings_from_json(raw) == AppSettings(idle_lock_minutes=3.0)
    assert settings_from_json(json.dumps({"idle_lock_minutes": 0.5}).encode()) == DEFAULTS
    assert settings_from_json(json.dumps({"idle_lock_minutes": True}).encode()) == DEFAULTS
    raw = json.dumps({"version": 2, "confidence_threshold": 1.5, "min_ecd_px": -1, "focus_threshold": "3",
                      "cleaning_strength": 3.5, "max_megapixels": 0.5, "idle_lock_minutes": 30,
                      "detector": "classical"}).encode()
    assert settings_from_json(raw) == AppSettings(idle_lock_minutes=30.0, detector="classical")
    assert settings_from_json(b'{"version": 2, "max_megapixels": 100, "min_ecd_px": 0}') == AppSettings(
        max_megapixels=100.0, min_ecd_px=0.0)


def test_invalid_profiles_are_dropped_one_by_one():
    good = ZEISS.to_json()
    raw = json.dumps({"version": 2, "default_profile": "Axio 10x", "profiles": [
        {"name": "zero", "um_per_px": 0}, {"name": "", "um_per_px": 1.0}, "text", {"name": "bool", "um_per_px": True},
        {"name": "date", "um_per_px": 1.0, "calibrated_on": "yesterday"}, {"um_per_px": 1.0},
        good, dict(good, name="AXIO 10X", um_per_px=2.0), {"name": "extra", "um_per_px": 3.0, "colour": "red"}]})
    s = settings_from_json(raw.encode())
    assert s.profiles == (ZEISS, CalibrationProfile("extra", 3.0)) and s.default_profile == "Axio 10x"
    # a default that names no profile, or a profiles entry that is not a list
    assert settings_from_json(b'{"version":2,"default_profile":"gone","profiles":[]}').default_profile == ""
    assert settings_from_json(b'{"version":2,"default_profile":3}') == DEFAULTS
    assert settings_from_json(b'{"version":2,"profiles":{"a":1}}') == DEFAULTS


@pytest.mark.parametrize("bad", [AppSettings(pixel_size_um=-0.1), AppSettings(detector="onnx"),
                                 AppSettings(idle_lock_minutes=241.0), AppSettings(include_border=1),
                                 AppSettings(confidence_threshold=1.01), AppSettings(min_ecd_px=float("nan")),
                                 AppSettings(focus_threshold=-1.0), AppSettings(cleaning_strength=3.1),
                                 AppSettings(max_megapixels=0.5), AppSettings(max_megapixels=101.0)])
def test_out_of_range_settings_are_not_written(bad):
    with pytest.raises(ValueError, match="out of range"):
        settings_to_json(bad)
    with pytest.raises(SettingsError, match="out of range"):
        analysis_options(bad)


def test_inconsistent_profiles_are_not_written():
    for bad, match in ((AppSettings(profiles=(ZEISS, dataclasses.replace(OLYMPUS, name="axio 10X"))), "unique"),
                       (AppSettings(profiles=(ZEISS,), default_profile="gone"), "does not exist"),
                       (AppSettings(profiles=[ZEISS]), "tuple"), (AppSettings(profiles=({"name": "x"},)), "tuple")):
        with pytest.raises(SettingsError, match=match):
            settings_to_json(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="", um_per_px=1.0), "name"), (dict(name="  ", um_per_px=1.0), "name"),
    (dict(name="a\tb", um_per_px=1.0), "control characters"), (dict(name="x" * 81, um_per_px=1.0), "too long"),
    (dict(name=3, um_per_px=1.0), "must be text"),
    (dict(name="p", um_per_px=0.0), "above 0"), (dict(name="p", um_per_px=-1.0), "above 0"),
    (dict(name="p", um_per_px=1e4), "above 0"), (dict(name="p", um_per_px=float("inf")), "above 0"),
    (dict(name="p", um_per_px="1"), "above 0"), (dict(name="p", um_per_px=True), "above 0"),
    (dict(name="p", um_per_px=1.0, calibrated_on="01/03/2026"), "date like"),
    (dict(name="p", um_per_px=1.0, calibrated_on=20260301), "date must be text"),
    (dict(name="p", um_per_px=1.0, objective="10\nx"), "objective"),
    (dict(name="p", um_per_px=1.0, note="n" * 81), "note is too long"),
    (dict(name="p", um_per_px=1.0, analysis_scale=0.2), "analysis scale"),
    (dict(name="p", um_per_px=1.0, analysis_scale=4.5), "analysis scale"),
    (dict(name="p", um_per_px=1.0, analysis_scale=float("nan")), "analysis scale"),
    (dict(name="p", um_per_px=1.0, analysis_scale="0.5"), "analysis scale"),
])
def test_profile_validation(kwargs, match):
    with pytest.raises(SettingsError, match=match):
        CalibrationProfile(**kwargs)


def test_profile_fields_are_normalised():
    p = CalibrationProfile("  Axio 10x ", 1, microscope=" Axio ", calibrated_on=" 2026-03-01 ")
    assert (p.name, p.um_per_px, p.microscope, p.calibrated_on) == ("Axio 10x", 1.0, "Axio", "2026-03-01")
    assert isinstance(p.um_per_px, float)


def test_add_update_remove_profiles():
    s = add_profile(DEFAULTS, ZEISS)
    assert s.profiles == (ZEISS,) and s.default_profile == "" and DEFAULTS.profiles == ()
    s = add_profile(s, OLYMPUS, make_default=True)
    assert s.profiles == (ZEISS, OLYMPUS) and s.default_profile == "BX53 40x"
    assert profile_by_name(s, " Axio 10x ") is ZEISS and profile_by_name(s, "nope") is None
    with pytest.raises(SettingsError, match="'Axio 10x' already exists"):
        add_profile(s, CalibrationProfile("axio 10X", 1.0))
    # update in place; a rename of the default is followed
    s2 = update_profile(s, "BX53 40x", dataclasses.replace(OLYMPUS, name="BX53 40x oil", um_per_px=0.16))
    assert [p.name for p in s2.profiles] == ["Axio 10x", "BX53 40x oil"] and s2.default_profile == "BX53 40x oil"
    assert update_profile(s, "Axio 10x", dataclasses.replace(ZEISS, um_per_px=0.7)).profiles[0].um_per_px == 0.7
    assert update_profile(s, "Axio 10x", dataclasses.replace(ZEISS, name="AXIO 10x")).profiles[0].name == "AXIO 10x"
    with pytest.raises(SettingsError, match="already exists"):
        update_profile(s, "Axio 10x", dataclasses.replace(ZEISS, name="bx53 40X"))
    with pytest.raises(SettingsError, match="no calibration profile named 'gone'.*'Axio 10x', 'BX53 40x'"):
        update_profile(s, "gone", ZEISS)
    # removing the default makes analyses uncalibrated; removing another keeps the default
    assert remove_profile(s, "BX53 40x") == AppSettings(profiles=(ZEISS,), default_profile="")
    assert remove_profile(s, "Axio 10x") == AppSettings(profiles=(OLYMPUS,), default_profile="BX53 40x")
    with pytest.raises(SettingsError, match="no calibration profile named 'gone'"):
        remove_profile(s, "gone")
    assert set_default_profile(s, "Axio 10x").default_profile == "Axio 10x"
    assert set_default_profile(s, "").default_profile == ""
    with pytest.raises(SettingsError, match="none yet"):
        set_default_profile(DEFAULTS, "Axio 10x")


def test_profile_limit(monkeypatch):
    monkeypatch.setattr("ui.settings.MAX_PROFILES", 2)
    s = add_profile(add_profile(DEFAULTS, ZEISS), OLYMPUS)
    with pytest.raises(SettingsError, match="At most 2"):
        add_profile(s, CalibrationProfile("third", 1.0))


def test_analysis_options_maps_every_setting():
    s = AppSettings(profiles=(ZEISS, OLYMPUS), default_profile="Axio 10x", include_border=True,
                    confidence_threshold=0.6, min_ecd_px=20.0, focus_threshold=4.5, cleaning_strength=2.5,
                    max_megapixels=12.5, pixel_size_um=9.0, detector="classical")
    o = analysis_options(s)
    assert o.pixel_size_um == 0.65 and o.include_border is True
    assert o.cleaning == dataclasses.replace(CleaningOptions(), strength=2.5)
    assert o.exclusion == dataclasses.replace(ExclusionOptions(), confidence_threshold=0.6, focus_threshold=4.5,
                                              min_area_px=round(math.pi * 100.0, 6))
    assert o.max_pixels == 12_500_000
    assert (o.classical, o.max_bytes) == (AnalysisOptions().classical, AnalysisOptions().max_bytes)
    assert o.scale == 1.0 and analysis_options(s, profile="BX53 40x").scale == 0.5
    assert analysis_options(s, profile="").scale == 1.0  # uncalibrated: the image's own size
    assert analysis_options(s, profile="BX53 40x").pixel_size_um == 0.1625
    assert analysis_options(s, profile=" BX53 40x ").pixel_size_um == 0.1625
    assert analysis_options(s, profile="").pixel_size_um is None
    assert analysis_options(dataclasses.replace(s, default_profile="")).pixel_size_um is None  # legacy field ignored
    with pytest.raises(SettingsError, match="no calibration profile named 'Axio 40x'") as err:
        analysis_options(s, profile="Axio 40x")
    assert isinstance(err.value, ValueError)
    assert area_from_ecd(0.0) == 0.0 and analysis_options(dataclasses.replace(s, min_ecd_px=0.0)
                                                          ).exclusion.min_area_px == 0.0


def test_save_settings_records_only_real_changes(tmp_path):
    vault, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    with vault:
        assert load_settings(vault) == DEFAULTS and not vault.exists(SETTINGS_NAME)
        assert save_settings(vault, DEFAULTS, user="a") == {}
        assert not vault.exists(SETTINGS_NAME)
        new = AppSettings(pixel_size_um=0.5)
        assert save_settings(vault, new, user="bob") == {"pixel_size_um": [0.0, 0.5]}
        assert load_settings(vault) == new
        [rec] = [r for r in vault.audit.entries() if r.event == "settings_change"]
        assert (rec.user, rec.details) == ("bob", {"changed": {"pixel_size_um": [0.0, 0.5]}})


def test_save_settings_audits_profile_changes_readably(tmp_path):
    vault, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    with vault:
        s1 = add_profile(add_profile(DEFAULTS, ZEISS), OLYMPUS, make_default=True)
        s2 = update_profile(remove_profile(s1, "Axio 10x"), "BX53 40x", dataclasses.replace(OLYMPUS, um_per_px=0.17))
        s3 = dataclasses.replace(s2, confidence_threshold=0.5)
        assert save_settings(vault, s1, user="lead") == {
            "profiles": {"added": {"Axio 10x": 0.65, "BX53 40x": 0.1625}}, "default_profile": ["", "BX53 40x"]}
        assert save_settings(vault, s2, user="lead") == {
            "profiles": {"removed": {"Axio 10x": 0.65}, "changed": {"BX53 40x": {"um_per_px": [0.1625, 0.17]}}}}
        assert save_settings(vault, s3, user="lead") == {"confidence_threshold": [DEFAULTS.confidence_threshold, 0.5]}
        assert save_settings(vault, s3, user="lead") == {}
        assert load_settings(vault) == s3
        details = [r.details["changed"] for r in vault.audit.entries() if r.event == "settings_change"]
        assert len(details) == 3 and details[1]["profiles"]["removed"] == {"Axio 10x": 0.65}
        with pytest.raises(SettingsError):
            save_settings(vault, AppSettings(profiles=(ZEISS,), default_profile="gone"), user="lead")
        assert load_settings(vault) == s3


def test_a_version_1_entry_in_the_vault_loads_migrated(tmp_path):
    vault, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    with vault:
        vault.put(SETTINGS_NAME, b'{"version":1,"pixel_size_um":0.3,"include_border":false,"detector":"auto",'
                                 b'"idle_lock_minutes":15.0}', kind="settings")
        s = load_settings(vault)
        assert s.default_profile == MIGRATED_PROFILE and analysis_options(s).pixel_size_um == 0.3
        # saving the same settings writes nothing (the migration alone is not a change)
        assert save_settings(vault, s, user="a") == {}


def test_the_old_default_confidence_floor_of_a_version_2_file_reads_as_the_current_default():
    assert SETTINGS_VERSION == 3 and LEGACY_CONFIDENCE_THRESHOLD != DEFAULTS.confidence_threshold
    old = {"version": 2, "confidence_threshold": LEGACY_CONFIDENCE_THRESHOLD, "focus_threshold": 2.5}
    assert settings_from_json(json.dumps(old).encode()) == AppSettings(focus_threshold=2.5)
    # any other value is a lead's choice and stays; so does 0.25 written by this version (3)
    for version, value in ((2, 0.4), (2, 0.05), (3, LEGACY_CONFIDENCE_THRESHOLD)):
        raw = json.dumps(dict(old, version=version, confidence_threshold=value)).encode()
        assert settings_from_json(raw).confidence_threshold == value
    chosen = AppSettings(confidence_threshold=LEGACY_CONFIDENCE_THRESHOLD)
    assert settings_from_json(settings_to_json(chosen)) == chosen


def test_migrate_stored_settings_writes_version_3_once_and_audits_it(tmp_path):
    vault, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    with vault:
        assert migrate_stored_settings(vault, user="a") == {}  # no settings stored: nothing to do
        v2 = settings_to_json(add_profile(DEFAULTS, ZEISS, make_default=True))
        doc = dict(json.loads(v2), version=2, confidence_threshold=LEGACY_CONFIDENCE_THRESHOLD)
        vault.put(SETTINGS_NAME, json.dumps(doc).encode(), kind="settings")
        change = {"confidence_threshold": [LEGACY_CONFIDENCE_THRESHOLD, DEFAULTS.confidence_threshold]}
        assert migrate_stored_settings(vault, user="lead") == change
        stored = json.loads(vault.get(SETTINGS_NAME))
        assert stored["version"] == 3 and stored["confidence_threshold"] == DEFAULTS.confidence_threshold
        assert load_settings(vault) == add_profile(DEFAULTS, ZEISS, make_default=True)  # nothing else changed
        [rec] = [r for r in vault.audit.entries() if r.event == "settings_migrated"]
        assert (rec.user, rec.details) == ("lead", {"changed": change, "from_version": 2})
        assert migrate_stored_settings(vault, user="lead") == {}  # once
        # a lead who sets 0.25 again under version 3 keeps it
        save_settings(vault, AppSettings(confidence_threshold=LEGACY_CONFIDENCE_THRESHOLD), user="lead")
        assert migrate_stored_settings(vault, user="lead") == {}
        assert load_settings(vault).confidence_threshold == LEGACY_CONFIDENCE_THRESHOLD
        assert len([r for r in vault.audit.entries() if r.event == "settings_migrated"]) == 1


def test_a_stored_profile_without_an_analysis_scale_loads_at_the_images_own_size():
    doc = json.loads(settings_to_json(AppSettings(profiles=(ZEISS,), default_profile="Axio 10x")))
    del doc["profiles"][0]["analysis_scale"]  # written before session 12
    loaded = settings_from_json(json.dumps(doc).encode())
    assert loaded.profiles == (ZEISS,) and loaded.profiles[0].analysis_scale == 1.0
    assert analysis_options(loaded).scale == 1.0
