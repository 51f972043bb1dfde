"""Append-only, hash-chained, encrypted audit log inside the vault (``audit.log``).

One line per record: base64 of a Cobblestone-256 ciphertext (context = vault id) of the canonical JSON record::

    {"seq": 0.., "time": UTC ISO-8601, "user": str, "event": str, "details": {...}, "prev_hash": hex, "hash": hex}

``hash`` = SHA-256 of the canonical JSON of the record without ``hash``; ``prev_hash`` of record 0 is a per-vault
genesis value. The state file anchors the log (record count, last hash, byte size at that record), so a deleted,
reordered, edited, truncated or replaced record is reported by :meth:`AuditLog.verify`. Without the key nobody can
write a record that decrypts; the chain additionally catches a key holder who edits or reorders records.

Crash safety: a record is appended with O_APPEND + fsync, then the anchor is committed (atomic state write). A crash
in between leaves an authentic record beyond the anchor, adopted at the next append; a torn (half-written) last line
beyond the anchor is cut off at the next append.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from vault import crypto
from vault.errors import AuditLogError, VaultCorruptedError
from vault.format import DOMAIN, audit_context, canonical_json
from vault.fsio import fsync_dir, read_capped
from vault.layout import AUDIT_FILE

if TYPE_CHECKING:  # pragma: no cover
    from vault.store import Vault

logger = logging.getLogger(__name__)

#: Events the app records; others matching ``[a-z][a-z0-9_]*`` are accepted too.
KNOWN_EVENTS = ("vault_created", "unlock_ok", "unlock_failed", "recovery_unlock", "import", "analysis", "correction",
                "export", "delete", "model_activation", "settings_change", "settings_migrated", "passphrase_changed",
                "recovery_key_replaced", "rollback_accepted", "gc", "analysis_invalidated", "analysis_restored",
                "analysis_checked", "analysis_unchecked", "model_compared")
MAX_DETAILS_BYTES = 16 * 1024
MAX_USER_CHARS = 128
MAX_LINE_BYTES = 128 * 1024
MAX_LOG_BYTES = 512 * 1024 * 1024
_EVENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class AuditRecord:
    """One audit record. ``time`` is UTC ISO-8601; ``details`` is a JSON dict."""

    seq: int
    time: str
    user: str
    event: str
    details: dict = field(hash=False)
    prev_hash: str
    hash: str


def genesis_hash(vault_id: bytes) -> bytes:
    """``prev_hash`` of the first record: ties the chain to its vault."""
    return hashlib.sha256(DOMAIN + b"\x00audit-genesis\x00" + vault_id).digest()


def record_hash(fields: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a record without its ``hash``."""
    return hashlib.sha256(canonical_json({k: v for k, v in fields.items() if k != "hash"})).hexdigest()


def validate_event(event: str, user: str, details: dict | None) -> tuple[str, str, dict]:
    """Checked (event, user, details copy).

    Raises:
        AuditLogError: event not a lower-case word, user too long or with control characters, details not a JSON
        dict of at most 16 KiB.
    """
    if not isinstance(event, str) or not _EVENT_RE.match(event):
        raise AuditLogError("An audit event is a lower-case word such as 'import' or 'unlock_ok'.")
    if not isinstance(user, str) or len(user) > MAX_USER_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise AuditLogError(f"The user name must be text of at most {MAX_USER_CHARS} characters without control"
                            " characters.")
    details = {} if details is None else details
    if not isinstance(details, dict) or not all(isinstance(k, str) for k in details):
        raise AuditLogError("Audit details must be a dict with text keys.")
    try:
        raw = canonical_json(details)
    except (TypeError, ValueError) as e:
        raise AuditLogError("Audit details must contain only JSON values.") from e
    if len(raw) > MAX_DETAILS_BYTES:
        raise AuditLogError(f"Audit details are larger than {MAX_DETAILS_BYTES // 1024} KiB.")
    return event, user, json.loads(raw)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AuditLog:
    """The audit log of an open vault (obtain it as ``vault.audit``; every method needs the vault unlocked)."""

    def __init__(self, vault: Vault):
        self._vault = vault

    # ------------------------------------------------------------------ helpers
    def _path(self):
        return self._vault.path / AUDIT_FILE

    def _decode(self, line: bytes) -> AuditRecord | None:
        """The record of one line, or None if it does not decrypt / parse (edited, damaged, foreign)."""
        keys = self._vault._require_keys()
        if len(line) > MAX_LINE_BYTES:
            return None
        try:
            blob = base64.b64decode(line, validate=True)
            doc = json.loads(crypto.decrypt(keys.audit, blob, audit_context(self._vault._vault_id)))
            rec = AuditRecord(seq=doc["seq"], time=doc["time"], user=doc["user"], event=doc["event"],
                              details=doc["details"], prev_hash=doc["prev_hash"], hash=doc["hash"])
        except (binascii.Error, ValueError, KeyError, TypeError, crypto.AuthenticationFailed):
            return None
        if (not isinstance(rec.seq, int) or not all(isinstance(getattr(rec, k), str)
                                                     for k in ("time", "user", "event", "prev_hash", "hash"))
                or not isinstance(rec.details, dict)):
            return None
        return rec

    def _read(self) -> bytes:
        try:
            data = read_capped(self._path(), MAX_LOG_BYTES)
        except FileNotFoundError:
            return b""
        if data is None:
            raise VaultCorruptedError("The audit log is larger than 512 MiB; it was tampered with or needs archiving.")
        return data

    # ------------------------------------------------------------------ public API
    def append(self, event: str, *, user: str, details: dict | None = None) -> AuditRecord:
        """Append one record (durable before returning) and anchor it in the state file.

        Raises:
            AuditLogError: bad event / user / details. VaultLockedError: the vault was locked.
            OSError: the disk refused the write.
        """
        return self._append_batch([validate_event(event, user, details)])[0]

    def _append_batch(self, items: list[tuple[str, str, dict]]) -> list[AuditRecord]:
        """Append validated (event, user, details) records with one write + fsync and one anchor commit."""
        vault = self._vault
        with vault._lock:
            keys = vault._require_keys()
            state = vault._sync()
            count, head, size = state.audit_count, state.audit_head, state.audit_size
            path = self._path()
            existed = path.exists()
            actual = path.stat().st_size if existed else 0
            if actual > size:  # records written after the last anchor (crash between append and anchor)
                count, head, size = self._adopt_tail(count, head, size, actual)
            elif actual < size:
                logger.error("the audit log is shorter than its anchor: records were removed (see audit verify)")
            records, lines = [], []
            for event, user, details in items:
                fields = {"seq": count, "time": _now(), "user": user, "event": event, "details": details,
                          "prev_hash": head.hex()}
                fields["hash"] = record_hash(fields)
                blob = crypto.encrypt(keys.audit, canonical_json(fields), audit_context(vault._vault_id))
                lines.append(base64.b64encode(blob) + b"\n")
                records.append(AuditRecord(**fields))
                count, head = count + 1, bytes.fromhex(fields["hash"])
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
            try:
                view = memoryview(b"".join(lines))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                new_size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if not existed:
                fsync_dir(vault.path)
            vault._hook("audit.appended")
            vault._commit_state(audit_count=count, audit_head=head, audit_size=new_size, step="audit_state")
            return records

    def _adopt_tail(self, count: int, head: bytes, size: int, actual: int) -> tuple[int, bytes, int]:
        """Walk the bytes after the anchor: adopt complete, authentic, chained records; cut a torn last line."""
        with open(self._path(), "rb") as f:
            f.seek(size)
            tail = f.read(actual - size)
        pos = 0
        while True:
            nl = tail.find(b"\n", pos)
            if nl < 0:
                break
            rec = self._decode(tail[pos:nl])
            if rec is None or rec.seq != count or rec.prev_hash != head.hex() or record_hash(rec.__dict__) != rec.hash:
                logger.error("the audit log has an invalid record after its anchor (see audit verify)")
                return count, head, size + pos
            count, head, pos = count + 1, bytes.fromhex(rec.hash), nl + 1
        if pos < len(tail):  # torn last line from an interrupted append: cut it so the next line starts cleanly
            logger.warning("cutting an incomplete audit record left by an interrupted write")
            os.truncate(self._path(), size + pos)
        return count, head, size + pos

    def entries(self) -> list[AuditRecord]:
        """Every record that decrypts, in file order (use :meth:`verify` to know whether the chain is intact)."""
        with self._vault._lock:
            self._vault._sync()
            data = self._read()
            records = [self._decode(line) for line in data.split(b"\n") if line]
        return [r for r in records if r is not None]

    def verify(self) -> tuple[bool, int | None, str]:
        """Check the whole chain against its anchor: ``(ok, first_bad_index, message)``.

        ``first_bad_index`` is the 0-based line number of the first problem (None when ok). Detects edited,
        deleted, inserted, reordered and truncated records and a log replaced by another or an older one.
        """
        vault = self._vault
        with vault._lock:
            state = vault._sync()
            data = self._read()
            return self._verify(data, state)

    def _verify(self, data: bytes, state) -> tuple[bool, int | None, str]:
        vault = self._vault
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        prev = genesis_hash(vault._vault_id).hex()
        offset = 0
        for i, line in enumerate(lines):
            rec = self._decode(line)
            if rec is None:
                return False, i, f"Audit record {i} cannot be decrypted: it was edited, damaged or inserted."
            if rec.seq != i:
                return False, i, (f"Audit record {i} carries number {rec.seq}: records were deleted, inserted or"
                                  " reordered.")
            if rec.prev_hash != prev:
                return False, i, f"The audit chain is broken at record {i}: an earlier record was changed or removed."
            if record_hash(rec.__dict__) != rec.hash:
                return False, i, f"Audit record {i} was altered (its hash does not match its content)."
            prev = rec.hash
            offset += len(line) + 1
            if i + 1 == state.audit_count and (prev != state.audit_head.hex() or offset != state.audit_size):
                return False, i, ("The audit log does not match its anchor in the vault state: it was replaced or"
                                  " rolled back.")
        n = len(lines)
        if n < state.audit_count:
            return False, n, (f"{state.audit_count - n} audit record(s) are missing at the end: the log was"
                              " truncated.")
        if state.audit_count == 0 and n == 0 and state.audit_head != genesis_hash(vault._vault_id):
            return False, 0, "The audit log is empty but its anchor is not: it was replaced."
        note = ""
        if n > state.audit_count:
            note += f"; {n - state.audit_count} record(s) written after the last anchor (interrupted write)"
        if torn:
            note += "; an incomplete last line from an interrupted write will be cut at the next append"
        return True, None, f"{n} audit record(s), chain intact{note}."
