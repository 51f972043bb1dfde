"""Failed unlock attempts, recorded without any key.

``record_failed_unlock`` seals ``{"time", "user"}`` to the X25519 public key in the (unauthenticated at that moment)
header and appends one base64 line to ``<vault>/failed-unlocks``; only the master key can read them. At the next
successful unlock ``read_failed_unlocks`` returns them as audit items and the vault deletes the file. No secret is
involved in writing, so anyone who can write to the folder can add or erase records: they are hints, not proof. The
file is capped at 64 KiB; beyond that, attempts are dropped and the overflow is reported at the next unlock.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path

from vault import crypto
from vault.format import canonical_json, sealed_context
from vault.fsio import fsync_dir, lock_for, read_capped
from vault.keyslots import read_header
from vault.layout import FAILED_FILE, clean_user, now_utc

logger = logging.getLogger(__name__)

MAX_FAILED_BYTES = 64 * 1024


def record_failed_unlock(path: Path, *, user: str) -> None:
    """Append one sealed failed-unlock record (time, typed user name) to ``path/failed-unlocks``.

    Raises:
        VaultNotFoundError / VaultCorruptedError: no readable header.
    """
    header, _ = read_header(path)
    target = path / FAILED_FILE
    record = canonical_json({"time": now_utc(), "user": clean_user(user)})
    line = base64.b64encode(crypto.seal(header.seal_public_key, record, sealed_context(header.vault_id))) + b"\n"
    with lock_for(path):  # not interleaved with an unlock importing and deleting the file
        if target.exists() and target.stat().st_size >= MAX_FAILED_BYTES:
            logger.warning("failed-unlock file is full; attempt not recorded")
            return
        existed = target.exists()
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not existed:
            fsync_dir(path)


def read_failed_unlocks(path: Path, seal_key: bytearray, vault_id: bytes) -> list[tuple[str, str, dict]] | None:
    """Audit items ``("unlock_failed", user, details)`` for every record, plus one summary item if lines were
    unreadable (forged or damaged) or the file overflowed; None when there is no file."""
    try:
        data = read_capped(path / FAILED_FILE, 4 * MAX_FAILED_BYTES)
    except FileNotFoundError:
        return None
    overflow = data is None or len(data) >= MAX_FAILED_BYTES
    unreadable = 0
    items = []
    for line in (data or b"").split(b"\n"):
        if not line:
            continue
        try:
            rec = json.loads(crypto.unseal(seal_key, base64.b64decode(line, validate=True), sealed_context(vault_id)))
            user, when = clean_user(str(rec["user"])), str(rec["time"])[:40]
        except (binascii.Error, ValueError, KeyError, TypeError, crypto.AuthenticationFailed):
            unreadable += 1
            continue
        items.append(("unlock_failed", user, {"attempted_at": when}))
    if unreadable or overflow:
        items.append(("unlock_failed", "", {"unreadable_records": unreadable, "overflow": overflow}))
    return items
