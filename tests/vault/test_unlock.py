"""Unlocking: wrong passphrase, tampered headers and KDF parameters, failed-unlock records."""
from __future__ import annotations

import hashlib
import struct

import pytest

from tests.vault.conftest import FAST_KDF, PASSPHRASE, seen_dir, snapshot
from vault import KdfParamsError, Vault, VaultCorruptedError, WrongPassphraseError
from vault import crypto as vault_crypto
from vault.format import MAX_MEMORY_KIB, MIN_MEMORY_KIB

# header offsets (see vault/format.py)
PASS_SLOT = 61
KDF_FIELDS = PASS_SLOT + 1  # memory, iterations, lanes: 3 x u32
FIELDS = {"magic": 0, "version": 9, "vault_id": 20, "seal_public_key": 40, "slot_count": 60, "slot_type": PASS_SLOT,
          "kdf_memory": KDF_FIELDS + 2, "kdf_iterations": KDF_FIELDS + 7, "kdf_lanes": KDF_FIELDS + 11,
          "salt": PASS_SLOT + 20, "nonce": PASS_SLOT + 50, "wrapped_key": PASS_SLOT + 70, "tag": PASS_SLOT + 100,
          "recovery_slot": PASS_SLOT + 105 + 20, "checksum": 290}


def _hdr(path):
    return path / "vault.hdr"


def _with_checksum(raw: bytes) -> bytes:
    return raw[:-32] + hashlib.sha256(raw[:-32]).digest()


@pytest.fixture
def closed_vault(new_vault, vault_path):
    v, recovery = new_vault
    v.put("images/a.png", b"\x89PNG" + bytes(5000), kind="image")
    v.lock()
    return vault_path, recovery


@pytest.fixture
def no_derivation(monkeypatch):
    """Make any Argon2id derivation fail the test: proves a refusal happened before deriving."""
    calls = []

    class Forbidden:
        def __init__(self, *a, **k):
            calls.append(k)
            raise AssertionError("Argon2id was called")

    monkeypatch.setattr(vault_crypto, "Argon2id", Forbidden)
    return calls


def test_wrong_passphrase_is_generic_and_writes_nothing(closed_vault):
    path, _ = closed_vault
    before = snapshot(path, seen_dir())
    for wrong in ("correct horse battery stapl", "", "x" * 500, PASSPHRASE.upper()):
        with pytest.raises(WrongPassphraseError) as err:
            Vault.open(path, wrong, user="mallory")
        message = str(err.value)
        assert message == "Could not unlock the vault: the passphrase is not correct."
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained library detail
    assert snapshot(path, seen_dir()) == before
    Vault.open(path, PASSPHRASE).lock()  # and the vault is fine


def test_unlock_ok_is_audited_with_user(closed_vault):
    path, _ = closed_vault
    v = Vault.open(path, PASSPHRASE, user="alice")
    last = v.audit.entries()[-1]
    assert (last.event, last.user) == ("unlock_ok", "alice")
    v.lock()


@pytest.mark.parametrize("mem, it, lanes", [
    (MIN_MEMORY_KIB - 1, 2, 1), (1024, 1, 1), (MIN_MEMORY_KIB, 1, 1), (MIN_MEMORY_KIB, 2, 0),  # lowered
    (MAX_MEMORY_KIB * 4, 2, 1), (MIN_MEMORY_KIB, 10_000, 1), (MIN_MEMORY_KIB, 2, 255),  # raised (bomb)
    (MAX_MEMORY_KIB, 16, 1), (2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1),
])


def test_out_of_bound_kdf_params_in_header_are_refused_before_deriving(closed_vault, no_derivation, mem, it, lanes):
    path, _ = closed_vault
    raw = _hdr(path).read_bytes()
    forged = raw[:KDF_FIELDS] + struct.pack(">III", mem, it, lanes) + raw[KDF_FIELDS + 12:]
    _hdr(path).write_bytes(_with_checksum(forged))
    with pytest.raises(KdfParamsError):
        Vault.open(path, PASSPHRASE)
    assert no_derivation == []


def test_in_bound_kdf_change_in_header_fails_authentication(closed_vault):
    path, _ = closed_vault
    raw = _hdr(path).read_bytes()
    mem, it, lanes = struct.unpack(">III", raw[KDF_FIELDS:KDF_FIELDS + 12])
    _hdr(path).write_bytes(_with_checksum(raw[:KDF_FIELDS] + struct.pack(">III", mem, it + 1, lanes)
                                          + raw[KDF_FIELDS + 12:]))
    with pytest.raises(WrongPassphraseError):
        Vault.open(path, PASSPHRASE)


@pytest.mark.parametrize("field", list(FIELDS))
def test_header_bit_flip_without_checksum_fix_is_refused_before_deriving(closed_vault, no_derivation, field):
    path, _ = closed_vault
    raw = bytearray(_hdr(path).read_bytes())
    raw[FIELDS[field]] ^= 0x04
    _hdr(path).write_bytes(bytes(raw))
    with pytest.raises(VaultCorruptedError):
        Vault.open(path, PASSPHRASE)
    assert no_derivation == []


@pytest.mark.parametrize("field", ["vault_id", "seal_public_key", "salt", "nonce", "wrapped_key", "tag"])
def test_header_bit_flip_with_checksum_fix_does_not_unlock(closed_vault, field):
    """An attacker can recompute the checksum; authentication (AEAD associated data) still refuses."""
    path, _ = closed_vault
    raw = bytearray(_hdr(path).read_bytes())
    raw[FIELDS[field]] ^= 0x04
    _hdr(path).write_bytes(_with_checksum(bytes(raw)))
    with pytest.raises(WrongPassphraseError):
        Vault.open(path, PASSPHRASE)


def test_recovery_slot_flip_only_breaks_the_recovery_key(closed_vault):
    path, recovery = closed_vault
    raw = bytearray(_hdr(path).read_bytes())
    raw[FIELDS["recovery_slot"]] ^= 0x04
    _hdr(path).write_bytes(_with_checksum(bytes(raw)))
    with pytest.raises(WrongPassphraseError):
        Vault.open_with_recovery_key(path, recovery)
    Vault.open(path, PASSPHRASE).lock()


@pytest.mark.parametrize("content", [b"", b"CQCVAULT", None], ids=["empty", "magic-only", "half"])
def test_empty_or_truncated_header(closed_vault, no_derivation, content):
    path, _ = closed_vault
    raw = _hdr(path).read_bytes()
    _hdr(path).write_bytes(raw[: len(raw) // 2] if content is None else content)
    with pytest.raises(VaultCorruptedError):
        Vault.open(path, PASSPHRASE)


def test_header_from_another_vault_does_not_open_this_one(closed_vault, tmp_path):
    path, _ = closed_vault
    other, _ = Vault.create(tmp_path / "other", PASSPHRASE, kdf_params=FAST_KDF)
    other.lock()
    _hdr(path).write_bytes(_hdr(tmp_path / "other").read_bytes())
    with pytest.raises(VaultCorruptedError):  # unlocks the other master key, whose MAC on our state fails
        Vault.open(path, PASSPHRASE)


def test_failed_unlocks_are_recorded_without_key_and_audited_at_next_unlock(closed_vault):
    path, _ = closed_vault
    with pytest.raises(WrongPassphraseError):
        Vault.open(path, "guess number one", user="mallory")
    Vault.record_failed_unlock(path, user="mallory")
    Vault.record_failed_unlock(path, user="eve\x07\nname")
    raw = (path / "failed-unlocks").read_bytes()
    assert b"mallory" not in raw and raw.count(b"\n") == 2
    v = Vault.open(path, PASSPHRASE, user="alice")
    events = [(e.event, e.user) for e in v.audit.entries()[-3:]]
    assert events == [("unlock_failed", "mallory"), ("unlock_failed", "eve??name"), ("unlock_ok", "alice")]
    assert "attempted_at" in v.audit.entries()[-3].details
    assert not (path / "failed-unlocks").exists()
    assert v.audit.verify()[0]
    v.lock()


def test_forged_failed_unlock_lines_are_counted_not_trusted(closed_vault):
    path, _ = closed_vault
    (path / "failed-unlocks").write_bytes(b"garbage\n" + b"QUJD\n")
    v = Vault.open(path, PASSPHRASE, user="alice")
    rec = v.audit.entries()[-2]
    assert rec.event == "unlock_failed" and rec.details == {"unreadable_records": 2, "overflow": False}
    v.lock()


def test_failed_unlock_file_is_capped(closed_vault, monkeypatch):
    import vault.failed as failed
    path, _ = closed_vault
    monkeypatch.setattr(failed, "MAX_FAILED_BYTES", 300)
    for _ in range(5):
        Vault.record_failed_unlock(path, user="bot")
    size = (path / "failed-unlocks").stat().st_size
    assert 300 <= size < 600
    v = Vault.open(path, PASSPHRASE)
    assert v.audit.entries()[-2].details["overflow"] is True
    v.lock()
