"""History: the analyses saved in the vault, filtered by date, product and lot; open one again (decrypted in memory
only), compare lots (overlaid distributions + a statistical test) and follow trends on control charts."""
from __future__ import annotations

import streamlit as st

from analysis.errors import CrystalQCError
from analysis.trends import (MIN_CHART_POINTS, RECOMMENDED_BASELINE_POINTS, compare_lots, ewma_chart, format_p,
                             individuals_chart)
from ui import history, session
from ui.analyses import (export_original, invalidate_analysis, list_analyses, load_analysis, read_report,
                         restore_analysis)
from ui.result_view import render_result

OPENED = "history_opened"  # StoredAnalysis of this session; dropped at lock
OPENED_REPORTS = "history_opened_reports"  # (analysis id, {report: CSV bytes}) of OPENED, read once; dropped at lock
REPORTS = ("particles", "summary")
COMPARED = "history_compared"  # {"key", "data", "comparison", "error"} of the last "Compare"; dropped at lock


def _open(analysis_id: str) -> None:
    vault = session.current_vault()
    if vault is None:
        return
    st.session_state.pop(OPENED_REPORTS, None)
    try:
        st.session_state[OPENED] = load_analysis(vault, analysis_id)
    except CrystalQCError as e:
        st.session_state.pop(OPENED, None)
        session.set_notice("error", f"The analysis could not be opened: {e}")


def _set_validity(analysis_id: str, invalid: bool) -> None:
    vault = session.current_vault()
    if vault is None:
        return
    reason = st.session_state.get("history_validity_reason", "")
    try:
        if invalid:
            invalidate_analysis(vault, analysis_id, reason=reason, user=vault.user)
        else:
            restore_analysis(vault, analysis_id, reason=reason, user=vault.user)
        st.session_state[OPENED] = load_analysis(vault, analysis_id)
    except (CrystalQCError, ValueError) as e:
        session.set_notice("error", f"Nothing was changed: {e}")
        return
    st.session_state["history_validity_reason"] = ""
    st.session_state.pop(COMPARED, None)  # a comparison made before may have pooled it
    session.set_notice("success", "The analysis is marked invalid: it stays listed but is left out of comparisons and "
                                  "trends." if invalid else "The analysis is valid again.")


def validity_section(info) -> None:
    """Mark the opened analysis invalid, or restore it; a reason is required either way (audited)."""
    if not info.valid:
        st.warning(f"Marked INVALID by {info.invalid_by or 'a user'} on {info.invalid_at or 'an unknown date'}: "
                   f"{info.invalid_reason}. It is left out of lot comparisons, trends and the industry comparison.")
    with st.expander("Restore this analysis" if not info.valid else "Mark this analysis invalid"):
        st.caption("Analyses are never deleted: a wrong one (wrong image, lot or calibration) is marked invalid with "
                   "a reason, kept for traceability and left out of comparisons and trends. Both steps are recorded "
                   "in the audit log.")
        st.text_input("Reason", key="history_validity_reason", max_chars=200,
                      placeholder="e.g. wrong lot label, re-analysed" if info.valid else "e.g. invalidated by mistake")
        if info.valid:
            st.button("Mark invalid", key="history_invalidate", on_click=_set_validity,
                      args=(info.analysis_id, True))
        else:
            st.button("Restore", key="history_restore", on_click=_set_validity, args=(info.analysis_id, False))


def _compare(key: tuple, infos: list) -> None:
    vault = session.current_vault()
    if vault is None:
        return
    state = {"key": key, "data": None, "comparison": None, "error": None}
    try:
        state["data"] = history.lot_sizes(vault, infos)
        state["comparison"] = compare_lots({history.label(k): v for k, v in state["data"].sizes.items()},
                                           unit=state["data"].unit)
    except CrystalQCError as e:
        state["error"] = str(e)
    st.session_state[COMPARED] = state


def open_section(vault, shown: list) -> None:
    labels = {a.analysis_id: f"{a.created} · {a.image_name} · {a.n_crystals} crystals" for a in shown}
    choice = st.selectbox("Analysis", list(labels), format_func=labels.get, key="history_choice")
    st.button("Open", key="history_open", on_click=_open, args=(choice,), type="primary")
    opened = st.session_state.get(OPENED)
    if opened is None:
        return
    st.subheader(f"{opened.info.image_name} — saved {opened.info.created}")
    validity_section(opened.info)
    cached = st.session_state.get(OPENED_REPORTS)
    if cached is not None and cached[0] == opened.info.analysis_id:
        csvs = cached[1]
    else:  # decrypted once per opening, not on every rerun of the screen
        try:
            csvs = {r: read_report(vault, opened.info.analysis_id, r) for r in REPORTS}
        except CrystalQCError as e:
            st.error(f"The reports of this analysis cannot be read: {e}")
            return
        st.session_state[OPENED_REPORTS] = (opened.info.analysis_id, csvs)
    # The original may be large: a deferred download, decrypted (and audited as export) only when clicked.
    render_result(opened.result, csvs=csvs, analysis_id=opened.info.analysis_id, key="history", info=opened.info,
                  extra_downloads=lambda: st.download_button(
                      "Download original image", lambda: export_original(vault, opened.info, user=vault.user),
                      file_name=opened.info.image_name, key="history_dl_original"))


def compare_section(shown: list) -> None:
    lots = sorted({a.lot for a in shown})
    chosen = st.multiselect("Lots to compare", lots, format_func=history.label, key="history_compare_lots",
                            help="The analyses of each lot that pass the filters above are pooled.")
    infos = [a for lot in chosen for a in shown if a.lot == lot]  # lots in the order chosen
    key = (tuple(chosen), tuple(a.analysis_id for a in infos))
    st.button("Compare", key="history_compare", on_click=_compare, args=(key, infos), disabled=len(chosen) < 2)
    if len(chosen) < 2:
        st.caption("Choose two or more lots; their particle sizes are pooled per lot and tested.")
        return
    state = st.session_state.get(COMPARED)
    if state is None or state["key"] != key:
        return
    if state["error"]:
        st.error(state["error"])
    data, result = state["data"], state["comparison"]
    if result is not None:
        st.info(result.conclusion)
        st.dataframe([{"lot": s.lot, "analyses": data.n_analyses[lot], "particles": s.n,
                       f"D10 ({data.unit})": s.d10, f"D50 ({data.unit})": s.d50, f"D90 ({data.unit})": s.d90}
                      for s, lot in zip(result.lots, data.sizes)], hide_index=True)
        st.caption(" · ".join(f"{t.test}: statistic {t.statistic:.4g}, {format_p(t.p_value)}" for t in result.tests)
                   + f" (significance level {result.alpha:g})")
    if data is not None and any(v.size for v in data.sizes.values()):
        cum, hist = history.lot_figures(data)
        left, right = st.columns(2)
        left.plotly_chart(cum, key="history_compare_cumulative")
        right.plotly_chart(hist, key="history_compare_histogram")


def trends_section(shown: list) -> None:
    cols = st.columns([3, 2, 2])
    metric = cols[0].selectbox("Metric", list(history.METRICS), format_func=history.METRICS.get,
                               key="history_trend_metric")
    kind = cols[1].radio("Chart", ["Shewhart", "EWMA"], key="history_trend_chart", horizontal=True,
                         help="Shewhart individuals chart: catches large single deviations. EWMA: catches small "
                              "sustained shifts.")
    baseline = cols[2].number_input("Baseline (first N analyses; 0 = all)", min_value=0, value=0, step=1,
                                    key="history_trend_baseline",
                                    help="Centre line and limits come from these analyses (phase I).")
    try:
        series = history.trend_series(history.trend_table(shown), metric)
    except CrystalQCError as e:
        st.error(str(e))
        return
    n = series.values.size
    if n < MIN_CHART_POINTS:
        st.info(f"A trend chart needs at least {MIN_CHART_POINTS} analyses with a value of "
                f"{history.METRICS[metric].lower()}; the filters leave {n}. Widen the filters or save more analyses.")
        return
    try:
        if kind == "EWMA":
            c1, c2 = st.columns(2)
            lam = c1.number_input("λ (weight of the newest value)", min_value=0.05, max_value=1.0, value=0.2,
                                  step=0.05, key="history_trend_lambda")
            width = c2.number_input("L (limit width, sigma)", min_value=1.0, max_value=5.0, value=3.0, step=0.1,
                                    key="history_trend_L")
            chart = ewma_chart(series.values, lam=lam, L=width, baseline=baseline or None)
        else:
            rules = st.checkbox("Also Western Electric rules 2-4 (runs; more false alarms)",
                                key="history_trend_rules")
            chart = individuals_chart(series.values, baseline=baseline or None, rules=(1, 2, 3, 4) if rules else (1,))
    except CrystalQCError as e:
        st.error(str(e))
        return
    st.plotly_chart(history.control_chart_figure(series, chart), key="history_trend_plot")
    st.caption(f"Centre {chart.centre:.4g}, sigma {chart.sigma:.4g} (average moving range / 1.128) from "
               f"{chart.baseline} analyses; {series.axis}."
               + (f" {series.n_missing} analyses have no value and are left out." if series.n_missing else "")
               + (f" Limits from fewer than {RECOMMENDED_BASELINE_POINTS} analyses are rough."
                  if chart.baseline < RECOMMENDED_BASELINE_POINTS else ""))
    flagged = int(chart.flagged.sum())
    if flagged:
        st.warning(f"{flagged} of {n} analyses are out of control (red on the chart).")
        st.dataframe(history.flagged_table(series, chart), hide_index=True)
    else:
        st.success(f"All {n} analyses are within the control limits.")


vault = session.require_vault()
st.title("History")
items = list_analyses(vault)
if not items:
    st.info("No saved analyses yet: analyse an image on the Analyze page and it appears here.")
    st.stop()

products, lots = history.choices(items)
f1, f2, f3, f4, f5 = st.columns([1, 1, 2, 2, 2])
start = f1.date_input("From (UTC)", value=None, key="history_from")
end = f2.date_input("To (UTC)", value=None, key="history_to")
chosen_products = f3.multiselect("Product", products, format_func=history.label, key="history_products")
chosen_lots = f4.multiselect("Lot", lots, format_func=history.label, key="history_lots")
text = f5.text_input("Search", key="history_text", placeholder="image, operator, id")
try:
    shown = history.filter_analyses(items, start_date=start, end_date=end, products=chosen_products,
                                    lots=chosen_lots, text=text)
except CrystalQCError as e:
    st.error(str(e))
    st.stop()
if not shown:
    st.info(f"None of the {len(items)} saved analyses matches the filters.")
    st.stop()
st.caption(f"{len(shown)} of {len(items)} saved analyses")
st.dataframe(history.history_table(shown), hide_index=True, width="stretch")

tab_open, tab_compare, tab_trends = st.tabs(["Open", "Compare lots", "Trends"])
with tab_open:
    open_section(vault, shown)
valid = history.valid_only(shown)
left_out = (f"{len(shown) - len(valid)} invalidated analyses are left out here (see the status column)."
            if len(valid) < len(shown) else "")
with tab_compare:
    if left_out:
        st.caption(left_out)
    compare_section(valid)
with tab_trends:
    if left_out:
        st.caption(left_out)
    trends_section(valid)
