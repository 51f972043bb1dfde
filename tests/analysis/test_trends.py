"""analysis.trends: control charts (known answers computed by hand) and lot comparison tests."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.trends import (D2_MOVING_RANGE, TrendError, centre_and_sigma, compare_lots, ewma_chart, format_p,
                             individuals_chart)

SERIES = [10.0, 12.0, 11.0, 13.0, 14.0]  # mean 12; moving ranges 2, 1, 2, 1 -> MRbar 1.5
SIGMA = 1.5 / 1.128


def test_individuals_limits_by_hand():
    chart = individuals_chart(SERIES)
    assert chart.centre == pytest.approx(12.0)
    assert chart.sigma == pytest.approx(SIGMA)
    assert chart.upper == pytest.approx([12 + 3 * SIGMA] * 5)  # 15.989...
    assert chart.lower == pytest.approx([12 - 3 * SIGMA] * 5)  # 8.0106...
    assert not chart.flagged.any()
    assert D2_MOVING_RANGE == 1.128


def test_a_shifted_point_is_flagged_against_baseline_limits():
    chart = individuals_chart(SERIES + [15.9, 17.0, 7.9], baseline=5)
    assert chart.centre == pytest.approx(12.0) and chart.sigma == pytest.approx(SIGMA)  # from the first 5 only
    assert list(chart.out_of_limits) == [False] * 5 + [False, True, True]
    assert chart.reasons(6) == ["one point beyond 3 sigma"] and chart.reasons(5) == []


def test_without_baseline_an_outlier_still_stands_out():
    values = [10, 10, 11, 10, 11, 10, 10, 40]
    chart = individuals_chart(values)
    assert chart.sigma == pytest.approx((34 / 7) / 1.128)  # the outlier's moving range is in sigma
    assert list(np.flatnonzero(chart.flagged)) == [7]


def _alternating(n, centre):
    return [centre + (0.5 if i % 2 else -0.5) for i in range(n)]


BASE = _alternating(20, 10.0)  # mean 10, every moving range 1 -> sigma = 1 / 1.128
S = 1 / 1.128


@pytest.mark.parametrize("rule, tail, flagged_at", [
    (2, [10 + 2.2 * S, 10.0, 10 + 2.2 * S], 2),           # 2 of 3 beyond 2 sigma, same side
    (3, [10 + 1.2 * S] * 2 + [10.0] + [10 + 1.2 * S] * 2, 4),  # 4 of 5 beyond 1 sigma
    (4, [9.9] * 8, 7),                                      # 8 in a row below the centre
])
def test_western_electric_rules_flag_the_completing_point(rule, tail, flagged_at):
    values = BASE + tail
    plain = individuals_chart(values, baseline=20)
    assert not plain.flagged.any()  # none of these runs breaks the 3 sigma limits
    chart = individuals_chart(values, baseline=20, rules=(1, rule))
    assert list(np.flatnonzero(chart.flagged)) == [20 + flagged_at]
    assert len(chart.reasons(20 + flagged_at)) == 1


def test_western_electric_rules_need_the_same_side():
    tail = [10 + 2.2 * S, 10 - 2.2 * S, 10.0, 10 + 2.2 * S, 10 - 2.2 * S]  # never 2 of 3 on one side
    assert not individuals_chart(BASE + tail, baseline=20, rules=(1, 2, 3, 4)).flagged.any()


def test_ewma_limits_and_values_by_hand():
    chart = ewma_chart(SERIES, lam=0.2, L=3)
    assert chart.statistic[:2] == pytest.approx([11.6, 11.68])  # 0.2*10 + 0.8*12, 0.2*12 + 0.8*11.6
    assert chart.upper[0] - 12 == pytest.approx(3 * SIGMA * 0.2)  # sqrt(0.2/1.8 * (1 - 0.8**2)) = 0.2
    asymptote = 3 * SIGMA * math.sqrt(0.2 / 1.8)
    assert np.all(np.diff(chart.upper) > 0) and chart.upper[-1] - 12 < asymptote
    assert chart.lower == pytest.approx(24 - chart.upper)
    assert not chart.flagged.any()


def test_ewma_with_lambda_one_is_the_individuals_chart():
    values = SERIES + [17.0]
    e, i = ewma_chart(values, lam=1.0, baseline=5), individuals_chart(values, baseline=5)
    assert e.statistic == pytest.approx(i.statistic)
    assert e.upper == pytest.approx(i.upper)
    assert list(e.flagged) == list(i.flagged)


def test_ewma_detects_a_small_sustained_shift_the_shewhart_chart_misses():
    values = BASE + _alternating(20, 10 + 1.5 * S)  # 1.5 sigma shift, no single point near 3 sigma
    shewhart = individuals_chart(values, baseline=20)
    ewma = ewma_chart(values, baseline=20)
    assert not shewhart.flagged.any()
    assert not ewma.flagged[:20].any()
    assert ewma.flagged[20:].sum() >= 5
    first = int(np.flatnonzero(ewma.flagged)[0])
    assert 20 < first < 35


def test_chart_input_errors():
    with pytest.raises(TrendError, match="at least 2"):
        individuals_chart([1.0])
    with pytest.raises(TrendError, match="finite"):
        individuals_chart([1.0, float("nan"), 2.0])
    with pytest.raises(TrendError, match="baseline"):
        individuals_chart(SERIES, baseline=1)
    with pytest.raises(TrendError, match="baseline"):
        individuals_chart(SERIES, baseline=6)
    with pytest.raises(TrendError, match="rule"):
        individuals_chart(SERIES, rules=(5,))
    with pytest.raises(TrendError, match="lambda"):
        ewma_chart(SERIES, lam=0)
    with pytest.raises(TrendError, match="L must"):
        ewma_chart(SERIES, L=-1)
    with pytest.raises(TrendError, match="1-D"):
        centre_and_sigma([[1.0, 2.0]])


# ------------------------------------------------------------------------------------------------ lots
def _lot(seed, n=300, scale=1.0):
    return np.random.default_rng(seed).lognormal(np.log(20.0), 0.35, n) * scale


def test_two_lots_from_one_distribution_are_not_called_different():
    result = compare_lots({"A": _lot(1), "B": _lot(2)}, unit="µm")
    ks, mw = result.tests
    assert (ks.test, mw.test) == ("Kolmogorov-Smirnov", "Mann-Whitney U")
    assert ks.p_value > 0.05 and not result.differ
    assert "No difference between lots A and B" in result.conclusion
    assert [(s.lot, s.n) for s in result.lots] == [("A", 300), ("B", 300)]
    assert result.lots[0].d50 == pytest.approx(np.percentile(_lot(1), 50))


def test_shifted_lots_differ_and_the_larger_one_is_named():
    result = compare_lots({"A": _lot(1), "B": _lot(2, scale=1.15)}, unit="µm")
    ks, mw = result.tests
    assert ks.p_value < 0.01 and mw.p_value < 0.01 and result.differ
    assert "differ" in result.conclusion and "Particles of lot B tend to be larger" in result.conclusion
    assert "µm" in result.conclusion


def test_same_median_different_spread_is_a_shape_difference():
    rng = np.random.default_rng(3)
    narrow = 20 + rng.normal(0, 1, 400)
    wide = 20 + rng.normal(0, 5, 400)
    result = compare_lots({"N": narrow, "W": wide}, unit="px")
    assert result.differ and result.tests[1].p_value > 0.05
    assert "spread or shape" in result.conclusion


def test_three_lots_use_kruskal_wallis():
    same = compare_lots({"A": _lot(1), "B": _lot(2), "C": _lot(3)}, unit="µm")
    assert [t.test for t in same.tests] == ["Kruskal-Wallis H"]
    assert same.tests[0].p_value > 0.05 and not same.differ
    shifted = compare_lots({"A": _lot(1), "B": _lot(2), "C": _lot(3, scale=1.2)}, unit="µm")
    assert shifted.tests[0].p_value < 0.01 and shifted.differ
    assert "largest D50 is lot C's" in shifted.conclusion


def test_identical_sizes_everywhere_give_no_difference():
    for lots in ({"A": [5.0] * 4, "B": [5.0] * 3}, {"A": [5.0] * 4, "B": [5.0] * 3, "C": [5.0, 5.0]}):
        result = compare_lots(lots, unit="px")
        assert not result.differ and all(t.p_value == 1.0 for t in result.tests)


def test_lot_comparison_refuses_tiny_or_bad_input():
    with pytest.raises(TrendError, match="at least two lots"):
        compare_lots({"A": _lot(1)}, unit="µm")
    with pytest.raises(TrendError, match="Lot 'B' has 1 counted particle"):
        compare_lots({"A": _lot(1), "B": [3.0]}, unit="µm")
    with pytest.raises(TrendError, match="Lot 'B' has 0"):
        compare_lots({"A": _lot(1), "B": []}, unit="µm")
    with pytest.raises(TrendError, match="finite sizes"):
        compare_lots({"A": _lot(1), "B": [1.0, float("nan")]}, unit="µm")
    with pytest.raises(TrendError, match="alpha"):
        compare_lots({"A": _lot(1), "B": _lot(2)}, unit="µm", alpha=1.5)


def test_format_p():
    assert format_p(0.04321) == "p = 0.043" and format_p(1e-9) == "p < 0.0001"
