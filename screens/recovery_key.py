"""Shown once, right after the vault was created: the recovery key and a confirmation that it was written down."""
from __future__ import annotations

import streamlit as st

from ui import session

key = session.recovery_key_pending()
if key is None:
    st.stop()
st.title("Your recovery key")
st.warning("Write this key down on paper now and keep it away from this PC. It is shown only this once. With it you"
           " can open the vault if the passphrase is forgotten; without both, the data is lost for good.")
st.code(key, language=None)
written = st.checkbox("I have written it down", key="recovery_written")
st.button("Continue", type="primary", disabled=not written, key="recovery_done",
          on_click=session.confirm_recovery_key_written)
