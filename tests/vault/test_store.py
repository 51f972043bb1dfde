"""The Vault API on real folders: entries, keys, locking, concurrency, maintenance."""
from __future__ import annotations

import os
import pickle
import stat
import threading

import pytest

from tests.vault.conftest import FAST_KDF, NEW_PASSPHRASE, PASSPHRASE, blob_file
from vault import (EntryNotFoundError, InvalidEntryError, KdfParams, KdfParamsError, RecoveryKeyFormatError, Vault,
                   VaultExistsError, VaultLockedError, VaultNotFoundError, WeakPassphraseError, WrongPassphraseError,
                   WrongRecoveryKeyError, default_vault_path)


def test_put_get_list_info_exists_delete(new_vault):
    v, _ = new_vault
    data = os.urandom(70_000)
    info = v.put("images/2026-11-27/abc.png", data, kind="image", meta={"pixel_size_um": 0.5})
    assert (info.name, info.kind, info.size_bytes, info.version) == ("images/2026-11-27/abc.png", "image", 70_000, 1)
    assert info.meta == {"pixel_size_um": 0.5} and len(info.entry_id) == 32
    v.put("results/abc.json", b'{"n": 3}', kind="result")
    v.put("settings.json", b"{}", kind="settings")
    assert v.get("images/2026-11-27/abc.png") == data
    assert [e.name for e in v.list()] == ["images/2026-11-27/abc.png", "results/abc.json", "settings.json"]
    assert [e.name for e in v.list("results/")] == ["results/abc.json"]
    assert v.info("settings.json").kind == "settings"
    assert v.exists("settings.json") and not v.exists("nope.json") and not v.exists("../bad")
    v.delete("results/abc.json")
    assert not v.exists("results/abc.json")
    with pytest.raises(EntryNotFoundError):
        v.get("results/abc.json")
    with pytest.raises(EntryNotFoundError):
        v.delete("results/abc.json")
    with pytest.raises(EntryNotFoundError):
        v.info("results/abc.json")


def test_empty_and_multi_chunk_entries(new_vault):
    v, _ = new_vault
    for size in (0, 16384, 16384 * 5 + 3):
        data = os.urandom(size)
        v.put(f"bin/{size}", memoryview(data), kind="other")
        assert v.get(f"bin/{size}") == data


def test_overwrite_bumps_version_keeps_created_and_removes_old_file(new_vault):
    v, _ = new_vault
    first = v.put("settings.json", b"one", kind="settings")
    old_file = blob_file(v, "settings.json")
    second = v.put("settings.json", b"two", kind="settings", meta={"by": "bob"})
    assert second.version == 2 and second.entry_id == first.entry_id and second.created == first.created
    assert v.get("settings.json") == b"two"
    assert not old_file.exists()
    assert len(list((v.path / "blobs").iterdir())) == 1


def test_delete_then_recreate_gets_a_new_entry_id(new_vault):
    v, _ = new_vault
    a = v.put("x", b"1", kind="other")
    v.delete("x")
    b = v.put("x", b"1", kind="other")
    assert a.entry_id != b.entry_id and b.version == 1


def test_returned_info_and_meta_are_copies(new_vault):
    v, _ = new_vault
    meta = {"tags": ["a"]}
    info = v.put("x", b"1", kind="other", meta=meta)
    meta["tags"].append("b")
    info.meta["tags"].append("c")
    assert v.info("x").meta == {"tags": ["a"]}


@pytest.mark.parametrize("kwargs", [dict(name="../x", data=b"", kind="image"), dict(name="x", data="text", kind="a"),
                                    dict(name="x", data=b"", kind="Image"),
                                    dict(name="x", data=b"", kind="image", meta={"x": object()})])
def test_bad_put_arguments(new_vault, kwargs):
    v, _ = new_vault
    name, data = kwargs.pop("name"), kwargs.pop("data")
    with pytest.raises(InvalidEntryError):
        v.put(name, data, **kwargs)
    with pytest.raises(InvalidEntryError):
        v.list(prefix=3)


def test_names_and_contents_never_appear_on_disk(new_vault, tmp_path):
    v, recovery = new_vault
    secret_name = "images/batch-ZX81-contaminated.png"
    v.put(secret_name, b"PLAINTEXT-MARKER" * 100, kind="image", meta={"operator": "MARKER-OPERATOR"})
    v.audit.append("import", user="MARKER-USER", details={"file": "MARKER-DETAIL"})
    Vault.record_failed_unlock(v.path, user="MARKER-FAILED")
    needles = [b"ZX81", b"contaminated", b"PLAINTEXT-MARKER", b"MARKER-OPERATOR", b"MARKER-USER", b"MARKER-DETAIL",
               b"MARKER-FAILED", PASSPHRASE.encode(), recovery.encode()]
    for p in [v.path, *v.path.rglob("*"), *tmp_path.joinpath("user-state").rglob("*")]:
        assert not any(n.decode() in p.name for n in needles)
        if p.is_file():
            content = p.read_bytes()
            assert not any(n in content for n in needles), p
    for p in v.path.rglob("*"):
        if p.is_file() and p.parent.name == "blobs":
            assert len(p.name) == 32 and int(p.name, 16) >= 0


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_files_are_private(new_vault):
    v, _ = new_vault
    v.put("x", b"1", kind="other")
    assert stat.S_IMODE(v.path.stat().st_mode) == 0o700
    for p in v.path.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p


def test_create_refuses_non_empty_folder_and_accepts_empty_one(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file.txt").write_text("x")
    with pytest.raises(VaultExistsError):
        Vault.create(busy, PASSPHRASE, kdf_params=FAST_KDF)
    empty = tmp_path / "empty"
    empty.mkdir()
    v, _ = Vault.create(empty, PASSPHRASE, kdf_params=FAST_KDF)
    assert Vault.exists_at(empty)
    with pytest.raises(VaultExistsError):
        Vault.create(empty, PASSPHRASE, kdf_params=FAST_KDF)
    assert not any(p.name.startswith(".empty.creating") for p in tmp_path.iterdir())
    v.lock()


def test_create_checks_passphrase_and_kdf(vault_path):
    with pytest.raises(WeakPassphraseError):
        Vault.create(vault_path, "short", kdf_params=FAST_KDF)
    with pytest.raises(WeakPassphraseError):
        Vault.create(vault_path, 12345678901, kdf_params=FAST_KDF)
    with pytest.raises(KdfParamsError):
        Vault.create(vault_path, PASSPHRASE, kdf_params=KdfParams(8 * 1024, 2, 1))
    assert not vault_path.exists()


def test_default_location_and_exists_at(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALQC_VAULT", str(tmp_path / "env-vault"))
    assert default_vault_path() == tmp_path / "env-vault"
    monkeypatch.delenv("CRYSTALQC_VAULT")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_vault_path() == tmp_path / "xdg" / "crystal-qc" / "vault"
    monkeypatch.setenv("CRYSTALQC_VAULT", str(tmp_path / "env-vault"))
    assert not Vault.exists_at(None)
    v, _ = Vault.create(None, PASSPHRASE, kdf_params=FAST_KDF)
    assert Vault.exists_at(None) and v.path == tmp_path / "env-vault"
    v.lock()
    Vault.open(None, PASSPHRASE).lock()


def test_open_missing_vault(tmp_path):
    with pytest.raises(VaultNotFoundError):
        Vault.open(tmp_path / "none", PASSPHRASE)
    with pytest.raises(VaultNotFoundError):
        Vault.record_failed_unlock(tmp_path / "none")
    with pytest.raises(TypeError):
        Vault.open(tmp_path / "none", None)


def test_lock_drops_keys_and_cache(new_vault):
    v, _ = new_vault
    v.put("x", b"1", kind="other")
    keys = v._keys
    v.lock()
    assert v.is_locked and v._entries == {} and v._master is None
    assert keys.blob == bytearray(32) and keys.index == bytearray(32)
    for call in (lambda: v.get("x"), lambda: v.put("y", b"", kind="other"), lambda: v.list(), v.check, v.gc,
                 lambda: v.audit.append("export", user="a"), v.audit.verify, v.audit.entries,
                 lambda: v.change_passphrase(PASSPHRASE, NEW_PASSPHRASE), lambda: v.exists("x")):
        with pytest.raises(VaultLockedError):
            call()


def test_context_manager_locks_and_object_is_not_picklable(vault_path):
    v, _ = Vault.create(vault_path, PASSPHRASE, kdf_params=FAST_KDF)
    with v:
        with pytest.raises(TypeError):
            pickle.dumps(v)
        assert PASSPHRASE not in repr(v) and "unlocked" in repr(v)
    assert v.is_locked and "locked" in repr(v)


def test_recovery_key_opens_and_resets_passphrase(new_vault, vault_path):
    v, recovery = new_vault
    v.put("x", b"data", kind="other")
    v.lock()
    r = Vault.open_with_recovery_key(vault_path, recovery.lower().replace("-", " "), user="admin")
    assert r.get("x") == b"data"
    r.reset_passphrase(recovery, NEW_PASSPHRASE)
    r.lock()
    with pytest.raises(WrongPassphraseError):
        Vault.open(vault_path, PASSPHRASE)
    assert Vault.open(vault_path, NEW_PASSPHRASE).get("x") == b"data"
    events = [e.event for e in Vault.open(vault_path, NEW_PASSPHRASE).audit.entries()]
    assert "recovery_unlock" in events and "passphrase_changed" in events


def test_wrong_recovery_key(new_vault, vault_path):
    from vault.format import format_recovery_key
    v, recovery = new_vault
    with pytest.raises(WrongRecoveryKeyError):
        Vault.open_with_recovery_key(vault_path, format_recovery_key(bytes(20)))
    with pytest.raises(RecoveryKeyFormatError):
        Vault.open_with_recovery_key(vault_path, recovery[:-1])
    with pytest.raises(WrongRecoveryKeyError):
        v.reset_passphrase(format_recovery_key(bytes(20)), NEW_PASSPHRASE)


def test_replace_recovery_key(new_vault, vault_path):
    v, old_key = new_vault
    with pytest.raises(WrongPassphraseError):
        v.replace_recovery_key("not the passphrase")
    new_key = v.replace_recovery_key(PASSPHRASE)
    assert new_key != old_key
    with pytest.raises(WrongRecoveryKeyError):
        Vault.open_with_recovery_key(vault_path, old_key)
    Vault.open_with_recovery_key(vault_path, new_key).lock()
    Vault.open(vault_path, PASSPHRASE).lock()


def test_change_passphrase(new_vault, vault_path):
    v, recovery = new_vault
    v.put("x", b"data", kind="other")
    blob_before = blob_file(v, "x").read_bytes()
    with pytest.raises(WrongPassphraseError):
        v.change_passphrase("not the passphrase", NEW_PASSPHRASE)
    with pytest.raises(WeakPassphraseError):
        v.change_passphrase(PASSPHRASE, "short")
    v.change_passphrase(PASSPHRASE, NEW_PASSPHRASE)
    assert blob_file(v, "x").read_bytes() == blob_before  # only the master key was re-wrapped
    v.lock()
    with pytest.raises(WrongPassphraseError):
        Vault.open(vault_path, PASSPHRASE)
    w = Vault.open(vault_path, NEW_PASSPHRASE)
    assert w.get("x") == b"data"
    w.lock()
    Vault.open_with_recovery_key(vault_path, recovery).lock()  # the recovery slot is untouched


def test_change_passphrase_can_raise_the_kdf_cost(new_vault, vault_path):
    v, _ = new_vault
    stronger = KdfParams(FAST_KDF.memory_kib * 2, 2, 2)
    v.change_passphrase(PASSPHRASE, NEW_PASSPHRASE, kdf_params=stronger)
    from vault.format import SLOT_PASSPHRASE, decode_header
    assert decode_header((vault_path / "vault.hdr").read_bytes()).slot(SLOT_PASSPHRASE).kdf == stronger


def test_two_objects_on_one_folder_see_each_others_writes(new_vault, vault_path):
    a, _ = new_vault
    b = Vault.open(vault_path, PASSPHRASE, user="second session")
    a.put("from-a", b"A", kind="other")
    assert b.get("from-a") == b"A"
    b.put("from-b", b"B", kind="other")
    a.put("from-a", b"A2", kind="other")
    assert [e.name for e in a.list()] == [e.name for e in b.list()] == ["from-a", "from-b"]
    assert b.get("from-a") == b"A2"
    b.lock()
    assert a.check().ok


def test_concurrent_writers_lose_nothing(new_vault, vault_path):
    a, _ = new_vault
    b = Vault.open(vault_path, PASSPHRASE)
    errors = []

    def work(v, tag):
        try:
            for i in range(6):
                v.put(f"{tag}/{i}", f"{tag}{i}".encode(), kind="other")
                v.audit.append("import", user=tag)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(obj, tag)) for obj, tag in ((a, "t1"), (b, "t2"), (a, "t3"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(a.list()) == 18 and all(a.get(e.name) == e.name.replace("/", "").encode() for e in a.list())
    report = a.check()
    assert report.ok and report.orphans == () and a.audit.verify()[0]
    b.lock()


def test_check_reports_damage_by_name_and_other_entries_stay_readable(new_vault):
    v, _ = new_vault
    v.put("good", b"fine", kind="other")
    v.put("bad", os.urandom(1000), kind="other")
    path = blob_file(v, "bad")
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x40
    path.write_bytes(bytes(raw))
    report = v.check()
    assert not report.ok and report.entries_checked == 1
    assert [(p.name, p.file) for p in report.problems] == [("bad", f"blobs/{path.name}")]
    assert "bad" in report.summary() and "PROBLEMS" in report.summary()
    assert v.get("good") == b"fine"


def test_gc_removes_left_overs_but_not_unknown_files(new_vault):
    v, _ = new_vault
    v.put("x", b"1", kind="other")
    (v.path / ".tmp-deadbeef").write_bytes(b"partial")
    (v.path / "blobs" / ".tmp-cafe").write_bytes(b"partial")
    (v.path / "blobs" / ("ab" * 16)).write_bytes(b"unreferenced")
    (v.path / ("index-" + "cd" * 16)).write_bytes(b"old index")
    (v.path / "notes.txt").write_text("user file")
    report = v.check()
    assert report.ok and len(report.orphans) == 4 and report.unknown_files == ("notes.txt",)
    gc = v.gc()
    assert gc.removed_files == 4 and gc.freed_bytes == 7 + 7 + 12 + 9
    after = v.check()
    assert after.ok and after.orphans == () and (v.path / "notes.txt").exists()
    assert v.get("x") == b"1"
    assert v.gc().removed_files == 0
    assert v.audit.entries()[-1].event == "gc"


def test_non_contiguous_memoryview_is_stored(new_vault):
    v, _ = new_vault
    data = bytes(range(200))
    v.put("strided", memoryview(data)[::2], kind="other")
    assert v.get("strided") == data[::2]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name file descriptors")
def test_write_protocol_order(new_vault, monkeypatch):
    """temp file in the same folder -> fsync -> rename -> fsync folder; blob first, state (commit point) last."""
    v, _ = new_vault
    v.put("a", b"old", kind="other")
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        log.append(("fsync", os.path.relpath(target, v.path)))
        real_fsync(fd)

    def replace(src, dst):
        log.append(("rename", os.path.relpath(src, v.path), os.path.relpath(dst, v.path)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    v.put("a", b"new", kind="other")
    blob = "blobs/" + v._entries["a"].blob_id.hex()
    index = f"index-{v._state.index_id.hex()}"
    log = [e for e in log if not e[-1].startswith("..")]  # the seen file lives outside the vault (not fsync'd)
    renames = [e for e in log if e[0] == "rename"]
    assert [r[2] for r in renames] == [blob, index, "state"]
    for src, dst in ((r[1], r[2]) for r in renames):
        assert os.path.dirname(src) == os.path.dirname(dst) and os.path.basename(src).startswith(".tmp-")
        i = log.index(("rename", src, dst))
        assert log[i - 1] == ("fsync", src)  # data flushed before the rename
        assert log[i + 1] == ("fsync", os.path.dirname(dst) or ".")  # the rename flushed after it


def test_failed_create_leaves_nothing_behind(tmp_path, monkeypatch):
    import vault.store as store

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "atomic_write", disk_full)
    with pytest.raises(OSError):
        Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF)
    assert [p.name for p in tmp_path.iterdir() if p.name != "user-state"] == []  # no vault, no staging folder
