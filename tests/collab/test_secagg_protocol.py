"""Secure aggregation, the pure parts: agreed bins and histogram, additive sharing mod 2^64 (exactness, uniformity
and independence of shares from the data), plant cards and round files (minimum, duplicates, bins, strict JSON)."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats

from collab.secagg_keys import PlantKeys
from collab.secagg_math import MODULUS, add_elements, ecd_histogram, random_elements, split, to_signed
from collab.secagg_protocol import (BINS, CURRENT_BINS, SecAggError, bin_edges, bin_labels, card_json,
                                    create_round, parse_card, parse_json, parse_round, round_json, vector_length)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
L = vector_length(CURRENT_BINS)


def seeded(seed: int):
    """A deterministic stand-in for secrets.token_bytes (tests only)."""
    rng = np.random.default_rng(seed)
    return lambda n: rng.bytes(n)


@pytest.fixture(scope="module")
def keys() -> list[PlantKeys]:
    return [PlantKeys.generate(f"plant-{c}") for c in "abcde"]


def new_round(keys, **over):
    args = dict(title="Q1 sugar", min_plants=3, deadline=NOW + timedelta(days=14), now=NOW)
    args.update(over)
    return create_round([k.card() for k in keys], **args)


# ------------------------------------------------------------------------------------------------ bins, histogram
def test_bins_are_sqrt2_steps_from_1_to_2048_um_with_under_and_overflow():
    edges = bin_edges(CURRENT_BINS)
    assert edges[0] == 1.0 and edges[-1] == 2048.0 and len(edges) == 23
    assert np.allclose(np.diff(np.log2(edges)), 0.5)
    assert L == 24 == len(bin_labels(CURRENT_BINS))
    assert bin_labels(CURRENT_BINS)[:2] == ["< 1", "1–1.41"] and bin_labels(CURRENT_BINS)[-1] == "≥ 2.05e+03"
    with pytest.raises(SecAggError, match="Unknown size bins"):
        bin_edges("ecd-px-v9")


def test_histogram_known_answer():
    sizes = np.array([0.5, 1.0, 1.2, 1.42, 3.0, 2047.9, 2048.0, 5000.0])
    h = ecd_histogram(sizes, bins_version=CURRENT_BINS)
    expected = [0] * L
    expected[0] += 1                  # 0.5 < 1 µm
    expected[1] += 2                  # 1.0 and 1.2 in [1, 1.414)
    expected[2] += 1                  # 1.42 in [1.414, 2)
    expected[4] += 1                  # 3.0 in [2.83, 4)
    expected[22] += 1                 # 2047.9 in [1448, 2048)
    expected[23] += 2                 # >= 2048
    assert list(h) == expected and sum(h) == len(sizes)
    assert ecd_histogram(np.zeros(0), bins_version=CURRENT_BINS) == (0,) * L
    for bad in ([1.0, -2.0], [float("nan")], [float("inf")]):
        with pytest.raises(SecAggError, match="finite and non-negative"):
            ecd_histogram(np.array(bad), bins_version=CURRENT_BINS)


# ------------------------------------------------------------------------------------------------ sharing
def test_shares_add_up_exactly_including_negative_values():
    values = [0, 1, 5, 2 ** 47, -3, -(2 ** 47) + 1] + [7] * (L - 6)
    for n in (2, 3, 5, 50):
        shares = split(values, n)
        assert len(shares) == n and all(len(s) == L and all(0 <= v < MODULUS for v in s) for s in shares)
        assert list(to_signed(add_elements(shares))) == values


def test_sums_of_shares_of_several_plants_give_the_sum_of_their_vectors():
    rng = np.random.default_rng(1)
    vectors = [rng.integers(0, 10_000, L).tolist() for _ in range(5)]
    shares = [split(v, 5) for v in vectors]
    partials = [add_elements([shares[i][j] for i in range(5)]) for j in range(5)]
    assert list(to_signed(add_elements(partials))) == np.sum(vectors, axis=0).tolist()


def test_values_that_are_not_counts_are_refused():
    for bad in ([1.5] + [0] * (L - 1), [2 ** 48] + [0] * (L - 1), [True] + [0] * (L - 1)):
        with pytest.raises(SecAggError, match="not a count"):
            split(bad, 3)
    with pytest.raises(ValueError):
        split([1] * L, 1)


def test_outgoing_shares_do_not_depend_on_the_data():
    """The n-1 shares that leave the plant are drawn before the data is used: with the same randomness, two very
    different histograms give byte-identical outgoing shares - they carry no information about the histogram."""
    a = split([0] * L, 5, random_bytes=seeded(7))
    b = split(list(range(1000, 1000 + L)), 5, random_bytes=seeded(7))
    assert a[1:] == b[1:]
    assert a[0] != b[0]


def _top_and_low_nibbles(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array(values, dtype=np.uint64)
    return (arr >> np.uint64(60)).astype(int), (arr & np.uint64(15)).astype(int)


def _uniform_p(values: list[int]) -> float:
    """Smallest p-value of chi-square tests for uniformity of the top and low 4 bits and of each bit."""
    top, low = _top_and_low_nibbles(values)
    ps = [stats.chisquare(np.bincount(nibbles, minlength=16)).pvalue for nibbles in (top, low)]
    arr = np.array(values, dtype=np.uint64)
    for bit in range(64):
        ones = int(((arr >> np.uint64(bit)) & np.uint64(1)).sum())
        ps.append(stats.chisquare([ones, len(values) - ones]).pvalue)
    return min(ps) * len(ps)  # Bonferroni over the 66 tests


@pytest.mark.parametrize("data", ["zeros", "large counts"])
def test_a_single_share_is_uniform_whatever_the_data(data):
    """Over 1000 seeded splittings of the same histogram (24 values each), the kept share (data minus randomness)
    and an outgoing share are both uniform on Z_2^64: high/low nibbles and every bit pass chi-square tests."""
    vector = [0] * L if data == "zeros" else [1_000_000 + 37 * i for i in range(L)]
    draw = seeded(2024)
    kept, sent = [], []
    for _ in range(1000):
        shares = split(vector, 5, random_bytes=draw)
        kept += shares[0]
        sent += shares[3]
    assert _uniform_p(kept) > 1e-3
    assert _uniform_p(sent) > 1e-3


def test_the_uniformity_test_has_power():
    """The same test rejects data that is not uniform: the histogram itself, and a biased 'share' (top bit 0)."""
    vector = [1_000_000 + 37 * i for i in range(L)] * 1000
    assert _uniform_p(vector) < 1e-6
    biased = [v >> 1 for v in random_elements(24_000, random_bytes=seeded(3))]
    assert _uniform_p(biased) < 1e-6


def test_the_kept_share_has_the_same_distribution_for_different_data():
    """Two-sample chi-square (16 top-nibble buckets) between kept shares of an all-zero and a large histogram."""
    draw = seeded(99)
    tables = []
    for vector in ([0] * L, [50_000] * L):
        values = [v for _ in range(500) for v in split(vector, 3, random_bytes=draw)[0]]
        tables.append(np.bincount(_top_and_low_nibbles(values)[0], minlength=16))
    assert stats.chi2_contingency(np.array(tables)).pvalue > 1e-3


def test_default_randomness_is_fresh():
    assert split([1] * L, 3)[1] != split([1] * L, 3)[1]


# ------------------------------------------------------------------------------------------------ cards, rounds
def test_plant_card_round_trip_and_bad_cards(keys):
    card = keys[0].card()
    assert parse_card(card_json(card)) == card
    assert "AGE-SECRET-KEY" not in card_json(card).decode() and "PRIVATE" not in card_json(card).decode()
    obj = json.loads(card_json(card))
    obj["card"]["age_recipient"] = "age1" + "q" * 58
    with pytest.raises(SecAggError, match="invalid age public key"):
        parse_card(json.dumps(obj).encode())
    obj = json.loads(card_json(card))
    obj["card"]["pseudonym"] = "Plant A (Hamburg)"
    with pytest.raises(SecAggError, match="pseudonym"):
        parse_card(json.dumps(obj).encode())
    with pytest.raises(SecAggError, match="not a plant card"):
        parse_card(round_json(new_round(keys)))


def test_round_file_round_trips_and_its_digest_is_stable(keys):
    rnd = new_round(keys, epsilon=1)
    again = parse_round(round_json(rnd))
    assert again == rnd and again.digest == rnd.digest and rnd.epsilon == 1.0
    assert rnd.pseudonyms == tuple(f"plant-{c}" for c in "abcde")
    assert new_round(keys).round_id != rnd.round_id  # random ids
    other = parse_round(round_json(rnd).replace(b'"epsilon":1.0', b'"epsilon":2.0'))
    assert other.round_id == rnd.round_id and other.digest != rnd.digest


def test_fewer_plants_than_the_minimum_are_refused(keys):
    with pytest.raises(SecAggError, match="Too few plants: 2 joined, the round needs at least 3"):
        new_round(keys[:2])
    with pytest.raises(SecAggError, match="Too few plants: 4 joined, the round needs at least 5"):
        new_round(keys[:4], min_plants=5)
    with pytest.raises(SecAggError, match="at least 3"):
        new_round(keys, min_plants=2)
    obj = json.loads(round_json(new_round(keys[:3])))
    obj["min_plants"] = 2
    obj["plants"] = obj["plants"][:2]
    with pytest.raises(SecAggError, match="at least 3"):  # a doctored round file is refused by every plant
        parse_round(json.dumps(obj).encode())


def test_duplicate_plants_are_refused(keys):
    with pytest.raises(SecAggError, match="same pseudonym appears twice"):
        create_round([keys[0].card(), keys[1].card(), keys[0].card()], title="t", deadline=NOW + timedelta(days=1),
                     now=NOW)
    impostor = PlantKeys(keys[0].pseudonym + "-2", keys[0].age_identity, keys[1].signing_key)
    with pytest.raises(SecAggError, match="same age public key appears twice"):
        create_round([keys[0].card(), impostor.card(), keys[2].card()], title="t", deadline=NOW + timedelta(days=1),
                     now=NOW)


def test_round_parameters_are_checked(keys):
    with pytest.raises(SecAggError, match="deadline"):
        new_round(keys, deadline=NOW - timedelta(hours=1))
    with pytest.raises(SecAggError, match="deadline"):
        new_round(keys, deadline=NOW + timedelta(days=400))
    for eps in (0, -1, 50, math.nan):
        with pytest.raises(SecAggError, match="epsilon"):
            new_round(keys, epsilon=eps)
    with pytest.raises(SecAggError, match="Unknown size bins"):
        new_round(keys, bins_version="ecd-um-decade-v0")
    obj = json.loads(round_json(new_round(keys)))
    obj["bins"]["edges_um"][3] = 2.5
    with pytest.raises(SecAggError, match="differ from the agreed bins"):
        parse_round(json.dumps(obj).encode())
    obj = json.loads(round_json(new_round(keys)))
    obj["version"] = 2
    with pytest.raises(SecAggError, match="protocol version 2"):
        parse_round(json.dumps(obj).encode())
    obj = json.loads(round_json(new_round(keys)))
    obj["extra"] = 1
    with pytest.raises(SecAggError, match="unexpected extra"):
        parse_round(json.dumps(obj).encode())
    assert set(BINS) == {CURRENT_BINS}


def test_files_are_parsed_strictly():
    with pytest.raises(SecAggError, match="not valid JSON"):
        parse_json(b'{"a": 1, "a": 2}', what="round file")
    with pytest.raises(SecAggError, match="not valid JSON"):
        parse_json(b'{"a": NaN}', what="round file")
    with pytest.raises(SecAggError, match="expected a JSON object"):
        parse_json(b"[1]", what="round file")
    with pytest.raises(SecAggError, match="too large"):
        parse_json(b" " * 70_000, what="round file")
    with pytest.raises(SecAggError, match="not valid JSON"):
        parse_json(b"\xff\xfe", what="round file")
