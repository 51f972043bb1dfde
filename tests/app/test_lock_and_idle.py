"""Locking (button and idle timeout) drops every decrypted value from the session; navigation while locked."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.records import ImageResult
from tests.app.conftest import APP, crystal_image, events, new_app, pick_sample, png_bytes, titles, unlock
from ui.analyses import AnalysisInfo, StoredAnalysis
from ui.batch import Outcome
from ui.settings import AppSettings
from vault import Vault

DATA_TYPES = (ImageResult, StoredAnalysis, AnalysisInfo, AppSettings, Vault, np.ndarray, bytes, bytearray, Outcome)


def _holds_data(value) -> bool:
    if isinstance(value, DATA_TYPES):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_data(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_data(v) for v in value.values())
    return hasattr(value, "getvalue")  # an UploadedFile


def _analysed_and_opened(at):
    """Analyse a sample and reopen it in History: the session then holds results and images."""
    at = pick_sample(at, "good.png")
    at.switch_page("screens/history.py")
    at.run()
    at.button(key="history_open").click()
    at.run()
    state = at.session_state.to_dict()
    assert "analyze_runs" in state and "history_opened" in state and "vault" in state
    assert any(_holds_data(v) for v in state.values())
    return at


def _assert_locked_and_empty(at, vault: Vault) -> None:
    assert not at.exception
    assert titles(at) == ["crystal QC is locked"]
    assert vault.is_locked
    state = at.session_state.to_dict()
    assert not [k for k, v in state.items() if _holds_data(v)], state
    assert not {"vault", "analyze_runs", "analyze_viewed", "analyze_labels", "history_opened", "settings", "upload",
                "last_activity"} & state.keys()
    assert not at.metric and not at.get("download_button")


def test_lock_button_drops_every_result_and_image(samples, app, vault_path):
    at = _analysed_and_opened(app)
    vault = at.session_state["vault"]
    at.sidebar.button(key="lock_button").click()
    at.run()
    _assert_locked_and_empty(at, vault)
    last = events(vault_path)[-2]  # [-1] is the test's own unlock
    assert (last.event, last.user, last.details) == ("lock", "alice", {"reason": "button"})


def test_lock_drops_the_uploaded_file_too(app):
    app.file_uploader(key="upload").set_value(("u.png", png_bytes(crystal_image(2)), "image/png"))
    at = app.run()
    assert at.session_state["upload"] is not None
    vault = at.session_state["vault"]
    at.sidebar.button(key="lock_button").click()
    at.run()
    _assert_locked_and_empty(at, vault)


def test_unlock_after_lock_starts_clean(samples, app):
    at = _analysed_and_opened(app)
    at.sidebar.button(key="lock_button").click()
    at.run()
    at = unlock(at)
    assert not at.exception
    assert titles(at) == ["History"]  # the lock screen kept the URL: back where the user was
    assert "history_opened" not in at.session_state and not at.metric


def test_idle_time_locks_before_anything_is_rendered(samples, clock, app, vault_path):
    at = _analysed_and_opened(app)
    vault = at.session_state["vault"]
    clock.advance(15 * 60 - 1)  # just under the default 15 minutes: still open, and this run counts as activity
    at.run()
    assert titles(at)[0] == "History" and not vault.is_locked
    clock.advance(15 * 60 + 1)
    at.run()
    _assert_locked_and_empty(at, vault)
    assert [i.value for i in at.info] == ["Locked after 15 minutes without activity."]
    last = events(vault_path)[-2]
    assert (last.event, last.details) == ("lock", {"reason": "idle"})


def test_idle_setting_is_saved_and_used(clock, app, vault_path):
    app.sidebar.number_input(key="idle_minutes").set_value(2.0)
    at = app.run()
    vault = at.session_state["vault"]
    changes = [r.details["changed"] for r in events(vault_path) if r.event == "settings_change"]
    assert changes == [{"idle_lock_minutes": [15.0, 2.0]}]
    clock.advance(2 * 60 + 1)
    at.run()
    _assert_locked_and_empty(at, vault)
    assert [i.value for i in at.info] == ["Locked after 2 minutes without activity."]


def test_callbacks_after_the_idle_time_do_not_use_the_vault(samples, clock, app, vault_path):
    at = pick_sample(app, "good.png")
    clock.advance(16 * 60)
    at.get("download_button")[0].click()  # its on_click runs before app.py's idle check
    at.run()
    assert titles(at) == ["crystal QC is locked"]
    assert "export" not in [r.event for r in events(vault_path)]


def test_locked_session_cannot_reach_app_screens(recovery_key):
    at = new_app()
    for screen in ("screens/analyze.py", "screens/history.py", "screens/audit.py"):
        try:
            at.switch_page(screen)
        except ValueError:
            continue  # not even registered while locked
        at.run()
        assert titles(at) == ["crystal QC is locked"]
    assert "vault" not in at.session_state


def test_screens_folder_is_not_named_pages():
    # A pages/ folder next to app.py switches Streamlit into legacy multipage mode, where a URL runs a page file
    # without app.py (no lock screen, no idle check) - see app.py.
    assert not (Path(APP).parent / "pages").exists()
