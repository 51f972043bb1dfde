"""Cross-plant statistics, part 5: the files that travel - shares, partial sums, the aggregate - and their checks.

Flow for a round with plants P_0..P_(n-1) (roster order), each holding its vector x_i (histogram + optional noise):

1. :func:`make_shares` - P_i splits x_i into n additive shares, keeps one and writes n-1 **share files**, one per
   other plant. A share file is a small JSON envelope (round id, sender, recipient in clear so the researcher can
   route it) around an age ciphertext to the recipient's public key; inside, the share values are signed by the
   sender together with the round id, the round digest, the bins version, the sender and the recipient.
2. The researcher routes the files (:func:`route_shares`); it cannot read them.
3. :func:`make_partial` - P_j opens the n-1 shares addressed to it (exactly one from every other plant), adds its
   kept share and writes a signed **partial sum** file. A partial sum is uniformly random to anyone but the sum of
   all of them.
4. :func:`aggregate` - the researcher checks every partial sum's signature and binding and adds them: the total of
   all plants' vectors. The **aggregate file** carries the round and all signed partial sums, so every plant
   re-checks the sum itself (:func:`open_aggregate`) instead of trusting the researcher.

Refused with a SecAggError: a file of another round or round version (replay), other bins, a share addressed to
somebody else or opened with the wrong key, an altered file (age authentication or signature fails), a duplicate or
missing sender, a sender not in the roster, fewer plants than the round's minimum.
"""
from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from collab import crypto_age
from collab.errors import CollabError
from collab.secagg_dp import add_noise, error_bound
from collab.secagg_keys import PlantKeys, sign, verify
from collab.secagg_math import RandomBytes, add_elements, check_elements, check_values, split, to_signed
from collab.secagg_protocol import (MAX_AGGREGATE_BYTES, PlantCard, Round, SecAggError, check_fields, canonical_json,
                                    check_header, header, iso, parse_json, round_from_dict, vector_length)

#: The DP error stated with every aggregate holds with probability at least 1 - DP_FAILURE_PROB per value.
DP_FAILURE_PROB = 1e-6
_SHORT = 8  # round id characters shown in messages


def check_member(rnd: Round, keys: PlantKeys) -> PlantCard:
    card = rnd.card(keys.pseudonym)
    if not keys.matches(card):
        raise SecAggError(f"The round file lists other keys for {keys.pseudonym} than this plant's: it was made for a"
                          " different plant card. Hand the researcher this plant's current card.")
    return card


def _check_binding(body: dict[str, Any], rnd: Round, *, what: str) -> None:
    """A body's round id, round digest and bins version are this round's (refuses replays from other rounds)."""
    if body.get("round_id") != rnd.round_id:
        raise SecAggError(f"This {what} belongs to another round ({str(body.get('round_id'))[:_SHORT]}), not to round"
                          f" {rnd.round_id[:_SHORT]}; refused.")
    if body.get("round_digest") != rnd.digest:
        raise SecAggError(f"This {what} was made for a different version of round {rnd.round_id[:_SHORT]} (other"
                          " roster, bins or privacy setting); refused. All plants must use the same round file.")
    if body.get("bins_version") != rnd.bins_version:
        raise SecAggError(f"This {what} uses bins {str(body.get('bins_version'))[:40]!r}, the round uses"
                          f" {rnd.bins_version!r}; refused.")


# ------------------------------------------------------------------------------------------------ shares
def make_shares(rnd: Round, keys: PlantKeys, histogram: Sequence[int], *, now: datetime | None = None,
                random_bytes: RandomBytes = secrets.token_bytes) -> tuple[tuple[int, ...], dict[str, bytes]]:
    """Split this plant's ``histogram`` (noised first when the round sets epsilon): returns (kept share, {recipient
    pseudonym: share file bytes}). Raises SecAggError (round closed, not a member, wrong vector)."""
    rnd.check_open(now)
    check_member(rnd, keys)
    values = check_values(histogram, vector_length(rnd.bins_version))
    if rnd.epsilon is not None:
        values = add_noise(values, epsilon=rnd.epsilon)
    kept, *outgoing = split(values, len(rnd.plants), random_bytes=random_bytes)
    others = [p for p in rnd.plants if p.pseudonym != keys.pseudonym]
    files = {}
    for card, share in zip(others, outgoing):
        inner = sign({**header("share-body"), "round_id": rnd.round_id, "round_digest": rnd.digest,
                      "bins_version": rnd.bins_version, "sender": keys.pseudonym, "recipient": card.pseudonym,
                      "values": list(share)}, keys)
        ciphertext = crypto_age.encrypt(canonical_json(inner), card.age_recipient)
        files[card.pseudonym] = canonical_json({**header("share"), "round_id": rnd.round_id, "sender": keys.pseudonym,
                                            "recipient": card.pseudonym,
                                            "age": base64.b64encode(ciphertext).decode("ascii")})
    return kept, files


@dataclass(frozen=True)
class ShareEnvelope:
    round_id: str
    sender: str
    recipient: str
    ciphertext: bytes


def read_envelope(data: bytes) -> ShareEnvelope:
    """The routing information of a share file (no decryption). Raises SecAggError."""
    obj = parse_json(data, what="share file")
    check_header(obj, "share", what="share file")
    check_fields(obj, {"protocol", "version", "kind", "round_id", "sender", "recipient", "age"}, what="share file")
    if not all(isinstance(obj[k], str) for k in ("round_id", "sender", "recipient", "age")):
        raise SecAggError("The share file is malformed.")
    try:
        ciphertext = base64.b64decode(obj["age"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise SecAggError("The share file's encrypted part is damaged (not base64).") from e
    return ShareEnvelope(obj["round_id"], obj["sender"], obj["recipient"], ciphertext)


def open_share(rnd: Round, keys: PlantKeys, data: bytes) -> tuple[str, tuple[int, ...]]:
    """(sender, share values) of a share file addressed to this plant. Raises SecAggError."""
    env = read_envelope(data)
    if env.round_id != rnd.round_id:
        raise SecAggError(f"This share belongs to another round ({env.round_id[:_SHORT]}), not to round"
                          f" {rnd.round_id[:_SHORT]}; refused.")
    if env.recipient != keys.pseudonym:
        raise SecAggError(f"This share is addressed to {env.recipient[:40]}, not to {keys.pseudonym}: upload only the"
                          " shares the researcher routed to this plant.")
    sender = rnd.card(env.sender)
    if sender.pseudonym == keys.pseudonym:
        raise SecAggError("This is one of this plant's own outgoing shares, not one addressed to it.")
    try:
        inner = crypto_age.decrypt(env.ciphertext, keys.age_identity)
    except CollabError as e:
        raise SecAggError(f"The share from {sender.pseudonym} cannot be opened with this plant's key: it was encrypted"
                          " for another plant, or it was altered or damaged on the way. Refused; ask for a fresh"
                          " copy.") from e
    body = verify(parse_json(inner, what="share"), sender, what="share")
    check_header(body, "share-body", what="share")
    check_fields(body, {"protocol", "version", "kind", "round_id", "round_digest", "bins_version", "sender",
                        "recipient", "values"}, what="share")
    _check_binding(body, rnd, what="share")
    if body["sender"] != sender.pseudonym or body["recipient"] != keys.pseudonym:
        raise SecAggError("The share's signed sender or recipient differs from its envelope: it was re-addressed."
                          " Refused.")
    return sender.pseudonym, check_elements(body["values"], vector_length(rnd.bins_version), what="share")


def route_shares(rnd: Round, files: Iterable[bytes]) -> dict[str, list[bytes]]:
    """The researcher's routing: {recipient: [share files]}, checking what can be checked without keys (round,
    roster, one file per sender and recipient, every plant gets a share from every other). Raises SecAggError."""
    routed: dict[str, list[bytes]] = {p: [] for p in rnd.pseudonyms}
    seen = set()
    for data in files:
        env = read_envelope(data)
        if env.round_id != rnd.round_id:
            raise SecAggError(f"A share of another round ({env.round_id[:_SHORT]}) is mixed in; refused.")
        rnd.card(env.sender), rnd.card(env.recipient)
        if env.sender == env.recipient or (env.sender, env.recipient) in seen:
            raise SecAggError(f"Duplicate share from {env.sender} to {env.recipient}; refused.")
        seen.add((env.sender, env.recipient))
        routed[env.recipient].append(bytes(data))
    missing = [f"{s}->{r}" for s in rnd.pseudonyms for r in rnd.pseudonyms if s != r and (s, r) not in seen]
    if missing:
        raise SecAggError(f"Shares missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. Every"
                          " plant must send a share to every other plant.")
    return routed


# ------------------------------------------------------------------------------------------------ partial sums
def make_partial(rnd: Round, keys: PlantKeys, kept: Sequence[int], share_files: Iterable[bytes], *,
                 now: datetime | None = None) -> bytes:
    """This plant's signed partial sum: its kept share plus exactly one received share from every other plant."""
    rnd.check_open(now)
    check_member(rnd, keys)
    length = vector_length(rnd.bins_version)
    received: dict[str, tuple[int, ...]] = {}
    for data in share_files:
        sender, values = open_share(rnd, keys, data)
        if sender in received:
            raise SecAggError(f"Two shares from {sender} were uploaded; each plant sends exactly one. Refused.")
        received[sender] = values
    missing = [p for p in rnd.pseudonyms if p != keys.pseudonym and p not in received]
    if missing:
        raise SecAggError(f"Shares missing from: {', '.join(missing)}. The partial sum needs one share from every"
                          " other plant of the round.")
    total = add_elements([check_elements(list(kept), length, what="kept share"), *received.values()])
    body = {**header("partial"), "round_id": rnd.round_id, "round_digest": rnd.digest,
            "bins_version": rnd.bins_version, "sender": keys.pseudonym,
            "created": iso(now or datetime.now(timezone.utc)), "values": list(total)}
    return canonical_json(sign(body, keys))


def _read_partials(rnd: Round, signed_partials: Iterable[Any]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    length = vector_length(rnd.bins_version)
    for signed in signed_partials:
        body = signed.get("body") if isinstance(signed, dict) else None
        sender = body.get("sender") if isinstance(body, dict) else None
        if not isinstance(sender, str):
            raise SecAggError("A partial-sum file is malformed (no sender).")
        card = rnd.card(sender)
        verify(signed, card, what="partial sum")
        check_header(body, "partial", what="partial sum")
        check_fields(body, {"protocol", "version", "kind", "round_id", "round_digest", "bins_version", "sender",
                            "created", "values"}, what="partial sum")
        _check_binding(body, rnd, what="partial sum")
        if sender in out:
            raise SecAggError(f"Two partial sums from {sender}; each plant sends exactly one. Refused.")
        out[sender] = check_elements(body["values"], length, what="partial sum")
    if len(out) < rnd.min_plants:
        raise SecAggError(f"Too few plants: partial sums from {len(out)}, the round's minimum is {rnd.min_plants}."
                          " No aggregate is formed below the minimum.")
    missing = [p for p in rnd.pseudonyms if p not in out]
    if missing:
        raise SecAggError(f"Partial sums missing from: {', '.join(missing)}. Every plant of the roster must send one"
                          " (a plant that dropped out cannot be left out: its kept share is part of the others' sums)."
                          " Start a new round without it.")
    return out


# ------------------------------------------------------------------------------------------------ aggregate
@dataclass(frozen=True)
class Aggregate:
    """The checked result of a round: ``counts`` per agreed bin (signed; with DP noise they may be slightly off or
    negative), ``total`` their sum. ``bin_error`` / ``total_error``: with DP, each value is within that many counts
    of the true sum with probability >= 1 - ``failure_prob`` (0 without DP)."""

    round: Round
    counts: tuple[int, ...]
    total: int
    n_plants: int
    created: str
    epsilon: float | None
    bin_error: int
    total_error: int
    failure_prob: float


def _summary(rnd: Round, partials: dict[str, tuple[int, ...]], created: str) -> Aggregate:
    counts = to_signed(add_elements(list(partials.values())))
    n = len(partials)
    if rnd.epsilon is None:
        bin_err = total_err = 0
    else:
        bin_err = error_bound(n, rnd.epsilon, failure_prob=DP_FAILURE_PROB)
        total_err = error_bound(n * len(counts), rnd.epsilon, failure_prob=DP_FAILURE_PROB)
    return Aggregate(rnd, counts, sum(counts), n, created, rnd.epsilon, bin_err, total_err, DP_FAILURE_PROB)


def aggregate(rnd: Round, partial_files: Iterable[bytes], *, now: datetime | None = None) -> bytes:
    """The aggregate file from every plant's partial sum. Raises SecAggError (see module docstring)."""
    signed = [parse_json(data, what="partial-sum file") for data in partial_files]
    partials = _read_partials(rnd, signed)
    by_sender = {s["body"]["sender"]: s for s in signed}
    result = _summary(rnd, partials, iso(now or datetime.now(timezone.utc)))
    dp = None if rnd.epsilon is None else {"epsilon": rnd.epsilon, "bin_error": result.bin_error,
                                           "total_error": result.total_error, "failure_prob": DP_FAILURE_PROB}
    return canonical_json({**header("aggregate"), "round": rnd.to_dict(), "round_digest": rnd.digest,
                       "created": result.created, "n_plants": result.n_plants, "counts": list(result.counts),
                       "total": result.total, "dp": dp, "partials": [by_sender[p] for p in rnd.pseudonyms]})


def open_aggregate(rnd: Round, data: bytes) -> Aggregate:
    """Check an aggregate file against this plant's copy of the round: same round digest, every partial sum
    signed by its plant, and the stated counts equal to their sum. Raises SecAggError."""
    obj = parse_json(data, what="aggregate file", max_bytes=MAX_AGGREGATE_BYTES)
    check_header(obj, "aggregate", what="aggregate file")
    check_fields(obj, {"protocol", "version", "kind", "round", "round_digest", "created", "n_plants", "counts",
                       "total", "dp", "partials"}, what="aggregate file")
    their_round = round_from_dict(obj["round"]) if isinstance(obj["round"], dict) else None
    if their_round is None or their_round.round_id != rnd.round_id:
        raise SecAggError(f"This aggregate belongs to another round, not to round {rnd.round_id[:_SHORT]}.")
    if their_round.digest != rnd.digest or obj["round_digest"] != rnd.digest:
        raise SecAggError(f"This aggregate was made for a different version of round {rnd.round_id[:_SHORT]} (other"
                          " roster, bins or privacy setting); refused.")
    if not isinstance(obj["partials"], list):
        raise SecAggError("The aggregate file is malformed (partials).")
    if not isinstance(obj["created"], str) or len(obj["created"]) > 40:
        raise SecAggError("The aggregate file is malformed (created).")
    result = _summary(rnd, _read_partials(rnd, obj["partials"]), obj["created"])
    if obj["counts"] != list(result.counts) or obj["total"] != result.total or obj["n_plants"] != result.n_plants:
        raise SecAggError("The aggregate's counts differ from the sum of the plants' signed partial sums: the file"
                          " was altered after it was made. Refused; ask the researcher for the original.")
    return result
