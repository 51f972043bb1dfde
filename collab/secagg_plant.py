"""Cross-plant statistics, plant side: keys, rounds and files kept in the vault, audited (no Streamlit).

Vault entries (all encrypted like everything in the vault)::

    collab/secagg/identity.json                         kind "key"     the plant's private keys (never exported)
    collab/secagg/rounds/<round id>/round.json          kind "secagg"  the round file as joined
    collab/secagg/rounds/<round id>/own.json            kind "secagg"  this plant's histogram (true counts), the
                                                                       analyses it came from and the kept share
    collab/secagg/rounds/<round id>/out/<plant>.json    kind "secagg"  outgoing share files (already encrypted)
    collab/secagg/rounds/<round id>/partial.json        kind "secagg"  this plant's partial sum
    collab/secagg/rounds/<round id>/aggregate.json      kind "secagg"  the checked aggregate

Shares are made once per round: making them again with fresh randomness would hand out two independent sharings of
the same vector, so a second request is refused and the stored files are offered again instead.

Audit events: ``secagg_keys_created``, ``secagg_round_joined``, ``secagg_shares_made``, ``secagg_partial_made``,
``secagg_aggregate_loaded`` and ``secagg_refused`` (step + reason) - ids, counts and pseudonyms only, never a
histogram or share value.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from analysis.stats import counted
from collab import secagg_files as files
from collab.secagg_keys import PlantKeys
from collab.secagg_math import RandomBytes, ecd_histogram
from collab.secagg_protocol import PlantCard, Round, SecAggError, bin_labels, card_json, parse_round, round_json
from ui.analyses import AnalysisInfo, list_analyses, load_analysis
from vault import Vault

PREFIX = "collab/secagg/"
IDENTITY_ENTRY = PREFIX + "identity.json"
ROUNDS_PREFIX = PREFIX + "rounds/"
KIND = "secagg"


def _entry(round_id: str, part: str) -> str:
    return f"{ROUNDS_PREFIX}{round_id}/{part}"


def _audit(vault: Vault, event: str, user: str, details: dict) -> None:
    vault.audit.append(event, user=user, details=details)


def _refused(vault: Vault, user: str, step: str, round_id: str, error: Exception) -> None:
    _audit(vault, "secagg_refused", user, {"step": step, "round_id": round_id, "reason": str(error)[:300]})


# ------------------------------------------------------------------------------------------------ keys
def plant_keys(vault: Vault) -> PlantKeys | None:
    """This plant's keys, or None before :func:`create_keys`. Raises SecAggError when the entry is unreadable."""
    if not vault.exists(IDENTITY_ENTRY):
        return None
    return PlantKeys.from_json(vault.get(IDENTITY_ENTRY))


def create_keys(vault: Vault, pseudonym: str, *, user: str) -> PlantCard:
    """Create this plant's key pair under ``pseudonym`` (once; rounds in progress are bound to the keys)."""
    if vault.exists(IDENTITY_ENTRY):
        raise SecAggError("This plant already has secure-aggregation keys; its card is shown below.")
    keys = PlantKeys.generate(pseudonym)
    vault.put(IDENTITY_ENTRY, keys.to_json(), kind="key", meta={"pseudonym": keys.pseudonym})
    card = keys.card()
    _audit(vault, "secagg_keys_created", user, {"pseudonym": card.pseudonym, "fingerprint": card.fingerprint})
    return card


def card_file(vault: Vault) -> bytes:
    """This plant's card (public keys only) as the file to hand to the researcher."""
    keys = _require_keys(vault)
    return card_json(keys.card())


def _require_keys(vault: Vault) -> PlantKeys:
    keys = plant_keys(vault)
    if keys is None:
        raise SecAggError("Create this plant's keys first (choose a pseudonym).")
    return keys


# ------------------------------------------------------------------------------------------------ rounds
@dataclass(frozen=True)
class RoundStatus:
    round: Round
    shares_made: bool
    partial_made: bool
    aggregate_loaded: bool

    @property
    def step(self) -> str:
        if self.aggregate_loaded:
            return "done"
        if self.partial_made:
            return "waiting for the aggregate"
        if self.shares_made:
            return "waiting for the other plants' shares"
        return "joined"


def join_round(vault: Vault, data: bytes, *, user: str, now: datetime | None = None) -> Round:
    """Check a round file and keep it: this plant is on the roster with its current keys, the round is open, the
    roster meets the minimum. Joining the same round file again is harmless; a different file under the same round
    id is refused (the roster, bins or privacy setting would change under the plant)."""
    keys = _require_keys(vault)
    try:
        rnd = parse_round(data)
        rnd.check_open(now)
        files.check_member(rnd, keys)
        name = _entry(rnd.round_id, "round.json")
        if vault.exists(name):
            if parse_round(vault.get(name)).digest != rnd.digest:
                raise SecAggError(f"This plant already joined round {rnd.round_id[:8]} with a different round file"
                                  " (roster, bins or privacy setting changed). Ask the researcher why; use a new"
                                  " round instead.")
            return rnd
    except SecAggError as e:
        _refused(vault, user, "join", "", e)
        raise
    vault.put(name, round_json(rnd), kind=KIND, meta={"title": rnd.title})
    _audit(vault, "secagg_round_joined", user, {
        "round_id": rnd.round_id, "title": rnd.title, "digest": rnd.digest, "plants": list(rnd.pseudonyms),
        "min_plants": rnd.min_plants, "epsilon": rnd.epsilon, "deadline": rnd.deadline, "bins": rnd.bins_version})
    return rnd


def load_round(vault: Vault, round_id: str) -> Round:
    name = _entry(round_id, "round.json")
    if not isinstance(round_id, str) or not vault.exists(name):
        raise SecAggError("This plant has not joined that round.")
    return parse_round(vault.get(name))


def round_status(vault: Vault, round_id: str) -> RoundStatus:
    rnd = load_round(vault, round_id)
    return RoundStatus(rnd, vault.exists(_entry(round_id, "own.json")), vault.exists(_entry(round_id, "partial.json")),
                       vault.exists(_entry(round_id, "aggregate.json")))


def joined_rounds(vault: Vault) -> list[RoundStatus]:
    """Every round this plant joined, newest first."""
    ids = {e.name[len(ROUNDS_PREFIX):].split("/")[0] for e in vault.list(ROUNDS_PREFIX)
           if e.name.endswith("/round.json")}
    out = [round_status(vault, i) for i in ids]
    return sorted(out, key=lambda s: s.round.created, reverse=True)


# ------------------------------------------------------------------------------------------------ data
def eligible_analyses(vault: Vault, *, since: date | None = None, until: date | None = None,
                      product: str = "") -> list[AnalysisInfo]:
    """Saved analyses that can contribute: valid (not invalidated), calibrated (sizes in µm), created (UTC date)
    within [since, until], with ``product`` when given. Newest first."""
    out = []
    for info in list_analyses(vault):
        if not info.valid or not info.pixel_size_um or not info.pixel_size_um > 0:
            continue
        day = info.created[:10]
        if (since and day < since.isoformat()) or (until and day > until.isoformat()):
            continue
        if product and info.product != product:
            continue
        out.append(info)
    return out


def histogram_of(vault: Vault, analysis_ids: Sequence[str], *, bins_version: str) -> tuple[int, ...]:
    """Counts per agreed bin of the counted crystals of the given analyses (ECD in µm). Uncalibrated analyses are
    refused: their sizes are in pixels and cannot be compared with other plants."""
    sizes = []
    for analysis_id in analysis_ids:
        result = load_analysis(vault, analysis_id).result
        if not result.pixel_size_um or not result.pixel_size_um > 0:
            raise SecAggError(f"Analysis {analysis_id} is not calibrated (sizes in px); only calibrated analyses can"
                              " be compared across plants.")
        ecd = [p.ecd_px for p in counted(result.particles, include_border=result.include_border)]
        sizes.append(np.asarray(ecd, dtype=float) * result.pixel_size_um)
    return ecd_histogram(np.concatenate(sizes) if sizes else np.zeros(0), bins_version=bins_version)


# ------------------------------------------------------------------------------------------------ shares
def make_shares(vault: Vault, round_id: str, analysis_ids: Sequence[str], *, user: str, now: datetime | None = None,
                filters: dict | None = None, random_bytes: RandomBytes = secrets.token_bytes) -> dict[str, bytes]:
    """Compute this plant's histogram from ``analysis_ids``, keep it and the kept share in the vault, and return
    the outgoing share files {recipient: bytes} (also kept, so they can be downloaded again)."""
    keys = _require_keys(vault)
    rnd = load_round(vault, round_id)
    try:
        if vault.exists(_entry(round_id, "own.json")):
            raise SecAggError("This plant's shares for this round were already made; download the same files again"
                              " (new shares would give the other plants two different sharings of your data).")
        ids = list(dict.fromkeys(analysis_ids))
        if not ids:
            raise SecAggError("Choose at least one calibrated analysis to contribute.")
        histogram = histogram_of(vault, ids, bins_version=rnd.bins_version)
        if sum(histogram) == 0:
            raise SecAggError("The chosen analyses have no counted crystals; nothing to compare.")
        kept, outgoing = files.make_shares(rnd, keys, histogram, now=now, random_bytes=random_bytes)
    except SecAggError as e:
        _refused(vault, user, "shares", round_id, e)
        raise
    for recipient, data in outgoing.items():
        vault.put(_entry(round_id, f"out/{recipient}.json"), data, kind=KIND, meta={"recipient": recipient})
    own = {"histogram": list(histogram), "analysis_ids": ids, "filters": filters or {}, "kept": list(kept)}
    vault.put(_entry(round_id, "own.json"), json.dumps(own).encode(), kind=KIND)  # written last: marks completion
    _audit(vault, "secagg_shares_made", user, {
        "round_id": round_id, "n_analyses": len(ids), "n_crystals": sum(histogram), "recipients": sorted(outgoing),
        "epsilon": rnd.epsilon, "filters": filters or {}})
    return outgoing


def outgoing_shares(vault: Vault, round_id: str) -> dict[str, bytes]:
    """The stored outgoing share files {recipient: bytes} (empty before :func:`make_shares`)."""
    if not vault.exists(_entry(round_id, "own.json")):
        return {}
    prefix = _entry(round_id, "out/")
    return {e.name[len(prefix):-len(".json")]: vault.get(e.name) for e in vault.list(prefix)}


def _own(vault: Vault, round_id: str) -> dict:
    name = _entry(round_id, "own.json")
    if not vault.exists(name):
        raise SecAggError("Make and send this plant's shares first.")
    return json.loads(vault.get(name))


def make_partial(vault: Vault, round_id: str, share_files: Iterable[bytes], *, user: str,
                 now: datetime | None = None) -> bytes:
    """Open the shares the other plants sent, add the kept share, keep and return the signed partial-sum file."""
    keys = _require_keys(vault)
    rnd = load_round(vault, round_id)
    name = _entry(round_id, "partial.json")
    try:
        if vault.exists(name):
            raise SecAggError("This plant's partial sum for this round was already made; download it again below.")
        partial = files.make_partial(rnd, keys, _own(vault, round_id)["kept"], list(share_files), now=now)
    except SecAggError as e:
        _refused(vault, user, "partial", round_id, e)
        raise
    vault.put(name, partial, kind=KIND)
    _audit(vault, "secagg_partial_made", user, {"round_id": round_id,
                                                "senders": [p for p in rnd.pseudonyms if p != keys.pseudonym]})
    return partial


def stored_partial(vault: Vault, round_id: str) -> bytes | None:
    name = _entry(round_id, "partial.json")
    return vault.get(name) if vault.exists(name) else None


# ------------------------------------------------------------------------------------------------ comparison
@dataclass(frozen=True)
class Comparison:
    """This plant's distribution against the aggregate, per agreed bin (µm): counts and % of each total. With DP
    the aggregate's negative noisy counts are shown as 0 (post-processing keeps the privacy guarantee)."""

    labels: tuple[str, ...]
    own_counts: tuple[int, ...]
    own_pct: tuple[float, ...]
    aggregate_counts: tuple[int, ...]
    aggregate_pct: tuple[float, ...]
    aggregate: files.Aggregate


def _pct(counts: Sequence[int]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(100.0 * c / total if total > 0 else 0.0 for c in counts)


def load_aggregate(vault: Vault, round_id: str, data: bytes, *, user: str) -> Comparison:
    """Check the aggregate file against this plant's round, keep it and return the comparison."""
    rnd = load_round(vault, round_id)
    try:
        _own(vault, round_id)
        result = files.open_aggregate(rnd, data)
    except SecAggError as e:
        _refused(vault, user, "aggregate", round_id, e)
        raise
    vault.put(_entry(round_id, "aggregate.json"), bytes(data), kind=KIND)
    _audit(vault, "secagg_aggregate_loaded", user, {"round_id": round_id, "n_plants": result.n_plants,
                                                    "total": result.total, "epsilon": result.epsilon})
    return _comparison(vault, rnd, result)  # just checked: not opened and verified a second time


def comparison(vault: Vault, round_id: str) -> Comparison | None:
    """The comparison of a round whose aggregate was loaded, else None."""
    name = _entry(round_id, "aggregate.json")
    if not vault.exists(name):
        return None
    rnd = load_round(vault, round_id)
    return _comparison(vault, rnd, files.open_aggregate(rnd, vault.get(name)))


def _comparison(vault: Vault, rnd: Round, result: files.Aggregate) -> Comparison:
    own = tuple(_own(vault, rnd.round_id)["histogram"])
    shown = tuple(max(0, c) for c in result.counts)
    return Comparison(tuple(bin_labels(rnd.bins_version)), own, _pct(own), shown, _pct(shown), result)

