"""Render one analysis result (metrics, images with class toggles and zoom, excluded objects with their reasons, size
charts, particle table, downloads); shared by the Analyze and History screens.

Downloads are bytes in memory; each click records ``export`` in the audit log (on_click). The overlay PNG and the PDF
report are made only when their button is clicked (Streamlit's deferred downloads), so reruns stay cheap and a
5 Mpx overlay is not encoded on every rerun.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np
import streamlit as st

from analysis.io import to_uint8
from analysis.overlay import render_overlay
from analysis.records import ImageResult
from analysis.report import excluded_table, particles_table
from analysis.errors import CrystalQCError
from analysis.stats import counted, summarize_result, summarize_results
from ui import session
from ui.analyses import AnalysisInfo
from ui.batch import Outcome, analysed, batch_csvs, overlay_png, overview_table, pooled_sizes, report_pdf
from ui.charts import cumulative_curve, size_histogram
from ui.viewer import PREVIEW_MAX_SIDE_PX, ZOOMS, crop, preview, zoom_window
from vault import VaultError

#: The object classes the overlay can show, with the toggle labels (colours as in analysis.overlay).
CLASS_TOGGLES: tuple[tuple[str, str], ...] = (
    ("crystal", "Show crystals"),
    ("agglomerate", "Show agglomerates"),
    ("border", "Show border particles"),
    ("excluded", "Show excluded"),
)

_TOGGLE_HELP = {"border": "particles cut by the image edge: not counted unless the border rule (Settings) counts them",
                "excluded": "dust, fibres, bubbles, out-of-focus and low-confidence objects, with a table of reasons"}


def record_export(details: dict) -> None:
    """on_click of a download button: record ``export`` (what was downloaded) in the audit log."""
    session.record("export", details)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "—"


def render_result(result: ImageResult, *, csvs: dict[str, bytes], analysis_id: str | None, key: str,
                  extra_downloads: Callable[[], None] | None = None,
                  original: Callable[[], np.ndarray] | None = None,
                  info: AnalysisInfo | None = None) -> None:
    """Show ``result``. ``csvs``: {"particles": bytes, "summary": bytes}; ``key`` prefixes the widget keys (one view
    per screen); ``extra_downloads`` renders more download buttons next to the others; ``original`` returns the
    image before cleaning (float32 (H, W)) for the before/after view, decoded only when asked for; ``info`` (the
    saved analysis) puts its product, lot and calibration profile on screen and in the PDF report."""
    summary = summarize_result(result)
    calibrated = result.pixel_size_um is not None
    unit, dv = summary.unit, summary.dvalues()

    row1, row2 = st.columns(4), st.columns(4)
    row1[0].metric("Crystals", summary.n_crystals)
    row1[1].metric("Agglomerates", summary.n_agglomerates)
    row1[2].metric("Excluded", summary.n_excluded, help="dust, fibres, bubbles, out-of-focus crystals and, unless "
                                                        "the border rule counts them, border particles")
    frac = summary.agglomerate_fraction
    row1[3].metric("Agglomerate fraction", f"{100 * frac:.1f} %" if np.isfinite(frac) else "—",
                   help="agglomerates / (crystals + agglomerates), by count")
    row2[0].metric(f"D10 ({unit})", _fmt(dv.d10), help="number-weighted equivalent circle diameter")
    row2[1].metric(f"D50 ({unit})", _fmt(dv.d50), help="number-weighted equivalent circle diameter")
    row2[2].metric(f"D90 ({unit})", _fmt(dv.d90), help="number-weighted equivalent circle diameter")
    row2[3].metric("Span", _fmt(dv.span), help="(D90 − D10) / D50, number-weighted, no unit")
    for warning in summary.warnings:
        st.warning(warning)
    for note in result.meta.notes:
        st.info(note)
    calibration = f"{result.pixel_size_um:g} µm/px" if calibrated else "uncalibrated: sizes in px"
    if info is not None and info.profile:
        calibration = f"profile {info.profile} ({calibration})"
    st.caption(f"{result.meta.width} × {result.meta.height} px, {result.meta.bit_depth}-bit"
               f" {result.meta.format.upper()} · {calibration} · detector: {result.detector} · {result.seconds:.2f} s"
               + (f" · product: {info.product or '—'} · lot: {info.lot or '—'} · operator: {info.operator or '—'}"
                  if info is not None else ""))

    shown = _render_images(result, original=original, key=key)
    _render_charts(result, summary, unit=unit, key=key)
    st.dataframe(particles_table([result]), hide_index=True, width="stretch")
    _render_downloads(result, csvs=csvs, analysis_id=analysis_id, key=key, shown=shown, info=info,
                      extra_downloads=extra_downloads)


def _render_images(result: ImageResult, *, original: Callable[[], np.ndarray] | None, key: str) -> tuple[str, ...]:
    """Cleaned/original image beside the overlay, with class toggles and zoom; returns the classes shown."""
    toggles = st.columns(len(CLASS_TOGGLES))
    shown = tuple(state for col, (state, label) in zip(toggles, CLASS_TOGGLES)
                  if col.toggle(label, value=state != "excluded", key=f"{key}_show_{state}",
                                help=_TOGGLE_HELP.get(state)))
    if result.cleaned is None:
        st.info("The cleaned image of this analysis was not kept.")
        return shown
    controls = st.columns([1, 1, 1, 1])
    show_original = original is not None and controls[0].toggle("Show original", value=False,
                                                                key=f"{key}_show_original",
                                                                help="the image before cleaning, in place of the "
                                                                     "cleaned one")
    zoom = controls[1].select_slider("Zoom", options=list(ZOOMS), value=1, key=f"{key}_zoom",
                                     format_func=lambda z: f"{z}×",
                                     help="at 2× and more, a part of the image at full resolution")
    window = None
    if zoom > 1:
        cx = controls[2].slider("Horizontal position (%)", 0, 100, 50, key=f"{key}_zoom_x")
        cy = controls[3].slider("Vertical position (%)", 0, 100, 50, key=f"{key}_zoom_y")
        window = zoom_window(*result.cleaned.shape[:2], zoom=zoom, centre_x_pct=cx, centre_y_pct=cy)
    left_image = result.cleaned
    if show_original:
        try:
            left_image = original()
        except (CrystalQCError, VaultError) as e:
            show_original = False
            st.warning(f"The original image could not be read from the vault: {e}")
    if window is not None:
        overlay = crop(render_overlay(result.cleaned, result.particles, include_border=result.include_border,
                                      show=shown), window)
        left_image = crop(left_image, window)
        where = f" · {zoom}× zoom, x {window[2]}–{window[3]} px, y {window[0]}–{window[1]} px"
    else:
        overlay = render_overlay(result.cleaned, result.particles, include_border=result.include_border, show=shown,
                                 max_side_px=PREVIEW_MAX_SIDE_PX)
        left_image = preview(left_image)
        where = ""
    left, right = st.columns(2)
    left.image(to_uint8(left_image), width="stretch",
               caption=("Original image (before cleaning)" if show_original else "Cleaned image") + where)
    right.image(overlay, width="stretch",
                caption="Detections: green crystal · orange agglomerate · blue on border (not counted)"
                        " · red excluded (D dust, F fibre, B bubble, OOF out of focus, FT too faint,"
                        " LC low confidence)" + where)
    if "excluded" in shown:
        table = excluded_table([result])
        if table.empty:
            st.caption("No objects were excluded in this image.")
        else:
            st.markdown(f"**Excluded objects and why** ({len(table)})")
            st.dataframe(table[["particle_id", "reason", "class", "confidence", "ecd_px", "ecd_um", "x_min", "y_min",
                                "x_max", "y_max", "focus_score", "on_border"]],
                         hide_index=True, width="stretch", key=f"{key}_excluded_table")
    return shown


def _render_charts(result: ImageResult, summary, *, unit: str, key: str) -> None:
    kept = counted(result.particles, include_border=result.include_border)
    scale = result.pixel_size_um or 1.0
    ecd = np.array([p.ecd_px * scale for p in kept], dtype=float)
    weighting = st.radio("Weighting", ["number", "volume"], horizontal=True, key=f"{key}_weighting")
    log_axis = st.toggle("Logarithmic size axis", value=False, key=f"{key}_log_axis")
    dvw = summary.dvalues(weighting)
    c1, c2 = st.columns(2)
    c1.plotly_chart(size_histogram(ecd, unit=unit, weighting=weighting, log=log_axis, dvalues=dvw),
                    width="stretch", key=f"{key}_hist")
    c2.plotly_chart(cumulative_curve(ecd, unit=unit, log=log_axis), width="stretch", key=f"{key}_cum")


def _render_downloads(result: ImageResult, *, csvs: dict[str, bytes], analysis_id: str | None, key: str,
                      shown: tuple[str, ...], info: AnalysisInfo | None,
                      extra_downloads: Callable[[], None] | None) -> None:
    stem = result.name.rsplit(".", 1)[0] or "analysis"
    row = st.container(horizontal=True)  # buttons side by side, wrapping on narrow screens

    def audit(file_name: str) -> dict:
        return {"on_click": record_export,
                "args": ({"analysis_id": analysis_id, "image": result.name, "file": file_name},)}

    for report in ("particles", "summary"):
        file_name = f"{stem}_{report}.csv"
        row.download_button(f"Download {report} CSV", csvs[report], file_name=file_name, mime="text/csv",
                            key=f"{key}_dl_{report}", **audit(file_name))
    cleaned = result.cleaned
    if cleaned is not None:
        file_name = f"{stem}_overlay.png"
        row.download_button("Download overlay PNG", lambda: overlay_png(result, cleaned, show=shown),
                                file_name=file_name, mime="image/png", key=f"{key}_dl_overlay",
                                help="full resolution, with the classes shown above", **audit(file_name))
    operator = session.user()  # read now: the deferred callable runs outside this script run
    outcome = Outcome(result.name, info.source if info else "upload", result=result, info=info)
    file_name = f"{stem}_report.pdf"
    row.download_button("Download PDF report", lambda: report_pdf([outcome], operator=operator, cleaned=cleaned),
                            file_name=file_name, mime="application/pdf", key=f"{key}_dl_pdf",
                            help="one page: overlay, counts, D-values, histogram, model, calibration, labels",
                            **audit(file_name))
    if extra_downloads is not None:
        with row:
            extra_downloads()


def render_batch_summary(outcomes: Sequence[Outcome], *, key: str) -> None:
    """The batch view: one row per image (failed ones too), pooled counts and D-values of the analysed images, the
    pooled histogram and cumulative curve, and the batch's CSVs and PDF report (each download audited)."""
    st.dataframe(overview_table(outcomes), hide_index=True, width="stretch", key=f"{key}_overview")
    results = analysed(outcomes)
    if not results:
        return
    pooled = summarize_results(results)
    unit, dv = pooled.unit, pooled.dvalues()
    cols = st.columns(3) + st.columns(3)
    cols[0].metric("Crystals (batch)", pooled.n_crystals)
    cols[1].metric("Agglomerates (batch)", pooled.n_agglomerates)
    frac = pooled.agglomerate_fraction
    cols[2].metric("Agglomerate fraction (batch)", f"{100 * frac:.1f} %" if math.isfinite(frac) else "—")
    for col, name, value in ((cols[3], "D10", dv.d10), (cols[4], "D50", dv.d50), (cols[5], "D90", dv.d90)):
        col.metric(f"{name} (batch, {unit})", _fmt(value), help="all images pooled, number-weighted")
    for warning in pooled.warnings:
        st.warning(f"Batch: {warning}")
    ecd = pooled_sizes(results)
    c1, c2 = st.columns(2)
    c1.plotly_chart(size_histogram(ecd, unit=unit, dvalues=dv), width="stretch", key=f"{key}_batch_hist")
    c2.plotly_chart(cumulative_curve(ecd, unit=unit), width="stretch", key=f"{key}_batch_cum")

    csvs = batch_csvs(outcomes)
    ids = [o.info.analysis_id for o in outcomes if o.info is not None]
    operator = session.user()  # read now: the deferred callable runs outside this script run
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    row = st.container(horizontal=True)
    for report in ("particles", "summary"):
        file_name = f"batch_{stamp}_{report}.csv"
        row.download_button(f"Download batch {report} CSV", csvs[report], file_name=file_name, mime="text/csv",
                            key=f"{key}_batch_dl_{report}", on_click=record_export,
                            args=({"analysis_ids": ids, "file": file_name},))
    file_name = f"batch_{stamp}_report.pdf"
    frozen = list(outcomes)
    row.download_button("Download batch PDF report", lambda: report_pdf(frozen, operator=operator),
                       file_name=file_name, mime="application/pdf", key=f"{key}_batch_dl_pdf", on_click=record_export,
                       args=({"analysis_ids": ids, "file": file_name},))
