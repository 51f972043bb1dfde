"""History: the analyses saved in the vault; open one again (decrypted in memory only)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.errors import CrystalQCError
from ui import session
from ui.analyses import export_original, list_analyses, load_analysis, read_report
from ui.result_view import render_result

OPENED = "history_opened"  # StoredAnalysis of this session; dropped at lock


def _open(analysis_id: str) -> None:
    vault = session.current_vault()
    if vault is None:
        return
    try:
        st.session_state[OPENED] = load_analysis(vault, analysis_id)
    except CrystalQCError as e:
        st.session_state.pop(OPENED, None)
        session.set_notice("error", f"The analysis could not be opened: {e}")


vault = session.require_vault()
st.title("History")
items = list_analyses(vault)
if not items:
    st.info("No saved analyses yet: analyse an image on the Analyze page and it appears here.")
    st.stop()

st.dataframe(pd.DataFrame([{
    "saved (UTC)": a.created, "image": a.image_name, "crystals": a.n_crystals, "agglomerates": a.n_agglomerates,
    "D50": a.d50, "unit": a.unit, "pixel size (µm)": a.pixel_size_um, "detector": a.detector, "source": a.source,
    "id": a.analysis_id} for a in items]), hide_index=True, width="stretch")

labels = {a.analysis_id: f"{a.created} · {a.image_name} · {a.n_crystals} crystals" for a in items}
choice = st.selectbox("Analysis", list(labels), format_func=labels.get, key="history_choice")
st.button("Open", key="history_open", on_click=_open, args=(choice,), type="primary")

opened = st.session_state.get(OPENED)
if opened is None:
    st.stop()
st.subheader(f"{opened.info.image_name} — saved {opened.info.created}")
try:
    csvs = {r: read_report(vault, opened.info.analysis_id, r) for r in ("particles", "summary")}
except CrystalQCError as e:
    st.error(f"The reports of this analysis cannot be read: {e}")
    st.stop()
# The original may be large: a deferred download, decrypted (and audited as export) only when clicked.
render_result(opened.result, csvs=csvs, analysis_id=opened.info.analysis_id, key="history",
              extra_downloads=lambda: st.download_button(
                  "Download original image", lambda: export_original(vault, opened.info, user=vault.user),
                  file_name=opened.info.image_name, key="history_dl_original"))
