"""Review and correct a saved analysis: edits kept in the vault, the corrected result written back, labelled
training data exported (no Streamlit import; the screen is screens/review.py).

Vault names, next to those of ui.analyses (all encrypted)::

    analyses/<id>/detected.json   kind "result"  the detector's result as first saved (the bytes and index meta of the
                                                 original result.json, copied before the first correction)
    analyses/<id>/edits.json      kind "edits"   analysis.corrections edit list (the corrections in force, in order)
    analyses/<id>/result.json                    rewritten: the CORRECTED result = apply_edits(detected, edits); its
                                                 index meta carries the corrected counts, D50, span, ... and n_edits
    analyses/<id>/particles.csv, summary.csv     rewritten from the corrected result

So ``ui.analyses.load_analysis``, History, the reports and every export see the corrected result, while the detector
output stays recoverable (:func:`load_review` gives both). Writes go detected.json (once), edits.json, the CSVs,
result.json last: an interrupted correction leaves result.json one edit behind at worst, and the next correction puts
it right (:func:`load_review` always replays, so the Review screen shows the edits in force). Every correction and
every undo is recorded in the audit log as ``correction``; the audit log is the full history (an undone edit leaves
edits.json but stays in the log).
"""
from __future__ import annotations

import base64
import io
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from analysis.corrections import (
    CorrectionError,
    Edit,
    Replay,
    edits_from_json,
    edits_to_json,
    now_iso,
    replay_edits,
)
from analysis.io import encode_png, load_image, to_uint8
from analysis.labels import CLASS_NAMES, data_yaml, yolo_labels
from analysis.overlay import render_overlay
from analysis.records import ImageResult
# _info and _summary_meta are ui.analyses' own index readers/writers: reused so the corrected index meta has exactly
# the fields a freshly saved analysis has (counts, D50, span, agglomerate fraction, ...).
from ui.analyses import (WRITE_LOCK, AnalysisInfo, _info, _summary_meta, entry_name, load_analysis, read_original,
                         report_csvs)
from ui.archive import result_from_json, result_to_json
from vault import Vault

DETECTED_PART = "detected.json"
EDITS_PART = "edits.json"
#: Most analyses in one labelled-data export (the zip is built in memory).
MAX_EXPORT_ANALYSES = 100
#: Longest side (px) of the overlay picture in the review figure (coordinates stay full-image pixels).
FIGURE_MAX_SIDE_PX = 1600
_ID_COLOUR = "#C2008C"  # magenta: apart from the overlay's green/orange/blue/red, legible on light and dark images
_STEM_RE = re.compile(r"[^A-Za-z0-9._-]+")
_NOTHING_TO_CORRECT = "Choose what to correct first."


@dataclass(frozen=True, eq=False)
class Review:
    """A saved analysis opened for review: ``detected`` is the detector's result, ``edits`` the corrections in force
    (add_box edits carry their particle's id), ``result`` the corrected result (both results carry the stored
    cleaned image), ``manual_ids`` the ids of the particles added by hand."""

    info: AnalysisInfo
    detected: ImageResult
    edits: tuple[Edit, ...]
    result: ImageResult
    manual_ids: frozenset[int]


def load_review(vault: Vault, analysis_id: str) -> Review:
    """Open a saved analysis for review: the detector's result, the edits and their replay.

    Raises:
        ArchiveFormatError: bad id or unreadable record. CorrectionError: damaged edit list, or an edit that no longer
        fits (a damaged record). EntryNotFoundError, VaultCorruptedError.
    """
    stored = load_analysis(vault, analysis_id)
    detected_name = entry_name(analysis_id, DETECTED_PART)
    if vault.exists(detected_name):
        detected, _ = result_from_json(vault.get(detected_name), cleaned=stored.result.cleaned)
    else:
        detected = stored.result
    edits_name = entry_name(analysis_id, EDITS_PART)
    edits = edits_from_json(vault.get(edits_name)) if vault.exists(edits_name) else ()
    replay = replay_edits(detected, edits)
    return Review(info=stored.info, detected=detected, edits=replay.edits, result=replay.result,
                  manual_ids=replay.manual_ids)


def _editable_review(vault: Vault, analysis_id: str) -> Review:
    """:func:`load_review` for a change: raises CorrectionError when the analysis is marked invalid
    (ui.analyses.invalidate_analysis), before anything is replayed or written."""
    review = load_review(vault, analysis_id)
    if not review.info.valid:
        raise CorrectionError(f"This analysis was marked invalid by {review.info.invalid_by or 'a user'} "
                              f"({review.info.invalid_reason}); restore it on the History screen before correcting "
                              "it.")
    return review


def _store(vault: Vault, analysis_id: str, replay: Replay) -> AnalysisInfo:
    """Write detected.json (first time), edits.json, the CSVs and result.json (last) for ``replay``."""
    result_name = entry_name(analysis_id, "result.json")
    detected_name = entry_name(analysis_id, DETECTED_PART)
    if vault.exists(detected_name):
        detected_json = vault.get(detected_name)
    else:  # result.json is still the detector's own: keep it, bytes and meta
        detected_json = vault.get(result_name)
        vault.put(detected_name, detected_json, kind="result", meta=vault.info(result_name).meta)
    detected_meta = vault.info(detected_name).meta
    _, extra = result_from_json(detected_json)
    vault.put(entry_name(analysis_id, EDITS_PART), edits_to_json(replay.edits), kind="edits")
    corrected = replay.result
    for report, data in report_csvs(corrected).items():
        vault.put(entry_name(analysis_id, f"{report}.csv"), data, kind="report")
    n_edits = len(replay.edits)
    meta = {**detected_meta, **_summary_meta(corrected), "detector": corrected.detector, "n_edits": n_edits}
    # the checked mark (ui.analyses.set_checked) as result.json has it now: a copy in detected.json's meta is stale
    meta.pop("checked", None)
    checked = vault.info(result_name).meta.get("checked")
    if checked is not None:
        meta["checked"] = checked
    vault.put(result_name, result_to_json(corrected, extra={**extra, "n_edits": n_edits}), kind="result", meta=meta)
    return _info(analysis_id, meta)


def _audit_records(analysis_id: str, new_edits: Sequence[Edit], before: ImageResult) -> list[dict]:
    """``correction`` details of each edit of ``new_edits``, applied in order after ``before``; delete and set_class
    also record the class the particle had (``from_class``)."""
    classes = {p.particle_id: p.class_name for p in before.particles}
    out = []
    for edit in new_edits:
        details = {"analysis_id": analysis_id, "kind": edit.kind, "particle_id": edit.particle_id,
                   "class": edit.class_name, "box": None if edit.box is None else list(edit.box)}
        if edit.kind == "delete":
            details["from_class"] = classes.pop(edit.particle_id, None)
        else:
            if edit.kind == "set_class":
                details["from_class"] = classes.get(edit.particle_id)
            classes[edit.particle_id] = edit.class_name
        out.append(details)
    return out


def record_edits(vault: Vault, analysis_id: str, edits: Sequence[Edit], *, user: str) -> Review:
    """Apply ``edits`` after the analysis's existing ones, store everything and audit each as ``correction``
    (details: analysis_id, kind, particle_id, class, box; from_class for delete and set_class).

    All or nothing: when any edit does not fit (see analysis.corrections.apply_edits) nothing is stored or audited.
    Returns the review after the edits.

    Raises:
        CorrectionError: no edits, an edit does not fit (the message says why), or the analysis is marked invalid.
        As :func:`load_review`.
        VaultError, OSError from the vault.
    """
    if not edits:
        raise CorrectionError(_NOTHING_TO_CORRECT)
    with WRITE_LOCK:
        return _record(vault, analysis_id, _editable_review(vault, analysis_id), edits, user=user)


def _record(vault: Vault, analysis_id: str, review: Review, edits: Sequence[Edit], *, user: str) -> Review:
    """:func:`record_edits` on ``review``, which the caller loaded while holding ``WRITE_LOCK`` (still held)."""
    replay = replay_edits(review.detected, review.edits + tuple(edits))
    info = _store(vault, analysis_id, replay)
    for details in _audit_records(analysis_id, replay.edits[len(review.edits):], review.result):
        vault.audit.append("correction", user=user, details=details)
    return Review(info=info, detected=review.detected, edits=replay.edits, result=replay.result,
                  manual_ids=replay.manual_ids)


def delete_particles(vault: Vault, analysis_id: str, particle_ids: Sequence[int], *, user: str) -> Review:
    """Delete the particles ``particle_ids`` (one edit each). Raises as :func:`record_edits`."""
    time = now_iso()
    return record_edits(vault, analysis_id, [Edit("delete", particle_id=int(pid), user=user, time=time)
                                             for pid in particle_ids], user=user)


def set_class(vault: Vault, analysis_id: str, particle_ids: Sequence[int], class_name: str, *,
              user: str) -> Review:
    """Make the particles ``particle_ids`` ``class_name``; those already of that class are left alone.

    Raises:
        CorrectionError: every chosen particle already is ``class_name``. As :func:`record_edits`.
    """
    with WRITE_LOCK:  # one load serves the check and the edit
        review = _editable_review(vault, analysis_id)
        current = {p.particle_id: p.class_name for p in review.result.particles}
        todo = [int(pid) for pid in particle_ids if current.get(int(pid)) != class_name]
        if particle_ids and not todo:
            noun = "particle is" if len(particle_ids) == 1 else "particles are"
            raise CorrectionError(f"The chosen {noun} already {class_name}s: nothing to change.")
        if not todo:
            raise CorrectionError(_NOTHING_TO_CORRECT)
        time = now_iso()
        return _record(vault, analysis_id, review, [Edit("set_class", particle_id=pid, class_name=class_name,
                                                         user=user, time=time) for pid in todo], user=user)


def add_box(vault: Vault, analysis_id: str, box: Sequence[int], class_name: str, *, user: str) -> Review:
    """Add the object inside ``box`` (x0, y0, x1, y1 px, x1/y1 exclusive) as ``class_name``. Raises as
    :func:`record_edits` (box outside the image, inverted, too small, around a counted particle)."""
    try:
        box = tuple(int(v) for v in box)
    except (TypeError, ValueError) as e:
        raise CorrectionError("A box is four whole pixel numbers (x0, y0, x1, y1).") from e
    return record_edits(vault, analysis_id, [Edit("add_box", class_name=class_name, box=box, user=user,
                                                  time=now_iso())], user=user)


def undo_last_edit(vault: Vault, analysis_id: str, *, user: str) -> Review:
    """Take back the latest correction (the result is replayed without it); audited as ``correction`` with kind
    ``undo`` and the details of what was undone.

    Raises:
        CorrectionError: there is no correction to undo. As :func:`record_edits`.
    """
    with WRITE_LOCK:
        review = _editable_review(vault, analysis_id)
        if not review.edits:
            raise CorrectionError("There is no correction to undo on this analysis.")
        undone = review.edits[-1]
        replay = replay_edits(review.detected, review.edits[:-1])
        info = _store(vault, analysis_id, replay)
        [undone_details] = _audit_records(analysis_id, [undone], replay.result)
        del undone_details["analysis_id"]
        vault.audit.append("correction", user=user,
                           details={"analysis_id": analysis_id, "kind": "undo", "undone": undone_details})
    return Review(info=info, detected=review.detected, edits=replay.edits, result=replay.result,
                  manual_ids=replay.manual_ids)


# ------------------------------------------------------------------------------------------------ the figure
def review_figure(result: ImageResult, *, manual_ids: frozenset[int] = frozenset(),
                  max_side_px: int = FIGURE_MAX_SIDE_PX) -> go.Figure:
    """Plotly figure of the overlay (every particle, excluded ones too) with particle ids, for box selection.

    Data coordinates are pixel-edge coordinates of the full image (pixel (i, j) spans x j..j+1, y i..i+1; y grows
    downwards), whatever the picture was downscaled to (longest side ``max_side_px``), so a dragged box reads back
    with :func:`box_from_selection`. Ids are drawn at each box's top-left corner; hovering shows class and state.
    An invisible point in two image corners keeps box selection available when there is no particle.
    """
    width, height = int(result.meta.width), int(result.meta.height)
    base = result.cleaned if result.cleaned is not None else np.full((height, width), 0.5, np.float32)
    overlay = render_overlay(base, result.particles, include_border=result.include_border,
                             show=("crystal", "agglomerate", "border", "excluded"), max_side_px=max_side_px)
    dx, dy = width / overlay.shape[1], height / overlay.shape[0]
    source = "data:image/png;base64," + base64.b64encode(encode_png(overlay[..., ::-1])).decode("ascii")
    fig = go.Figure(go.Image(source=source, x0=dx / 2, y0=dy / 2, dx=dx, dy=dy, hoverinfo="skip"))
    particles = result.particles
    hover = [f"#{p.particle_id} {p.class_name}" + (" · added by hand" if p.particle_id in manual_ids else "")
             + (f" · excluded: {p.excluded_reason}" if p.excluded_reason else "")
             + (" · on border" if p.on_border else "") for p in particles]
    fig.add_scatter(x=[p.x_min for p in particles], y=[p.y_min for p in particles], mode="text",
                    text=[str(p.particle_id) for p in particles], textposition="top right",
                    textfont=dict(color=_ID_COLOUR, size=13, shadow="auto"), hovertext=hover,
                    selected=dict(textfont=dict(color=_ID_COLOUR)), unselected=dict(textfont=dict(color=_ID_COLOUR)),
                    hoverinfo="text", showlegend=False, name="particles")
    fig.add_scatter(x=[0, width], y=[0, height], mode="markers", marker=dict(opacity=0), hoverinfo="skip",
                    showlegend=False, name="frame")
    fig.update_xaxes(range=[0, width], showgrid=False, zeroline=False, constrain="domain", title="x (px)")
    fig.update_yaxes(range=[height, 0], showgrid=False, zeroline=False, scaleanchor="x", constrain="domain",
                     title="y (px)")
    fig.update_layout(dragmode="select", margin=dict(l=40, r=10, t=10, b=40), showlegend=False,
                      height=int(min(900, max(320, 900 * height / max(width, 1)))))
    return fig


def box_from_selection(selection: Mapping | None, *, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The last box dragged on :func:`review_figure` as (x0, y0, x1, y1) whole pixels (x1/y1 exclusive), or None.

    ``selection`` is the ``selection`` dict of ``st.plotly_chart(..., on_select="rerun", selection_mode="box")``:
    ``{"box": [{"x": [x0, x1], "y": [y0, y1], ...}, ...], ...}`` in the figure's pixel-edge coordinates. The box is
    widened to whole pixels and clipped to the image; None when there is no box or it misses the image.
    """
    boxes = (selection or {}).get("box") or []
    if not boxes:
        return None
    last = boxes[-1]
    try:
        xs = [float(v) for v in last["x"]]
        ys = [float(v) for v in last["y"]]
    except (KeyError, TypeError, ValueError):
        return None
    if len(xs) < 2 or len(ys) < 2 or not all(math.isfinite(v) for v in xs + ys):
        return None
    x0, x1 = max(0, math.floor(min(xs))), min(width, math.ceil(max(xs)))
    y0, y1 = max(0, math.floor(min(ys))), min(height, math.ceil(max(ys)))
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


# ------------------------------------------------------------------------------------------------ labelled data
def _stem(analysis_id: str, image_name: str) -> str:
    stem = image_name.rsplit(".", 1)[0] if "." in image_name else image_name
    stem = _STEM_RE.sub("_", stem).strip("._")[:60] or "image"
    return f"{analysis_id}_{stem}"


def labelled_image(vault: Vault, info: AnalysisInfo, result: ImageResult) -> bytes:
    """PNG bytes of the original image of a saved analysis, decoded by the safe loader (grey, as analysed) and
    re-encoded: sources deeper than 8 bits as 16-bit PNG, others as 8-bit. Nothing of the original file but its
    pixels survives (no metadata chunks, EXIF, ...).

    Raises:
        EntryNotFoundError: the original was deleted. InvalidImageError: it cannot be decoded. CorrectionError: its
        size differs from the analysis's.
    """
    image, meta = load_image(read_original(vault, info), name=info.image_name)
    if image.shape != (result.meta.height, result.meta.width):
        raise CorrectionError(f"The original image of {info.image_name} is {image.shape[1]} x {image.shape[0]} px"
                              f" but its analysis is {result.meta.width} x {result.meta.height} px.")
    if meta.bit_depth > 8:
        return encode_png(np.round(np.clip(image, 0.0, 1.0) * 65535.0).astype(np.uint16))
    return encode_png(to_uint8(image))


def export_labelled_dataset(vault: Vault, analysis_ids: Sequence[str], *, user: str,
                            file_name: str = "labelled-data.zip") -> bytes:
    """A zip (in memory) of YOLO training data made from saved (corrected) analyses, for the plant's own training:
    ``images/<id>_<name>.png`` (:func:`labelled_image`), ``labels/<id>_<name>.txt`` (analysis.labels.yolo_labels of
    the corrected result) and ``data.yaml``. Recorded as ``export`` in the audit log (file, ids, image and object
    counts) once the zip is complete.

    Raises:
        CorrectionError: no analysis, more than MAX_EXPORT_ANALYSES, or the same one twice. ArchiveFormatError,
        EntryNotFoundError, InvalidImageError, VaultError from reading the analyses (nothing is audited then).
    """
    ids = list(analysis_ids)
    if not ids:
        raise CorrectionError("Choose at least one analysis to export.")
    if len(ids) > MAX_EXPORT_ANALYSES:
        raise CorrectionError(f"At most {MAX_EXPORT_ANALYSES} analyses fit in one export; choose fewer.")
    if len(set(ids)) != len(ids):
        raise CorrectionError("An analysis was chosen twice.")
    buffer = io.BytesIO()
    n_objects = 0
    with zipfile.ZipFile(buffer, "w") as zf:
        for analysis_id in ids:
            stored = load_analysis(vault, analysis_id, with_cleaned=False)  # labels need the particles only
            stem = _stem(analysis_id, stored.info.image_name)
            labels = yolo_labels(stored.result, classes=CLASS_NAMES)
            n_objects += labels.count("\n")
            zf.writestr(f"images/{stem}.png", labelled_image(vault, stored.info, stored.result),
                        compress_type=zipfile.ZIP_STORED)  # PNG is compressed already
            zf.writestr(f"labels/{stem}.txt", labels, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("data.yaml", data_yaml(CLASS_NAMES), compress_type=zipfile.ZIP_DEFLATED)
    vault.audit.append("export", user=user, details={"what": "labelled training data", "file": file_name,
                                                     "analysis_ids": ids, "images": len(ids), "objects": n_objects})
    return buffer.getvalue()


__all__ = ["DETECTED_PART", "EDITS_PART", "MAX_EXPORT_ANALYSES", "Review", "load_review", "record_edits",
           "delete_particles", "set_class", "add_box", "undo_last_edit", "review_figure", "box_from_selection",
           "labelled_image", "export_labelled_dataset"]
