"""A crash at every step of a write leaves the old or the new state; after `gc`, `check` passes.

The crash is simulated by a fault hook that raises a BaseException at a named step (so no clean-up code runs, like
a kill); the vault object is then abandoned and the folder reopened by a fresh object, as after a restart.
"""
from __future__ import annotations

import pytest

from tests.vault.conftest import FAST_KDF, NEW_PASSPHRASE, PASSPHRASE, SimulatedCrash, crash_at
from vault import Vault, WrongPassphraseError


def _atomic(step: str) -> list[str]:
    return [f"{step}.tmp_written", f"{step}.fsynced", f"{step}.renamed", f"{step}.dir_fsynced"]


PUT_STEPS = _atomic("blob") + _atomic("index") + _atomic("state") + ["old_index.removed", "old_blob.removed"]
DELETE_STEPS = _atomic("index") + _atomic("state") + ["old_index.removed", "old_blob.removed"]
AUDIT_STEPS = ["audit.appended"] + _atomic("audit_state")
PASSWD_STEPS = _atomic("header") + AUDIT_STEPS
COMMIT = "state.renamed"  # the commit point of entry writes


def _recorder(v: Vault) -> list[str]:
    steps: list[str] = []
    v._fault_hook = steps.append
    return steps


def _reopen_and_clean(path, passphrase=PASSPHRASE) -> Vault:
    v = Vault.open(path, passphrase, user="after-crash")
    v.gc()
    report = v.check()
    assert report.ok, report.summary()
    assert report.orphans == ()
    return v


@pytest.fixture
def seeded(new_vault):
    v, _ = new_vault
    v.put("a", b"old A", kind="other")
    v.put("b", b"B", kind="other")
    return v


def test_step_lists_match_the_code(seeded):
    steps = _recorder(seeded)
    seeded.put("a", b"x", kind="other")
    assert steps == PUT_STEPS
    steps.clear()
    seeded.delete("a")
    assert steps == DELETE_STEPS
    steps.clear()
    seeded.audit.append("export", user="u")
    assert steps == AUDIT_STEPS
    steps.clear()
    seeded.change_passphrase(PASSPHRASE, NEW_PASSPHRASE)
    assert steps == PASSWD_STEPS


@pytest.mark.parametrize("step", PUT_STEPS)
def test_crash_during_put(seeded, vault_path, step):
    seeded._fault_hook = crash_at(step)
    with pytest.raises(SimulatedCrash):
        seeded.put("a", b"new A", kind="other")
    v = _reopen_and_clean(vault_path)
    committed = PUT_STEPS.index(step) >= PUT_STEPS.index(COMMIT)
    assert v.get("a") == (b"new A" if committed else b"old A")
    assert v.info("a").version == (2 if committed else 1)
    assert v.get("b") == b"B"
    v.put("c", b"C", kind="other")  # the vault keeps working
    assert v.check().ok
    v.lock()


@pytest.mark.parametrize("step", PUT_STEPS[:PUT_STEPS.index("old_index.removed")])
def test_crash_during_first_put_of_a_name(seeded, vault_path, step):
    seeded._fault_hook = crash_at(step)
    with pytest.raises(SimulatedCrash):
        seeded.put("fresh", b"F", kind="other")
    v = _reopen_and_clean(vault_path)
    committed = PUT_STEPS.index(step) >= PUT_STEPS.index(COMMIT)
    assert v.exists("fresh") == committed
    v.lock()


@pytest.mark.parametrize("step", DELETE_STEPS)
def test_crash_during_delete(seeded, vault_path, step):
    seeded._fault_hook = crash_at(step)
    with pytest.raises(SimulatedCrash):
        seeded.delete("a")
    v = _reopen_and_clean(vault_path)
    committed = DELETE_STEPS.index(step) >= DELETE_STEPS.index(COMMIT)
    assert v.exists("a") == (not committed)
    if not committed:
        assert v.get("a") == b"old A"
    v.lock()


@pytest.mark.parametrize("step", PASSWD_STEPS)
def test_crash_during_passphrase_change(seeded, vault_path, step):
    seeded._fault_hook = crash_at(step)
    with pytest.raises(SimulatedCrash):
        seeded.change_passphrase(PASSPHRASE, NEW_PASSPHRASE)
    changed = PASSWD_STEPS.index(step) >= PASSWD_STEPS.index("header.renamed")
    good, bad = (NEW_PASSPHRASE, PASSPHRASE) if changed else (PASSPHRASE, NEW_PASSPHRASE)
    with pytest.raises(WrongPassphraseError):
        Vault.open(vault_path, bad)
    v = _reopen_and_clean(vault_path, good)
    assert v.get("a") == b"old A" and v.audit.verify()[0]
    v.lock()


@pytest.mark.parametrize("step", AUDIT_STEPS)
def test_crash_during_audit_append(seeded, vault_path, step):
    seeded._fault_hook = crash_at(step)
    with pytest.raises(SimulatedCrash):
        seeded.audit.append("export", user="u", details={"n": 1})
    v = _reopen_and_clean(vault_path)
    records = v.audit.entries()
    events = [r.event for r in records if r.event != "gc"]
    assert events[-2:] == ["export", "unlock_ok"]  # the record was durable before the crash
    assert v.audit.verify() == (True, None, f"{len(records)} audit record(s), chain intact.")
    v.lock()


def test_torn_audit_line_is_cut_at_next_append(seeded, vault_path):
    count = len(seeded.audit.entries())
    with open(vault_path / "audit.log", "ab") as f:
        f.write(b"QUJDREVG")  # half a line: the process died inside write()
    ok, bad, message = seeded.audit.verify()
    assert ok and "incomplete" in message
    seeded.audit.append("export", user="u")
    assert seeded.audit.verify() == (True, None, f"{count + 1} audit record(s), chain intact.")
    assert (vault_path / "audit.log").read_bytes().endswith(b"\n")


def test_interrupted_create_leaves_no_vault(tmp_path, monkeypatch):
    import vault.store as store

    def boom(*a, **k):
        raise SimulatedCrash("replace")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(SimulatedCrash):
        Vault.create(tmp_path / "v", PASSPHRASE, kdf_params=FAST_KDF)
    assert not Vault.exists_at(tmp_path / "v")
