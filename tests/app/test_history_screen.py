"""History: filters, lot comparison and trend charts (ui.history logic with a real vault, then the screen via
AppTest). Analyses are seeded with ui.analyses.save_analysis from constructed ImageResults (known particle sizes)
at fixed save times."""
from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, timezone

import numpy as np
import pytest

import ui.analyses
from analysis.records import ImageMeta, ImageResult, Particle
from analysis.stats import size_distribution
from analysis.trends import individuals_chart
from tests.app.conftest import FAST_KDF, PASSPHRASE, new_app, open_vault, titles, unlock
from ui import history
from ui.analyses import entry_name, list_analyses, save_analysis
from ui.history import HistoryError
from vault import Vault


def _particle(i: int, ecd: float, *, cls: str = "crystal", excluded: str | None = None,
              on_border: bool = False) -> Particle:
    area = math.pi * ecd * ecd / 4
    return Particle(particle_id=i, class_name=cls, confidence=0.9, x_min=0, y_min=0, x_max=int(ecd) + 1,
                    y_max=int(ecd) + 1, area_px=area, perimeter_px=math.pi * ecd, ecd_px=ecd, feret_max_px=ecd,
                    feret_min_px=ecd, aspect_ratio=1.0, circularity=1.0, solidity=1.0, focus_score=10.0,
                    on_border=on_border, excluded_reason=excluded)


def _result(name: str, ecds, *, n_agg: int = 0, pixel_size_um: float | None = 0.5, extra=()) -> ImageResult:
    particles = [_particle(i, float(e), cls="agglomerate" if i < n_agg else "crystal") for i, e in enumerate(ecds)]
    particles += [_particle(len(particles) + j, p[0], excluded=p[1], on_border=p[2]) for j, p in enumerate(extra)]
    return ImageResult(name=name, meta=ImageMeta("png", 640, 480, 8, 1), particles=tuple(particles),
                       pixel_size_um=pixel_size_um, include_border=False, detector="classical", seconds=0.1)


def _save(vault, monkeypatch, when: datetime, result: ImageResult, *, product: str, lot: str):
    class _At(datetime):
        @classmethod
        def now(cls, tz=None):
            return when

    with monkeypatch.context() as m:
        m.setattr(ui.analyses, "datetime", _At)
        return save_analysis(vault, result.name.encode(), result, source="upload", user="alice",
                             product=product, lot=lot)


def _sizes(seed: int, n: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(20.0), 0.3, n) * scale


def _day(d: int) -> datetime:
    return datetime(2026, 3, d, 9, 30, tzinfo=timezone.utc)


#: (day, image, product, lot, particle sizes in px, agglomerates, pixel size µm): lots L1 and L2 of product P1
#: differ by 30 % in size; the newest analysis (L3) counts 3x more particles than the others; L4 is uncalibrated.
SPECS = [
    (1, "a1.png", "P1", "L1", _sizes(1, 40), 4, 0.5),
    (2, "a2.png", "P1", "L1", _sizes(2, 42), 4, 0.5),
    (3, "a3.png", "P1", "L1", _sizes(3, 41), 5, 0.5),
    (4, "b1.png", "P1", "L2", _sizes(4, 40, 1.3), 4, 0.5),
    (5, "b2.png", "P1", "L2", _sizes(5, 43, 1.3), 4, 0.5),
    (6, "b3.png", "P1", "L2", _sizes(6, 41, 1.3), 5, 0.5),
    (7, "c1.png", "P2", "L3", _sizes(7, 42), 4, 0.5),
    (9, "c2.png", "P2", "L3", _sizes(8, 120), 12, 0.5),
    (8, "d1.png", "P3", "L4", _sizes(9, 40), 4, None),
]


def _seed(vault, monkeypatch, specs=SPECS):
    return [_save(vault, monkeypatch, _day(d), _result(name, ecd, n_agg=agg, pixel_size_um=px), product=prod, lot=lot)
            for d, name, prod, lot, ecd, agg, px in specs]


@pytest.fixture
def vault(tmp_path):
    v, _ = Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF, user="a")
    yield v
    v.lock()


# ------------------------------------------------------------------------------------------------ ui.history
def test_saved_index_carries_span_and_agglomerate_fraction(vault, monkeypatch):
    ecd = _sizes(1, 40)
    info = _save(vault, monkeypatch, _day(1), _result("a.png", ecd, n_agg=4), product="P", lot="L")
    assert info.span == pytest.approx(size_distribution(ecd * 0.5).span)
    assert info.agglomerate_fraction == pytest.approx(4 / 40)
    assert list_analyses(vault) == [info]
    empty = _save(vault, monkeypatch, _day(2), _result("e.png", []), product="P", lot="L")
    assert empty.span is None and empty.agglomerate_fraction is None and empty.d50 is None


def test_filters_by_date_product_lot_and_text(vault, monkeypatch):
    infos = _seed(vault, monkeypatch)
    items = list_analyses(vault)
    names = lambda xs: sorted(a.image_name for a in xs)  # noqa: E731
    assert history.choices(items) == (["P1", "P2", "P3"], ["L1", "L2", "L3", "L4"])
    assert names(history.filter_analyses(items)) == names(infos)
    assert names(history.filter_analyses(items, products=["P1"])) == ["a1.png", "a2.png", "a3.png", "b1.png",
                                                                       "b2.png", "b3.png"]
    assert names(history.filter_analyses(items, products=["P1"], lots=["L2", "L3"])) == ["b1.png", "b2.png",
                                                                                        "b3.png"]
    assert names(history.filter_analyses(items, start_date=date(2026, 3, 4), end_date=date(2026, 3, 6))) == [
        "b1.png", "b2.png", "b3.png"]  # both ends inclusive
    assert names(history.filter_analyses(items, start_date=date(2026, 3, 9))) == ["c2.png"]
    assert names(history.filter_analyses(items, text="  C2.PNG ")) == ["c2.png"]
    assert names(history.filter_analyses(items, text="alice")) == names(infos)  # operator
    assert history.filter_analyses(items, lots=[""]) == []
    with pytest.raises(HistoryError, match="after the end date"):
        history.filter_analyses(items, start_date=date(2026, 3, 5), end_date=date(2026, 3, 4))


def test_lot_sizes_pool_counted_particles_per_lot_in_um(vault, monkeypatch):
    dust = [(1.0, "dust", False), (30.0, None, True)]  # excluded, and on the border (not counted)
    a = _save(vault, monkeypatch, _day(1), _result("a.png", [10, 20], extra=dust), product="P", lot="L1")
    b = _save(vault, monkeypatch, _day(2), _result("b.png", [30], pixel_size_um=2.0), product="P", lot="L1")
    c = _save(vault, monkeypatch, _day(3), _result("c.png", [40, 50]), product="P", lot="")
    data = history.lot_sizes(vault, [a, b, c])
    assert data.unit == "µm"
    assert list(data.sizes) == ["L1", ""]
    assert list(data.sizes["L1"]) == pytest.approx([5.0, 10.0, 60.0])  # each with its own pixel size
    assert list(data.sizes[""]) == pytest.approx([20.0, 25.0])
    assert data.n_analyses == {"L1": 2, "": 1}
    with pytest.raises(HistoryError, match="different pixel sizes"):
        history.lot_sizes(vault, [a, b], unit="px")
    assert list(history.lot_sizes(vault, [a, c], unit="px").sizes["L1"]) == [10.0, 20.0]


def test_lot_sizes_refuses_mixing_um_and_px_and_too_many(vault, monkeypatch):
    a = _save(vault, monkeypatch, _day(1), _result("a.png", [10, 20]), product="P", lot="L1")
    u = _save(vault, monkeypatch, _day(2), _result("u.png", [10, 20], pixel_size_um=None), product="P", lot="L2")
    with pytest.raises(HistoryError, match=r"mix calibrated sizes \(µm\) and uncalibrated ones \(px\).*u\.png"):
        history.lot_sizes(vault, [a, u])
    with pytest.raises(HistoryError, match="no sizes in µm"):
        history.lot_sizes(vault, [u], unit="µm")
    assert history.lot_sizes(vault, [u]).unit == "px"
    with pytest.raises(HistoryError, match="No analyses"):
        history.lot_sizes(vault, [])
    monkeypatch.setattr(history, "MAX_COMPARE_ANALYSES", 1)
    with pytest.raises(HistoryError, match="too many"):
        history.lot_sizes(vault, [a, a])


def test_trend_table_is_oldest_first_and_fills_old_entries(vault, monkeypatch):
    infos = _seed(vault, monkeypatch, SPECS[:3])
    old = infos[1]
    name = entry_name(old.analysis_id, "result.json")
    meta = {k: v for k, v in vault.info(name).meta.items() if k not in ("span", "agglomerate_fraction")}
    vault.put(name, vault.get(name), kind="result", meta=meta)  # as saved before these were indexed
    table = history.trend_table(list_analyses(vault))
    assert list(table["image"]) == ["a1.png", "a2.png", "a3.png"]
    assert list(table["count"]) == [40, 42, 41]
    assert math.isnan(table["span"][1]) and not table["span"][[0, 2]].isna().any()
    assert table["agglomerate_fraction"][1] == pytest.approx(4 / 42)  # from the index counts
    series = history.trend_series(table, "span")
    assert series.n_missing == 1 and list(series.rows["image"]) == ["a1.png", "a3.png"]
    assert history.trend_series(table, "d50").axis == "D50 (µm)"


def test_trend_series_refuses_d50_in_two_units(vault, monkeypatch):
    _seed(vault, monkeypatch, SPECS[7:])
    table = history.trend_table(list_analyses(vault))
    with pytest.raises(HistoryError, match="µm for 1 of these analyses and in pixels for 1"):
        history.trend_series(table, "d50")
    assert history.trend_series(table, "count").values.tolist() == [40, 120]  # d1 (day 8) before c2 (day 9)
    with pytest.raises(HistoryError, match="metric"):
        history.trend_series(table, "mean")


def test_control_chart_figure_marks_the_flagged_points_red(vault, monkeypatch):
    _seed(vault, monkeypatch)
    series = history.trend_series(history.trend_table(list_analyses(vault)), "count")
    chart = individuals_chart(series.values)
    fig = history.control_chart_figure(series, chart)
    [flagged] = [t for t in fig.data if t.name.startswith("flagged")]
    assert list(flagged.x) == [9] and list(flagged.y) == [120] and flagged.marker.color == "red"
    assert series.rows["image"][8] == "c2.png"
    table = history.flagged_table(series, chart)
    assert list(table["image"]) == ["c2.png"] and list(table["why"]) == ["one point beyond 3 sigma"]


def test_lot_figures_one_trace_per_lot_on_shared_bins():
    data = history.LotSizes(unit="µm", sizes={"A": np.array([1.0, 2.0, 3.0]), "": np.array([2.0, 9.0])},
                            n_analyses={"A": 1, "": 1})
    cum, hist = history.lot_figures(data, bins=8)
    assert [t.name for t in cum.data] == ["lot A (n = 3)", "lot (none) (n = 2)"]
    assert list(cum.data[1].y) == [50.0, 100.0]
    assert list(hist.data[0].x) == list(hist.data[1].x)  # same bins
    assert sum(hist.data[0].y) == pytest.approx(100) and "µm" in hist.layout.xaxis.title.text


def test_an_invalidated_analysis_stays_listed_but_is_neither_pooled_nor_charted(vault, monkeypatch):
    infos = _seed(vault, monkeypatch)
    outlier = next(a for a in infos if a.image_name == "c2.png")
    with pytest.raises(ValueError, match="reason"):
        ui.analyses.invalidate_analysis(vault, outlier.analysis_id, reason="  ", user="lead")
    with pytest.raises(ValueError, match="control characters"):
        ui.analyses.invalidate_analysis(vault, outlier.analysis_id, reason="a\nb", user="lead")
    assert list_analyses(vault)[0].valid and not [r for r in vault.audit.entries() if "invalid" in r.event]

    marked = ui.analyses.invalidate_analysis(vault, outlier.analysis_id, reason="wrong lot label", user="lead")
    assert not marked.valid and (marked.invalid_reason, marked.invalid_by) == ("wrong lot label", "lead")
    listed = {a.analysis_id: a for a in list_analyses(vault)}
    assert len(listed) == 9 and listed[outlier.analysis_id] == marked  # kept, with its mark, from the index
    assert listed[outlier.analysis_id].n_crystals == outlier.n_crystals  # the record itself is unchanged
    table = history.history_table(list(listed.values()))
    assert list(table["status"]).count("valid") == 8
    assert set(table["reviewed"]) == {""}  # nobody corrected or checked these
    assert table.loc[table["image"] == "c2.png", "status"].item().startswith("INVALID: wrong lot label (lead, ")
    trend = history.trend_table(listed.values())
    assert len(trend) == 8 and "c2.png" not in set(trend["image"])
    l3 = [a for a in listed.values() if a.lot == "L3"]
    assert history.lot_sizes(vault, l3).n_analyses == {"L3": 1}
    with pytest.raises(ValueError, match="already invalidated"):
        ui.analyses.invalidate_analysis(vault, outlier.analysis_id, reason="again", user="lead")

    restored = ui.analyses.restore_analysis(vault, outlier.analysis_id, reason="label was right", user="lead2")
    assert restored.valid and restored == outlier
    assert len(history.trend_table(list_analyses(vault))) == 9
    with pytest.raises(ValueError, match="is valid"):
        ui.analyses.restore_analysis(vault, outlier.analysis_id, reason="again", user="lead")
    records = [r for r in vault.audit.entries() if r.event in ("analysis_invalidated", "analysis_restored")]
    assert [(r.event, r.user, r.details["reason"]) for r in records] == [
        ("analysis_invalidated", "lead", "wrong lot label"), ("analysis_restored", "lead2", "label was right")]
    assert records[1].details["was_invalidated_for"] == "wrong lot label"


def test_an_invalidated_analysis_takes_no_corrections_until_restored(vault, monkeypatch):
    from analysis.corrections import CorrectionError
    from ui import corrections

    [info] = _seed(vault, monkeypatch, SPECS[:1])
    ui.analyses.invalidate_analysis(vault, info.analysis_id, reason="wrong image", user="lead")
    before = {e.name: e for e in vault.list("analyses/")}
    with pytest.raises(CorrectionError, match="restore it on the History screen"):
        corrections.delete_particles(vault, info.analysis_id, [10], user="lead")
    with pytest.raises(CorrectionError, match="marked invalid by lead"):
        corrections.undo_last_edit(vault, info.analysis_id, user="lead")
    assert {e.name: e for e in vault.list("analyses/")} == before  # nothing written
    ui.analyses.restore_analysis(vault, info.analysis_id, reason="right image after all", user="lead")
    review = corrections.delete_particles(vault, info.analysis_id, [10], user="lead")
    assert review.info.n_crystals == info.n_crystals - 1 and review.info.valid


# ------------------------------------------------------------------------------------------------ the screen
@pytest.fixture
def seeded(recovery_key, vault_path, monkeypatch):
    with open_vault(vault_path) as v:
        _seed(v, monkeypatch)
    at = unlock(new_app())
    at.switch_page("screens/history.py")
    at.run()
    assert not at.exception and titles(at) == ["History"]
    return at


def _charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _values(v) -> list:
    """A plotly JSON array: a plain list, or numpy's bytes as {"dtype", "bdata"} (plotly >= 6)."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def _trace_names(fig: dict) -> list[str]:
    return [t.get("name") for t in fig["data"]]


def test_filters_change_the_table(seeded):
    at = seeded
    assert len(at.dataframe[0].value) == 9
    at.multiselect(key="history_products").select("P1")
    at.run()
    assert sorted(at.dataframe[0].value["image"]) == ["a1.png", "a2.png", "a3.png", "b1.png", "b2.png", "b3.png"]
    at.multiselect(key="history_lots").select("L2")
    at.run()
    assert sorted(at.dataframe[0].value["image"]) == ["b1.png", "b2.png", "b3.png"]
    assert at.selectbox(key="history_choice").options and len(at.selectbox(key="history_choice").options) == 3
    at.multiselect(key="history_lots").unselect("L2")
    at.multiselect(key="history_products").unselect("P1")
    at.date_input(key="history_from").set_value(date(2026, 3, 8))
    at.run()
    assert sorted(at.dataframe[0].value["image"]) == ["c2.png", "d1.png"]
    at.text_input(key="history_text").input("nothing like this")
    at.run()
    assert not at.exception and not at.dataframe
    assert any("None of the 9 saved analyses matches" in i.value for i in at.info)


def test_reopening_still_works_after_filtering(seeded):
    at = seeded
    # "b2" alone could also match a random hex analysis id; "b2.png" cannot.
    at.text_input(key="history_text").input("b2.png")
    at.run()
    assert list(at.dataframe[0].value["image"]) == ["b2.png"]
    at.button(key="history_open").click()
    at.run()
    assert not at.exception and not at.error
    assert at.session_state["history_opened"].info.image_name == "b2.png"
    assert {m.label for m in at.metric} >= {"Crystals", "Agglomerates"}


def test_comparing_two_lots_shows_the_test_and_overlaid_curves(seeded):
    at = seeded
    assert at.button(key="history_compare").disabled
    at.multiselect(key="history_compare_lots").select("L1").select("L2")
    at.run()
    at.button(key="history_compare").click()
    at.run()
    assert not at.exception and not at.error
    [conclusion] = [i.value for i in at.info if "Kolmogorov-Smirnov" in i.value]
    assert "lots L1 and L2 differ" in conclusion and "Particles of lot L2 tend to be larger" in conclusion
    assert "µm" in conclusion
    per_lot = at.dataframe[1].value
    assert list(per_lot["lot"]) == ["L1", "L2"] and list(per_lot["particles"]) == [123, 124]  # in the order chosen
    assert "D50 (µm)" in per_lot.columns
    cum, hist = _charts(at)[:2]
    assert len(cum["data"]) == 2 and len(hist["data"]) == 2
    assert cum["layout"]["xaxis"]["title"]["text"] == "ECD (µm)"


def test_comparing_calibrated_and_uncalibrated_lots_is_refused(seeded):
    at = seeded
    at.multiselect(key="history_compare_lots").select("L1").select("L4")
    at.run()
    at.button(key="history_compare").click()
    at.run()
    assert not at.exception
    assert any("mix calibrated sizes (µm) and uncalibrated ones (px)" in e.value and "d1.png" in e.value
               for e in at.error)
    assert not any("Kolmogorov" in i.value for i in at.info)


def test_trend_chart_flags_the_out_of_control_analysis(seeded):
    at = seeded
    assert at.selectbox(key="history_trend_metric").value == "count"
    assert any("1 of 9 analyses are out of control" in w.value for w in at.warning)
    [trend] = [f for f in _charts(at) if "Individuals" in f["layout"]["title"]["text"]]
    [flagged] = [t for t in trend["data"] if t["name"].startswith("flagged")]
    assert _values(flagged["y"]) == [120] and flagged["marker"]["color"] == "red"
    assert {"upper control limit", "lower control limit"} <= set(_trace_names(trend))
    assert list(at.dataframe[-1].value["image"]) == ["c2.png"]

    at.radio(key="history_trend_chart").set_value("EWMA")
    at.run()
    assert not at.exception
    assert any("EWMA chart" in f["layout"]["title"]["text"] for f in _charts(at))


def test_trend_of_d50_over_mixed_units_is_refused_until_filtered(seeded):
    at = seeded
    at.selectbox(key="history_trend_metric").set_value("d50")
    at.run()
    assert any("D50 is in µm for 8 of these analyses and in pixels for 1" in e.value for e in at.error)
    at.multiselect(key="history_products").select("P1")
    at.run()
    assert not at.error
    [trend] = [f for f in _charts(at) if "Individuals" in f["layout"]["title"]["text"]]
    assert trend["layout"]["yaxis"]["title"]["text"] == "D50 (µm)"
    assert any("All 6 analyses are within the control limits" in s.value for s in at.success)


def test_too_few_analyses_for_a_trend_give_an_info(seeded):
    at = seeded
    at.multiselect(key="history_products").select("P2")
    at.run()
    assert not at.exception
    assert any("needs at least 5 analyses" in i.value and "leave 2" in i.value for i in at.info)
    assert not [f for f in _charts(at) if "chart:" in f["layout"].get("title", {}).get("text", "")]


def test_marking_an_analysis_invalid_on_the_screen_takes_it_out_of_the_trend(seeded, vault_path):
    at = seeded
    assert any("1 of 9 analyses are out of control" in w.value for w in at.warning)
    at.text_input(key="history_text").input("c2.png")
    at.run()
    at.button(key="history_open").click()
    at.run()
    at.button(key="history_invalidate").click()  # no reason yet: refused, nothing changed
    at.run()
    assert any("Give a reason" in e.value for e in at.error)
    at.text_input(key="history_validity_reason").input("counted a calibration slide")
    at.button(key="history_invalidate").click()
    at.run()
    assert not at.exception
    assert any("marked invalid" in s.value for s in at.success)
    assert any("Marked INVALID by alice" in w.value and "counted a calibration slide" in w.value for w in at.warning)
    assert at.dataframe[0].value["status"].iloc[0].startswith("INVALID: counted a calibration slide")
    at.text_input(key="history_text").input("")
    at.run()
    assert len(at.dataframe[0].value) == 9  # still listed
    assert any("1 invalidated analyses are left out here" in c.value for c in at.caption)
    assert any("All 8 analyses are within the control limits" in s.value for s in at.success)
    with open_vault(vault_path) as v:
        [rec] = [r for r in v.audit.entries() if r.event == "analysis_invalidated"]
    assert rec.user == "alice" and rec.details["image"] == "c2.png"

    at.text_input(key="history_validity_reason").input("slide was a real sample")
    at.button(key="history_restore").click()
    at.run()
    assert not at.exception and any("valid again" in s.value for s in at.success)
    assert any("1 of 9 analyses are out of control" in w.value for w in at.warning)


def test_ui_history_stays_free_of_streamlit():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(history.__file__).read_text(encoding="utf-8"))
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "plotly" in roots and "streamlit" not in roots  # the checker sees imports


def test_the_history_list_says_what_a_person_did_to_each_result(vault, monkeypatch):
    from ui.analyses import set_checked
    from ui.corrections import delete_particles

    infos = _seed(vault, monkeypatch)
    corrected, checked, both = infos[0], infos[1], infos[2]
    delete_particles(vault, corrected.analysis_id, [1], user="ann")
    set_checked(vault, checked.analysis_id, checked=True, user="bob")
    delete_particles(vault, both.analysis_id, [1], user="ann")
    delete_particles(vault, both.analysis_id, [2], user="ann")
    set_checked(vault, both.analysis_id, checked=True, user="ann")
    table = history.history_table(list_analyses(vault)).set_index("id")
    assert table.loc[corrected.analysis_id, "reviewed"] == "1 correction"
    assert table.loc[checked.analysis_id, "reviewed"] == "checked by bob"
    assert table.loc[both.analysis_id, "reviewed"] == "2 corrections, checked by ann"
    assert list(table["reviewed"]).count("") == len(infos) - 3
