"""First start (create the vault, recovery key once) and unlock (passphrase, recovery key), driven by AppTest."""
from __future__ import annotations

import json

import pytest

from tests.app.conftest import FAST_KDF, PASSPHRASE, events, new_app, open_vault, titles, unlock
from ui.settings import DEFAULTS, LEGACY_CONFIDENCE_THRESHOLD, SETTINGS_NAME
from vault import Vault, WrongPassphraseError

NEW = "another long passphrase 2"
SECRET_FIELDS = ("create_pass", "create_repeat", "unlock_pass", "recovery_key", "recovery_new", "recovery_repeat")


def _create(at, *, name="alice", passphrase=PASSPHRASE, repeat=PASSPHRASE):
    at.text_input(key="create_name").input(name)
    at.text_input(key="create_pass").input(passphrase)
    at.text_input(key="create_repeat").input(repeat)
    at.button(key="create_vault").click()
    return at.run()


def _no_secrets_left(at) -> bool:
    state = at.session_state.to_dict()
    return all(not state.get(k) for k in SECRET_FIELDS)


# ------------------------------------------------------------------------------------------------ first start
def test_first_start_shows_the_create_screen_and_nothing_else(vault_path):
    at = new_app()
    assert not at.exception
    assert titles(at) == ["Welcome to crystal QC: create your vault"]
    assert str(vault_path) in at.markdown[0].value  # tells where the vault will live
    assert "vault" not in at.session_state
    assert not Vault.exists_at(vault_path)


def test_mismatched_passphrases_are_refused_and_nothing_is_created(vault_path):
    at = _create(new_app(), repeat=PASSPHRASE + "x")
    assert not at.exception
    assert [e.value for e in at.error] == ["The two passphrases differ; type the same passphrase twice."]
    assert not Vault.exists_at(vault_path)
    assert "vault" not in at.session_state
    assert _no_secrets_left(at)


def test_short_passphrase_is_refused_with_a_hint(vault_path):
    at = new_app()
    at.text_input(key="create_pass").input("elevenchars")  # 11 characters: the vault would take it, the app not
    at.run()
    assert any("Too short: 11 of at least 12" in e.value for e in at.error)  # the live hint
    at = _create(at, passphrase="elevenchars", repeat="elevenchars")
    assert any("at least 12 characters" in e.value for e in at.error)
    assert not Vault.exists_at(vault_path)


def test_strength_hint_reports_length_and_classes():
    at = new_app()
    at.text_input(key="create_pass").input("Abcdefgh1234!")
    at.run()
    assert [s.value for s in at.info] == ["Fair: 13 characters, 4 character classes. Longer is better: 20+ characters"
                                          " is strong."]


def test_a_name_is_required(vault_path):
    at = _create(new_app(), name="   ")
    assert any("Type your name" in e.value for e in at.error)
    assert not Vault.exists_at(vault_path)


def test_create_shows_the_recovery_key_once_then_the_app(vault_path):
    at = _create(new_app())
    assert not at.exception
    assert titles(at) == ["Your recovery key"]
    key = at.code[0].value
    assert at.button(key="recovery_done").disabled  # not before the confirmation
    assert _no_secrets_left(at)
    # It is the real key of the new vault, and the creator's name is in the audit log.
    with Vault.open_with_recovery_key(vault_path, key, user="test") as v:
        first = v.audit.entries()[0]
        assert (first.event, first.user) == ("vault_created", "alice")

    at.checkbox(key="recovery_written").check()
    at.run()
    at.button(key="recovery_done").click()
    at.run()
    assert titles(at) == ["Analyze an image"]
    assert "recovery_key_once" not in at.session_state
    assert all(key not in repr(v) for v in at.session_state.to_dict().values())
    at.run()
    assert not at.code and titles(at) == ["Analyze an image"]
    # A new browser session gets the unlock screen, never the key.
    again = new_app()
    assert titles(again) == ["crystal QC is locked"] and not again.code


def test_creating_over_a_non_empty_folder_shows_the_vault_error(vault_path):
    vault_path.mkdir()
    (vault_path / "someone-elses-file.txt").write_text("x")
    at = _create(new_app())
    assert any("already exists and is not empty" in e.value for e in at.error)
    assert "vault" not in at.session_state


# ------------------------------------------------------------------------------------------------ unlock
def test_wrong_passphrase_gives_the_generic_error_decrypts_nothing_and_is_recorded(recovery_key, vault_path):
    at = unlock(new_app(), name="mallory", passphrase="not the passphrase at all")
    assert not at.exception
    assert [e.value for e in at.error] == ["Could not unlock the vault: the passphrase is not correct."]
    assert titles(at) == ["crystal QC is locked"]
    assert "vault" not in at.session_state and "settings" not in at.session_state
    assert _no_secrets_left(at)
    assert (vault_path / "failed-unlocks").is_file()  # Vault.record_failed_unlock was called
    failed = [r for r in events(vault_path) if r.event == "unlock_failed"]
    assert [r.user for r in failed] == ["mallory"]


def test_correct_unlock_shows_the_analyze_screen_and_is_audited(recovery_key, vault_path):
    at = unlock(new_app(), name="alice")
    assert not at.exception
    assert titles(at) == ["Analyze an image"]
    assert "Vault unlocked by **alice**" in [c.value for c in at.sidebar.caption]
    assert _no_secrets_left(at)
    ok = [r for r in events(vault_path) if r.event == "unlock_ok"]
    assert ok[0].user == "alice"


def test_unlock_migrates_an_old_stored_confidence_floor_and_says_so(recovery_key, vault_path):
    with open_vault(vault_path) as v:  # settings saved by an earlier version: every field, the old default 0.25
        v.put(SETTINGS_NAME, json.dumps({"version": 2, "confidence_threshold": LEGACY_CONFIDENCE_THRESHOLD,
                                         "focus_threshold": 3.0}).encode(), kind="settings")
    at = unlock(new_app(), name="lead")
    assert not at.exception and titles(at) == ["Analyze an image"]
    [note] = [i.value for i in at.info if "confidence floor" in i.value]
    assert "was 0.25" in note and f"now {DEFAULTS.confidence_threshold:g}" in note
    assert at.session_state["settings"].confidence_threshold == DEFAULTS.confidence_threshold
    [rec] = [r for r in events(vault_path) if r.event == "settings_migrated"]
    assert rec.user == "lead" and rec.details["from_version"] == 2
    at = unlock(new_app(), name="lead")  # once: the next unlock finds version 3 and says nothing
    assert not [i for i in at.info if "confidence floor" in i.value]
    assert len([r for r in events(vault_path) if r.event == "settings_migrated"]) == 1


def test_a_migration_that_cannot_be_written_keeps_the_stored_settings(recovery_key, vault_path, monkeypatch):
    import ui.session

    with open_vault(vault_path) as v:
        v.put(SETTINGS_NAME, json.dumps({"version": 2, "confidence_threshold": LEGACY_CONFIDENCE_THRESHOLD,
                                         "focus_threshold": 2.5}).encode(), kind="settings")

    def disk_full(vault, *, user):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ui.session, "migrate_stored_settings", disk_full)
    at = unlock(new_app(), name="lead")
    assert not at.exception and titles(at) == ["Analyze an image"]
    kept = at.session_state["settings"]  # read (and migrated in memory), not replaced by the defaults
    assert (kept.focus_threshold, kept.confidence_threshold) == (2.5, DEFAULTS.confidence_threshold)
    assert not [r for r in events(vault_path) if r.event == "settings_migrated"]


def test_unlock_needs_a_name(recovery_key):
    at = unlock(new_app(), name="")
    assert any("Type your name" in e.value for e in at.error)
    assert "vault" not in at.session_state


def test_recovery_key_unlock_sets_a_new_passphrase(recovery_key, vault_path):
    at = new_app()
    at.text_input(key="unlock_name").input("alice")
    at.radio(key="unlock_mode").set_value("Recovery key")
    at.run()
    at.text_input(key="recovery_key").input(recovery_key)
    at.text_input(key="recovery_new").input(NEW)
    at.text_input(key="recovery_repeat").input(NEW)
    at.button(key="unlock_recovery").click()
    at.run()
    assert not at.exception
    assert titles(at) == ["Analyze an image"]
    assert [s.value for s in at.success] == ["Unlocked with the recovery key; the new passphrase is set."]
    assert _no_secrets_left(at)
    with pytest.raises(WrongPassphraseError):
        open_vault(vault_path, PASSPHRASE)
    with open_vault(vault_path, NEW) as v:
        kinds = [r.event for r in v.audit.entries()]
    assert "recovery_unlock" in kinds and "passphrase_changed" in kinds


def test_wrong_recovery_key_is_refused_and_recorded(recovery_key, vault_path):
    other, wrong = Vault.create(vault_path.parent / "other", PASSPHRASE, kdf_params=FAST_KDF, user="x")
    other.lock()  # ``wrong`` is a well-formed key of another vault
    at = new_app()
    at.text_input(key="unlock_name").input("mallory")
    at.radio(key="unlock_mode").set_value("Recovery key")
    at.run()
    at.text_input(key="recovery_key").input(wrong)
    at.text_input(key="recovery_new").input(NEW)
    at.text_input(key="recovery_repeat").input(NEW)
    at.button(key="unlock_recovery").click()
    at.run()
    assert any("recovery key is not correct" in e.value for e in at.error)
    assert "vault" not in at.session_state
    assert (vault_path / "failed-unlocks").is_file()
    open_vault(vault_path, PASSPHRASE).lock()  # the passphrase was not changed


def test_recovery_key_typo_is_reported(recovery_key):
    at = new_app()
    at.text_input(key="unlock_name").input("alice")
    at.radio(key="unlock_mode").set_value("Recovery key")
    at.run()
    at.text_input(key="recovery_key").input("not-a-key")
    at.text_input(key="recovery_new").input(NEW)
    at.text_input(key="recovery_repeat").input(NEW)
    at.button(key="unlock_recovery").click()
    at.run()
    assert at.error and "vault" not in at.session_state
