"""History logic without Streamlit: filter saved analyses, pool particle sizes per lot, trend tables and the plotly
figures of the History screen (lot comparison, control charts). Invalidated analyses (``ui.analyses.
invalidate_analysis``) are listed, flagged, but never pooled or charted.

Filtering and trends read only the vault index (``ui.analyses.list_analyses``); only :func:`lot_sizes` decrypts the
stored results (the result JSON, in memory), because a lot comparison needs every particle.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.errors import CrystalQCError
from analysis.stats import counted, histogram
from analysis.trends import ControlChart
from ui.analyses import AnalysisInfo, entry_name
from ui.archive import result_from_json
from vault import Vault

#: How an empty lot or product label is shown (the stored label stays "").
NO_LABEL = "(none)"

#: Most analyses one lot comparison decrypts (each result JSON is read whole); narrow the filters beyond this.
MAX_COMPARE_ANALYSES = 500

UNITS: tuple[str, ...] = ("auto", "µm", "px")

#: Trend metrics: key -> (label, column of :func:`trend_table`).
METRICS: dict[str, str] = {
    "count": "Count (crystals + agglomerates)",
    "d50": "D50 (number-weighted)",
    "span": "Span (D90 - D10) / D50",
    "agglomerate_fraction": "Agglomerate fraction (by count)",
}

#: Okabe-Ito colours (readable with colour-vision deficiency), one per lot in turn.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


class HistoryError(CrystalQCError, ValueError):
    """The chosen analyses cannot be compared or charted as asked (mixed units, too many, unreadable)."""


def label(text: str) -> str:
    """A product/lot label for display: the label, or NO_LABEL for an empty one."""
    return text or NO_LABEL


def created_at(info: AnalysisInfo) -> datetime:
    """When the analysis was saved (UTC, aware); from ``created``, else the time in the analysis id."""
    try:
        when = datetime.fromisoformat(info.created)
    except ValueError:
        when = datetime.strptime(info.analysis_id[:16], "%Y%m%dT%H%M%SZ")
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def choices(items: Iterable[AnalysisInfo]) -> tuple[list[str], list[str]]:
    """The distinct products and lots (sorted; "" included when some analysis has no label)."""
    items = list(items)
    return sorted({a.product for a in items}), sorted({a.lot for a in items})


def filter_analyses(items: Iterable[AnalysisInfo], *, start_date: date | None = None, end_date: date | None = None,
                    products: Sequence[str] = (), lots: Sequence[str] = (), text: str = "") -> list[AnalysisInfo]:
    """The analyses saved (UTC date) from ``start_date`` to ``end_date`` (both inclusive; None = open end), with a
    product in ``products`` and a lot in ``lots`` (empty = any; "" selects unlabelled ones), and ``text`` found
    (case-insensitive) in the image name, product, lot, operator, calibration profile or id. Order is kept.

    Raises:
        HistoryError: ``start_date`` after ``end_date``.
    """
    if start_date is not None and end_date is not None and start_date > end_date:
        raise HistoryError(f"The start date {start_date} is after the end date {end_date}.")
    needle = text.strip().casefold()
    out = []
    for a in items:
        day = created_at(a).date()
        if (start_date is not None and day < start_date) or (end_date is not None and day > end_date):
            continue
        if (products and a.product not in products) or (lots and a.lot not in lots):
            continue
        if needle and not any(needle in s.casefold() for s in (a.image_name, a.product, a.lot, a.operator,
                                                                a.profile, a.analysis_id)):
            continue
        out.append(a)
    return out


def valid_only(items: Iterable[AnalysisInfo]) -> list[AnalysisInfo]:
    """The analyses not marked invalid (order kept): the only ones compared and charted."""
    return [a for a in items if a.valid]


def status_text(info: AnalysisInfo) -> str:
    """"valid", or "INVALID: reason (by user, time)"."""
    if info.valid:
        return "valid"
    who = ", ".join(x for x in (info.invalid_by, info.invalid_at) if x)
    return f"INVALID: {info.invalid_reason}" + (f" ({who})" if who else "")


def review_text(info: AnalysisInfo) -> str:
    """What a person did to the result on the Review screen: "", "2 corrections", "checked by ann" or both."""
    parts = [f"{info.n_edits} correction{'s' if info.n_edits != 1 else ''}"] if info.n_edits else []
    if info.checked_at:
        parts.append(f"checked by {info.checked_by or 'a user'}")
    return ", ".join(parts)


def history_table(items: Sequence[AnalysisInfo]) -> pd.DataFrame:
    """The list shown on the History screen, one row per analysis, in the order given."""
    return pd.DataFrame([{
        "status": status_text(a), "reviewed": review_text(a), "saved (UTC)": a.created, "image": a.image_name,
        "product": a.product, "lot": a.lot,
        "crystals": a.n_crystals, "agglomerates": a.n_agglomerates, "D50": a.d50, "unit": a.unit, "span": a.span,
        "agglomerate fraction": a.agglomerate_fraction, "pixel size (µm)": a.pixel_size_um, "operator": a.operator,
        "detector": a.detector, "source": a.source, "id": a.analysis_id} for a in items],
        columns=["status", "reviewed", "saved (UTC)", "image", "product", "lot", "crystals", "agglomerates", "D50", "unit", "span",
                 "agglomerate fraction", "pixel size (µm)", "operator", "detector", "source", "id"])


# ------------------------------------------------------------------------------------------------ lot pooling
@dataclass(frozen=True, eq=False)
class LotSizes:
    """Counted particle sizes (ECD, number of particles = array length) pooled per lot, all in ``unit``.
    ``n_analyses`` = analyses pooled per lot. Lots keep the order of first appearance."""

    unit: str
    sizes: dict[str, np.ndarray]
    n_analyses: dict[str, int]


def comparison_unit(infos: Sequence[AnalysisInfo], *, unit: str = "auto") -> str:
    """The unit the sizes of ``infos`` can be pooled in, checked from the index alone.

    ``"auto"``: µm when every analysis is calibrated, px when none is. ``"µm"`` needs every analysis calibrated.
    ``"px"`` needs one pixel scale for all (all uncalibrated, or all with the same pixel size), since pixels of
    different scales are different lengths.

    Raises:
        HistoryError: no analyses, an unknown unit, or analyses whose sizes cannot share the unit (the message says
        which ones and what to do).
    """
    if unit not in UNITS:
        raise HistoryError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if not infos:
        raise HistoryError("No analyses to compare: choose lots that have saved analyses.")
    uncal = [a for a in infos if a.pixel_size_um is None]
    mixed = 0 < len(uncal) < len(infos)
    names = ", ".join(f"{a.image_name} (lot {label(a.lot)})" for a in uncal[:5]) + (" ..." if len(uncal) > 5 else "")
    if unit == "auto" and mixed:
        raise HistoryError(
            f"The chosen analyses mix calibrated sizes (µm) and uncalibrated ones (px): {len(uncal)} of "
            f"{len(infos)} have no pixel size ({names}). Sizes in µm and in pixels cannot be compared; narrow the "
            "filters to calibrated analyses only, or analyse those images again with a pixel size.")
    if unit == "µm" and uncal:
        raise HistoryError(f"{len(uncal)} of the chosen analyses have no pixel size ({names}), so they have no "
                           "sizes in µm.")
    if unit == "px" and len({a.pixel_size_um for a in infos}) > 1:
        raise HistoryError("The chosen analyses have different pixel sizes, so their pixel values are different "
                           "lengths; compare them in µm.")
    if unit == "auto":
        return "px" if uncal else "µm"
    return unit


def lot_sizes(vault: Vault, infos: Sequence[AnalysisInfo], *, unit: str = "auto") -> LotSizes:
    """Pool the counted particles' ECDs of ``infos`` per lot (ECD_µm = ECD_px x the analysis's own pixel size).
    Decrypts each stored result JSON in memory (not the images); the counted particles are those of
    ``analysis.stats.counted`` with the analysis's own border rule, as in its report. Invalidated analyses are left
    out (a lot with no valid analysis is absent from the result).

    Raises:
        HistoryError: as :func:`comparison_unit`, or more than MAX_COMPARE_ANALYSES analyses.
        ArchiveFormatError, EntryNotFoundError, VaultCorruptedError (all CrystalQCError): a damaged or missing
        stored result.
    """
    infos = valid_only(infos)
    if len(infos) > MAX_COMPARE_ANALYSES:
        raise HistoryError(f"{len(infos)} analyses are too many to compare at once (at most "
                           f"{MAX_COMPARE_ANALYSES}); narrow the date range or the products.")
    unit = comparison_unit(infos, unit=unit)
    parts: dict[str, list[np.ndarray]] = {}
    for a in infos:
        result, _ = result_from_json(vault.get(entry_name(a.analysis_id, "result.json")))
        ecd = np.array([p.ecd_px for p in counted(result.particles, include_border=result.include_border)],
                       np.float64)
        if unit == "µm":
            if result.pixel_size_um is None:  # index and record disagree: a damaged entry
                raise HistoryError(f"The saved analysis {a.analysis_id} has lost its pixel size.")
            ecd = ecd * result.pixel_size_um
        parts.setdefault(a.lot, []).append(ecd)
    return LotSizes(unit=unit, sizes={lot: np.concatenate(v) for lot, v in parts.items()},
                    n_analyses={lot: len(v) for lot, v in parts.items()})


# ------------------------------------------------------------------------------------------------ trends
TREND_COLUMNS = ("time", "analysis_id", "image", "product", "lot", "count", "d50", "unit", "span",
                 "agglomerate_fraction")


def trend_table(infos: Iterable[AnalysisInfo]) -> pd.DataFrame:
    """One row per analysis, oldest first: time (UTC), analysis_id, image, product, lot, count (counted particles),
    d50 (number-weighted, in ``unit``), unit, span and agglomerate_fraction. Values unknown for an analysis (nothing
    counted; span of entries saved before it was indexed) are NaN. The agglomerate fraction of older entries is
    agglomerates / counted from their index counts (the same definition). Invalidated analyses are left out."""
    rows = []
    for a in valid_only(infos):
        n = a.n_crystals + a.n_agglomerates
        frac = a.agglomerate_fraction
        if frac is None and n > 0:
            frac = a.n_agglomerates / n
        rows.append({"time": created_at(a), "analysis_id": a.analysis_id, "image": a.image_name,
                     "product": a.product, "lot": a.lot, "count": n,
                     "d50": math.nan if a.d50 is None else float(a.d50), "unit": a.unit,
                     "span": math.nan if a.span is None else a.span,
                     "agglomerate_fraction": math.nan if frac is None else frac})
    table = pd.DataFrame(rows, columns=list(TREND_COLUMNS))
    return table.sort_values(["time", "analysis_id"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class TrendSeries:
    """The rows of a trend table that have a value of ``metric`` (oldest first); ``n_missing`` rows had none.
    ``axis`` is the y-axis title with its unit."""

    metric: str
    rows: pd.DataFrame
    values: np.ndarray
    axis: str
    n_missing: int


def trend_series(table: pd.DataFrame, metric: str) -> TrendSeries:
    """The series of ``metric`` (a METRICS key) to chart, without rows that have no value.

    Raises:
        HistoryError: unknown metric, or D50 in both µm and px (not one scale).
    """
    if metric not in METRICS:
        raise HistoryError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    have = table[table[metric].notna()].reset_index(drop=True)
    axis = {"count": "counted particles per image", "span": "span (unit-free)",
            "agglomerate_fraction": "agglomerate fraction (0-1)"}.get(metric, "")
    if metric == "d50":
        units = sorted(set(have["unit"]))
        if len(units) > 1:
            n_px = int((have["unit"] == "px").sum())
            raise HistoryError(f"D50 is in µm for {len(have) - n_px} of these analyses and in pixels for {n_px}: one "
                               "chart cannot mix them. Narrow the filters (product, dates) to calibrated analyses "
                               "only, or to uncalibrated ones only.")
        axis = f"D50 ({units[0] if units else 'µm'})"
    return TrendSeries(metric=metric, rows=have, values=have[metric].to_numpy(np.float64), axis=axis,
                       n_missing=len(table) - len(have))


def flagged_table(series: TrendSeries, chart: ControlChart) -> pd.DataFrame:
    """The analyses a chart flags: time, image, lot, value, the plotted statistic, limits and the reasons."""
    idx = np.flatnonzero(chart.flagged)
    return pd.DataFrame({
        "#": idx + 1, "saved (UTC)": [series.rows["time"][i].isoformat(timespec="seconds") for i in idx],
        "image": series.rows["image"].to_numpy()[idx], "lot": [label(x) for x in series.rows["lot"].to_numpy()[idx]],
        "value": chart.values[idx], "charted": chart.statistic[idx], "lower limit": chart.lower[idx],
        "upper limit": chart.upper[idx], "why": ["; ".join(chart.reasons(int(i))) for i in idx]})


# ------------------------------------------------------------------------------------------------ figures
def control_chart_figure(series: TrendSeries, chart: ControlChart) -> go.Figure:
    """The chart in analysis order (x = 1..n, oldest first; time, image and lot on hover): the charted statistic,
    the centre line, the limits and the flagged points in red (trace "flagged")."""
    n = chart.values.size
    x = np.arange(1, n + 1)
    hover = [f"{t:%Y-%m-%d %H:%M} UTC<br>{img}<br>lot {label(lot)}" for t, img, lot in
             zip(series.rows["time"], series.rows["image"], series.rows["lot"])]
    fig = go.Figure()
    if chart.kind == "ewma":
        fig.add_scatter(x=x, y=chart.values, mode="markers", name="value", marker=dict(color="#999", size=6),
                        text=hover, hovertemplate="%{text}<br>value %{y:.4g}<extra></extra>")
    name = "EWMA" if chart.kind == "ewma" else "value"
    fig.add_scatter(x=x, y=chart.statistic, mode="lines+markers", name=name, line=dict(color="#0072B2"),
                    text=hover, hovertemplate=f"%{{text}}<br>{name} %{{y:.4g}}<extra></extra>")
    fig.add_scatter(x=x, y=np.full(n, chart.centre), mode="lines", name=f"centre {chart.centre:.4g}",
                    line=dict(color="#009E73", dash="dash"), hoverinfo="skip")
    for limits, what in ((chart.upper, "upper"), (chart.lower, "lower")):
        fig.add_scatter(x=x, y=limits, mode="lines", name=f"{what} control limit",
                        line=dict(color="#D55E00", dash="dot", shape="hv" if chart.kind == "ewma" else "linear"),
                        hovertemplate=f"{what} limit %{{y:.4g}}<extra></extra>")
    bad = chart.flagged
    fig.add_scatter(x=x[bad], y=chart.statistic[bad], mode="markers", name=f"flagged ({int(bad.sum())})",
                    marker=dict(color="red", size=12, symbol="circle-open", line=dict(width=3)),
                    text=[hover[i] for i in np.flatnonzero(bad)],
                    hovertemplate="%{text}<br>out of control %{y:.4g}<extra></extra>")
    kind = "EWMA chart" if chart.kind == "ewma" else "Individuals (Shewhart) chart"
    fig.update_layout(title=f"{kind}: {series.axis}", xaxis_title="analysis (1 = oldest)", yaxis_title=series.axis,
                      height=380, margin=dict(l=40, r=10, t=40, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def lot_figures(data: LotSizes, *, bins: int = 30) -> tuple[go.Figure, go.Figure]:
    """(cumulative undersize curves, histograms), number-weighted, one trace per lot, same bins for every lot."""
    pooled = np.concatenate([v for v in data.sizes.values()]) if data.sizes else np.zeros(0)
    lo, hi = (float(pooled.min()), float(pooled.max())) if pooled.size else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    cum, hist = go.Figure(), go.Figure()
    for i, (lot, ecd) in enumerate(data.sizes.items()):
        colour = PALETTE[i % len(PALETTE)]
        name = f"lot {label(lot)} (n = {ecd.size})"
        if not ecd.size:
            continue
        xs = np.sort(ecd)
        cum.add_scatter(x=xs, y=np.arange(1, xs.size + 1) / xs.size * 100, mode="lines", line_shape="hv",
                        name=name, line_color=colour)
        edges, pct = histogram(ecd, bins=bins, range_=(lo, hi))
        hist.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=pct, width=np.diff(edges), name=name, marker_color=colour,
                     opacity=0.55, hovertemplate=f"ECD %{{x:.3g}} {data.unit}<br>%{{y:.2f}} %<extra></extra>")
    cum.update_layout(xaxis_title=f"ECD ({data.unit})", yaxis_title="cumulative undersize, by number (%)",
                      height=340, margin=dict(l=40, r=10, t=30, b=40))
    hist.update_layout(xaxis_title=f"ECD ({data.unit})", yaxis_title="share of the lot's particles (%)",
                       barmode="overlay", bargap=0.02, height=340, margin=dict(l=40, r=10, t=30, b=40))
    return cum, hist
