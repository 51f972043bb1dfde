"""Models: the active model, importing a signed researcher package (checks, sandbox, acceptance test), activation
and rollback, and the trusted keys. Logic lives in ui.models; this screen reads widgets and renders."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from analysis.errors import CrystalQCError
from detection.package import format_fingerprint
from ui import models, session
from ui.analyses import list_analyses
from ui.resources import active_detector, get_detector

IMPORTED = "models_imported"  # entry name of the package imported in this session (acceptance report shown)
MESSAGE = "models_message"
COMPARED = "models_compared"  # (entry, current detector label, report) of the last comparison of an accepted version


ROW_COLUMNS = ["model", "detector", "images", "count accuracy", "F1", "D50 error", models.SIZE_KEY, "s / image"]


def _acceptance_table(acceptance: dict) -> None:
    # reports stored before the sizing column (or the plant images) existed show it empty (or leave it out)
    st.markdown("Golden set (rendered micrographs):")
    st.dataframe(pd.DataFrame(acceptance.get("rows", []), columns=ROW_COLUMNS), hide_index=True, width="stretch")
    plant = acceptance.get("plant")
    if plant is not None:
        _plant_section(plant)
    worse = acceptance.get("worse", [])
    if worse:
        st.warning(f"The candidate is worse than the current model on: {', '.join(worse)}. Activate it only if you"
                   " have a reason to.")
    else:
        st.success("The candidate is at least as good as the current model on the golden set"
                   + (" and on this plant's reviewed images." if plant and plant.get("rows") else "."))


def _plant_section(plant: dict) -> None:
    """The plant's reviewed analyses: both models' rows, the paired difference, and where the labels came from."""
    st.markdown(f"This plant's reviewed analyses ({models.plant_summary(plant)}):")
    if not plant.get("rows"):
        st.info(f"At least {models.PLANT_MIN_IMAGES} reviewed analyses are needed to compare the models on this "
                "plant's own images. Review a few results on the Review screen (correct them, or mark them checked "
                "when they are right), then compare this version again under Accepted versions.")
        return
    st.dataframe(pd.DataFrame(plant["rows"], columns=ROW_COLUMNS), hide_index=True, width="stretch")
    st.caption(models.plant_difference_text(plant))


def _model_card(entry: models.ModelEntry | None) -> None:
    st.subheader("Active model")
    if entry is None:
        try:
            default = get_detector("auto").label
        except CrystalQCError as e:  # e.g. the shipped package fails its signature check
            st.error(f"No researcher model is active and the shipped model cannot be used: {e}")
            return
        st.info(f"No researcher model is active: the Analyze screen uses the shipped default ({default}).")
        return
    c1, c2 = st.columns(2)
    c1.markdown(f"**{entry.name} {entry.version}**  \nAuthor: {entry.author}  \nCreated: {entry.created}  \n"
                f"Classes: {', '.join(entry.classes)}")
    c2.markdown(f"sha256: `{entry.sha256[:16]}…`  \nSigned by key: `{format_fingerprint(entry.key_id)}`  \n"
                f"Imported {entry.imported} by {entry.imported_by}")
    if entry.metrics:
        st.caption("Researcher's metrics: " + json.dumps(entry.metrics, sort_keys=True)[:1000])


def _activate(entry_name: str) -> None:
    vault = session.current_vault()
    if vault is None:
        return
    try:
        entry = models.activate(vault, entry_name, user=vault.user)
        st.session_state[MESSAGE] = ("success", f"{entry.label} is now the active model.")
    except (CrystalQCError, OSError) as e:
        st.session_state[MESSAGE] = ("error", f"The model could not be activated: {e}")


def _roll_back() -> None:
    vault = session.current_vault()
    if vault is None:
        return
    try:
        entry = models.roll_back(vault, user=vault.user)
        st.session_state[MESSAGE] = ("success", "Rolled back to " + (entry.label if entry else "the shipped default")
                                     + ".")
    except (CrystalQCError, OSError) as e:
        st.session_state[MESSAGE] = ("error", f"The rollback failed: {e}")


vault = session.require_vault()
st.title("Models")
message = st.session_state.pop(MESSAGE, None)
if message is not None:
    (st.success if message[0] == "success" else st.error)(message[1])

try:
    active = models.active_model(vault)
except CrystalQCError as e:
    st.error(str(e))
    active = None
_model_card(active)
if active is not None:
    st.button("Roll back", key="rollback", on_click=_roll_back,
              help="Go back to the previously active model, or to the shipped default")

# ------------------------------------------------------------------------------------------------ import
st.subheader("Import a model package")
reviewed = sum(a.reviewed and a.valid for a in list_analyses(vault))  # the index only: nothing is decrypted
st.caption(f"The acceptance test compares the package with the model in use on rendered golden images and on up to "
           f"{models.PLANT_MAX_IMAGES} of this plant's reviewed analyses (corrected or checked on the Review screen) "
           f"once there are {models.PLANT_MIN_IMAGES}: there are {reviewed} now.")
upload = st.file_uploader("Signed model package (.cqcpkg)", type=["cqcpkg"], key="package_upload")
if upload is not None and st.button("Check and import", key="import_package"):
    data = upload.getvalue()
    try:
        with st.spinner("Checking the signature, the model and a first run in the sandbox…"):
            vp = models.check_package(vault, data)
        with st.spinner("Acceptance test on the golden set and this plant's reviewed analyses…"):
            candidate = models.detector_from_bytes(vp.model_bytes, name=vp.manifest.name,
                                                   version=vp.manifest.version)
            acceptance = models.acceptance_test(candidate, active_detector(vault, models.active_model(vault)),
                                                plant=models.plant_set(vault))
        entry = models.store_package(vault, data, vp, acceptance, user=vault.user)
        st.session_state[IMPORTED] = entry.entry
    except (CrystalQCError, OSError) as e:
        st.error(str(e))

imported = st.session_state.get(IMPORTED)
if imported is not None and vault.exists(imported):
    entry = next((m for m in models.installed_models(vault) if m.entry == imported), None)
    if entry is not None:
        st.markdown(f"**{entry.label}** by {entry.author} passed every check and is stored in the vault "
                    f"(signed by `{format_fingerprint(entry.key_id)}`). Acceptance test:")
        _acceptance_table(dict(entry.acceptance))
        if active is None or active.entry != entry.entry:
            st.button(f"Activate {entry.label}", key="activate_imported", on_click=_activate, args=(entry.entry,))

# ------------------------------------------------------------------------------------------------ versions
installed = models.installed_models(vault)
if installed:
    st.subheader("Accepted versions")
    st.dataframe(pd.DataFrame([{
        "model": m.name, "version": m.version, "author": m.author, "imported": m.imported, "by": m.imported_by,
        "sha256": m.sha256[:16], "active": "yes" if active is not None and active.entry == m.entry else ""}
        for m in installed]), hide_index=True, width="stretch")
    others = [m.entry for m in installed if active is None or m.entry != active.entry]
    if others:
        choice = st.selectbox("Switch to an accepted version", others, key="switch_choice")
        c1, c2 = st.columns(2)
        c1.button("Activate selected version", key="activate_selected", on_click=_activate, args=(choice,))
        if c2.button("Compare it with the model in use", key="compare_selected",
                     help="The acceptance test again: the golden set and this plant's reviewed analyses as they are"
                          " now (more may have been reviewed since the import)."):
            entry = next(m for m in installed if m.entry == choice)
            try:
                with st.spinner("Comparing on the golden set and this plant's reviewed analyses…"):
                    current = active_detector(vault, active)
                    st.session_state[COMPARED] = (choice, current.label,
                                                  models.compare_installed(vault, entry, current, user=vault.user))
            except (CrystalQCError, OSError) as e:
                st.error(f"The comparison could not be made: {e}")
        compared = st.session_state.get(COMPARED)
        if compared is not None and compared[0] == choice:
            st.markdown(f"**{choice.rsplit('/', 1)[-1]}** (candidate) against **{compared[1]}** (current):")
            _acceptance_table(compared[2])

# ------------------------------------------------------------------------------------------------ trusted keys
st.subheader("Trusted keys")
try:
    keys = models.list_trusted_keys(vault)
except CrystalQCError as e:
    st.error(str(e))
    keys = []
st.dataframe(pd.DataFrame([{"fingerprint": k.display, "label": k.label, "source": k.source, "added by": k.added_by,
                            "added": k.added} for k in keys]), hide_index=True, width="stretch")
removable = {k.fingerprint: f"{k.display} · {k.label}" for k in keys if k.source == "vault"}
if removable:
    with st.expander("Stop trusting a key"):
        st.caption("Packages signed by a removed key can no longer be imported; models already accepted stay"
                   " installed. The active model's key cannot be removed.")
        to_remove = st.selectbox("Key", list(removable), format_func=removable.get, key="key_remove_choice")
        if st.button("Remove this key", key="remove_key"):
            try:
                models.remove_trusted_key(vault, to_remove, user=vault.user)
            except (CrystalQCError, OSError) as e:
                st.error(str(e))
            else:
                st.session_state[MESSAGE] = ("success", f"Key {format_fingerprint(to_remove)} is no longer trusted.")
                st.rerun()
key_upload = st.file_uploader("Add a researcher's public key (.pub)", type=["pub"], key="key_upload")
if key_upload is not None:
    pem = key_upload.getvalue()
    try:
        fp = models.key_fingerprint(pem)
    except CrystalQCError as e:
        st.error(str(e))
        st.stop()
    st.markdown("Fingerprint of this key - compare it with the one the researcher read to you:")
    st.code(format_fingerprint(fp), language=None)
    if any(k.fingerprint == fp for k in keys):
        st.info("This key is already trusted.")
        st.stop()
    label = st.text_input("Whose key is it?", key="key_label", max_chars=200)
    confirmed = st.checkbox("I compared the fingerprint with the researcher (in person or by phone)",
                            key="key_confirm")
    if st.button("Trust this key", key="add_key", disabled=not (confirmed and label.strip())):
        try:
            models.add_trusted_key(vault, pem, label=label, user=vault.user)
        except (CrystalQCError, OSError) as e:
            st.error(str(e))
        else:
            st.session_state[MESSAGE] = ("success", f"Key {format_fingerprint(fp)} is now trusted.")
            st.rerun()  # the list above shows the new key
