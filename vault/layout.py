"""Names, limits and default locations of the vault files; classification of the files in a vault folder."""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from vault.fsio import TEMP_PREFIX

VAULT_ENV = "CRYSTALQC_VAULT"
STATE_DIR_ENV = "CRYSTALQC_STATE_DIR"
HEADER_FILE = "vault.hdr"
STATE_FILE = "state"
BLOB_DIR = "blobs"
AUDIT_FILE = "audit.log"
FAILED_FILE = "failed-unlocks"
LOCK_FILE = "lock"
INDEX_PREFIX = "index-"

MIN_PASSPHRASE_CHARS = 10
MAX_PASSPHRASE_CHARS = 1024
MAX_ENTRY_BYTES = 2 * 1024 ** 3
MAX_INDEX_BYTES = 256 * 1024 ** 2
MAX_USER_CHARS = 128

ID_RE = re.compile(r"^[0-9a-f]{32}$")


def default_vault_path() -> Path:
    """``$CRYSTALQC_VAULT``, else ``$XDG_DATA_HOME/crystal-qc/vault`` (``~/.local/share/...``; ``%LOCALAPPDATA%`` on
    Windows)."""
    env = os.environ.get(VAULT_ENV)
    if env:
        return Path(env).expanduser()
    if os.name == "nt":  # pragma: no cover
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "crystal-qc" / "vault"


def default_state_dir() -> Path:
    """Where seen files live: ``$CRYSTALQC_STATE_DIR``, else ``$XDG_STATE_HOME/crystal-qc`` (``~/.local/state/...``)."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if os.name == "nt":  # pragma: no cover
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "crystal-qc" / "state"
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "crystal-qc"


def now_utc() -> str:
    """The current time as UTC ISO-8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def clean_user(user: str) -> str:
    """A user name safe to record: printable characters only (others become '?'), at most 128 characters."""
    if not isinstance(user, str):
        raise TypeError("user must be a str")
    return "".join(c if c.isprintable() else "?" for c in user)[:MAX_USER_CHARS]


def scan_files(path: Path, entries: dict, index_id: bytes) -> tuple[list[Path], list[Path]]:
    """(orphans ``gc`` may remove, unknown files it leaves alone) of the vault folder ``path``, given the live
    ``entries`` (name -> IndexRecord) and the live index file id. Orphans: temp files, blob files no entry references,
    superseded index files."""
    live_blobs = {rec.blob_id.hex() for rec in entries.values()}
    fixed = {HEADER_FILE, STATE_FILE, AUDIT_FILE, FAILED_FILE, LOCK_FILE, BLOB_DIR, f"{INDEX_PREFIX}{index_id.hex()}"}
    orphans, unknown = [], []
    for p in sorted(path.iterdir()):
        if p.name in fixed:
            continue
        is_old_index = p.name.startswith(INDEX_PREFIX) and ID_RE.match(p.name[len(INDEX_PREFIX):])
        if p.is_file() and (p.name.startswith(TEMP_PREFIX) or is_old_index):
            orphans.append(p)
        else:
            unknown.append(p)
    blob_dir = path / BLOB_DIR
    for p in sorted(blob_dir.iterdir()) if blob_dir.is_dir() else []:
        if p.name in live_blobs:
            continue
        if p.is_file() and (p.name.startswith(TEMP_PREFIX) or ID_RE.match(p.name)):
            orphans.append(p)
        else:
            unknown.append(p)
    return orphans, unknown
