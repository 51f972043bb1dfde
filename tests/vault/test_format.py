"""Byte layouts and input validation (no cryptography involved)."""
from __future__ import annotations

import hashlib
import struct

import pytest

from vault import format as fmt
from vault.errors import InvalidEntryError, KdfParamsError, RecoveryKeyFormatError, VaultCorruptedError


def _header(n_slots: int = 2) -> fmt.Header:
    slots = [fmt.KeySlot(fmt.SLOT_PASSPHRASE, fmt.KdfParams.minimum(), b"s" * 32, b"n" * 12, b"w" * 48)]
    if n_slots == 2:
        slots.append(fmt.KeySlot(fmt.SLOT_RECOVERY, None, b"t" * 32, b"m" * 12, b"v" * 48))
    return fmt.Header(vault_id=b"i" * 16, seal_public_key=b"p" * 32, slots=tuple(slots))


def _refresh_checksum(raw: bytes) -> bytes:
    return raw[:-32] + hashlib.sha256(raw[:-32]).digest()


def test_header_round_trip_and_size():
    raw = fmt.encode_header(_header())
    assert len(raw) == 60 + 1 + 2 * 105 + 32 == 303
    assert raw[:8] == b"CQCVAULT"
    assert fmt.decode_header(raw) == _header()
    assert fmt.decode_header(fmt.encode_header(_header(1))).slot(fmt.SLOT_RECOVERY) is None


def test_slot_associated_data_covers_core_params_and_salt():
    h = _header()
    slot = h.slot(fmt.SLOT_PASSPHRASE)
    ad = fmt.slot_associated_data(h, slot)
    assert h.core_bytes() in ad and slot.salt in ad
    assert struct.pack(">III", slot.kdf.memory_kib, slot.kdf.iterations, slot.kdf.lanes) in ad
    other = fmt.KeySlot(slot.slot_type, fmt.KdfParams(slot.kdf.memory_kib, 3, 1), slot.salt, slot.nonce,
                        slot.wrapped_key)
    assert fmt.slot_associated_data(h, other) != ad


@pytest.mark.parametrize("mutate", [
    lambda r: b"",
    lambda r: r[:100],
    lambda r: b"NOTVAULT" + r[8:],
    lambda r: r + b"\x00",
    lambda r: r[:-1] + bytes([r[-1] ^ 1]),  # checksum
    lambda r: r[:200] + bytes([r[200] ^ 1]) + r[201:],  # a salt byte, checksum not updated
], ids=["empty", "truncated", "magic", "trailing", "checksum", "salt-flip"])


def test_damaged_header_is_refused(mutate):
    with pytest.raises(VaultCorruptedError):
        fmt.decode_header(mutate(fmt.encode_header(_header())))


def test_unknown_version_slot_type_and_duplicate_slots_refused():
    raw = fmt.encode_header(_header())
    with pytest.raises(VaultCorruptedError, match="version"):
        fmt.decode_header(_refresh_checksum(raw[:8] + struct.pack(">H", 2) + raw[10:]))
    with pytest.raises(VaultCorruptedError, match="slot"):
        fmt.decode_header(_refresh_checksum(raw[:61] + b"\x07" + raw[62:]))
    dup = fmt.encode_header(fmt.Header(b"i" * 16, b"p" * 32, (_header().slots[0], _header().slots[0])))
    with pytest.raises(VaultCorruptedError, match="inconsistent"):
        fmt.decode_header(dup)
    no_pass = fmt.encode_header(fmt.Header(b"i" * 16, b"p" * 32, (_header().slots[1],)))
    with pytest.raises(VaultCorruptedError, match="inconsistent"):
        fmt.decode_header(no_pass)
    bad_recovery = raw[:61 + 105] + b"\x02" + struct.pack(">III", 1, 0, 0) + raw[61 + 105 + 13:]
    with pytest.raises(VaultCorruptedError, match="slot"):
        fmt.decode_header(_refresh_checksum(bad_recovery))


@pytest.mark.parametrize("params, ok", [
    (fmt.KdfParams.minimum(), True),
    (fmt.KdfParams.default(), True),
    (fmt.KdfParams(fmt.MIN_MEMORY_KIB - 1, 2, 1), False),
    (fmt.KdfParams(fmt.MIN_MEMORY_KIB, 1, 1), False),
    (fmt.KdfParams(fmt.MIN_MEMORY_KIB, 2, 0), False),
    (fmt.KdfParams(fmt.MAX_MEMORY_KIB + 1, 2, 1), False),
    (fmt.KdfParams(fmt.MIN_MEMORY_KIB, fmt.MAX_ITERATIONS + 1, 1), False),
    (fmt.KdfParams(fmt.MIN_MEMORY_KIB, 2, fmt.MAX_LANES + 1), False),
    (fmt.KdfParams(fmt.MAX_MEMORY_KIB, 5, 1), False),  # each value allowed, the product is a bomb
    (fmt.KdfParams(fmt.MAX_MEMORY_KIB, 4, 1), True),
    (fmt.KdfParams(float(fmt.MIN_MEMORY_KIB), 2, 1), False),
    (fmt.KdfParams(True, 2, 1), False),
])


def test_kdf_bounds(params, ok):
    if ok:
        assert params.validate() is params
    else:
        with pytest.raises(KdfParamsError):
            params.validate()


def test_default_kdf_is_at_least_64_mib():
    assert fmt.KdfParams.default().memory_kib >= 64 * 1024


def test_header_with_out_of_bound_kdf_params_raises_kdf_error():
    raw = fmt.encode_header(_header())
    for mem, it, lanes in ((1024, 2, 1), (8 * 1024 * 1024, 2, 1), (fmt.MIN_MEMORY_KIB, 10 ** 6, 1)):
        bad = raw[:62] + struct.pack(">III", mem, it, lanes) + raw[74:]
        with pytest.raises(KdfParamsError):
            fmt.decode_header(_refresh_checksum(bad))


def test_state_round_trip_and_damage():
    st = fmt.State(b"i" * 16, 5, 3, b"x" * 16, b"h" * 32, 7, b"a" * 32, 1234)
    body = fmt.encode_state_body(st)
    assert len(body) == fmt.STATE_BODY_BYTES
    parsed, body2, tag = fmt.decode_state(body + b"t" * 32)
    assert parsed == st and body2 == body and tag == b"t" * 32
    for bad in (b"", body, body + b"t" * 33, b"X" + body[1:] + b"t" * 32):
        with pytest.raises(VaultCorruptedError):
            fmt.decode_state(bad)


def test_seen_round_trip():
    body = fmt.encode_seen_body(b"i" * 16, 9, b"d" * 32)
    assert fmt.decode_seen(body + b"m" * 32) == (b"i" * 16, 9, b"d" * 32, body, b"m" * 32)
    assert fmt.decode_seen(body) is None
    assert fmt.decode_seen(b"X" * 96) is None


def test_recovery_key_format_and_parse():
    secret = bytes(range(20))
    text = fmt.format_recovery_key(secret)
    groups = text.split("-")
    assert len(groups) == 9 and all(len(g) == 4 for g in groups)
    assert fmt.parse_recovery_key(text) == secret
    assert fmt.parse_recovery_key(" " + text.lower().replace("-", " ") + "\n") == secret


@pytest.mark.parametrize("mangle, match", [
    (lambda t: t[:-5], "36 characters"),
    (lambda t: t.replace(t[0], "0", 1), "A-Z"),
    (lambda t: ("B" if t[0] != "B" else "C") + t[1:], "typo"),
    (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "typo"),
])


def test_recovery_key_typos_are_reported(mangle, match):
    text = fmt.format_recovery_key(bytes(range(20)))
    with pytest.raises(RecoveryKeyFormatError, match=match):
        fmt.parse_recovery_key(mangle(text))


def test_recovery_key_must_be_text():
    with pytest.raises(RecoveryKeyFormatError):
        fmt.parse_recovery_key(b"ABCD")


@pytest.mark.parametrize("name", ["images/2026-11-27/abc.png", "settings.json", "results/run 1/résumé.json",
                                  "models/yolo-v8.onnx", "a"])
def test_valid_names(name):
    assert fmt.normalize_name(name) == name


def test_names_are_nfc_normalised():
    assert fmt.normalize_name("re\u0301sume\u0301.json") == "r\u00e9sum\u00e9.json"


@pytest.mark.parametrize("name", ["", "/abs.png", "a//b", "a/", "../x", "a/./b", "a\\b", "bad\x00name", "tab\tname",
                                  "rtl\u202egnp.exe", "x" * 1025, "\ud800", 42, None])
def test_invalid_names(name):
    with pytest.raises(InvalidEntryError):
        fmt.normalize_name(name)


@pytest.mark.parametrize("kind, ok", [("image", True), ("result_v2", True), ("Image", False), ("", False),
                                      ("2x", False), ("a" * 33, False), (None, False)])
def test_kinds(kind, ok):
    if ok:
        assert fmt.validate_kind(kind) == kind
    else:
        with pytest.raises(InvalidEntryError):
            fmt.validate_kind(kind)


def test_meta_is_copied_and_validated():
    meta = {"pixel_size_um": 0.5, "tags": ["a"], "nested": {"x": None}}
    out = fmt.validate_meta(meta)
    assert out == meta and out is not meta and out["tags"] is not meta["tags"]
    assert fmt.validate_meta(None) == {}
    for bad in ([1], {1: "x"}, {"x": object()}, {"x": float("nan")}, {"x": "y" * 70_000}):
        with pytest.raises(InvalidEntryError):
            fmt.validate_meta(bad)


def test_index_round_trip_and_schema_checks():
    rec = fmt.IndexRecord(b"e" * 16, 2, b"b" * 16, 10, "0" * 64, "t0", "t1", "image", {"k": 1})
    plain = fmt.encode_index(b"i" * 16, 4, {"a.png": rec})
    assert fmt.decode_index(plain, vault_id=b"i" * 16, generation=4) == {"a.png": rec}
    with pytest.raises(VaultCorruptedError):
        fmt.decode_index(plain, vault_id=b"j" * 16, generation=4)
    with pytest.raises(VaultCorruptedError):
        fmt.decode_index(plain, vault_id=b"i" * 16, generation=5)
    for bad in (b"", b"[]", plain.replace(b'"version":2', b'"version":0'), plain.replace(b'"a.png"', b'"../a"'),
                plain.replace(b'"kind":"image"', b'"kind":"IMAGE"'), b"\xff"):
        with pytest.raises(VaultCorruptedError):
            fmt.decode_index(bad, vault_id=b"i" * 16, generation=4)


@pytest.mark.parametrize("size, chunks", [(0, 1), (1, 1), (16383, 1), (16384, 2), (16385, 2), (3 * 16384, 4)])
def test_chunk_count_and_ciphertext_size(size, chunks):
    assert fmt.chunk_count(size) == chunks
    assert fmt.ciphertext_size(size) == 56 + 16 * chunks + size


def test_contexts_differ_by_every_bound_field():
    base = fmt.blob_context(b"v" * 16, b"e" * 16, 1)
    assert len({base, fmt.blob_context(b"w" * 16, b"e" * 16, 1), fmt.blob_context(b"v" * 16, b"f" * 16, 1),
                fmt.blob_context(b"v" * 16, b"e" * 16, 2), fmt.index_context(b"v" * 16, 1),
                fmt.audit_context(b"v" * 16), fmt.sealed_context(b"v" * 16)}) == 7
