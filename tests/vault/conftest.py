"""Shared fixtures of the vault tests: fast (minimum allowed) KDF parameters, an isolated seen-file folder, and a
snapshot helper to prove that nothing was written."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vault import KdfParams, Vault

PASSPHRASE = "correct horse battery staple"
NEW_PASSPHRASE = "tr0ub4dor & three more words"
FAST_KDF = KdfParams.minimum()  # the enforced floor: tests respect it like any caller


class SimulatedCrash(BaseException):
    """Raised by a fault hook: a BaseException, so (like a kill) no `except Exception` clean-up runs."""


def crash_at(step: str):
    def hook(current: str) -> None:
        if current == step:
            raise SimulatedCrash(current)
    return hook


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALQC_STATE_DIR", str(tmp_path / "user-state"))
    for var in ("CRYSTALQC_VAULT", "CRYSTALQC_PASSPHRASE", "CRYSTALQC_NEW_PASSPHRASE", "CRYSTALQC_RECOVERY_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def vault_path(tmp_path) -> Path:
    return tmp_path / "vault"


@pytest.fixture
def new_vault(vault_path):
    """(open vault, recovery key) created with the minimum KDF parameters."""
    vault, recovery_key = Vault.create(vault_path, PASSPHRASE, kdf_params=FAST_KDF, user="creator")
    yield vault, recovery_key
    vault.lock()


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots``: (size, mtime_ns, ctime_ns, sha256) - any write changes it."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for p in sorted([root, *root.rglob("*")]):
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns, st.st_ctime_ns, digest)
    return out


def blob_file(vault: Vault, name: str) -> Path:
    """The data file of an entry (test-only peek at the index)."""
    rec = vault._entries[name]
    return vault.path / "blobs" / rec.blob_id.hex()


def seen_dir() -> Path:
    return Path(os.environ["CRYSTALQC_STATE_DIR"])
