"""One vault per browser session: create, unlock, lock, idle lock, settings and audit (Streamlit-bound).

The unlocked :class:`vault.Vault` lives in ``st.session_state[VAULT]`` of this browser session only - never in
``st.cache_resource`` (that would hand it to every session) or ``st.cache_data``. Locking (button, idle timeout)
records ``lock`` in the audit log, calls ``vault.lock()`` (keys wiped, index dropped) and deletes EVERY
``st.session_state`` key except :data:`KEEP_ON_LOCK` (a notice for the lock screen), so results, images, uploads,
settings and widget values of this session go with it; the session's uploaded files are removed from Streamlit's
in-memory upload manager too. Images and download data already sent to the browser are released by Streamlit's media
manager at the end of the next run (the lock screen's).

Idle lock: every full run of app.py calls :func:`enforce_idle_lock` before anything is rendered: if ``clock() -
last activity`` exceeds the idle setting the session is locked, otherwise the activity time is updated. A small
fragment (:func:`idle_watch`) re-checks every :data:`IDLE_POLL_S` seconds without counting as activity, so an
unattended open browser tab locks too.

Tests: set :data:`KDF_PARAMS` to ``KdfParams.minimum()`` (vault creation cost) and replace :data:`clock`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import streamlit as st

from analysis.errors import CrystalQCError
from ui.passphrase import check_new_passphrase, check_user_name
from ui.settings import (MAX_IDLE_MINUTES, MIN_IDLE_MINUTES, AppSettings, load_settings, migrate_stored_settings,
                         save_settings)
from vault import KdfParams, Vault, VaultError, WrongPassphraseError, default_vault_path

logger = logging.getLogger(__name__)

#: Argon2id cost for NEW vaults; None = the vault's calibrated default. Tests set KdfParams.minimum().
KDF_PARAMS: KdfParams | None = None
#: Monotonic clock in seconds used for the idle lock (tests replace it).
clock: Callable[[], float] = time.monotonic
#: How often an open page re-checks the idle time without user activity (seconds).
IDLE_POLL_S = 30

VAULT = "vault"
LAST_ACTIVITY = "last_activity"
RECOVERY_KEY = "recovery_key_once"
SETTINGS = "settings"
NOTICE = "lock_notice"
#: The only session_state keys that survive a lock (no data in them).
KEEP_ON_LOCK = frozenset({NOTICE})


# ------------------------------------------------------------------------------------------------ state
def vault_path() -> Path:
    """Where the vault lives: ``$CRYSTALQC_VAULT`` or the vault's default location (read at every call)."""
    return default_vault_path()


def vault_exists() -> bool:
    return Vault.exists_at(vault_path())


def _unlocked_vault() -> Vault | None:
    vault = st.session_state.get(VAULT)
    return vault if isinstance(vault, Vault) and not vault.is_locked else None


def current_vault() -> Vault | None:
    """This session's unlocked vault, or None - also None once the idle time has run out, so callbacks that run
    before app.py's idle check (downloads, settings, buttons) cannot use a vault that is about to be locked."""
    return None if idle_expired() else _unlocked_vault()


def is_unlocked() -> bool:
    return current_vault() is not None


def require_vault() -> Vault:
    """This session's unlocked vault; stops the page (shows nothing more) when the session is locked."""
    vault = current_vault()
    if vault is None:
        st.stop()
    return vault


def user() -> str:
    """The name typed at unlock (recorded in the audit log)."""
    vault = current_vault()
    return vault.user if vault is not None else ""


def set_notice(kind: str, text: str) -> None:
    """A message for the lock screen: kind "error", "warning", "info" or "success"."""
    st.session_state[NOTICE] = (kind, text)


def pop_notice() -> tuple[str, str] | None:
    return st.session_state.pop(NOTICE, None)


def recovery_key_pending() -> str | None:
    """The recovery key of a vault created in this session until the user confirms writing it down."""
    return st.session_state.get(RECOVERY_KEY)


def confirm_recovery_key_written() -> None:
    """Forget the recovery key (it is never shown again)."""
    st.session_state.pop(RECOVERY_KEY, None)


# ------------------------------------------------------------------------------------------------ unlock / lock
def _start(vault: Vault) -> None:
    _clear_session()
    st.session_state.pop(NOTICE, None)
    st.session_state[VAULT] = vault
    st.session_state[LAST_ACTIVITY] = clock()
    try:
        migrated = migrate_stored_settings(vault, user=vault.user)
    except (VaultError, OSError) as e:  # reading applies the same migration in memory; it is written next time
        logger.warning("the settings could not be migrated now: %s", type(e).__name__)
        migrated = {}
    try:
        st.session_state[SETTINGS] = load_settings(vault)
    except VaultError as e:
        st.session_state[SETTINGS] = AppSettings()
        set_notice("warning", f"The saved settings could not be read, the defaults are used: {e}")
        return
    if "confidence_threshold" in migrated:
        old, new = migrated["confidence_threshold"]
        set_notice("info", f"Settings updated for this version: the confidence floor was {old:g}, the default of "
                           f"earlier versions, and is now {new:g}, so crystals the model scores from {new:g} and the "
                           "segmentation confirms are counted. A QC lead can change it on the Settings screen; the "
                           "change is in the audit log.")


def create_vault(name: str, passphrase: str, repeat: str) -> None:
    """Create the vault at :func:`vault_path`, unlock this session and keep the recovery key for ONE display.

    Raises:
        InputRejectedError: empty name, short passphrase, entries differ. VaultExistsError, OSError.
    """
    name = check_user_name(name)
    check_new_passphrase(passphrase, repeat)
    vault, recovery_key = Vault.create(vault_path(), passphrase, kdf_params=KDF_PARAMS, user=name)
    _start(vault)
    st.session_state[RECOVERY_KEY] = recovery_key


def unlock(name: str, passphrase: str) -> None:
    """Unlock with the passphrase (audited as ``unlock_ok`` by the vault).

    Raises:
        InputRejectedError: empty name. WrongPassphraseError (generic message; the attempt is recorded with
        ``Vault.record_failed_unlock``). VaultError: missing, damaged or rolled-back vault.
    """
    name = check_user_name(name)
    path = vault_path()
    try:
        vault = Vault.open(path, passphrase, user=name)
    except WrongPassphraseError:
        _record_failure(path, name)
        raise
    _start(vault)


def unlock_with_recovery_key(name: str, recovery_key: str, new_passphrase: str, repeat: str) -> None:
    """Unlock with the recovery key and set a new passphrase at once (for a forgotten passphrase).

    Raises:
        InputRejectedError: empty name or unacceptable new passphrase (checked before anything is derived).
        RecoveryKeyFormatError (typo), WrongRecoveryKeyError (recorded as a failed unlock), VaultError.
    """
    name = check_user_name(name)
    check_new_passphrase(new_passphrase, repeat)
    path = vault_path()
    try:
        vault = Vault.open_with_recovery_key(path, recovery_key, user=name)
    except WrongPassphraseError:  # WrongRecoveryKeyError derives from it
        _record_failure(path, name)
        raise
    try:
        vault.reset_passphrase(recovery_key, new_passphrase)
    except BaseException:
        vault.lock()
        raise
    _start(vault)
    set_notice("success", "Unlocked with the recovery key; the new passphrase is set.")


def _record_failure(path: Path, name: str) -> None:
    try:
        Vault.record_failed_unlock(path, user=name)
    except (VaultError, OSError) as e:
        logger.warning("could not record a failed unlock: %s", type(e).__name__)


def _drop_uploads() -> None:
    """Remove this session's files from Streamlit's in-memory upload manager (best effort)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    mgr = getattr(ctx, "uploaded_file_mgr", None) if ctx is not None else None
    if mgr is not None:
        mgr.remove_session_files(ctx.session_id)


def _clear_session() -> None:
    for key in list(st.session_state.keys()):
        if key not in KEEP_ON_LOCK:
            del st.session_state[key]


def lock(reason: str = "button") -> None:
    """Lock this session: audit ``lock``, wipe the vault keys, drop every session value and uploaded file."""
    vault = st.session_state.get(VAULT)
    if isinstance(vault, Vault) and not vault.is_locked:
        try:
            vault.audit.append("lock", user=vault.user, details={"reason": reason})
        except (VaultError, OSError) as e:
            logger.warning("could not record the lock in the audit log: %s", type(e).__name__)
        vault.lock()
    _clear_session()
    _drop_uploads()


def idle_limit_s() -> float:
    return float(settings().idle_lock_minutes) * 60.0


def idle_expired() -> bool:
    """True when this session is unlocked and has been idle longer than the idle setting."""
    last = st.session_state.get(LAST_ACTIVITY)
    return _unlocked_vault() is not None and last is not None and clock() - last > idle_limit_s()


def lock_if_idle() -> bool:
    """Lock (and leave a notice) when the idle time has run out; True when it locked."""
    if not idle_expired():
        return False
    minutes = settings().idle_lock_minutes
    lock("idle")
    set_notice("info", f"Locked after {minutes:g} minutes without activity.")
    return True


def enforce_idle_lock() -> bool:
    """Call first on every full run: lock when idle too long (returns True), else record activity now.
    A session whose vault object was locked elsewhere is cleaned up as well."""
    if lock_if_idle():
        return True
    if VAULT in st.session_state and _unlocked_vault() is None:
        lock("stale")
        return True
    if _unlocked_vault() is not None:
        st.session_state[LAST_ACTIVITY] = clock()
    return False


@st.fragment(run_every=IDLE_POLL_S)
def idle_watch() -> None:
    """Re-checked every IDLE_POLL_S seconds while a page is open; does not count as activity. (AppTest has no
    timers: the check itself, :func:`lock_if_idle`, is what app.py runs first on every run.)"""
    if lock_if_idle():
        st.rerun(scope="app")


# ------------------------------------------------------------------------------------------------ settings, audit
def settings() -> AppSettings:
    """This session's settings (loaded from the vault at unlock; defaults while locked)."""
    value = st.session_state.get(SETTINGS)
    return value if isinstance(value, AppSettings) else AppSettings()


def update_settings(**changes: object) -> None:
    """Apply ``changes`` (AppSettings field names), persist them in the vault and record ``settings_change``.

    Raises:
        TypeError: unknown field. ValueError: out of range. VaultError, OSError.
    """
    vault = current_vault()
    if vault is None:
        return
    new = replace(settings(), **changes)
    save_settings(vault, new, user=vault.user)
    st.session_state[SETTINGS] = new


def record(event: str, details: dict | None = None) -> None:
    """Append ``event`` to the audit log as this session's user (no-op when locked; failures are logged)."""
    vault = current_vault()
    if vault is None:
        return
    try:
        vault.audit.append(event, user=vault.user, details=details)
    except (VaultError, OSError) as e:
        logger.warning("could not record %s in the audit log: %s", event, type(e).__name__)


# ------------------------------------------------------------------------------------------------ rendering
def show_notice() -> None:
    """Show (once) the message left by a callback: errors of unlock attempts, lock reasons, save problems."""
    notice = pop_notice()
    if notice is not None:
        kind, text = notice
        {"error": st.error, "warning": st.warning, "success": st.success}.get(kind, st.info)(text)


def _idle_changed() -> None:
    try:
        update_settings(idle_lock_minutes=float(st.session_state["idle_minutes"]))
    except (CrystalQCError, ValueError, OSError) as e:
        set_notice("error", f"The setting could not be saved: {e}")


def render_session_controls() -> None:
    """Sidebar: who is signed in, the lock button, the idle-lock setting; starts the idle watch."""
    with st.sidebar:
        st.caption(f"Vault unlocked by **{user()}**")
        st.button("🔒 Lock", key="lock_button", on_click=lock, args=("button",), width="stretch")
        st.number_input("Lock after … minutes without activity", min_value=MIN_IDLE_MINUTES,
                        max_value=MAX_IDLE_MINUTES, value=float(settings().idle_lock_minutes), step=1.0,
                        key="idle_minutes", on_change=_idle_changed)
        idle_watch()
