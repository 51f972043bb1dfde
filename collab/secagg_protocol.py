"""Cross-plant statistics, part 1: the protocol constants, the agreed size bins, plant cards and rounds (no I/O).

A **plant card** is a plant's public identity for secure aggregation: a pseudonym, an age public key (``age1...``,
shares addressed to the plant are encrypted to it) and an Ed25519 public key (everything the plant sends is signed
with it). Plants hand their card to the researcher who runs the round; the private halves stay in the plant's vault.

A **round** is the agreement everybody signs against: id, title, the roster of plant cards, the minimum number of
plants, the bins (by version, with their edges), an optional differential-privacy epsilon and a deadline. Its
*digest* (SHA-256 of the canonical JSON) is bound into every share and partial sum, so two plants holding different
round files (a different roster, bins or epsilon) cannot be mixed into one sum: their files are refused.

File sizes are capped before anything is decoded; JSON is parsed strictly (no duplicate keys, no NaN/Infinity,
objects only) and then checked field by field. Every error is a :class:`SecAggError` a person can act on.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from collab.crypto_age import parse_recipient, short_fingerprint
from collab.errors import CollabError
# The bytes that are hashed and signed: the same canonical form as model-package manifests (sorted keys, no white
# space, UTF-8, NaN refused), from the one definition the Ed25519 code in collab.secagg_keys signs with.
from detection.package import canonical_json

PROTOCOL = "crystal-qc-secagg"
PROTOCOL_VERSION = 1
#: Below three plants the total gives any one plant the other's histogram (total minus its own); never allowed.
MIN_PLANTS_FLOOR = 3
MAX_PLANTS = 50
MAX_DEADLINE_DAYS = 180
EPSILON_RANGE = (0.01, 10.0)
MAX_TITLE_CHARS = 200
MAX_SMALL_FILE_BYTES = 64 * 1024      # card, round, share, partial
MAX_AGGREGATE_BYTES = 4 * 1024 * 1024  # aggregate (holds every signed partial)

#: The agreed bins, by version. ``ecd-um-sqrt2-v1``: equivalent circular diameter in µm, edges 2^(k/2) for
#: k = 0..22, i.e. 1 µm to 2048 µm in steps of sqrt(2) (the ratio of the classic test-sieve series), 22 bins, plus an
#: underflow bin (< 1 µm) and an overflow bin (>= 2048 µm), so every counted crystal falls in exactly one bin and the
#: total count is the sum of the vector. A new set of edges gets a new version; old versions stay readable.
BINS: dict[str, tuple[float, ...]] = {
    "ecd-um-sqrt2-v1": tuple(2.0 ** (k / 2) for k in range(23)),
}
CURRENT_BINS = "ecd-um-sqrt2-v1"

_PSEUDONYM_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,31}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_ROUND_ID_RE = re.compile(r"[0-9a-f]{32}")


class SecAggError(CollabError, ValueError):
    """A secure-aggregation file or step is refused; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------ bins
def bin_edges(version: str) -> tuple[float, ...]:
    """The edges (µm, increasing) of a known bins version. Raises SecAggError for an unknown version."""
    if version not in BINS:
        raise SecAggError(f"Unknown size bins {str(version)[:40]!r}: this app knows {', '.join(sorted(BINS))}."
                          " Update the app or ask the researcher to use the current bins.")
    return BINS[version]


def vector_length(version: str) -> int:
    """Number of values a plant contributes: underflow + bins + overflow = len(edges) + 1."""
    return len(bin_edges(version)) + 1


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def bin_labels(version: str) -> list[str]:
    """Readable labels of the vector's positions, e.g. ``'< 1'``, ``'1–1.41'``, ..., ``'≥ 2.05e+03'`` (µm)."""
    edges = bin_edges(version)
    return ([f"< {_fmt(edges[0])}"] + [f"{_fmt(a)}–{_fmt(b)}" for a, b in zip(edges[:-1], edges[1:])]
            + [f"≥ {_fmt(edges[-1])}"])


# ------------------------------------------------------------------------------------------------ JSON
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def parse_json(data: bytes, *, what: str, max_bytes: int = MAX_SMALL_FILE_BYTES) -> dict[str, Any]:
    """Strictly parse a JSON object of at most ``max_bytes``. Raises SecAggError naming ``what``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SecAggError(f"The {what} must be given as file bytes.")
    if len(data) > max_bytes:
        raise SecAggError(f"This file is too large to be {_a(what)} ({len(data)} bytes, at most {max_bytes}).")
    try:
        obj = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SecAggError(f"This is not {_a(what)}: it is not valid JSON.") from e
    if not isinstance(obj, dict):
        raise SecAggError(f"This is not {_a(what)}: expected a JSON object.")
    return obj


def check_fields(obj: dict[str, Any], required: set[str], *, what: str, optional: set[str] = frozenset()) -> None:
    """Exactly the ``required`` keys (plus any of ``optional``); SecAggError naming what is missing or extra."""
    missing = required - set(obj)
    extra = set(obj) - required - set(optional)
    if missing or extra:
        detail = (f"missing {', '.join(sorted(missing))}" if missing else "") + \
                 ("; " if missing and extra else "") + (f"unexpected {', '.join(sorted(extra))[:200]}" if extra else "")
        raise SecAggError(f"The {what} is malformed ({detail}).")


def check_header(obj: dict[str, Any], kind: str, *, what: str) -> None:
    """``protocol``, ``version`` and ``kind`` of a file are the ones expected."""
    if obj.get("protocol") != PROTOCOL or obj.get("kind") != kind:
        raise SecAggError(f"This is not {_a(what)} (it is not a {PROTOCOL} {kind} file).")
    if obj.get("version") != PROTOCOL_VERSION:
        raise SecAggError(f"This {what} uses protocol version {str(obj.get('version'))[:10]}; this app speaks version"
                          f" {PROTOCOL_VERSION}. Update the app or ask for a file of version {PROTOCOL_VERSION}.")


def header(kind: str) -> dict[str, Any]:
    return {"protocol": PROTOCOL, "version": PROTOCOL_VERSION, "kind": kind}


# ------------------------------------------------------------------------------------------------ plant cards
def check_pseudonym(text: object) -> str:
    """A plant pseudonym: 2-32 lower-case letters, digits and '-', starting with a letter or digit."""
    if not isinstance(text, str) or not _PSEUDONYM_RE.fullmatch(text):
        raise SecAggError("A plant pseudonym is 2 to 32 lower-case letters, digits or '-' (e.g. 'plant-07'); choose"
                          " one that does not name the company or the site.")
    return text


def check_signing_key(text: object) -> str:
    if not isinstance(text, str) or not _HEX64_RE.fullmatch(text):
        raise SecAggError("A plant's signing key must be 64 lower-case hex digits (a raw Ed25519 public key).")
    return text


def key_fingerprint(text: str) -> str:
    """'ab12 cd34 ...' (first 16 hex digits of SHA-256 of the key text, in groups of 4) for people to compare."""
    return short_fingerprint(hashlib.sha256(text.encode("ascii")).hexdigest())


@dataclass(frozen=True)
class PlantCard:
    """A plant's public identity: pseudonym, age recipient (encryption) and Ed25519 public key (signatures, hex)."""

    pseudonym: str
    age_recipient: str
    signing_key: str

    @property
    def fingerprint(self) -> str:
        """One fingerprint over both public keys, to compare by phone or in person."""
        return key_fingerprint(f"{self.pseudonym}\n{self.age_recipient}\n{self.signing_key}")

    def to_dict(self) -> dict[str, str]:
        return {"pseudonym": self.pseudonym, "age_recipient": self.age_recipient, "signing_key": self.signing_key}


def card_from_dict(obj: object, *, what: str = "plant card") -> PlantCard:
    if not isinstance(obj, dict):
        raise SecAggError(f"The {what} is malformed (expected an object).")
    check_fields(obj, {"pseudonym", "age_recipient", "signing_key"}, what=what)
    try:
        recipient = parse_recipient(obj["age_recipient"])
    except CollabError as e:
        raise SecAggError(f"The {what} holds an invalid age public key: {e}") from e
    if recipient != obj["age_recipient"]:
        raise SecAggError(f"The {what}'s age public key is not in canonical form.")
    return PlantCard(check_pseudonym(obj["pseudonym"]), recipient, check_signing_key(obj["signing_key"]))


def card_json(card: PlantCard) -> bytes:
    """The file a plant hands to the researcher (public keys only)."""
    return canonical_json({**header("plant-card"), "card": card.to_dict()})


def parse_card(data: bytes) -> PlantCard:
    obj = parse_json(data, what="plant card")
    check_header(obj, "plant-card", what="plant card")
    check_fields(obj, {"protocol", "version", "kind", "card"}, what="plant card")
    return card_from_dict(obj["card"])


# ------------------------------------------------------------------------------------------------ rounds
def _utc(text: object, *, what: str) -> datetime:
    if not isinstance(text, str) or len(text) > 40:
        raise SecAggError(f"The round's {what} is not a date and time.")
    try:
        value = datetime.fromisoformat(text)
    except ValueError as e:
        raise SecAggError(f"The round's {what} {text!r} is not an ISO date and time.") from e
    if value.tzinfo is None:
        raise SecAggError(f"The round's {what} must carry a time zone (UTC).")
    return value.astimezone(timezone.utc)


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Round:
    """One aggregation round. ``plants`` in roster order (share i of a plant goes to plant i)."""

    round_id: str
    title: str
    created: str
    deadline: str
    bins_version: str
    min_plants: int
    epsilon: float | None
    plants: tuple[PlantCard, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**header("round"), "round_id": self.round_id, "title": self.title, "created": self.created,
                "deadline": self.deadline, "bins": {"version": self.bins_version,
                                                    "edges_um": list(bin_edges(self.bins_version))},
                "min_plants": self.min_plants, "epsilon": self.epsilon,
                "plants": [p.to_dict() for p in self.plants]}

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical round file: what every share and partial is bound to."""
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()

    @property
    def short_digest(self) -> str:
        return short_fingerprint(self.digest)

    @property
    def pseudonyms(self) -> tuple[str, ...]:
        return tuple(p.pseudonym for p in self.plants)

    def card(self, pseudonym: str) -> PlantCard:
        for p in self.plants:
            if p.pseudonym == pseudonym:
                return p
        raise SecAggError(f"{str(pseudonym)[:40]!r} is not a participant of round {self.round_id[:8]}.")

    def deadline_passed(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(timezone.utc)) > _utc(self.deadline, what="deadline")

    def check_open(self, now: datetime | None = None) -> None:
        if self.deadline_passed(now):
            raise SecAggError(f"Round {self.round_id[:8]} closed at its deadline {self.deadline}; nothing more can be"
                              " contributed. Ask the researcher for a new round.")


def check_roster(plants: tuple[PlantCard, ...], min_plants: object) -> int:
    """Refuse a roster below the minimum, a minimum below 3, and duplicate plants (pseudonym or either key)."""
    if not isinstance(min_plants, int) or isinstance(min_plants, bool) or min_plants < MIN_PLANTS_FLOOR:
        raise SecAggError(f"The minimum number of plants must be at least {MIN_PLANTS_FLOOR}: with two, each plant"
                          " could subtract its own histogram from the total and read the other's.")
    if len(plants) < min_plants:
        raise SecAggError(f"Too few plants: {len(plants)} joined, the round needs at least {min_plants}. Wait for more"
                          " plants; an aggregate over fewer would expose individual plants.")
    if len(plants) > MAX_PLANTS:
        raise SecAggError(f"At most {MAX_PLANTS} plants can take part in one round.")
    for attr, what in (("pseudonym", "pseudonym"), ("age_recipient", "age public key"),
                       ("signing_key", "signing key")):
        values = [getattr(p, attr) for p in plants]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            shown = ", ".join(d[:16] for d in dupes)
            raise SecAggError(f"The same {what} appears twice in the roster ({shown}): each plant takes part once,"
                              " with its own keys.")
    return min_plants


def check_epsilon(epsilon: object) -> float | None:
    if epsilon is None:
        return None
    if (not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not math.isfinite(epsilon)
            or not EPSILON_RANGE[0] <= epsilon <= EPSILON_RANGE[1]):
        raise SecAggError(f"The privacy parameter epsilon must be between {EPSILON_RANGE[0]} and {EPSILON_RANGE[1]}"
                          " (smaller = more noise), or none for an exact aggregate.")
    return float(epsilon)


def create_round(plants: list[PlantCard], *, title: str, min_plants: int = MIN_PLANTS_FLOOR,
                 deadline: datetime, epsilon: float | None = None, bins_version: str = CURRENT_BINS,
                 now: datetime | None = None, round_id: str | None = None) -> Round:
    """A new round over ``plants`` (roster order as given). Raises SecAggError for a bad roster or parameters."""
    now = now or datetime.now(timezone.utc)
    return round_from_dict(Round(
        round_id=round_id or secrets.token_hex(16), title=str(title).strip(), created=iso(now), deadline=iso(deadline),
        bins_version=bins_version, min_plants=min_plants, epsilon=epsilon, plants=tuple(plants)).to_dict())


def round_from_dict(obj: dict[str, Any]) -> Round:
    """Validate a round object (as in the round file). Raises SecAggError."""
    check_header(obj, "round", what="round file")
    check_fields(obj, {"protocol", "version", "kind", "round_id", "title", "created", "deadline", "bins",
                       "min_plants", "epsilon", "plants"}, what="round file")
    if not isinstance(obj["round_id"], str) or not _ROUND_ID_RE.fullmatch(obj["round_id"]):
        raise SecAggError("The round id must be 32 lower-case hex digits.")
    title = obj["title"]
    if not isinstance(title, str) or not title or len(title) > MAX_TITLE_CHARS or not title.isprintable():
        raise SecAggError(f"The round title must be 1 to {MAX_TITLE_CHARS} printable characters.")
    created, deadline = _utc(obj["created"], what="creation time"), _utc(obj["deadline"], what="deadline")
    if not created < deadline <= created + timedelta(days=MAX_DEADLINE_DAYS):
        raise SecAggError(f"The deadline must be after the round's creation and within {MAX_DEADLINE_DAYS} days.")
    bins = obj["bins"]
    if not isinstance(bins, dict) or set(bins) != {"version", "edges_um"}:
        raise SecAggError("The round's bins are malformed (expected version and edges_um).")
    if bins["edges_um"] != list(bin_edges(bins["version"])):
        raise SecAggError(f"The round's bin edges differ from the agreed bins {bins['version']}: all plants must use"
                          " exactly the same bins.")
    plants = obj["plants"]
    if not isinstance(plants, list):
        raise SecAggError("The round's plant list is malformed.")
    cards = tuple(card_from_dict(p, what="round's plant entry") for p in plants[:MAX_PLANTS + 1])
    min_plants = check_roster(cards, obj["min_plants"])
    return Round(round_id=obj["round_id"], title=title, created=iso(created), deadline=iso(deadline),
                 bins_version=bins["version"], min_plants=min_plants, epsilon=check_epsilon(obj["epsilon"]),
                 plants=cards)


def round_json(rnd: Round) -> bytes:
    """The round file (canonical JSON, so its digest can be recomputed by anyone)."""
    return canonical_json(rnd.to_dict())


def parse_round(data: bytes) -> Round:
    return round_from_dict(parse_json(data, what="round file"))
