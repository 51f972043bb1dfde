"""ui.passphrase (rules, strength hint, user name) and ui.settings (the settings entry in the vault)."""
from __future__ import annotations

import json

import pytest

from tests.app.conftest import FAST_KDF, PASSPHRASE
from ui.passphrase import InputRejectedError, check_new_passphrase, check_user_name, passphrase_strength
from ui.settings import (DEFAULTS, SETTINGS_NAME, AppSettings, load_settings, save_settings, settings_from_json,
                         settings_to_json)
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
def test_settings_json_round_trip():
    s = AppSettings(pixel_size_um=0.25, include_border=True, detector="classical", idle_lock_minutes=5.0)
    raw = settings_to_json(s)
    assert json.loads(raw) == {"version": 1, "pixel_size_um": 0.25, "include_border": True,
                               "detector": "classical", "idle_lock_minutes": 5.0}
    assert settings_from_json(raw) == s


@pytest.mark.parametrize("raw", [b"not json", b"\xff", b"[]"])
def test_unreadable_settings_fall_back_to_defaults(raw):
    assert settings_from_json(raw) == DEFAULTS


def test_invalid_fields_fall_back_one_by_one():
    raw = json.dumps({"pixel_size_um": -1, "include_border": "yes", "detector": "magic", "idle_lock_minutes": 3,
                      "unknown": 1}).encode()
    assert settings_from_json(raw) == AppSettings(idle_lock_minutes=3.0)
    assert settings_from_json(json.dumps({"idle_lock_minutes": 0.5}).encode()) == DEFAULTS
    assert settings_from_json(json.dumps({"idle_lock_minutes": True}).encode()) == DEFAULTS


@pytest.mark.parametrize("bad", [AppSettings(pixel_size_um=-0.1), AppSettings(detector="onnx"),
                                 AppSettings(idle_lock_minutes=241.0), AppSettings(include_border=1)])
def test_out_of_range_settings_are_not_written(bad):
    with pytest.raises(ValueError, match="out of range"):
        settings_to_json(bad)


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
