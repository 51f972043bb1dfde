"""Plotly figures for size distributions (built from analysis.stats; no Streamlit calls here)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from analysis.stats import DValues, histogram


def size_histogram(ecd: np.ndarray, *, unit: str, weighting: str = "number", log: bool = False,
                   dvalues: DValues | None = None) -> go.Figure:
    """Histogram (% per bin) of equivalent circular diameters with D10/D50/D90 marked."""
    fig = go.Figure()
    if ecd.size:
        edges, pct = histogram(ecd, bins=30, log=log, weighting=weighting)
        centres = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
        fig.add_bar(x=centres, y=pct, width=np.diff(edges), marker_color="#009E73", name=f"{weighting}-weighted",
                    hovertemplate=f"ECD %{{x:.3g}} {unit}<br>%{{y:.2f}} %<extra></extra>")
        if dvalues is not None:
            for label, value in (("D10", dvalues.d10), ("D50", dvalues.d50), ("D90", dvalues.d90)):
                if np.isfinite(value):
                    fig.add_vline(x=value, line_dash="dash", line_color="#555",
                                  annotation_text=f"{label} {value:.3g}", annotation_position="top")
    fig.update_layout(
        xaxis_title=f"ECD ({unit})", yaxis_title=f"{weighting}-weighted share (%)", bargap=0.02,
        margin=dict(l=40, r=10, t=30, b=40), height=340, showlegend=False,
    )
    if log:
        fig.update_xaxes(type="log")
    return fig


def cumulative_curve(ecd: np.ndarray, *, unit: str, log: bool = False) -> go.Figure:
    """Cumulative undersize curves, number- and volume-weighted."""
    fig = go.Figure()
    if ecd.size:
        x = np.sort(ecd)
        n_cum = np.arange(1, x.size + 1) / x.size * 100
        v = x ** 3
        v_cum = np.cumsum(v) / v.sum() * 100
        fig.add_scatter(x=x, y=n_cum, mode="lines", name="number", line_shape="hv", line_color="#009E73")
        fig.add_scatter(x=x, y=v_cum, mode="lines", name="volume", line_shape="hv", line_color="#E69F00")
    fig.update_layout(xaxis_title=f"ECD ({unit})", yaxis_title="cumulative undersize (%)", height=340,
                      margin=dict(l=40, r=10, t=30, b=40))
    if log:
        fig.update_xaxes(type="log")
    return fig
