"""Cross-plant statistics, part 3: optional differential-privacy noise (OpenDP) and its stated error (pure).

When a round sets epsilon, every plant adds independent discrete Laplace noise (two-sided geometric,
P(k) ∝ exp(-epsilon |k|)) to each value of its own vector *before* splitting it into shares. Neighbouring inputs
differ by one crystal (added or removed), which changes one bin by one: L1 sensitivity 1, so each plant's noisy
vector - and anything computed from it, the aggregate included - is epsilon-differentially private for every single
crystal, even against all other plants and the researcher together. A group of k crystals (e.g. one image with k
counted crystals) is protected at k * epsilon (group privacy). Noise is added per plant because there is no trusted
party to add it once: the aggregate carries the sum of n noises per bin.

The noise comes from OpenDP's ``make_laplace`` on an integer vector domain (its discrete Laplace sampler, exact and
driven by a cryptographic RNG; it sits behind OpenDP's "contrib" feature flag, i.e. not yet through OpenDP's own
proof review). Error figures are computed here exactly (by convolution), not taken from OpenDP.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from collab.secagg_protocol import SecAggError, check_epsilon

MIN_FAILURE_PROB = 1e-10
_TRUNCATION = 1e-18  # probability mass left out of each single noise's support in error_bound
_EXACT_LIMIT = 1 << 21  # support points of the exact sum distribution; beyond: Chernoff bound


def noise_scale(epsilon: float) -> float:
    """Scale b = 1 / epsilon of each plant's discrete Laplace noise (sensitivity 1)."""
    return 1.0 / check_epsilon(epsilon)


def add_noise(values: Sequence[int], *, epsilon: float) -> tuple[int, ...]:
    """``values`` plus independent discrete Laplace(1/epsilon) noise on each entry, sampled by OpenDP.

    Raises SecAggError when OpenDP is missing or disagrees with the privacy loss stated here.
    """
    scale = noise_scale(epsilon)
    try:
        import opendp.prelude as dp
    except ImportError as e:  # pragma: no cover - opendp is in requirements.txt
        raise SecAggError("Differential-privacy noise needs the 'opendp' package; install requirements.txt.") from e
    dp.enable_features("contrib")
    measurement = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64),
                                    scale=scale)
    if measurement.map(1) > epsilon * (1 + 1e-9):
        raise SecAggError("OpenDP reports a larger privacy loss than the round allows; noise not added.")
    return tuple(int(v) for v in measurement([int(v) for v in values]))


def noise_std(n_noises: int, epsilon: float) -> float:
    """Standard deviation of the sum of ``n_noises`` independent discrete Laplace(1/epsilon) noises
    (one noise: variance 2a / (1 - a)^2 with a = exp(-epsilon))."""
    a = math.exp(-check_epsilon(epsilon))
    return math.sqrt(n_noises * 2 * a) / (1 - a)


def _half_support(epsilon: float) -> int:
    """K with P(|X| > K) < _TRUNCATION for one noise."""
    a = math.exp(-epsilon)
    return max(1, math.ceil(math.log(_TRUNCATION * (1 + a) / 2) / math.log(a)))


def _sum_distribution(n_noises: int, epsilon: float) -> tuple[np.ndarray, int]:
    """P(S = v) for v = -center..center, S the sum of n_noises discrete Laplace noises (FFT convolution)."""
    a = math.exp(-epsilon)
    half = _half_support(epsilon)
    k = np.arange(-half, half + 1)
    pmf = (1 - a) / (1 + a) * a ** np.abs(k)
    size = n_noises * 2 * half + 1
    length = 1 << (size - 1).bit_length()
    dist = np.fft.irfft(np.fft.rfft(pmf, length) ** n_noises, length)[:size]
    return np.clip(dist, 0.0, None), n_noises * half


@functools.lru_cache(maxsize=256)
def error_bound(n_noises: int, epsilon: float, *, failure_prob: float = 1e-6) -> int:
    """The smallest t with P(|S| > t) <= failure_prob, S the sum of ``n_noises`` independent discrete
    Laplace(1/epsilon) noises: with n plants, each bin of the aggregate is within t of the true sum with probability
    at least 1 - failure_prob (``n_noises = n``); the total count uses n * bins noises.

    Exact (FFT convolution of the distribution) while the support stays below about 2 million points; beyond that
    (many noises at a small epsilon) the Chernoff bound, which is larger than the exact t (never smaller)."""
    epsilon = check_epsilon(epsilon)
    if epsilon is None or not isinstance(n_noises, int) or n_noises < 1:
        raise ValueError("need epsilon and n_noises >= 1")
    if not MIN_FAILURE_PROB <= failure_prob < 1:
        raise ValueError(f"failure_prob must be in [{MIN_FAILURE_PROB}, 1)")
    if n_noises * (2 * _half_support(epsilon) + 1) > _EXACT_LIMIT:
        return chernoff_bound(n_noises, epsilon, failure_prob=failure_prob)
    dist, center = _sum_distribution(n_noises, epsilon)
    by_abs = dist[center:].copy()
    by_abs[1:] += dist[:center][::-1]
    tail = np.cumsum(by_abs[::-1])[::-1]  # tail[m] = P(|S| >= m)
    tail = np.append(tail[1:], 0.0) + n_noises * _TRUNCATION  # P(|S| > m), plus the mass cut off
    ok = np.nonzero(tail <= failure_prob)[0]
    return int(ok[0]) if ok.size else int(center)


def chernoff_bound(n_noises: int, epsilon: float, *, failure_prob: float) -> int:
    """A t with P(|S| > t) <= failure_prob from the Chernoff bound P(|S| >= t) <= 2 min_l M(l)^n e^(-l t), with
    M(l) = (1 - a)^2 / ((1 - a e^l)(1 - a e^-l)) the moment generating function of one noise (0 < l < epsilon)."""
    a = math.exp(-epsilon)

    def log_tail(t: float) -> float:
        def f(lam: float) -> float:
            log_mgf = 2 * math.log(1 - a) - math.log(1 - a * math.exp(lam)) - math.log(1 - a * math.exp(-lam))
            return n_noises * log_mgf - lam * t
        res = minimize_scalar(f, bounds=(1e-12, epsilon * (1 - 1e-9)), method="bounded",
                              options={"xatol": 1e-12 * epsilon})
        return math.log(2) + min(res.fun, 0.0)

    target = math.log(failure_prob)
    lo, hi = 0, max(1, int(10 * noise_std(n_noises, epsilon)))
    while log_tail(hi) > target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if log_tail(mid) > target else (lo, mid)
    return hi
