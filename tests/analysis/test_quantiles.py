"""analysis.quantiles must return exactly what np.percentile / np.median return (the pipeline's results depend on
it), on samples of every size parity, with ties, NaN, and both float types."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.quantiles import median, percentile, percentiles

QS = (0, 2, 5, 50, 90, 95, 98, 100, 33.3, 99.99)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equal_to_numpy_bit_for_bit(dtype):
    rng = np.random.default_rng(7)
    sizes = list(range(1, 40)) + [101, 256, 999, 1000, 4097]
    for n in sizes:
        for ties in (False, True):
            x = rng.random(n)
            if ties:
                x = np.round(x * 8) / 8  # many equal values
            x = x.astype(dtype)
            before = x.copy()
            assert percentiles(x, QS) == [float(np.percentile(x, q)) for q in QS], (n, ties)
            assert percentile(x, 95) == float(np.percentile(x, 95))
            assert median(x) == float(np.median(x)), (n, ties)
            np.testing.assert_array_equal(x, before)  # the caller's sample is not reordered


def test_two_dimensional_and_strided_samples_are_flattened_like_numpy():
    x = np.random.default_rng(1).random((17, 23)).astype(np.float32)[::2, 1::3]
    assert percentiles(x, (5, 95)) == [float(np.percentile(x, 5)), float(np.percentile(x, 95))]
    assert median(x) == float(np.median(x))


def test_nan_gives_nan_like_numpy():
    x = np.array([0.2, np.nan, 0.5, 0.1], np.float32)
    assert all(math.isnan(v) for v in percentiles(x, (5, 50)))
    assert math.isnan(median(x))


def test_other_samples_go_to_numpy():
    ints = np.array([3, 1, 2, 10], np.int64)
    assert percentile(ints, 50) == float(np.percentile(ints, 50))
    assert median(ints) == 2.5
    with pytest.raises(IndexError):  # numpy's own error for an empty sample
        percentile(np.zeros(0, np.float32), 5)
    with pytest.raises(ValueError):
        percentiles(np.ones(3, np.float32), (101,))
