"""Byte layouts of the vault files (no cryptography here: only parsing, bounds and encodings).

All integers are unsigned big-endian. Every decoder checks the exact size and every bound before anything is derived
or decrypted, and raises :class:`~vault.errors.VaultCorruptedError` (or :class:`~vault.errors.KdfParamsError`) with
a message a technician can act on. See docs/vault.md for the full description.

Header (``vault.hdr``), 303 bytes with the two standard slots::

    0   8   magic b"CQCVAULT"
    8   2   format version (1)
    10  2   reserved (0)
    12  16  vault id (random)
    28  32  X25519 public key used to seal failed-unlock records (the private key is derived from the master key)
    60  1   slot count n (1..4)
    61  105*n  key slots:
            0  1  slot type: 1 = passphrase (Argon2id), 2 = recovery key (HKDF)
            1  4  Argon2id memory in KiB (0 for a recovery slot)
            5  4  Argon2id iterations (0 for a recovery slot)
            9  4  Argon2id lanes (0 for a recovery slot)
            13 32 salt
            45 12 AES-256-GCM nonce
            57 48 wrapped master key (32 bytes + 16-byte tag); AD = header[0:60] || slot[0:45]
    end-32 32  SHA-256 of all preceding bytes (detects accidental damage only; security comes from the AD)

State (``state``), 170 bytes: the commit point of every write and the anti-rollback counter::

    0   8   magic b"CQCSTATE"      8   2   version (1)           10  16  vault id
    26  8   state sequence (+1 on every commit; never repeats)
    34  8   index generation       42  16  index file id         58  32  SHA-256 of the index file
    90  8   audit record count     98  32  hash of the last audit record
    130 8   audit log size in bytes at that record
    138 32  HMAC-SHA-256 over bytes [0:138] with a key derived from the master key

Seen file (outside the vault, per user): 96 bytes: magic b"CQCSEEN1", vault id, state sequence, SHA-256 of the state
file, HMAC-SHA-256 over the first 64 bytes.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from vault.errors import InvalidEntryError, KdfParamsError, RecoveryKeyFormatError, VaultCorruptedError

FORMAT_VERSION = 1
DOMAIN = b"crystal-qc/vault/v1"

ID_BYTES = 16
KEY_BYTES = 32
SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
HASH_BYTES = 32

# ---------------------------------------------------------------- Argon2id parameters and their enforced bounds

#: Floor: the OWASP minimum Argon2id configuration (19 MiB, 2 passes, 1 lane). Used by tests; never weaker.
MIN_MEMORY_KIB = 19 * 1024
MIN_ITERATIONS = 2
MIN_LANES = 1
#: Ceiling: refuse anything that could exhaust memory or take minutes (a "KDF bomb" in a tampered header).
MAX_MEMORY_KIB = 1024 * 1024
MAX_ITERATIONS = 16
MAX_LANES = 16
MAX_COST_KIB_PASSES = 4 * 1024 * 1024  # memory x iterations, e.g. 1 GiB x 4 passes


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: ``memory_kib`` (KiB), ``iterations`` (passes) and ``lanes`` (parallelism)."""

    memory_kib: int
    iterations: int
    lanes: int

    @classmethod
    def default(cls) -> KdfParams:
        """Calibrated default: 256 MiB, 3 passes, 4 lanes (0.7-0.8 s on the 2-core dev machine; see
        bench/bench_vault.py)."""
        return cls(memory_kib=256 * 1024, iterations=3, lanes=4)

    @classmethod
    def minimum(cls) -> KdfParams:
        """The weakest parameters the reader accepts (fast; for tests and very slow machines)."""
        return cls(memory_kib=MIN_MEMORY_KIB, iterations=MIN_ITERATIONS, lanes=MIN_LANES)

    def validate(self) -> KdfParams:
        """Return self if every bound holds.

        Raises:
            KdfParamsError: a value is not an int or is below the floor / above the ceiling.
        """
        values = (self.memory_kib, self.iterations, self.lanes)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise KdfParamsError("Argon2id parameters must be integers.")
        if self.memory_kib < MIN_MEMORY_KIB or self.iterations < MIN_ITERATIONS or self.lanes < MIN_LANES:
            raise KdfParamsError(
                f"Argon2id parameters are below the enforced minimum ({MIN_MEMORY_KIB} KiB, {MIN_ITERATIONS} passes,"
                f" {MIN_LANES} lane): the vault header was damaged or tampered with, or the requested settings are too"
                " weak.")
        if (self.memory_kib > MAX_MEMORY_KIB or self.iterations > MAX_ITERATIONS or self.lanes > MAX_LANES
                or self.memory_kib * self.iterations > MAX_COST_KIB_PASSES):
            raise KdfParamsError(
                f"Argon2id parameters exceed the enforced maximum ({MAX_MEMORY_KIB} KiB, {MAX_ITERATIONS} passes,"
                f" {MAX_LANES} lanes, memory x passes <= {MAX_COST_KIB_PASSES} KiB): the vault header was damaged"
                " or tampered with, or the requested settings are too heavy for this machine.")
        if self.memory_kib < 8 * self.lanes:
            raise KdfParamsError("Argon2id needs at least 8 KiB of memory per lane.")
        return self


# ---------------------------------------------------------------- header

HEADER_MAGIC = b"CQCVAULT"
HEADER_CORE_BYTES = 60
SLOT_HEAD_BYTES = 45
SLOT_BYTES = SLOT_HEAD_BYTES + NONCE_BYTES + KEY_BYTES + TAG_BYTES  # 105
MAX_SLOTS = 4
SLOT_PASSPHRASE = 1
SLOT_RECOVERY = 2
MAX_HEADER_BYTES = HEADER_CORE_BYTES + 1 + MAX_SLOTS * SLOT_BYTES + HASH_BYTES


@dataclass(frozen=True)
class KeySlot:
    """One wrapped copy of the master key. ``kdf`` is None for the recovery slot (HKDF, no stretching)."""

    slot_type: int
    kdf: KdfParams | None
    salt: bytes
    nonce: bytes
    wrapped_key: bytes

    def head_bytes(self) -> bytes:
        """Bytes [0:45] of the slot (type, KDF parameters, salt): part of the slot's associated data."""
        kdf = self.kdf or KdfParams(0, 0, 0)
        return struct.pack(">BIII", self.slot_type, kdf.memory_kib, kdf.iterations, kdf.lanes) + self.salt


@dataclass(frozen=True)
class Header:
    """The parsed vault header."""

    vault_id: bytes
    seal_public_key: bytes
    slots: tuple[KeySlot, ...]

    def core_bytes(self) -> bytes:
        """Header bytes [0:60]: magic, version, vault id, sealing public key (authenticated by every slot)."""
        return HEADER_MAGIC + struct.pack(">HH", FORMAT_VERSION, 0) + self.vault_id + self.seal_public_key

    def slot(self, slot_type: int) -> KeySlot | None:
        return next((s for s in self.slots if s.slot_type == slot_type), None)

    def replace_slot(self, new: KeySlot) -> Header:
        """A new header with the slot of ``new.slot_type`` replaced (or added)."""
        slots = tuple(s for s in self.slots if s.slot_type != new.slot_type) + (new,)
        return Header(self.vault_id, self.seal_public_key, tuple(sorted(slots, key=lambda s: s.slot_type)))


def slot_associated_data(header: Header, slot: KeySlot) -> bytes:
    """What the wrapped master key authenticates: the header core and the slot's own type, KDF parameters and salt."""
    return DOMAIN + b"\x00slot\x00" + header.core_bytes() + slot.head_bytes()


def encode_header(header: Header) -> bytes:
    """Serialise a header (layout in the module docstring)."""
    if not 1 <= len(header.slots) <= MAX_SLOTS:
        raise ValueError("a header needs 1 to 4 key slots")
    body = header.core_bytes() + bytes([len(header.slots)])
    for s in header.slots:
        if len(s.salt) != SALT_BYTES or len(s.nonce) != NONCE_BYTES or len(s.wrapped_key) != KEY_BYTES + TAG_BYTES:
            raise ValueError("malformed key slot")
        body += s.head_bytes() + s.nonce + s.wrapped_key
    return body + hashlib.sha256(body).digest()


def decode_header(data: bytes) -> Header:
    """Parse and bound-check a header. Never derives anything.

    Raises:
        VaultCorruptedError: wrong magic, version, size or checksum, or an unknown/duplicated slot.
        KdfParamsError: Argon2id parameters outside the enforced bounds.
    """
    if len(data) < HEADER_CORE_BYTES + 1 + SLOT_BYTES + HASH_BYTES or data[:8] != HEADER_MAGIC:
        raise VaultCorruptedError("The vault header is missing, truncated or not a crystal-QC vault header;"
                                  " restore the vault folder from a backup.")
    version, reserved = struct.unpack(">HH", data[8:12])
    if version != FORMAT_VERSION or reserved != 0:
        raise VaultCorruptedError(f"Unsupported vault format version {version}; update the software.")
    n = data[HEADER_CORE_BYTES]
    if not 1 <= n <= MAX_SLOTS or len(data) != HEADER_CORE_BYTES + 1 + n * SLOT_BYTES + HASH_BYTES:
        raise VaultCorruptedError("The vault header has the wrong size: it is damaged; restore it from a backup.")
    if hashlib.sha256(data[:-HASH_BYTES]).digest() != data[-HASH_BYTES:]:
        raise VaultCorruptedError("The vault header checksum does not match: the header is damaged or was edited;"
                                  " restore it from a backup.")
    slots = []
    for i in range(n):
        raw = data[HEADER_CORE_BYTES + 1 + i * SLOT_BYTES:HEADER_CORE_BYTES + 1 + (i + 1) * SLOT_BYTES]
        slot_type, mem, it, lanes = struct.unpack(">BIII", raw[:13])
        if slot_type == SLOT_PASSPHRASE:
            kdf = KdfParams(mem, it, lanes).validate()
        elif slot_type == SLOT_RECOVERY and mem == it == lanes == 0:
            kdf = None
        else:
            raise VaultCorruptedError("The vault header has an unknown key slot: it is damaged or was tampered with.")
        slots.append(KeySlot(slot_type, kdf, raw[13:45], raw[45:57], raw[57:]))
    types = [s.slot_type for s in slots]
    if types.count(SLOT_PASSPHRASE) != 1 or types.count(SLOT_RECOVERY) > 1 or len(set(types)) != len(types):
        raise VaultCorruptedError("The vault header key slots are inconsistent: it is damaged or was tampered with.")
    return Header(vault_id=data[12:28], seal_public_key=data[28:60], slots=tuple(slots))


# ---------------------------------------------------------------- state (commit point + anti-rollback counter)

STATE_MAGIC = b"CQCSTATE"
STATE_BODY_BYTES = 138
STATE_BYTES = STATE_BODY_BYTES + HASH_BYTES


@dataclass(frozen=True)
class State:
    """The authenticated pointer to the current index and the audit-log anchor."""

    vault_id: bytes
    seq: int
    generation: int
    index_id: bytes
    index_sha256: bytes
    audit_count: int
    audit_head: bytes
    audit_size: int


def encode_state_body(state: State) -> bytes:
    """The 138 bytes the state MAC covers."""
    return (STATE_MAGIC + struct.pack(">H", FORMAT_VERSION) + state.vault_id
            + struct.pack(">QQ", state.seq, state.generation) + state.index_id + state.index_sha256
            + struct.pack(">Q", state.audit_count) + state.audit_head + struct.pack(">Q", state.audit_size))


def decode_state(data: bytes) -> tuple[State, bytes, bytes]:
    """Split a state file into (state, body, mac); the caller verifies the MAC over ``body``.

    Raises:
        VaultCorruptedError: wrong size, magic or version.
    """
    if len(data) != STATE_BYTES or data[:8] != STATE_MAGIC or struct.unpack(">H", data[8:10])[0] != FORMAT_VERSION:
        raise VaultCorruptedError("The vault state file is damaged (wrong size or magic); restore the vault from a"
                                  " backup.")
    seq, gen = struct.unpack(">QQ", data[26:42])
    (count,) = struct.unpack(">Q", data[90:98])
    (size,) = struct.unpack(">Q", data[130:138])
    state = State(vault_id=data[10:26], seq=seq, generation=gen, index_id=data[42:58], index_sha256=data[58:90],
                  audit_count=count, audit_head=data[98:130], audit_size=size)
    return state, data[:STATE_BODY_BYTES], data[STATE_BODY_BYTES:]


SEEN_MAGIC = b"CQCSEEN1"
SEEN_BYTES = 96


def encode_seen_body(vault_id: bytes, seq: int, state_digest: bytes) -> bytes:
    """The 64 MAC'd bytes of a seen file (the highest state this user account has seen for a vault)."""
    return SEEN_MAGIC + vault_id + struct.pack(">Q", seq) + state_digest


def decode_seen(data: bytes) -> tuple[bytes, int, bytes, bytes, bytes] | None:
    """(vault_id, seq, state_digest, body, mac), or None if the file is not a seen file."""
    if len(data) != SEEN_BYTES or data[:8] != SEEN_MAGIC:
        return None
    return data[8:24], struct.unpack(">Q", data[24:32])[0], data[32:64], data[:64], data[64:]


# ---------------------------------------------------------------- contexts bound into every ciphertext


def blob_context(vault_id: bytes, entry_id: bytes, version: int) -> bytes:
    """Cobblestone context of an entry blob: a blob only decrypts as this entry id at this version of this vault."""
    return DOMAIN + b"\x00blob\x00" + vault_id + entry_id + struct.pack(">Q", version)


def index_context(vault_id: bytes, generation: int) -> bytes:
    """Cobblestone context of an index file: binds the generation counter (anti-replay with the state file)."""
    return DOMAIN + b"\x00index\x00" + vault_id + struct.pack(">Q", generation)


def audit_context(vault_id: bytes) -> bytes:
    """Cobblestone context of one audit record (order is protected by the hash chain and sequence numbers)."""
    return DOMAIN + b"\x00audit\x00" + vault_id


def sealed_context(vault_id: bytes) -> bytes:
    """Context of a sealed failed-unlock record."""
    return DOMAIN + b"\x00failed-unlock\x00" + vault_id


#: Cobblestone (C2SP chunked-encryption) framing: 24-byte salt + 32-byte commitment, then 16 KiB chunks + 16-byte tag,
#: the last chunk always shorter than 16 KiB (possibly empty).
CHUNK_BYTES = 16 * 1024
MESSAGE_OVERHEAD_BYTES = 24 + 32


def ciphertext_size(plaintext_size: int) -> int:
    """Exact size in bytes of the ciphertext of a ``plaintext_size``-byte message."""
    return MESSAGE_OVERHEAD_BYTES + chunk_count(plaintext_size) * TAG_BYTES + plaintext_size


# ---------------------------------------------------------------- recovery key text

RECOVERY_SECRET_BYTES = 20  # 160 bits
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _recovery_checksum(secret: bytes) -> str:
    digest = hashlib.sha256(b"crystal-qc recovery key checksum\x00" + secret).digest()
    return base64.b32encode(digest[:5]).decode("ascii")[:4]


def format_recovery_key(secret: bytes) -> str:
    """Human-typeable form: 8 groups of 4 base32 characters (160 bits) + 1 checksum group, joined by '-'."""
    if len(secret) != RECOVERY_SECRET_BYTES:
        raise ValueError("recovery secret must be 20 bytes")
    text = base64.b32encode(secret).decode("ascii") + _recovery_checksum(secret)
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def parse_recovery_key(text: str) -> bytes:
    """The 20-byte secret from a typed recovery key (case, spaces and dashes ignored).

    Raises:
        RecoveryKeyFormatError: wrong length, a character outside A-Z/2-7, or a checksum mismatch (a typo).
    """
    if not isinstance(text, str):
        raise RecoveryKeyFormatError("The recovery key must be text.")
    clean = re.sub(r"[\s\-]", "", text).upper()
    if len(clean) != 36:
        raise RecoveryKeyFormatError("A recovery key has 36 characters in 9 groups of 4 (e.g. ABCD-EFGH-...);"
                                     " check that no group is missing.")
    if any(c not in _B32 for c in clean):
        raise RecoveryKeyFormatError("A recovery key uses only the letters A-Z and the digits 2-7"
                                     " (0, 1, 8 and 9 never appear).")
    secret = base64.b32decode(clean[:32])
    if _recovery_checksum(secret) != clean[32:]:
        raise RecoveryKeyFormatError("The recovery key has a typo (its checksum group does not match);"
                                     " compare it again with the printed copy.")
    return secret


# ---------------------------------------------------------------- canonical JSON and the index

MAX_NAME_BYTES = 1024
MAX_META_BYTES = 64 * 1024
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def canonical_json(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON (sorted keys, no spaces, no NaN): what hashes and ciphertexts are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def normalize_name(name: str) -> str:
    """Validate an entry name like ``images/2026-11-27/abc.png`` and return its NFC form.

    Rules: text of 1..1024 UTF-8 bytes; '/'-separated segments, none empty, '.' or '..'; no backslash and no control
    characters. Names are keys, not paths, but keeping them path-like makes exports safe.

    Raises:
        InvalidEntryError: the name breaks a rule.
    """
    if not isinstance(name, str):
        raise InvalidEntryError("An entry name must be text such as 'images/2026-11-27/sample.png'.")
    if "\\" in name or any(unicodedata.category(c) in _BAD_NAME_CATEGORIES for c in name):
        raise InvalidEntryError("An entry name must not contain backslashes, control or invisible format characters.")
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        raise InvalidEntryError(f"An entry name must have 1 to {MAX_NAME_BYTES} bytes.")
    if any(seg in ("", ".", "..") for seg in name.split("/")):
        raise InvalidEntryError("An entry name is made of '/'-separated parts; no part may be empty, '.' or '..'.")
    return name


def validate_kind(kind: str) -> str:
    """An entry kind: a lower-case word such as 'image', 'result', 'settings', 'model'.

    Raises:
        InvalidEntryError: not a lower-case identifier of 1..32 characters.
    """
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise InvalidEntryError("An entry kind is a lower-case word of 1 to 32 letters, digits or '_' (e.g. 'image').")
    return kind


def validate_meta(meta: dict | None) -> dict:
    """A JSON-safe deep copy of ``meta`` (None -> {}).

    Raises:
        InvalidEntryError: not a dict with text keys, not JSON-serialisable, or larger than 64 KiB.
    """
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise InvalidEntryError("Entry metadata must be a dict with text keys.")
    try:
        raw = canonical_json(meta)
    except (TypeError, ValueError) as e:
        raise InvalidEntryError("Entry metadata must contain only JSON values (text, numbers, booleans, None, lists,"
                                " dicts) and no NaN.") from e
    if len(raw) > MAX_META_BYTES:
        raise InvalidEntryError(f"Entry metadata is larger than {MAX_META_BYTES // 1024} KiB.")
    return json.loads(raw)


@dataclass(frozen=True)
class IndexRecord:
    """One entry of the index (internal: includes the blob file id)."""

    entry_id: bytes
    version: int
    blob_id: bytes
    size: int
    sha256: str
    created: str
    modified: str
    kind: str
    meta: dict = field(default_factory=dict, hash=False)

    def to_json(self) -> dict:
        return {"id": self.entry_id.hex(), "version": self.version, "blob": self.blob_id.hex(), "size": self.size,
                "sha256": self.sha256, "created": self.created, "modified": self.modified, "kind": self.kind,
                "meta": self.meta}


def encode_index(vault_id: bytes, generation: int, entries: dict[str, IndexRecord]) -> bytes:
    """Canonical JSON plaintext of the index."""
    return canonical_json({"format": FORMAT_VERSION, "vault_id": vault_id.hex(), "generation": generation,
                           "entries": {name: rec.to_json() for name, rec in entries.items()}})


def _hexbytes(value: Any, n: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * n or not _HEX_RE.match(value):
        raise ValueError("bad hex field")
    return bytes.fromhex(value)


def _int(value: Any, lo: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or value >= 2 ** 63:
        raise ValueError("bad integer field")
    return value


def decode_index(plaintext: bytes, *, vault_id: bytes, generation: int) -> dict[str, IndexRecord]:
    """Parse and schema-check an authenticated index plaintext.

    Raises:
        VaultCorruptedError: not the expected JSON schema, or vault id / generation inside do not match.
    """
    try:
        doc = json.loads(plaintext.decode("utf-8"))
        if (not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION
                or doc.get("vault_id") != vault_id.hex() or doc.get("generation") != generation
                or not isinstance(doc.get("entries"), dict)):
            raise ValueError("header fields")
        out: dict[str, IndexRecord] = {}
        for name, e in doc["entries"].items():
            if normalize_name(name) != name or not isinstance(e, dict):
                raise ValueError("entry")
            sha = e["sha256"]
            if not isinstance(sha, str) or len(sha) != 64 or not _HEX_RE.match(sha):
                raise ValueError("sha256")
            if not all(isinstance(e[k], str) for k in ("created", "modified")) or not isinstance(e["meta"], dict):
                raise ValueError("fields")
            out[name] = IndexRecord(entry_id=_hexbytes(e["id"], ID_BYTES), version=_int(e["version"], 1),
                                    blob_id=_hexbytes(e["blob"], ID_BYTES), size=_int(e["size"]), sha256=sha,
                                    created=e["created"], modified=e["modified"], kind=validate_kind(e["kind"]),
                                    meta=e["meta"])
        return out
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, InvalidEntryError) as e:
        raise VaultCorruptedError("The vault index does not have the expected content; restore the vault from a"
                                  " backup.") from e


def chunk_count(plaintext_size: int) -> int:
    """Number of Cobblestone chunks (the last one always shorter than 16 KiB, possibly empty)."""
    return plaintext_size // CHUNK_BYTES + 1
