"""The hash-chained audit log: records, validation, and detection of edited, deleted, reordered, truncated logs."""
from __future__ import annotations

import base64
import shutil
from datetime import datetime

import pytest

from tests.vault.conftest import FAST_KDF, PASSPHRASE
from vault import AuditLogError, Vault
from vault import crypto
from vault.audit import genesis_hash, record_hash
from vault.format import audit_context, canonical_json


@pytest.fixture
def logged(new_vault):
    """A vault with 6 records: vault_created + 5 events."""
    v, _ = new_vault
    for i, event in enumerate(["import", "analysis", "correction", "export", "model_activation"]):
        v.audit.append(event, user=f"user{i}", details={"i": i, "file": f"f{i}.png"})
    return v


def _lines(v: Vault) -> list[bytes]:
    return (v.path / "audit.log").read_bytes().splitlines(keepends=True)


def _write(v: Vault, lines: list[bytes]) -> None:
    (v.path / "audit.log").write_bytes(b"".join(lines))


def test_records_are_chained_and_complete(logged):
    records = logged.audit.entries()
    assert [r.event for r in records] == ["vault_created", "import", "analysis", "correction", "export",
                                          "model_activation"]
    assert [r.seq for r in records] == list(range(6))
    assert records[0].prev_hash == genesis_hash(logged._vault_id).hex()
    for prev, rec in zip(records, records[1:]):
        assert rec.prev_hash == prev.hash
    for rec in records:
        assert rec.hash == record_hash(rec.__dict__)
        assert datetime.fromisoformat(rec.time).utcoffset().total_seconds() == 0
    assert records[2].user == "user1" and records[2].details == {"i": 1, "file": "f1.png"}
    assert logged.audit.verify() == (True, None, "6 audit record(s), chain intact.")


def test_append_returns_the_record(logged):
    rec = logged.audit.append("settings_change", user="ann", details={"key": "threshold", "new": 0.4})
    assert rec == logged.audit.entries()[-1] and rec.seq == 6


@pytest.mark.parametrize("kwargs", [
    dict(event="Import", user="a"), dict(event="", user="a"), dict(event="x" * 41, user="a"),
    dict(event="import", user="a\nb"), dict(event="import", user="u" * 129), dict(event="import", user=None),
    dict(event="import", user="a", details=[1]), dict(event="import", user="a", details={"x": {1, 2}}),
    dict(event="import", user="a", details={"x": "y" * 20_000}), dict(event="import", user="a", details={1: "x"}),
])


def test_bad_records_are_refused(new_vault, kwargs):
    v, _ = new_vault
    event = kwargs.pop("event")
    with pytest.raises(AuditLogError):
        v.audit.append(event, **kwargs)
    assert v.audit.verify() == (True, None, "1 audit record(s), chain intact.")


def test_edited_ciphertext_line_is_detected(logged):
    lines = _lines(logged)
    raw = bytearray(lines[3])
    raw[40] = ord("A") if raw[40] != ord("A") else ord("B")
    lines[3] = bytes(raw)
    _write(logged, lines)
    ok, bad, message = logged.audit.verify()
    assert (ok, bad) == (False, 3) and "cannot be decrypted" in message


def _reencrypt(v: Vault, fields: dict) -> bytes:
    blob = crypto.encrypt(v._keys.audit, canonical_json(fields), audit_context(v._vault_id))
    return base64.b64encode(blob) + b"\n"


def test_record_edited_by_a_key_holder_is_detected(logged):
    """Someone with the key re-encrypts a record with changed details but cannot fix the chain."""
    records = logged.audit.entries()
    lines = _lines(logged)
    forged = dict(records[2].__dict__, details={"i": 1, "file": "innocent.png"})
    lines[2] = _reencrypt(logged, forged)
    _write(logged, lines)
    ok, bad, message = logged.audit.verify()
    assert (ok, bad) == (False, 2) and "altered" in message
    # recomputing the record's own hash breaks the link of the next record instead
    forged["hash"] = record_hash(forged)
    lines[2] = _reencrypt(logged, forged)
    _write(logged, lines)
    assert logged.audit.verify()[:2] == (False, 3)


def test_deleted_line_is_detected(logged):
    lines = _lines(logged)
    del lines[2]
    _write(logged, lines)
    ok, bad, message = logged.audit.verify()
    assert (ok, bad) == (False, 2) and "deleted" in message


def test_reordered_lines_are_detected(logged):
    lines = _lines(logged)
    lines[1], lines[2] = lines[2], lines[1]
    _write(logged, lines)
    assert logged.audit.verify()[:2] == (False, 1)


def test_duplicated_line_is_detected(logged):
    lines = _lines(logged)
    lines.insert(3, lines[2])
    _write(logged, lines)
    assert logged.audit.verify()[:2] == (False, 3)


def test_truncated_log_is_detected(logged):
    lines = _lines(logged)
    _write(logged, lines[:-2])
    ok, bad, message = logged.audit.verify()
    assert (ok, bad) == (False, 4) and "truncated" in message
    _write(logged, [])
    assert logged.audit.verify()[:2] == (False, 0)


def test_log_replaced_by_an_older_copy_is_detected(logged, tmp_path):
    shutil.copy(logged.path / "audit.log", tmp_path / "old.log")
    logged.audit.append("export", user="x")
    shutil.copy(tmp_path / "old.log", logged.path / "audit.log")
    ok, bad, _ = logged.audit.verify()
    assert not ok and bad == 6


def test_log_from_another_vault_is_detected(logged, tmp_path):
    other, _ = Vault.create(tmp_path / "other", PASSPHRASE, kdf_params=FAST_KDF)
    other.lock()
    shutil.copy(tmp_path / "other" / "audit.log", logged.path / "audit.log")
    assert logged.audit.verify()[:2] == (False, 0)


def test_break_is_reported_by_check_and_appending_still_works(logged):
    lines = _lines(logged)
    del lines[1]
    _write(logged, lines)
    rec = logged.audit.append("export", user="x")  # the app keeps working; the break stays visible
    assert rec.event == "export"
    report = logged.check()
    assert not report.ok and not report.audit_ok
    assert [p.file for p in report.problems] == ["audit.log"]
    assert "audit" in report.summary()
    events = [r.event for r in logged.audit.entries()]
    assert events[-1] == "export" and "import" not in events


def test_log_survives_reopen(logged, vault_path):
    n = len(logged.audit.entries())
    logged.lock()
    v = Vault.open(vault_path, PASSPHRASE, user="bob")
    assert len(v.audit.entries()) == n + 1 and v.audit.verify()[0]
    v.lock()
