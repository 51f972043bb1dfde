"""Statistical process control of saved analyses and comparison of lots (numpy + scipy, no app code).

Control charts (one value per analysis, in time order):

* :func:`individuals_chart` — the Shewhart individuals chart of an I-MR pair. Centre line ``c`` = mean of the
  baseline values; process sigma from the average moving range, ``sigma = MRbar / d2`` with ``MRbar`` = mean of
  ``|x_i - x_(i-1)|`` over the baseline and ``d2 = 1.128`` (the bias constant of the range of two normal values).
  Limits ``c ± 3 sigma``. Using the moving range instead of the standard deviation keeps a sustained shift from
  inflating sigma (Montgomery, *Introduction to Statistical Quality Control*, chapter on control charts for
  individual measurements). Optional Western Electric run rules (*Statistical Quality Control Handbook*, Western
  Electric 1956), with zones in units of sigma on one side of the centre line:

  1. one point beyond 3 sigma;
  2. two of three consecutive points beyond 2 sigma on the same side;
  3. four of five consecutive points beyond 1 sigma on the same side;
  4. eight consecutive points on the same side of the centre line.

  A rule flags the point that completes its pattern; for rules 2 and 3 that point must itself lie in the zone.
  Rules 2-4 raise the false-alarm rate (about 1 in 90 points instead of 1 in 370 for rule 1 alone on normal data),
  so they are off unless asked for.

* :func:`ewma_chart` — the exponentially weighted moving average chart (Roberts 1959; Lucas and Saccucci 1990):
  ``z_0 = c``, ``z_i = lambda x_i + (1 - lambda) z_(i-1)``; limits
  ``c ± L sigma sqrt(lambda / (2 - lambda) * (1 - (1 - lambda)^(2 i)))`` (narrow at the start, widening to the
  asymptote ``c ± L sigma sqrt(lambda / (2 - lambda))``). Centre and sigma are estimated as for the individuals
  chart. With lambda = 0.2 and L = 3 (the defaults, a common textbook choice) it detects sustained shifts of about
  one sigma several times sooner than the individuals chart, which is tuned for large single excursions.

Lot comparison (:func:`compare_lots`): per-lot arrays of particle sizes (ECD, one unit for all lots).
Two lots: the two-sample Kolmogorov-Smirnov test (any difference between the two distributions: location, spread or
shape; it decides the conclusion) and the Mann-Whitney U test (do sizes of one lot tend to be larger; it gives the
direction). More lots: the Kruskal-Wallis H test (does at least one lot tend to have larger or smaller sizes).
All three are rank based and assume independent particles, not a normal distribution. With thousands of particles
even a difference too small to matter is "significant", so the conclusion always states the D50 values as well.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from analysis.errors import CrystalQCError
from analysis.stats import size_distribution

#: d2 for subgroups of two (the moving range): E[range of 2 standard normal values] = 2 / sqrt(pi).
D2_MOVING_RANGE: float = 1.128

#: Fewest values a control chart is drawn for. Limits from so few points are rough: textbooks ask for 20-25
#: baseline points before limits are trusted (the app says so below that).
MIN_CHART_POINTS: int = 5
RECOMMENDED_BASELINE_POINTS: int = 20

WESTERN_ELECTRIC_RULES: dict[int, str] = {
    1: "one point beyond 3 sigma",
    2: "2 of 3 points beyond 2 sigma on one side",
    3: "4 of 5 points beyond 1 sigma on one side",
    4: "8 points in a row on one side of the centre line",
}

#: Fewest particles per lot for :func:`compare_lots`.
MIN_LOT_PARTICLES: int = 2


class TrendError(CrystalQCError, ValueError):
    """A control chart or lot comparison cannot be computed from the data given (too few values, bad options)."""


@dataclass(frozen=True, eq=False)
class ControlChart:
    """A control chart of ``values`` (one per analysis, time order).

    ``kind`` is "individuals" or "ewma". ``statistic`` is what is plotted against the limits: the values themselves
    (individuals) or the EWMA ``z`` (ewma). ``lower``/``upper`` are the limits per point (constant for the
    individuals chart). ``rule_flags`` maps a Western Electric rule number to a bool array (rule 1 = outside the
    limits; the EWMA chart has only rule 1). ``baseline`` = how many leading values set centre and sigma.
    """

    kind: str
    values: np.ndarray
    statistic: np.ndarray
    centre: float
    sigma: float
    lower: np.ndarray
    upper: np.ndarray
    baseline: int
    rule_flags: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def out_of_limits(self) -> np.ndarray:
        """Points whose plotted statistic lies outside the limits (rule 1)."""
        return self.rule_flags[1]

    @property
    def flagged(self) -> np.ndarray:
        """Points flagged by any rule that was applied."""
        out = np.zeros(self.values.size, bool)
        for flags in self.rule_flags.values():
            out |= flags
        return out

    def reasons(self, i: int) -> list[str]:
        """Plain-words reasons point ``i`` is flagged (empty when it is not)."""
        return [WESTERN_ELECTRIC_RULES[r] for r, flags in sorted(self.rule_flags.items()) if flags[i]]


def _series(values: object, baseline: int | None) -> tuple[np.ndarray, int]:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise TrendError(f"A control chart needs a 1-D series of values, got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise TrendError("A control chart needs finite values (leave out analyses with no value first).")
    if x.size < 2:
        raise TrendError(f"A control chart needs at least 2 values (a moving range), got {x.size}.")
    n_base = x.size if baseline is None else int(baseline)
    if baseline is not None and (n_base != baseline or not 2 <= n_base <= x.size):
        raise TrendError(f"The baseline must be between 2 and {x.size} values, got {baseline!r}.")
    return x, n_base


def centre_and_sigma(values: object, *, baseline: int | None = None) -> tuple[float, float]:
    """``(centre, sigma)`` from the first ``baseline`` values (all when None): mean and MRbar / 1.128.

    Raises:
        TrendError: fewer than 2 values, non-finite values, or a baseline outside 2..len(values).
    """
    x, n_base = _series(values, baseline)
    base = x[:n_base]
    return float(base.mean()), float(np.abs(np.diff(base)).mean() / D2_MOVING_RANGE)


def individuals_chart(values: object, *, baseline: int | None = None, rules: tuple[int, ...] = (1,)) -> ControlChart:
    """Shewhart individuals chart: centre, ``centre ± 3 sigma`` limits, and the points flagged by ``rules``
    (Western Electric rule numbers; rule 1 is always applied).

    Raises:
        TrendError: as :func:`centre_and_sigma`, or an unknown rule number.
    """
    unknown = set(rules) - set(WESTERN_ELECTRIC_RULES)
    if unknown:
        raise TrendError(f"Unknown Western Electric rule(s) {sorted(unknown)}; known: 1 to 4.")
    x, n_base = _series(values, baseline)
    centre, sigma = centre_and_sigma(x, baseline=n_base)
    lower = np.full(x.size, centre - 3 * sigma)
    upper = np.full(x.size, centre + 3 * sigma)
    flags = {1: (x > upper) | (x < lower)}
    dev = x - centre
    for rule in sorted(set(rules) - {1}):
        flags[rule] = _run_rule(dev, sigma, rule)
    return ControlChart("individuals", x, x.copy(), centre, sigma, lower, upper, n_base, flags)


def _run_rule(dev: np.ndarray, sigma: float, rule: int) -> np.ndarray:
    """Western Electric rules 2-4 on deviations from the centre line (see the module docstring)."""
    window, need, zone = {2: (3, 2, 2.0), 3: (5, 4, 1.0), 4: (8, 8, 0.0)}[rule]
    out = np.zeros(dev.size, bool)
    for sign in (1.0, -1.0):
        beyond = sign * dev > zone * sigma
        for i in range(window - 1, dev.size):
            if beyond[i] and beyond[i - window + 1:i + 1].sum() >= need:
                out[i] = True
    return out


def ewma_chart(values: object, *, lam: float = 0.2, L: float = 3.0, baseline: int | None = None) -> ControlChart:
    """EWMA chart with smoothing ``lam`` (0 < lam <= 1) and limit width ``L`` (> 0) sigma; see the module docstring.
    ``lam = 1`` gives back the individuals chart.

    Raises:
        TrendError: as :func:`centre_and_sigma`, or lam/L out of range.
    """
    if not (isinstance(lam, (int, float)) and 0 < lam <= 1):
        raise TrendError(f"The EWMA weight lambda must be in (0, 1], got {lam!r}.")
    if not (isinstance(L, (int, float)) and math.isfinite(L) and L > 0):
        raise TrendError(f"The EWMA limit width L must be a positive number, got {L!r}.")
    x, n_base = _series(values, baseline)
    centre, sigma = centre_and_sigma(x, baseline=n_base)
    z = np.empty(x.size)
    prev = centre
    for i, xi in enumerate(x):
        prev = lam * xi + (1 - lam) * prev
        z[i] = prev
    i = np.arange(1, x.size + 1)
    half = L * sigma * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
    lower, upper = centre - half, centre + half
    return ControlChart("ewma", x, z, centre, sigma, lower, upper, n_base, {1: (z > upper) | (z < lower)})


# ------------------------------------------------------------------------------------------------ lot comparison
@dataclass(frozen=True)
class LotStats:
    """Counted particles and number-weighted D-values of one lot (in the comparison's unit)."""

    lot: str
    n: int
    d10: float
    d50: float
    d90: float


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test: its name, statistic and p-value."""

    test: str
    statistic: float
    p_value: float


@dataclass(frozen=True)
class LotComparison:
    """Result of :func:`compare_lots`. ``differ`` is the decision at ``alpha`` of the deciding test (the first of
    ``tests``); ``conclusion`` says it in plain words."""

    unit: str
    alpha: float
    lots: tuple[LotStats, ...]
    tests: tuple[TestResult, ...]
    differ: bool
    conclusion: str


def format_p(p: float) -> str:
    """A p-value for people: "p < 0.0001" or two significant digits."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def compare_lots(sizes: Mapping[str, object], *, unit: str, alpha: float = 0.05) -> LotComparison:
    """Do the particle-size distributions of the lots differ? ``sizes`` maps a lot name to its particle sizes
    (1-D, finite, >= 0, all in ``unit``). Two lots: Kolmogorov-Smirnov (decides) and Mann-Whitney U (direction);
    more: Kruskal-Wallis. See the module docstring.

    Raises:
        TrendError: fewer than 2 lots, a lot with fewer than MIN_LOT_PARTICLES particles, bad sizes, or alpha not
        in (0, 1).
    """
    if not 0 < alpha < 1:
        raise TrendError(f"alpha must be between 0 and 1, got {alpha!r}.")
    if len(sizes) < 2:
        raise TrendError("Choose at least two lots to compare.")
    arrays: dict[str, np.ndarray] = {}
    for lot, values in sizes.items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or (arr.size and not (np.isfinite(arr).all() and arr.min() >= 0)):
            raise TrendError(f"The sizes of lot {lot!r} are not a list of finite sizes >= 0.")
        if arr.size < MIN_LOT_PARTICLES:
            raise TrendError(f"Lot {lot!r} has {arr.size} counted particle(s); a comparison needs at least "
                             f"{MIN_LOT_PARTICLES} per lot. Add analyses of that lot or leave it out.")
        arrays[lot] = arr
    lots = tuple(_lot_stats(lot, arr) for lot, arr in arrays.items())
    names = list(arrays)
    constant = np.unique(np.concatenate(list(arrays.values()))).size == 1
    if len(arrays) == 2:
        a, b = arrays[names[0]], arrays[names[1]]
        ks = sps.ks_2samp(a, b)
        if constant:  # every particle the same size: nothing to tell apart
            mw_stat, mw_p = a.size * b.size / 2, 1.0
        else:
            mw = sps.mannwhitneyu(a, b, alternative="two-sided")
            mw_stat, mw_p = float(mw.statistic), float(mw.pvalue)
        tests = (TestResult("Kolmogorov-Smirnov", float(ks.statistic), float(ks.pvalue)),
                 TestResult("Mann-Whitney U", mw_stat, mw_p))
        differ = tests[0].p_value < alpha
        text = _two_lot_words(lots, tests, alpha, unit, prob_a_larger=mw_stat / (a.size * b.size))
    else:
        if constant:
            kw_stat, kw_p = 0.0, 1.0
        else:
            kw = sps.kruskal(*arrays.values())
            kw_stat, kw_p = float(kw.statistic), float(kw.pvalue)
        tests = (TestResult("Kruskal-Wallis H", kw_stat, kw_p),)
        differ = kw_p < alpha
        text = _many_lot_words(lots, tests[0], alpha, unit)
    return LotComparison(unit=unit, alpha=alpha, lots=lots, tests=tests, differ=differ, conclusion=text)


def _lot_stats(lot: str, arr: np.ndarray) -> LotStats:
    dv = size_distribution(arr, weighting="number")
    return LotStats(lot=lot, n=int(arr.size), d10=dv.d10, d50=dv.d50, d90=dv.d90)


def _d50s(lots: tuple[LotStats, ...], unit: str) -> str:
    return ", ".join(f"{s.lot} {s.d50:.3g} {unit} (n = {s.n})" for s in lots)


def _two_lot_words(lots: tuple[LotStats, ...], tests: tuple[TestResult, ...], alpha: float, unit: str, *,
                   prob_a_larger: float) -> str:
    a, b = lots
    ks, mw = tests
    larger, smaller = (a, b) if prob_a_larger >= 0.5 else (b, a)
    prob = max(prob_a_larger, 1 - prob_a_larger)
    if ks.p_value < alpha:
        first = (f"The size distributions of lots {a.lot} and {b.lot} differ (Kolmogorov-Smirnov "
                 f"{format_p(ks.p_value)}, significance level {alpha:g}).")
        if mw.p_value < alpha:
            second = (f"Particles of lot {larger.lot} tend to be larger than those of lot {smaller.lot} "
                      f"(Mann-Whitney {format_p(mw.p_value)}; a particle of {larger.lot} is the larger one with "
                      f"probability {prob:.2f}).")
        else:
            second = (f"Neither lot has clearly larger particles (Mann-Whitney {format_p(mw.p_value)}): the "
                      "difference is in the spread or shape of the distribution.")
    else:
        first = (f"No difference between lots {a.lot} and {b.lot} is shown at the {alpha:g} level "
                 f"(Kolmogorov-Smirnov {format_p(ks.p_value)}). This does not prove the lots are the same; "
                 "more particles make smaller differences visible.")
        second = ""
        if mw.p_value < alpha:
            second = (f"The Mann-Whitney test alone sees particles of lot {larger.lot} as larger "
                      f"({format_p(mw.p_value)}): a weak indication, worth more images.")
    d50 = f"D50: {_d50s(lots, unit)}; a statistically significant difference can still be too small to matter."
    return " ".join(s for s in (first, second, d50) if s)


def _many_lot_words(lots: tuple[LotStats, ...], test: TestResult, alpha: float, unit: str) -> str:
    names = ", ".join(s.lot for s in lots)
    if test.p_value < alpha:
        hi = max(lots, key=lambda s: s.d50)
        lo = min(lots, key=lambda s: s.d50)
        first = (f"At least one of the {len(lots)} lots ({names}) differs in particle size (Kruskal-Wallis "
                 f"{format_p(test.p_value)}, significance level {alpha:g}); the largest D50 is lot {hi.lot}'s, "
                 f"the smallest lot {lo.lot}'s. Compare two lots at a time to see which differ.")
    else:
        first = (f"No difference in particle size among the {len(lots)} lots ({names}) is shown at the {alpha:g} "
                 f"level (Kruskal-Wallis {format_p(test.p_value)}). This does not prove the lots are the same.")
    return f"{first} D50: {_d50s(lots, unit)}."
