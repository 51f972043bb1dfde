"""Analyze: upload one or many micrographs (or pick a sample), pick the calibration profile, product and lot, and see
each image's result and the batch summary. Every analysis is saved in the vault with those labels.

When analysis runs: a sample or a single uploaded image is analysed at once (no extra click); several uploaded
images wait for the "Analyse" button, so the technician can finish adding files and labels first. Each image is
analysed once per detector and options (profile, thresholds): reruns and added files reuse what this session has
already done (ui.batch; session memory only, dropped at lock). Thresholds live on the Settings screen.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from analysis.errors import CrystalQCError
from analysis.io import load_image
from ui import batch, models, session
from ui.analyses import read_original, report_csvs
from ui.resources import active_detector, sample_images
from ui.result_view import render_batch_summary, render_result
from ui.settings import analysis_options
from vault import VaultError

RUNS = "analyze_runs"        # {run key: batch.Outcome} of this session (results without images); dropped at lock
VIEWED = "analyze_viewed"    # (run key, cleaned image) of the image being looked at; dropped at lock
LABELS = "analyze_labels"    # {"product", "lot", "profile"} as last entered: kept while the widgets are not shown
SAMPLE_NONE = "—"


def _remember_label(field: str) -> None:
    """on_change of a label widget: remember it beyond the widget's life (other screens drop widget state)."""
    st.session_state.setdefault(LABELS, {})[field] = st.session_state.get(f"label_{field}", "")


vault = session.require_vault()
prefs = session.settings()
remembered = st.session_state.get(LABELS, {})
st.title("Analyze an image")

with st.sidebar:
    st.subheader("This batch")
    profiles = batch.profile_options(prefs)
    profile = st.selectbox("Calibration profile", profiles, format_func=batch.profile_label,
                           index=batch.default_profile_index(prefs, remembered.get("profile")), key="label_profile",
                           on_change=_remember_label, args=("profile",),
                           help="µm per pixel of the microscope and objective; add profiles on the Settings screen")
    product = st.text_input("Product", value=remembered.get("product", ""), key="label_product", max_chars=80,
                            on_change=_remember_label, args=("product",))
    lot = st.text_input("Lot", value=remembered.get("lot", ""), key="label_lot", max_chars=80,
                        on_change=_remember_label, args=("lot",))
    st.caption("The labels are saved with each analysis run after they are set. Thresholds, the detector and the "
               "border rule are on the Settings screen.")

uploads = st.file_uploader("Micrographs (PNG, JPEG, TIFF or BMP; one or many)",
                           type=["png", "jpg", "jpeg", "tif", "tiff", "bmp"], accept_multiple_files=True,
                           key="upload")
samples = sample_images()
sample_name = st.selectbox("…or try a sample image", [SAMPLE_NONE] + [p.name for p in samples], key="sample")

items: list[batch.Item] = []
for up in uploads or []:
    items.append(batch.Item(up.name, "upload", f"upload:{up.file_id}", up.getvalue))
if not items and sample_name != SAMPLE_NONE:
    path = next(p for p in samples if p.name == sample_name)
    stat = path.stat()
    items.append(batch.Item(path.name, "sample", f"sample:{path.name}:{stat.st_size}:{stat.st_mtime_ns}",
                            path.read_bytes))
if not items:
    st.info("Upload one or more micrographs, or pick a sample, to start. Every analysis is saved in the encrypted "
            "vault with the calibration profile, product and lot chosen in the sidebar.")
    st.stop()

try:
    labels = batch.check_labels(product, lot, profile=profile)
    options = analysis_options(prefs, profile=profile)
except ValueError as e:
    st.error(f"{e} Correct it in the sidebar to analyse.")
    st.stop()


try:
    active_model = models.active_model(vault)
except CrystalQCError as e:
    st.error(f"The active model cannot be used: {e}")
    st.stop()
detector_id = f"{prefs.detector}:{active_model.sha256 if active_model else ''}"
runs: dict[str, batch.Outcome] = st.session_state.setdefault(RUNS, {})
keys = [batch.run_key(item.identity, detector_id=detector_id, options=options) for item in items]
pending = [(k, item) for k, item in zip(keys, items) if k not in runs]

if pending:
    auto = len(items) == 1
    label = f"Analyse {len(pending)} image{'s' if len(pending) > 1 else ''}"
    slot = st.empty()  # the button, then the progress bar, in one place; cleared when the batch is done
    if auto or slot.button(label, type="primary", key="analyze_run"):
        bar = slot.progress(0.0, text="Starting…")

        def _progress(done: int, total: int, name: str) -> None:
            bar.progress(done / max(total, 1), text=f"Analysing {name} ({done + 1} of {total})…" if name else "Done")

        try:
            detector = active_detector(vault, active_model, prefs.detector)
        except CrystalQCError as e:
            slot.empty()
            st.error(f"The detector cannot be loaded: {e}")
            st.stop()
        outcomes = batch.run_items([item for _, item in pending], detector=detector, options=options, vault=vault,
                                   user=vault.user, labels=labels, progress=_progress)
        for (k, _), outcome in zip(pending, outcomes):
            batch.remember(runs, k, outcome)
        slot.empty()
    else:
        st.info(f"{len(pending)} of {len(items)} images are ready to be analysed with "
                f"{batch.profile_label(profile)}; press “{label}”.")

done = [(k, runs[k]) for k in keys if k in runs]
if not done:
    st.stop()

for _, outcome in done:
    message = outcome.message()
    if message is not None:
        (st.error if message[0] == "error" else st.warning)(message[1])

saved = [o.info for _, o in done if o.info is not None]
if len(saved) == 1:
    st.caption(f"Saved in the vault as analysis {saved[0].analysis_id} (see History).")
elif saved:
    st.caption(f"{len(saved)} analyses saved in the vault (see History).")

viewable = [(k, o) for k, o in done if o.result is not None]
if len(done) > 1:
    st.subheader(f"Batch of {len(done)} images")
    render_batch_summary([o for _, o in done], key="analyze")
    st.divider()

if not viewable:
    st.stop()
if len(viewable) > 1:
    index = st.selectbox("Image to view", range(len(viewable)), key="analyze_view_image",
                         format_func=lambda i: f"{i + 1}. {viewable[i][1].name}")
else:
    index = 0
key, outcome = viewable[index]

cached = st.session_state.get(VIEWED)
if cached is not None and cached[0] == key:
    cleaned = cached[1]
else:
    st.session_state.pop(VIEWED, None)
    try:
        cleaned = batch.cleaned_image(outcome, vault)
    except (CrystalQCError, VaultError) as e:
        cleaned = None
        st.warning(f"The cleaned image could not be read from the vault: {e}")
    st.session_state[VIEWED] = (key, cleaned)
result = dataclasses.replace(outcome.result, cleaned=cleaned)
info = outcome.info


def _original():
    """The original of the viewed image, decrypted from the vault and decoded only when asked for."""
    return load_image(read_original(vault, info), name=result.name, max_pixels=options.max_pixels)[0]


render_result(result, csvs=report_csvs(result), analysis_id=info.analysis_id if info else None, key="analyze",
              original=_original if info is not None else None, info=info)
