"""`python -m vault` end to end on a real folder (in-process for speed, plus one real subprocess)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vault.conftest import NEW_PASSPHRASE, PASSPHRASE, blob_file
from vault import Vault
from vault.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--kdf-memory-mib", "19", "--kdf-iterations", "2", "--kdf-lanes", "1"]


@pytest.fixture
def cli(monkeypatch, capsys, vault_path):
    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", PASSPHRASE)

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--path", str(vault_path), "--user", "tech"])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


@pytest.fixture
def initialised(cli):
    code, out, _ = cli("init", *FAST)
    assert code == 0
    key = re.search(r"([A-Z2-7]{4}(?:-[A-Z2-7]{4}){8})", out).group(1)
    return key


def test_init_prints_the_recovery_key_once_and_check_passes(cli, initialised, vault_path):
    assert Vault.exists_at(vault_path)
    code, out, _ = cli("check")
    assert code == 0 and out.startswith("OK") and initialised not in out


def test_init_refuses_existing_vault_and_bad_kdf(cli, initialised, tmp_path):
    code, _, err = cli("init", *FAST)
    assert code == 2 and "not empty" in err
    assert main(["init", "--path", str(tmp_path / "x"), "--kdf-memory-mib", "4096"]) == 2
    assert not (tmp_path / "x").exists()


def test_list_and_check_detects_damage(cli, initialised, vault_path):
    v = Vault.open(vault_path, PASSPHRASE)
    v.put("images/a.png", b"png", kind="image")
    v.put("results/a.json", b"{}", kind="result")
    damaged = blob_file(v, "results/a.json")
    v.lock()
    code, out, _ = cli("list")
    assert code == 0 and "images/a.png" in out and "results/a.json" in out
    code, out, _ = cli("list", "--prefix", "images/")
    assert "results" not in out
    damaged.write_bytes(damaged.read_bytes()[:-1])
    code, out, _ = cli("check")
    assert code == 1 and "PROBLEMS FOUND" in out and "results/a.json" in out and "truncated" in out


def test_wrong_passphrase_exits_2_and_is_recorded(cli, initialised, monkeypatch):
    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", "not the right one")
    code, out, err = cli("list")
    assert code == 2 and "not correct" in err and "not the right one" not in err + out
    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", PASSPHRASE)
    code, out, _ = cli("audit")
    assert code == 0 and "unlock_failed" in out and out.strip().splitlines()[-1].startswith("OK")


def test_audit_exits_1_on_a_broken_chain(cli, initialised, vault_path):
    cli("check")
    log = vault_path / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"".join(lines[2:]))
    code, out, _ = cli("audit")
    assert code == 1 and "BROKEN at record 1" in out


def test_passwd_and_recovery(cli, initialised, monkeypatch, vault_path):
    monkeypatch.setenv("CRYSTALQC_NEW_PASSPHRASE", NEW_PASSPHRASE)
    code, out, _ = cli("passwd")
    assert code == 0 and "changed" in out
    assert cli("check")[0] == 2  # the old passphrase (still in the env) stopped working
    monkeypatch.setenv("CRYSTALQC_RECOVERY_KEY", initialised)
    monkeypatch.setenv("CRYSTALQC_NEW_PASSPHRASE", "third passphrase here")
    assert cli("passwd", "--recovery")[0] == 0
    monkeypatch.setenv("CRYSTALQC_PASSPHRASE", "third passphrase here")
    assert cli("check")[0] == 0


def test_gc_and_accept_restore(cli, initialised, vault_path, tmp_path):
    import shutil
    (vault_path / ".tmp-abc").write_bytes(b"x")
    code, out, _ = cli("gc")
    assert code == 0 and "Removed 1" in out
    shutil.copytree(vault_path, tmp_path / "backup")
    cli("check")
    shutil.rmtree(vault_path)
    shutil.copytree(tmp_path / "backup", vault_path)
    code, _, err = cli("check")
    assert code == 2 and "accept-restore" in err
    assert cli("accept-restore")[0] == 0
    assert cli("check")[0] == 0


def test_missing_vault(cli):
    code, _, err = cli("check")
    assert code == 2 and "No vault" in err


def test_real_subprocess(tmp_path):
    env = dict(os.environ, CRYSTALQC_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(ROOT))
    path = str(tmp_path / "sub")
    init = subprocess.run([sys.executable, "-m", "vault", "init", "--path", path, *FAST], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    check = subprocess.run([sys.executable, "-m", "vault", "check", "--path", path], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.startswith("OK")
