"""Share with a researcher: researchers' public keys, and a QC lead's encrypted training-set export with a preview of
exactly what leaves the plant. Logic lives in collab.recipients / collab.dataset; this screen reads widgets and
renders. There is no role system yet: the QC lead confirms their role with a checkbox and the vault user is
recorded in the audit log with every export."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pandas as pd
import streamlit as st

from analysis.errors import CrystalQCError
from collab.crypto_age import short_fingerprint
from collab.dataset import Crop, ExportOptions, build_training_set, seal_export
from collab.recipients import add_researcher, get_researcher, list_researchers, remove_researcher
from ui import session
from ui.analyses import list_analyses
from vault import VaultError

PREVIEW = "share_preview_built"  # (signature of the inputs, TrainingSet)
SEALED = "share_sealed"  # (signature, encrypted bytes, file name)
MESSAGE = "share_message"
CROP_MODES = ("No crop", "Same margins for every image", "Margins per image")
SIDES = ("top", "bottom", "left", "right")


def _add_researcher() -> None:
    vault = session.current_vault()
    if vault is None:
        return
    try:
        r = add_researcher(vault, st.session_state.get("share_new_name", ""),
                           st.session_state.get("share_new_key", ""), user=vault.user)
        st.session_state[MESSAGE] = ("success", f"Added {r.name}; key fingerprint {short_fingerprint(r.fingerprint)}"
                                                " - compare it with the researcher by phone or in person.")
        st.session_state["share_new_name"] = ""
        st.session_state["share_new_key"] = ""
    except (CrystalQCError, ValueError, VaultError, OSError) as e:
        st.session_state[MESSAGE] = ("error", f"The key was not added: {e}")


def _remove_researcher(name: str) -> None:
    vault = session.current_vault()
    if vault is None:
        return
    try:
        remove_researcher(vault, name, user=vault.user)
        st.session_state[MESSAGE] = ("success", f"Removed {name}. Exports already sent stay readable by them.")
    except (CrystalQCError, VaultError, OSError) as e:
        st.session_state[MESSAGE] = ("error", str(e))


def _crop_inputs(ids: list[str], labels: dict[str, str]) -> tuple[Crop | None, dict[str, Crop]]:
    mode = st.radio("Cut off burnt-in scale bars or text (margins in px)", CROP_MODES, key="share_crop_mode",
                    horizontal=True)
    if mode == CROP_MODES[1]:
        cols = st.columns(4)
        values = {s: int(c.number_input(f"{s} (px)", min_value=0, max_value=10_000, step=10, key=f"share_crop_{s}"))
                  for s, c in zip(SIDES, cols)}
        return Crop(**values), {}
    if mode == CROP_MODES[2] and ids:
        table = pd.DataFrame([{"analysis": labels[i], **{s: 0 for s in SIDES}} for i in ids])
        edited = st.data_editor(table, disabled=["analysis"], hide_index=True, key="share_crop_table",
                                width="stretch")
        return None, {i: Crop(**{s: int(edited.iloc[n][s]) for s in SIDES}) for n, i in enumerate(ids)}
    return None, {}


def _preview(ts) -> None:
    st.subheader("Preview: exactly these files leave the plant")
    table = pd.DataFrame(ts.file_table())
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"{len(table)} files, {table['bytes'].sum() / 1e6:.2f} MB before encryption; {ts.n_images} images"
               f" re-encoded from their pixels (no metadata), random file names.")
    cols = st.columns(min(3, ts.n_images))
    for i, col in enumerate(cols):
        col.image(ts.thumbnail(i), caption=ts.manifest["images"][i]["image"], width="stretch")
    st.markdown("**manifest.json**")
    st.json(dict(ts.manifest), expanded=False)


vault = session.require_vault()
st.title("Share with a researcher")
st.caption("A QC lead can send one named researcher a training set built from saved analyses: images re-encoded"
           " from their pixels (every metadata field dropped), random file names, YOLO labels with the technicians'"
           " corrections, and a manifest without operator names. It is encrypted to that researcher's public key"
           " (age format) so nobody else can read it. See docs/privacy.md.")
message = st.session_state.pop(MESSAGE, None)
if message is not None:
    (st.success if message[0] == "success" else st.error)(message[1])

# ------------------------------------------------------------------------------------------------ researchers
st.subheader("Researchers")
try:
    researchers = list_researchers(vault)
except CrystalQCError as e:
    st.error(str(e))
    researchers = []
if researchers:
    st.dataframe(pd.DataFrame([{"researcher": r.name, "fingerprint": short_fingerprint(r.fingerprint),
                                "added by": r.added_by, "added": r.added} for r in researchers]),
                 hide_index=True, width="stretch")
with st.expander("Add a researcher's public key", expanded=not researchers):
    st.caption("The researcher runs `python -m collab.researcher keygen --out key.txt` (or `age-keygen`) and sends"
               " the public key, one line starting with age1. Compare the fingerprint shown after adding with them.")
    st.text_input("Name", key="share_new_name", placeholder="Dr. A. Researcher, Lab X")
    st.text_input("Public key", key="share_new_key", placeholder="age1…")
    st.button("Add researcher", key="share_add", on_click=_add_researcher)
if researchers:
    with st.expander("Remove a researcher"):
        gone = st.selectbox("Researcher", [r.name for r in researchers], key="share_remove_choice")
        st.button("Remove", key="share_remove", on_click=_remove_researcher, args=(gone,))

# ------------------------------------------------------------------------------------------------ export
st.subheader("Export a training set")
analyses = list_analyses(vault)
if not researchers:
    st.info("Add a researcher's public key first.")
    st.stop()
if not analyses:
    st.info("There are no saved analyses to export yet.")
    st.stop()

labels = {a.analysis_id: f"{a.created[:16].replace('T', ' ')} · {a.image_name} · {a.n_crystals} crystals"
          + (f" · {a.product}" if a.product else "") + (f" · lot {a.lot}" if a.lot else "")
          + ("" if a.valid else f" · INVALID: {a.invalid_reason}") for a in analyses}
ids = st.multiselect("Analyses (their corrected objects become the labels)", list(labels), format_func=labels.get,
                     key="share_analyses")
recipient_name = st.selectbox("Researcher", [r.name for r in researchers], key="share_recipient")
purpose = st.text_area("Purpose (what the researcher may use the data for)", key="share_purpose",
                       placeholder="Fine-tune the crystal detector on our micrographs")
c1, c2 = st.columns(2)
expires = c1.date_input("Expires on", value=date.today() + timedelta(days=90), min_value=date.today()
                        + timedelta(days=1), key="share_expires")
plant = c2.text_input("Plant pseudonym (the real site name is not needed)", key="share_plant",
                      placeholder="plant-A")
c3, c4 = st.columns(2)
include_product = c3.checkbox("Include product names", key="share_product")
include_lot = c4.checkbox("Include lot numbers", key="share_lot")
crop, crops = _crop_inputs(ids, labels)
signature = (tuple(ids), recipient_name, purpose, str(expires), plant, include_product, include_lot, crop,
             tuple(sorted(crops.items())))

if st.button("Build preview", key="share_preview", disabled=not ids):
    st.session_state.pop(SEALED, None)
    try:
        with st.spinner("Building the training set in memory…"):
            options = ExportOptions(purpose=purpose, expires=expires, plant=plant, include_product=include_product,
                                    include_lot=include_lot, crop=crop, crops=crops)
            ts = build_training_set(vault, ids, options, recipient=get_researcher(vault, recipient_name))
        st.session_state[PREVIEW] = (signature, ts)
    except (CrystalQCError, ValueError, VaultError, OSError) as e:
        st.session_state.pop(PREVIEW, None)
        st.error(f"The training set could not be built: {e}")

built = st.session_state.get(PREVIEW)
if built is not None and built[0] != signature:
    st.session_state.pop(PREVIEW, None)
    st.session_state.pop(SEALED, None)
    built = None
    st.info("The choices changed: build the preview again.")
if built is not None:
    ts = built[1]
    _preview(ts)
    confirmed = st.checkbox(f"I am the QC lead, I checked the preview, and these {len(ts.files)} files may leave the"
                            f" plant for {ts.recipient.name} until {ts.manifest['expires']}.", key="share_confirm")
    if st.button(f"Encrypt for {ts.recipient.name}", key="share_encrypt", disabled=not confirmed):
        try:
            sealed = seal_export(vault, ts, user=vault.user, qc_lead_confirmed=confirmed)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "-", f"crystal-qc-export-{ts.manifest['plant']}")
            st.session_state[SEALED] = (signature, sealed, f"{stem}-{ts.manifest['created'][:10]}.age")
        except (CrystalQCError, VaultError, OSError) as e:
            st.error(f"The export was not written: {e}")
    sealed = st.session_state.get(SEALED)
    if confirmed and sealed is not None and sealed[0] == signature:
        st.success(f"Encrypted for {ts.recipient.name} (key {short_fingerprint(ts.recipient.fingerprint)}) and"
                   " recorded in the audit log. Only their private key opens it.")
        st.download_button(f"Download {sealed[2]} ({len(sealed[1]) / 1e6:.2f} MB)", sealed[1], file_name=sealed[2],
                           mime="application/octet-stream", key="share_download")
        st.caption("The researcher opens it with `python -m collab.researcher decrypt FILE --identity key.txt --out"
                   " DIR` or the stock age tool: `age -d -i key.txt FILE > export.tar`.")
