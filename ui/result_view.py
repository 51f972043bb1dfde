"""Render one analysis result (metrics, images, size charts, particle table, CSV downloads); shared by the Analyze and
History screens. Downloads are bytes in memory; each click records ``export`` in the audit log (on_click)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st

from analysis.io import to_uint8
from analysis.overlay import render_overlay
from analysis.records import ImageResult
from analysis.report import particles_table
from analysis.stats import counted, summarize_particles
from ui import session
from ui.charts import cumulative_curve, size_histogram


def record_export(details: dict) -> None:
    """on_click of a download button: record ``export`` (what was downloaded) in the audit log."""
    session.record("export", details)


def render_result(result: ImageResult, *, csvs: dict[str, bytes], analysis_id: str | None, key: str,
                  extra_downloads: Callable[[], None] | None = None,
                  original: Callable[[], np.ndarray] | None = None) -> None:
    """Show ``result``. ``csvs``: {"particles": bytes, "summary": bytes}; ``key`` prefixes the widget keys (one view
    per screen); ``extra_downloads`` renders more download buttons next to the CSVs; ``original`` returns the image
    before cleaning (float32 (H, W)) for the before/after view, decoded only when asked for."""
    summary = summarize_particles(result.particles, pixel_size_um=result.pixel_size_um,
                                  include_border=result.include_border,
                                  image_area_px=float(result.meta.width * result.meta.height))
    calibrated = result.pixel_size_um is not None
    unit = "µm" if calibrated else "px"
    dv = summary.number_um if calibrated else summary.number

    cols = st.columns(6)
    cols[0].metric("Crystals", summary.n_crystals)
    cols[1].metric("Agglomerates", summary.n_agglomerates)
    cols[2].metric("Excluded", summary.n_excluded, help="dust, fibres, bubbles, out-of-focus crystals: not counted")
    cols[3].metric(f"D10 ({unit})", f"{dv.d10:.3g}" if np.isfinite(dv.d10) else "—")
    cols[4].metric(f"D50 ({unit})", f"{dv.d50:.3g}" if np.isfinite(dv.d50) else "—")
    cols[5].metric(f"D90 ({unit})", f"{dv.d90:.3g}" if np.isfinite(dv.d90) else "—")
    for warning in summary.warnings:
        st.warning(warning)
    for note in result.meta.notes:
        st.info(note)
    st.caption(f"{result.meta.width} × {result.meta.height} px, {result.meta.bit_depth}-bit"
               f" {result.meta.format.upper()} · detector: {result.detector} · {result.seconds:.2f} s")

    show_excluded = st.toggle("Show excluded objects", value=False, key=f"{key}_show_excluded")
    show_original = original is not None and st.toggle("Show the original (before cleaning)", value=False,
                                                      key=f"{key}_show_original")
    if result.cleaned is not None:
        states = ["crystal", "agglomerate", "border"] + (["excluded"] if show_excluded else [])
        left, right = st.columns(2)
        if show_original:
            left.image(to_uint8(original()), caption="Original image (before cleaning)", width="stretch")
        else:
            left.image(to_uint8(result.cleaned), caption="Cleaned image", width="stretch")
        right.image(render_overlay(result.cleaned, result.particles, include_border=result.include_border,
                                   show=states),
                    caption="Detections: green crystal · orange agglomerate · blue on border (not counted)"
                            " · red excluded", width="stretch")
    else:
        st.info("The cleaned image of this analysis was not kept.")

    kept = counted(result.particles, include_border=result.include_border)
    scale = result.pixel_size_um or 1.0
    ecd = np.array([p.ecd_px * scale for p in kept], dtype=float)
    weighting = st.radio("Weighting", ["number", "volume"], horizontal=True, key=f"{key}_weighting")
    log_axis = st.toggle("Logarithmic size axis", value=False, key=f"{key}_log_axis")
    dvw = dv if weighting == "number" else (summary.volume_um if calibrated else summary.volume)
    c1, c2 = st.columns(2)
    c1.plotly_chart(size_histogram(ecd, unit=unit, weighting=weighting, log=log_axis, dvalues=dvw),
                    width="stretch", key=f"{key}_hist")
    c2.plotly_chart(cumulative_curve(ecd, unit=unit, log=log_axis), width="stretch", key=f"{key}_cum")

    st.dataframe(particles_table([result]), hide_index=True, width="stretch")
    stem = result.name.rsplit(".", 1)[0] or "analysis"
    d1, d2, d3 = st.columns(3)
    for col, report in ((d1, "particles"), (d2, "summary")):
        file_name = f"{stem}_{report}.csv"
        col.download_button(f"Download {report} CSV", csvs[report], file_name=file_name, mime="text/csv",
                            key=f"{key}_dl_{report}", on_click=record_export,
                            args=({"analysis_id": analysis_id, "image": result.name, "file": file_name},))
    if extra_downloads is not None:
        with d3:
            extra_downloads()
