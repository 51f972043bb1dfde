"""Settings (placeholder while it is being built)."""
from __future__ import annotations

import streamlit as st

from ui import session

session.require_vault()
st.title("Settings")
st.info("This screen is being built.")
