"""Lock screen: create the vault on first start, otherwise unlock it (with the passphrase or the recovery key).
Passphrase fields are cleared after every attempt."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from analysis.errors import CrystalQCError
from ui import session
from ui.passphrase import MIN_CHARS, passphrase_strength

SECRET_KEYS = ("create_pass", "create_repeat", "unlock_pass", "recovery_key", "recovery_new", "recovery_repeat")


def _attempt(action: Callable[..., None], *keys: str) -> None:
    """on_click: run ``action`` with the values of widget ``keys``; show its error; clear every secret field."""
    try:
        action(*(st.session_state.get(k, "") for k in keys))
    except CrystalQCError as e:
        session.set_notice("error", str(e))
    except OSError as e:
        session.set_notice("error", f"The vault folder cannot be written ({e.strerror or type(e).__name__}):"
                                    f" check {session.vault_path()} and the free disk space.")
    finally:
        for k in SECRET_KEYS:
            if k in st.session_state:
                st.session_state[k] = ""


def _strength_hint(passphrase: str) -> None:
    if passphrase:
        s = passphrase_strength(passphrase)
        (st.error, st.warning, st.info, st.success)[s.level](s.hint)


if not session.vault_exists():
    st.title("Welcome to crystal QC: create your vault")
    st.write("Everything crystal QC keeps (images, results, reports, settings) is stored encrypted in one folder,"
             f" the vault, at `{session.vault_path()}`. Choose a passphrase of at least {MIN_CHARS} characters;"
             " a few unrelated words are strong and easy to remember. You will also get a recovery key.")
    st.text_input("Your name (recorded in the audit log)", key="create_name", max_chars=128)
    st.text_input("Passphrase", type="password", key="create_pass")
    _strength_hint(st.session_state.get("create_pass", ""))
    st.text_input("Repeat the passphrase", type="password", key="create_repeat")
    st.button("Create the vault", type="primary", key="create_vault", on_click=_attempt,
              args=(session.create_vault, "create_name", "create_pass", "create_repeat"))
else:
    st.title("crystal QC is locked")
    st.text_input("Your name (recorded in the audit log)", key="unlock_name", max_chars=128)
    mode = st.radio("Unlock with", ["Passphrase", "Recovery key"], horizontal=True, key="unlock_mode")
    if mode == "Passphrase":
        st.text_input("Passphrase", type="password", key="unlock_pass")
        st.button("Unlock", type="primary", key="unlock", on_click=_attempt,
                  args=(session.unlock, "unlock_name", "unlock_pass"))
    else:
        st.caption("Forgot the passphrase? Type the recovery key you wrote down when the vault was created, and a"
                   " new passphrase.")
        st.text_input("Recovery key", type="password", key="recovery_key")
        st.text_input("New passphrase", type="password", key="recovery_new")
        _strength_hint(st.session_state.get("recovery_new", ""))
        st.text_input("Repeat the new passphrase", type="password", key="recovery_repeat")
        st.button("Unlock and set the new passphrase", type="primary", key="unlock_recovery", on_click=_attempt,
                  args=(session.unlock_with_recovery_key, "unlock_name", "recovery_key", "recovery_new",
                        "recovery_repeat"))
