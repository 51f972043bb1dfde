"""Secure aggregation with five simulated plants in one process: the files pass as bytes (as they would over USB
or loopback), the researcher routes and aggregates, every plant re-checks the aggregate. Exactness without DP,
the stated error with DP, and every refusal: tampering, forgery, wrong recipient, replay, duplicates, missing plants,
too few plants, closed round."""
from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from collab import crypto_age
from collab.secagg_dp import add_noise, chernoff_bound, error_bound, noise_std
from collab.secagg_files import (DP_FAILURE_PROB, aggregate, make_partial, make_shares, open_aggregate, open_share,
                                 route_shares)
from collab.secagg_keys import PlantKeys, sign
from collab.secagg_protocol import CURRENT_BINS, SecAggError, canonical_json, create_round, header, vector_length

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
L = vector_length(CURRENT_BINS)


@pytest.fixture(scope="module")
def keys() -> list[PlantKeys]:
    return [PlantKeys.generate(f"plant-{c}") for c in "abcde"]


@pytest.fixture(scope="module")
def histograms() -> list[list[int]]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 5000, L).tolist() for _ in range(5)]


def new_round(keys, **over):
    args = dict(title="Q1 sugar", min_plants=3, deadline=NOW + timedelta(days=14), now=NOW)
    args.update(over)
    return create_round([k.card() for k in keys], **args)


def run_shares(rnd, keys, histograms):
    """Every plant makes its shares: ({plant: kept share}, [all share files])."""
    kept, files = {}, []
    for k, h in zip(keys, histograms):
        mine, outgoing = make_shares(rnd, k, h, now=NOW)
        kept[k.pseudonym] = mine
        files += outgoing.values()
    return kept, files


def run_round(rnd, keys, histograms):
    """The whole protocol; returns (aggregate file, partial files, routed shares)."""
    kept, files = run_shares(rnd, keys, histograms)
    routed = route_shares(rnd, files)
    partials = [make_partial(rnd, k, kept[k.pseudonym], routed[k.pseudonym], now=NOW) for k in keys]
    return aggregate(rnd, partials, now=NOW), partials, routed, kept


@pytest.fixture(scope="module")
def exact(keys, histograms):
    rnd = new_round(keys)
    agg, partials, routed, kept = run_round(rnd, keys, histograms)
    return rnd, agg, partials, routed, kept


# ------------------------------------------------------------------------------------------------ exact aggregate
def test_the_aggregate_equals_the_true_sum_exactly(exact, histograms):
    rnd, agg, *_ = exact
    result = open_aggregate(rnd, agg)
    truth = np.sum(histograms, axis=0).tolist()
    assert list(result.counts) == truth and result.total == sum(truth)
    assert (result.n_plants, result.epsilon, result.bin_error, result.total_error) == (5, None, 0, 0)


def test_no_file_that_leaves_a_plant_contains_its_histogram(exact, keys):
    """A share file is routing data plus age ciphertext; a share's and a partial sum's values are elements of
    Z_2^64 that look uniform (all 24 below 2^40, as counts would be, has probability 2^-576), not counts."""
    rnd, agg, partials, routed, _ = exact
    for k in keys:
        for data in routed[k.pseudonym]:
            assert set(json.loads(data)) == {"protocol", "version", "kind", "round_id", "sender", "recipient", "age"}
            assert base64.b64decode(json.loads(data)["age"]).startswith(crypto_age.AGE_MAGIC)
            assert max(open_share(rnd, k, data)[1]) > 2 ** 40
    for p in partials:
        assert max(json.loads(p)["body"]["values"]) > 2 ** 40


def test_every_plant_gets_one_share_from_every_other(exact, keys):
    rnd, _, _, routed, _ = exact
    for k in keys:
        senders = sorted(open_share(rnd, k, f)[0] for f in routed[k.pseudonym])
        assert senders == sorted(p for p in rnd.pseudonyms if p != k.pseudonym)


# ------------------------------------------------------------------------------------------------ refusals
def test_aggregation_refuses_missing_duplicate_and_too_few_partials(exact, keys):
    rnd, _, partials, _, _ = exact
    with pytest.raises(SecAggError, match="Partial sums missing from: plant-e"):
        aggregate(rnd, partials[:4], now=NOW)
    with pytest.raises(SecAggError, match="Two partial sums from plant-a"):
        aggregate(rnd, partials + partials[:1], now=NOW)
    strict = new_round(keys, min_plants=5, round_id=rnd.round_id)
    with pytest.raises(SecAggError, match="different version of round"):  # partials are bound to their round file
        aggregate(strict, partials, now=NOW)
    agg, partials5, _, _ = run_round(strict, keys, [[1] * L] * 5)
    with pytest.raises(SecAggError, match="Too few plants: partial sums from 4, the round's minimum is 5"):
        aggregate(strict, partials5[:4], now=NOW)
    assert open_aggregate(strict, agg).counts == (5,) * L


def test_a_tampered_share_is_detected(exact, keys):
    rnd, _, _, routed, kept = exact
    share = json.loads(routed["plant-b"][0])
    ct = bytearray(base64.b64decode(share["age"]))
    ct[-5] ^= 0x01
    share["age"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(SecAggError, match="cannot be opened with this plant's key: .* altered"):
        open_share(rnd, keys[1], canonical_json(share))
    with pytest.raises(SecAggError, match="cannot be opened"):
        make_partial(rnd, keys[1], kept["plant-b"], [canonical_json(share)] + routed["plant-b"][1:], now=NOW)


def test_a_share_forged_by_the_aggregator_is_detected(exact, keys):
    """The researcher knows every public key, so it can encrypt a share to plant-b claiming to come from plant-a;
    it cannot sign as plant-a."""
    rnd, *_ = exact
    forger = PlantKeys.generate("plant-a")
    body = {**header("share-body"), "round_id": rnd.round_id, "round_digest": rnd.digest,
            "bins_version": rnd.bins_version, "sender": "plant-a", "recipient": "plant-b", "values": [0] * L}
    ct = crypto_age.encrypt(canonical_json(sign(body, forger)), keys[1].card().age_recipient)
    forged = canonical_json({**header("share"), "round_id": rnd.round_id, "sender": "plant-a", "recipient": "plant-b",
                             "age": base64.b64encode(ct).decode()})
    with pytest.raises(SecAggError, match="share from plant-a fails its signature check"):
        open_share(rnd, keys[1], forged)


def test_the_wrong_recipient_cannot_open_a_share(exact, keys):
    rnd, _, _, routed, _ = exact
    for_b = routed["plant-b"][0]
    with pytest.raises(SecAggError, match="addressed to plant-b, not to plant-c"):
        open_share(rnd, keys[2], for_b)
    relabelled = json.loads(for_b)
    relabelled["recipient"] = "plant-c"  # the envelope says plant-c; the ciphertext is still plant-b's
    with pytest.raises(SecAggError, match="cannot be opened with this plant's key"):
        open_share(rnd, keys[2], canonical_json(relabelled))
    assert open_share(rnd, keys[1], for_b)[1]  # the right recipient can


def test_a_tampered_partial_sum_or_aggregate_is_detected(exact):
    rnd, agg, partials, _, _ = exact
    changed = json.loads(partials[2])
    changed["body"]["values"][0] = (changed["body"]["values"][0] + 1) % 2 ** 64
    with pytest.raises(SecAggError, match="partial sum from plant-c fails its signature check"):
        aggregate(rnd, partials[:2] + [canonical_json(changed)] + partials[3:], now=NOW)
    doctored = json.loads(agg)
    doctored["counts"][3] += 100
    doctored["total"] += 100
    with pytest.raises(SecAggError, match="differ from the sum of the plants' signed partial sums"):
        open_aggregate(rnd, canonical_json(doctored))
    doctored = json.loads(agg)
    doctored["partials"][1]["body"]["values"][0] ^= 1
    with pytest.raises(SecAggError, match="fails its signature check"):
        open_aggregate(rnd, canonical_json(doctored))


def test_replayed_files_of_another_round_are_refused(exact, keys, histograms):
    rnd, agg, partials, routed, kept = exact
    other = new_round(keys)
    with pytest.raises(SecAggError, match="belongs to another round"):
        open_share(other, keys[1], routed["plant-b"][0])
    with pytest.raises(SecAggError, match="belongs to another round"):
        aggregate(other, partials, now=NOW)
    with pytest.raises(SecAggError, match="belongs to another round"):
        open_aggregate(other, agg)
    with pytest.raises(SecAggError, match="different version of round"):  # same id, other privacy setting
        open_share(new_round(keys, round_id=rnd.round_id, epsilon=1.0), keys[1], routed["plant-b"][0])


def test_duplicate_and_missing_shares_are_refused(exact, keys):
    rnd, _, _, routed, kept = exact
    files = routed["plant-c"]
    with pytest.raises(SecAggError, match="Two shares from"):
        make_partial(rnd, keys[2], kept["plant-c"], files + files[:1], now=NOW)
    with pytest.raises(SecAggError, match="Shares missing from"):
        make_partial(rnd, keys[2], kept["plant-c"], files[1:], now=NOW)
    with pytest.raises(SecAggError, match="Duplicate share"):
        route_shares(rnd, files + files[:1])
    with pytest.raises(SecAggError, match="Shares missing"):
        route_shares(rnd, files)


def test_steps_after_the_deadline_or_outside_the_roster_are_refused(keys, histograms):
    rnd = new_round(keys[:3])
    late = NOW + timedelta(days=15)
    with pytest.raises(SecAggError, match="closed at its deadline"):
        make_shares(rnd, keys[0], histograms[0], now=late)
    with pytest.raises(SecAggError, match="'plant-d' is not a participant"):
        make_shares(rnd, keys[3], histograms[3], now=NOW)
    stranger = PlantKeys.generate("plant-a")  # same pseudonym, other keys
    with pytest.raises(SecAggError, match="lists other keys for plant-a"):
        make_shares(rnd, stranger, histograms[0], now=NOW)
    with pytest.raises(SecAggError, match="agreed bins need 24"):
        make_shares(rnd, keys[0], histograms[0][:10], now=NOW)


# ------------------------------------------------------------------------------------------------ DP
def test_error_bound_known_answers():
    eps = 0.7
    a = math.exp(-eps)
    for t in range(0, 40):  # one noise: P(|X| > t) = 2 a^(t+1) / (1 + a)
        p = 2 * a ** (t + 1) / (1 + a)
        if 1e-9 < p < 0.5:
            assert error_bound(1, eps, failure_prob=p * 1.01) == t
    k = np.arange(-200, 201)
    pmf = (1 - a) / (1 + a) * a ** np.abs(k)
    two = np.convolve(pmf, pmf)  # exact sum of two noises on -400..400
    tail = lambda t: two[np.abs(np.arange(-400, 401)) > t].sum()  # noqa: E731
    t = error_bound(2, eps, failure_prob=1e-4)
    assert tail(t) <= 1e-4 < tail(t - 1)
    assert error_bound(5, 1.0) > error_bound(1, 1.0) and error_bound(5, 0.5) > error_bound(5, 1.0)
    assert noise_std(1, eps) == pytest.approx(math.sqrt(2 * a) / (1 - a))


def test_the_chernoff_bound_used_for_many_noises_is_never_below_the_exact_one():
    for n, eps in ((1, 1.0), (5, 1.0), (24, 0.5), (120, 0.1), (240, 2.0)):
        exact = error_bound(n, eps, failure_prob=1e-6)
        assert exact <= chernoff_bound(n, eps, failure_prob=1e-6) <= 1.3 * exact
    assert error_bound(50 * 24, 0.01) == chernoff_bound(50 * 24, 0.01, failure_prob=1e-6)  # the exact one: too big


def test_opendp_noise_has_the_stated_distribution():
    """20 000 draws of one plant's noise at epsilon 0.5: variance within 10 % of 2a/(1-a)^2 (about 6 standard
    errors) and the tail frequency beyond the 1 % bound close to 1 %; no noise is exactly zero everywhere."""
    noise = np.array(add_noise([0] * 20_000, epsilon=0.5))
    assert noise.var() == pytest.approx(noise_std(1, 0.5) ** 2, rel=0.10)
    t = error_bound(1, 0.5, failure_prob=0.01)
    assert 0.006 < np.mean(np.abs(noise) > t) <= 0.014
    assert abs(noise.mean()) < 0.2 and np.count_nonzero(noise) > 10_000


def test_with_dp_the_aggregate_is_within_the_stated_error(keys, histograms):
    truth = np.sum(histograms, axis=0)
    for eps in (1.0, 0.2):
        rnd = new_round(keys, epsilon=eps)
        result = open_aggregate(rnd, run_round(rnd, keys, histograms)[0])
        error = np.array(result.counts) - truth
        assert result.bin_error == error_bound(5, eps, failure_prob=DP_FAILURE_PROB)
        assert result.total_error == error_bound(5 * L, eps, failure_prob=DP_FAILURE_PROB)
        assert np.all(np.abs(error) <= result.bin_error)
        assert abs(result.total - truth.sum()) <= result.total_error
        assert np.any(error != 0)  # noise was added (all 24 bins exactly right: probability < 1e-15)
