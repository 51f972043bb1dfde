"""Cross-plant statistics, part 2: additive secret sharing over Z_(2^64) and the agreed size histogram (pure).

Additive sharing: a vector x of integers (counts, possibly with signed noise) is split into n shares
``s_0 .. s_(n-1)`` with ``s_1 .. s_(n-1)`` drawn uniformly from Z_(2^64) (8 bytes each from the operating system's
CSPRNG, ``secrets.token_bytes``) and ``s_0 = x - (s_1 + ... + s_(n-1)) mod 2^64``. Any n-1 of the shares are
independent and uniform whatever x is, so a party holding fewer than all n learns nothing about x; all n summed give
x back. Sums of shares of several plants give the sum of their vectors (the group is abelian), which is how the
aggregate is formed without anybody seeing a plant's vector.

Why Z_(2^64) rather than a prime field: sharing only needs a group, uniform sampling is exact (8 random bytes, no
rejection step), and signed values (noise) map by two's complement. Values are limited to |v| < 2^48 so that the
sum over up to 50 plants can never wrap and the signed reading of the total is exact.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

import numpy as np

from collab.secagg_protocol import SecAggError, bin_edges

MODULUS = 1 << 64
MAX_ABS_VALUE = 1 << 48

RandomBytes = Callable[[int], bytes]


def check_values(values: Sequence[int], length: int, *, what: str = "histogram") -> tuple[int, ...]:
    """Integers with |v| < 2^48, exactly ``length`` of them."""
    out = tuple(values)
    if len(out) != length:
        raise SecAggError(f"The {what} has {len(out)} values; the agreed bins need {length}.")
    for v in out:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not -MAX_ABS_VALUE < int(v) < MAX_ABS_VALUE:
            raise SecAggError(f"The {what} holds a value that is not a count (integers below 2^48 only).")
    return tuple(int(v) for v in out)


def check_elements(values: object, length: int, *, what: str) -> tuple[int, ...]:
    """A share-like vector: ``length`` integers in [0, 2^64)."""
    if not isinstance(values, list) or len(values) != length:
        raise SecAggError(f"The {what} does not hold the {length} values the agreed bins need.")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < MODULUS:
            raise SecAggError(f"The {what} holds a value outside 0..2^64-1; the file is damaged.")
    return tuple(values)


def random_elements(count: int, *, random_bytes: RandomBytes = secrets.token_bytes) -> tuple[int, ...]:
    """``count`` independent uniform elements of Z_(2^64)."""
    raw = random_bytes(8 * count)
    if len(raw) != 8 * count:
        raise ValueError("random_bytes returned the wrong number of bytes")
    return tuple(int.from_bytes(raw[8 * i:8 * i + 8], "little") for i in range(count))


def split(values: Sequence[int], n: int, *, random_bytes: RandomBytes = secrets.token_bytes
          ) -> list[tuple[int, ...]]:
    """n additive shares of ``values`` mod 2^64; ``shares[1:]`` are pure randomness (independent of ``values``),
    ``shares[0]`` makes them add up. ``random_bytes`` is replaceable only so tests can seed it."""
    if not isinstance(n, int) or n < 2:
        raise ValueError("n must be an integer >= 2")
    values = check_values(values, len(values))
    others = [random_elements(len(values), random_bytes=random_bytes) for _ in range(n - 1)]
    first = tuple((v - sum(col)) % MODULUS for v, col in zip(values, zip(*others)))
    return [first, *others]


def add_elements(vectors: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Element-wise sum mod 2^64 of equally long vectors."""
    if not vectors:
        raise ValueError("nothing to add")
    length = len(vectors[0])
    if any(len(v) != length for v in vectors):
        raise ValueError("vectors of different lengths")
    return tuple(sum(col) % MODULUS for col in zip(*vectors))


def to_signed(values: Sequence[int]) -> tuple[int, ...]:
    """Two's-complement reading of elements: v >= 2^63 means v - 2^64."""
    return tuple(v - MODULUS if v >= MODULUS // 2 else v for v in values)


def ecd_histogram(ecd_um: np.ndarray, *, bins_version: str) -> tuple[int, ...]:
    """Counts per agreed bin of equivalent circular diameters in µm: ``[< e0, [e0, e1), ..., [e_-2, e_-1), >= e_-1]``
    (length len(edges) + 1). Raises SecAggError for negative or non-finite sizes."""
    ecd = np.asarray(ecd_um, dtype=float).ravel()
    if ecd.size and (not np.all(np.isfinite(ecd)) or ecd.min() < 0):
        raise SecAggError("Crystal sizes must be finite and non-negative.")
    edges = np.asarray(bin_edges(bins_version))
    index = np.searchsorted(edges, ecd, side="right")
    return tuple(int(c) for c in np.bincount(index, minlength=len(edges) + 1))
