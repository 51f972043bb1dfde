"""Audit log: every recorded event of the vault, newest first, and the result of the hash-chain check."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from analysis.errors import CrystalQCError
from ui import session

vault = session.require_vault()
st.title("Audit log")
try:
    ok, first_bad, message = vault.audit.verify()
    records = vault.audit.entries()
except CrystalQCError as e:
    st.error(f"The audit log cannot be read: {e}")
    st.stop()

if ok:
    st.success(f"Chain verified: {message}")
else:
    st.error(f"The audit chain is BROKEN (first problem at record {first_bad}): {message} The log was altered or"
             " damaged; keep this PC as it is and report it.")

st.dataframe(pd.DataFrame([{
    "#": r.seq, "time (UTC)": r.time, "user": r.user, "event": r.event,
    "details": json.dumps(r.details, ensure_ascii=False, sort_keys=True)} for r in reversed(records)],
    columns=["#", "time (UTC)", "user", "event", "details"]), hide_index=True, width="stretch")
