"""Attacks on the files of a real vault: truncation, extension, bit flips, reordering, swapping, replay, rollback."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.vault.conftest import FAST_KDF, PASSPHRASE, blob_file, seen_dir
from vault import Vault, VaultCorruptedError, VaultRollbackError

HEAD = 56  # Cobblestone salt + commitment
FRAME = 16384 + 16  # one full encrypted chunk
BIG = 3 * 16384 + 5000  # three full chunks and a short final one


@pytest.fixture
def filled(new_vault):
    v, _ = new_vault
    data = {"big": os.urandom(BIG), "small": os.urandom(100), "other": os.urandom(BIG)}
    for name, payload in data.items():
        v.put(name, payload, kind="other")
    return v, data


def _assert_detected(v: Vault, name: str, data: dict) -> None:
    with pytest.raises(VaultCorruptedError) as err:
        v.get(name)
    assert name not in str(err.value)  # names are decrypted data: never in messages
    report = v.check()
    assert not report.ok and [p.name for p in report.problems] == [name]
    for other in data:  # nothing else is affected
        if other != name:
            assert v.get(other) == data[other]


def _cuts() -> dict[str, int]:
    cuts = {"empty": 0, "header-only": HEAD, "half-header": HEAD // 2, "minus-one": -1, "minus-tag": -16}
    for k in range(4):
        cuts[f"boundary-{k}"] = HEAD + k * FRAME
        cuts[f"mid-chunk-{k}"] = HEAD + k * FRAME + FRAME // 2 if k < 3 else HEAD + k * FRAME + 2000
        cuts[f"boundary-{k}+tag"] = HEAD + k * FRAME + 16
    return cuts


@pytest.mark.parametrize("cut", list(_cuts().values()), ids=list(_cuts()))
def test_truncated_entry_is_detected(filled, cut):
    v, data = filled
    path = blob_file(v, "big")
    raw = path.read_bytes()
    path.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    _assert_detected(v, "big", data)


@pytest.mark.parametrize("extra", [b"\x00", b"\xff" * 16, os.urandom(FRAME)], ids=["one-byte", "a-tag", "a-chunk"])
def test_trailing_bytes_are_detected(filled, extra):
    v, data = filled
    path = blob_file(v, "big")
    path.write_bytes(path.read_bytes() + extra)
    _assert_detected(v, "big", data)


@pytest.mark.parametrize("where", [3, 30, HEAD + 100, HEAD + FRAME - 1, HEAD + 2 * FRAME + 7, -17, -1],
                         ids=["salt", "commitment", "chunk0", "tag0", "chunk2", "final-chunk", "final-tag"])
def test_bit_flip_in_entry_is_detected(filled, where):
    v, data = filled
    path = blob_file(v, "big")
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x80
    path.write_bytes(bytes(raw))
    _assert_detected(v, "big", data)


def test_reordered_chunks_are_detected(filled):
    v, data = filled
    path = blob_file(v, "big")
    raw = path.read_bytes()
    c = [raw[HEAD + i * FRAME:HEAD + (i + 1) * FRAME] for i in range(3)]
    path.write_bytes(raw[:HEAD] + c[1] + c[0] + c[2] + raw[HEAD + 3 * FRAME:])
    _assert_detected(v, "big", data)


def test_duplicated_chunk_is_detected(filled):
    v, data = filled
    path = blob_file(v, "big")
    raw = path.read_bytes()
    c0 = raw[HEAD:HEAD + FRAME]
    path.write_bytes(raw[:HEAD] + c0 + c0 + raw[HEAD + 2 * FRAME:])  # same size: chunk 1 replaced by chunk 0
    _assert_detected(v, "big", data)
    path.write_bytes(raw[:HEAD] + c0 + raw[HEAD:])  # longer: chunk 0 twice
    with pytest.raises(VaultCorruptedError):
        v.get("big")


def test_swapped_entries_are_detected(filled):
    v, data = filled
    a, b = blob_file(v, "big"), blob_file(v, "other")
    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(raw_b)
    b.write_bytes(raw_a)
    for name in ("big", "other"):
        with pytest.raises(VaultCorruptedError):
            v.get(name)
    assert sorted(p.name for p in v.check().problems) == ["big", "other"]
    assert v.get("small") == data["small"]


def test_older_version_of_the_same_entry_replayed_is_detected(filled):
    v, data = filled
    old_ciphertext = blob_file(v, "big").read_bytes()
    v.put("big", os.urandom(BIG), kind="other")  # same size: only the binding to the version can tell
    blob_file(v, "big").write_bytes(old_ciphertext)
    with pytest.raises(VaultCorruptedError, match="older version"):
        v.get("big")


def test_ciphertext_from_another_vault_is_detected(filled, tmp_path):
    v, data = filled
    other, _ = Vault.create(tmp_path / "other", PASSPHRASE, kdf_params=FAST_KDF)
    other.put("big", os.urandom(BIG), kind="other")
    blob_file(v, "big").write_bytes(blob_file(other, "big").read_bytes())
    _assert_detected(v, "big", data)
    other.lock()


def test_missing_entry_file(filled):
    v, data = filled
    blob_file(v, "small").unlink()
    _assert_detected(v, "small", data)


# ------------------------------------------------------------------ index and state


def _index_file(v: Vault):
    return v.path / f"index-{v._state.index_id.hex()}"


def test_older_index_replayed_is_detected(filled, vault_path):
    v, _ = filled
    old_index = _index_file(v).read_bytes()
    v.put("newer", b"n", kind="other")
    _index_file(v).write_bytes(old_index)
    report = v.check()
    assert not report.ok and report.problems[0].file == "state"
    v.lock()
    with pytest.raises(VaultCorruptedError, match="older copy"):
        Vault.open(vault_path, PASSPHRASE)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "empty"])
def test_damaged_index_refuses_to_open(filled, vault_path, damage):
    v, _ = filled
    path = _index_file(v)
    v.lock()
    raw = path.read_bytes()
    if damage == "flip":
        path.write_bytes(raw[:80] + bytes([raw[80] ^ 1]) + raw[81:])
    elif damage == "truncate":
        path.write_bytes(raw[:-1])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(VaultCorruptedError):
        Vault.open(vault_path, PASSPHRASE)


@pytest.mark.parametrize("damage", ["flip-counter", "flip-mac", "truncate", "delete", "foreign"])
def test_damaged_state_refuses_to_open(filled, vault_path, tmp_path, damage):
    v, _ = filled
    v.lock()
    state = vault_path / "state"
    raw = state.read_bytes()
    if damage == "flip-counter":
        state.write_bytes(raw[:33] + bytes([raw[33] ^ 1]) + raw[34:])
    elif damage == "flip-mac":
        state.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    elif damage == "truncate":
        state.write_bytes(raw[:-1])
    elif damage == "delete":
        state.unlink()
    else:
        other, _ = Vault.create(tmp_path / "other", PASSPHRASE, kdf_params=FAST_KDF)
        other.lock()
        state.write_bytes((tmp_path / "other" / "state").read_bytes())
    with pytest.raises(VaultCorruptedError):
        Vault.open(vault_path, PASSPHRASE)


def _save(path, names):
    return {n: (path / n).read_bytes() for n in names}


def test_older_state_and_index_replayed_together_are_detected_on_this_account(filled, vault_path):
    v, data = filled
    old = _save(vault_path, ["state", _index_file(v).name])
    v.put("newer", b"n", kind="other")
    v.delete("small")
    v.lock()
    for name, raw in old.items():
        (vault_path / name).write_bytes(raw)
    with pytest.raises(VaultRollbackError, match="accept-restore"):
        Vault.open(vault_path, PASSPHRASE)
    # the technician confirms a deliberate restore: accepted, audited, and later opens work normally
    w = Vault.open(vault_path, PASSPHRASE, allow_rollback=True, user="admin")
    assert w.exists("small") and not w.exists("newer")
    assert "rollback_accepted" in [e.event for e in w.audit.entries()]
    w.lock()
    Vault.open(vault_path, PASSPHRASE).lock()


def test_full_folder_rollback(filled, vault_path, tmp_path):
    v, _ = filled
    v.lock()
    backup = tmp_path / "backup"
    shutil.copytree(vault_path, backup)
    w = Vault.open(vault_path, PASSPHRASE)
    w.put("after-backup", b"x", kind="other")
    w.lock()
    shutil.rmtree(vault_path)
    shutil.copytree(backup, vault_path)
    with pytest.raises(VaultRollbackError):
        Vault.open(vault_path, PASSPHRASE)
    # documented limit: on another account/PC (no seen file) a consistent older folder opens as it was
    shutil.rmtree(seen_dir())
    old = Vault.open(vault_path, PASSPHRASE)
    assert not old.exists("after-backup") and old.check().ok
    old.lock()


def test_rollback_while_open_is_detected(filled, vault_path):
    a, _ = filled
    old = _save(vault_path, ["state", _index_file(a).name])
    b = Vault.open(vault_path, PASSPHRASE)
    b.put("newer", b"n", kind="other")
    assert a.exists("newer")
    for name, raw in old.items():
        (vault_path / name).write_bytes(raw)
    with pytest.raises(VaultRollbackError):
        a.list()
    b.lock()


def test_unreadable_seen_file_is_ignored(filled, vault_path):
    v, _ = filled
    v.lock()
    for p in seen_dir().rglob("*.seen"):
        p.write_bytes(b"X" * 96)
    Vault.open(vault_path, PASSPHRASE).lock()
    for p in seen_dir().rglob("*.seen"):
        p.write_bytes(p.read_bytes()[:-1] + b"?")  # bad MAC
    Vault.open(vault_path, PASSPHRASE).lock()
