"""Review and correct: fix the detector's mistakes on a saved analysis (delete, change class, add a missed object by
drawing a box); the counts and D-values update at once, every correction is stored and audited (ui.corrections)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import streamlit as st

from analysis.errors import CrystalQCError
from analysis.stats import summarize_particles
from ui import session
from ui.analyses import IMAGES_PREFIX, entry_name, list_analyses, set_checked
from ui.corrections import (
    DETECTED_PART,
    EDITS_PART,
    MAX_EXPORT_ANALYSES,
    add_box,
    box_from_selection,
    delete_particles,
    export_labelled_dataset,
    load_review,
    review_figure,
    set_class,
    undo_last_edit,
)

logger = logging.getLogger(__name__)

#: Another screen may set this to the id of the analysis to open here.
REQUESTED = "review_analysis_id"
REVISION = "review_revision"  # bumped after every change: fresh chart and table widgets (their selections reset)
LAST_DRAG = "review_last_drag"
BOX_KEYS = ("review_box_x", "review_box_y", "review_box_w", "review_box_h")
#: (key, review, figure) of the analysis shown, so a rerun (every click on the chart or table) neither decrypts and
#: replays it again nor redraws its overlay. The key holds the stored result's and edit list's digests from the
#: vault index, so any change to them, by this session or another, loads afresh. Dropped at lock like all state.
LOADED = "review_loaded"


def _changed(message: str) -> None:
    st.session_state[REVISION] = st.session_state.get(REVISION, 0) + 1
    session.set_notice("success", message)


def _run(action, what: str, *args) -> None:
    """Run one correction from a button callback; problems become an error message, never a traceback."""
    vault = session.current_vault()
    if vault is None:
        return
    try:
        review = action(vault, *args, user=vault.user)
    except (CrystalQCError, OSError) as e:
        session.set_notice("error", f"Not changed: {e}")
        return
    summary = summarize_particles(review.result.particles, pixel_size_um=review.result.pixel_size_um,
                                  include_border=review.result.include_border)
    _changed(f"{what} Now {summary.n_crystals} crystals and {summary.n_agglomerates} agglomerates.")


def _add(analysis_id: str, class_name: str) -> None:
    x, y, w, h = (int(st.session_state.get(k) or 0) for k in BOX_KEYS)
    _run(lambda vault, *, user: add_box(vault, analysis_id, (x, y, x + w, y + h), class_name, user=user),
         f"Added a {class_name} in the box x {x}–{x + w}, y {y}–{y + h} px.")


def _delete(analysis_id: str, ids: tuple[int, ...]) -> None:
    _run(lambda vault, *, user: delete_particles(vault, analysis_id, ids, user=user),
         f"Deleted particle{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}.")


def _set_class(analysis_id: str, ids: tuple[int, ...], class_name: str) -> None:
    _run(lambda vault, *, user: set_class(vault, analysis_id, ids, class_name, user=user),
         f"Particle{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} marked as {class_name}.")


def _undo(analysis_id: str) -> None:
    _run(lambda vault, *, user: undo_last_edit(vault, analysis_id, user=user), "The last correction was undone.")


def _check(analysis_id: str, checked: bool) -> None:
    """Mark the analysis checked (its result is right) or remove the mark; problems become an error message."""
    vault = session.current_vault()
    if vault is None:
        return
    try:
        set_checked(vault, analysis_id, checked=checked, user=vault.user)
    except (CrystalQCError, ValueError, OSError) as e:
        session.set_notice("error", f"Not changed: {e}")
        return
    _changed("Marked as checked: this result now counts as a label of its image." if checked else
             "The checked mark was removed.")


def _stored_key(vault, analysis_id: str) -> tuple:
    """Digests of what :func:`load_review` reads that a correction changes (None where there is no entry), and the
    invalid and checked marks (index metadata only: marking an analysis rewrites the same bytes)."""
    entries = [vault.info(n) if vault.exists(n) else None
               for n in (entry_name(analysis_id, part) for part in ("result.json", EDITS_PART, DETECTED_PART))]
    marks = tuple(entries[0].meta.get(k) for k in ("invalidated", "checked")) if entries[0] is not None else None
    return (analysis_id, repr(marks), *(e.sha256 if e is not None else None for e in entries))


def _fmt(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "—"


vault = session.require_vault()
st.title("Review and correct")
items = list_analyses(vault)
if not items:
    st.info("No saved analyses yet: analyse an image on the Analyze page, then correct it here.")
    st.stop()

ids = [a.analysis_id for a in items]
wanted = st.session_state.pop(REQUESTED, None)
if wanted in ids:
    st.session_state["review_choice"] = wanted
# Labels stay the same while the analysis is corrected (a browser keeps showing a keyed widget's first labels).
labels = {a.analysis_id: f"{a.created} · {a.image_name}" for a in items}
choice = st.selectbox("Analysis", ids, format_func=labels.get, key="review_choice")
try:
    key = _stored_key(vault, choice)
    loaded = st.session_state.get(LOADED)
    if loaded is None or loaded[0] != key:
        review = load_review(vault, choice)
        loaded = (key, review, review_figure(review.result, manual_ids=review.manual_ids))
        st.session_state[LOADED] = loaded
except CrystalQCError as e:
    st.session_state.pop(LOADED, None)
    st.error(f"This analysis cannot be opened for review: {e}")
    st.stop()
_, review, figure = loaded
result, detected = review.result, review.detected
if not review.info.valid:
    st.warning(f"This analysis is marked INVALID ({review.info.invalid_reason}; by {review.info.invalid_by or 'a user'}"
               f"): it takes no corrections until it is restored on the History screen.")
rev = st.session_state.get(REVISION, 0)

# ---------------------------------------------------------------------------------------------- figures that update
now, before = (summarize_particles(r.particles, pixel_size_um=r.pixel_size_um, include_border=r.include_border)
               for r in (result, detected))
unit = now.unit
dv_now, dv_before = now.dvalues(), before.dvalues()
edited = bool(review.edits)
cols = st.columns(6)
cols[0].metric("Crystals", now.n_crystals, delta=now.n_crystals - before.n_crystals if edited else None,
               delta_color="off")
cols[1].metric("Agglomerates", now.n_agglomerates,
               delta=now.n_agglomerates - before.n_agglomerates if edited else None, delta_color="off")
cols[2].metric("Excluded", now.n_excluded, help="dust, fibres, bubbles, out-of-focus crystals: not counted")
for col, name in zip(cols[3:], ("d10", "d50", "d90")):
    value, old = getattr(dv_now, name), getattr(dv_before, name)
    col.metric(f"{name.upper()} ({unit})", _fmt(value), help=f"before corrections: {_fmt(old)} {unit}" if edited
               else None)
st.caption(f"{result.meta.width} × {result.meta.height} px · detector: {result.detector} · "
           + (f"{len(review.edits)} correction{'s' if len(review.edits) > 1 else ''} in force (changes shown against"
              " the detector's result)" if edited else "no corrections yet"))

# ---------------------------------------------------------------------------------------------- image and box
st.subheader("Image")
st.caption("Numbers are particle ids (as in the table). To add a missed object, drag a box around it on the image"
           " (box-select tool), check the box numbers below, then add it as a crystal or an agglomerate. Colours:"
           " green crystal · orange agglomerate · blue on border (not counted) · red excluded.")
event = st.plotly_chart(figure, on_select="rerun",
                        selection_mode="box", key=f"review_figure_{rev}", width="stretch")
try:
    dragged = box_from_selection(event["selection"] if event else None, width=result.meta.width,
                                 height=result.meta.height)
except (KeyError, TypeError):
    dragged = None
if dragged is not None and dragged != st.session_state.get(LAST_DRAG):
    st.session_state[LAST_DRAG] = dragged
    x0, y0, x1, y1 = dragged
    for key, value in zip(BOX_KEYS, (x0, y0, x1 - x0, y1 - y0)):
        st.session_state[key] = value

st.markdown("**Add a missed object** (box in image pixels: left x, top y, width, height)")
bcols = st.columns(6)
for col, key, label in zip(bcols, BOX_KEYS, ("x (px)", "y (px)", "width (px)", "height (px)")):
    col.number_input(label, min_value=0, step=1, key=key)
bcols[4].button("Add crystal", key="review_add_crystal", on_click=_add, args=(choice, "crystal"),
                width="stretch")
bcols[5].button("Add agglomerate", key="review_add_agglomerate", on_click=_add, args=(choice, "agglomerate"),
                width="stretch")

# ---------------------------------------------------------------------------------------------- particle table
st.subheader("Particles")
scale = result.pixel_size_um or 1.0
table = pd.DataFrame([{
    "id": p.particle_id, "class": p.class_name,
    "state": (f"excluded: {p.excluded_reason}" if p.excluded_reason else
              "on border (not counted)" if p.on_border and not result.include_border else "counted"),
    "source": "added by hand" if p.particle_id in review.manual_ids else "detector",
    f"ECD ({unit})": round(p.ecd_px * scale, 3), "confidence": round(p.confidence, 3),
    "x_min": p.x_min, "y_min": p.y_min, "x_max": p.x_max, "y_max": p.y_max} for p in result.particles],
    columns=["id", "class", "state", "source", f"ECD ({unit})", "confidence", "x_min", "y_min", "x_max", "y_max"])
st.caption("Select rows (the boxes at the left) to delete them or change their class.")
picked = st.dataframe(table, on_select="rerun", selection_mode="multi-row", hide_index=True, width="stretch",
                      key=f"review_table_{rev}")
rows = [r for r in picked["selection"]["rows"] if 0 <= r < len(table)] if picked else []
selected = tuple(int(table.iloc[r]["id"]) for r in rows)
tcols = st.columns(3)
tcols[0].button(f"Delete selected ({len(selected)})", key="review_delete", on_click=_delete,
                args=(choice, selected), disabled=not selected, width="stretch")
tcols[1].button("Make crystal", key="review_make_crystal", on_click=_set_class, args=(choice, selected, "crystal"),
                disabled=not selected, width="stretch")
tcols[2].button("Make agglomerate", key="review_make_agglomerate", on_click=_set_class,
                args=(choice, selected, "agglomerate"), disabled=not selected, width="stretch")

# ---------------------------------------------------------------------------------------------- edit list
st.subheader("Corrections")
if review.edits:
    what = {"delete": "deleted", "set_class": "class changed", "add_box": "added"}
    st.dataframe(pd.DataFrame([{
        "#": i, "when (UTC)": e.time, "who": e.user, "what": what[e.kind], "particle": e.particle_id,
        "class": e.class_name or "", "box (x0, y0, x1, y1 px)": "" if e.box is None else ", ".join(map(str, e.box))}
        for i, e in enumerate(review.edits, start=1)]), hide_index=True, width="stretch", key="review_edits")
else:
    st.caption("No corrections on this analysis yet. Every correction is listed here and in the audit log.")
st.button("Undo the last correction", key="review_undo", on_click=_undo, args=(choice,),
          disabled=not review.edits)

# ---------------------------------------------------------------------------------------------- checked mark
info = review.info
if info.checked_at:
    st.caption(f"Checked as right by {info.checked_by or 'a user'} at {info.checked_at} (UTC).")
    st.button("Remove the checked mark", key="review_uncheck", on_click=_check, args=(choice, False))
else:
    st.button("Mark as checked: the result is right", key="review_check", on_click=_check, args=(choice, True),
              disabled=not info.valid,
              help="After looking the result over (and correcting it where needed). A checked or corrected analysis"
                   " is a label of its image: it is exported as training data by default and new models are tested"
                   " on it before they are activated.")

# ---------------------------------------------------------------------------------------------- labelled data
st.subheader("Labelled training data")
stored_images = {e.name for e in vault.list(IMAGES_PREFIX)}  # one index read, not one per analysis
exportable = [a for a in items if f"{IMAGES_PREFIX}{a.image_sha256}" in stored_images]
names = {a.analysis_id: labels[a.analysis_id] for a in exportable}
default = [a.analysis_id for a in exportable if a.reviewed][:MAX_EXPORT_ANALYSES]
chosen = st.multiselect("Analyses to include", list(names), default=default, format_func=names.get,
                        key=f"review_export_ids_{len(default)}", max_selections=MAX_EXPORT_ANALYSES,
                        help="Corrected and checked analyses are chosen by default (again after each new one);"
                             " the others carry the detector's labels unchecked.")
st.caption("A zip of the original images (re-encoded, grey), YOLO label files from the corrected results and a"
           " data.yaml, for training the plant's own model. The download is recorded in the audit log.")
file_name = f"crystal-qc-labelled-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.zip"
chosen_ids = tuple(chosen)


def _zip() -> bytes:
    """Deferred download (runs when clicked, outside the script): no message text in logs, it may name images."""
    try:
        return export_labelled_dataset(vault, chosen_ids, user=vault.user, file_name=file_name)
    except (CrystalQCError, OSError) as e:
        logger.warning("labelled-data export failed: %s", type(e).__name__)
        raise RuntimeError("the labelled-data export failed") from None


st.download_button("Download labelled training data (zip)", _zip, file_name=file_name, mime="application/zip",
                   key="review_dl_labelled", disabled=not chosen_ids)
