"""python -m collab.researcher: keygen, decrypt (checks before writing), inspect, exit codes; a hostile archive
(links, paths outside the folder, unlisted or altered files) is refused even when correctly encrypted."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collab import researcher as rtool
from collab.crypto_age import encrypt, generate_identity, identity_file_text, parse_identities
from collab.dataset import ROOT, ExportFile, build_training_set, seal_export, tar_bytes
from collab.errors import ExportFormatError
from tests.collab.conftest import options

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collab.researcher", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_keygen_writes_a_private_0600_identity_and_prints_the_public_key(tmp_path):
    key = tmp_path / "key.txt"
    out = run_cli("keygen", "--out", str(key))
    assert out.returncode == 0, out.stderr
    text = key.read_text()
    public = [line for line in out.stdout.splitlines() if line.startswith("age1")]
    assert len(public) == 1 and f"# public key: {public[0]}" in text
    assert str(parse_identities(text)[0].to_public()) == public[0]
    assert "AGE-SECRET-KEY" not in out.stdout
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = run_cli("keygen", "--out", str(key))
    assert again.returncode == 2 and "exists" in again.stderr and key.read_text() == text


def _export(vault, analyses, researcher_, tmp_path, **kw) -> Path:
    ts = build_training_set(vault, analyses, options(**kw.pop("opts", {})), recipient=researcher_, **kw)
    path = tmp_path / "export.age"
    path.write_bytes(seal_export(vault, ts, user="lead", qc_lead_confirmed=True))
    return path


def test_decrypt_extracts_a_checked_yolo_folder(vault, analyses, researcher, key_file, tmp_path):
    export = _export(vault, analyses, researcher, tmp_path)
    out = run_cli("decrypt", str(export), "--identity", str(key_file), "--out", str(tmp_path / "ds"))
    assert out.returncode == 0, out.stderr
    assert "plant:      plant-A" in out.stdout and "images:     3 (train 2, val 1)" in out.stdout
    ds = tmp_path / "ds"
    assert stat.S_IMODE(ds.stat().st_mode) == 0o700
    files = sorted(str(p.relative_to(ds)) for p in ds.rglob("*") if p.is_file())
    assert files[:1] == ["data.yaml"] and "manifest.json" in files and len(files) == 2 + 6
    # decrypting into a folder that is not empty is refused (nothing overwritten)
    again = run_cli("decrypt", str(export), "--identity", str(key_file), "--out", str(ds))
    assert again.returncode == 2 and "not an empty folder" in again.stderr


def test_wrong_key_expired_and_tampered_exit_1_and_write_nothing(vault, analyses, researcher, key_file, tmp_path):
    export = _export(vault, analyses, researcher, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text(identity_file_text(generate_identity()[0]))
    out = run_cli("decrypt", str(export), "--identity", str(other), "--out", str(tmp_path / "a"))
    assert out.returncode == 1 and "wrong recipient" in out.stderr and not (tmp_path / "a").exists()

    bad = tmp_path / "bad.age"
    data = bytearray(export.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    out = run_cli("decrypt", str(bad), "--identity", str(key_file), "--out", str(tmp_path / "b"))
    assert out.returncode == 1 and "altered" in out.stderr and not (tmp_path / "b").exists()

    past = datetime.now(timezone.utc) - timedelta(days=40)
    (tmp_path / "old").mkdir()
    old = _export(vault, analyses, researcher, tmp_path / "old", now=past,
                  opts={"expires": past.date() + timedelta(days=7)})
    out = run_cli("decrypt", str(old), "--identity", str(key_file), "--out", str(tmp_path / "c"))
    assert out.returncode == 1 and "expired on" in out.stderr and not (tmp_path / "c").exists()
    seen = run_cli("inspect", str(old), "--identity", str(key_file))  # the manifest may still be looked at
    assert seen.returncode == 0 and "(EXPIRED)" in seen.stdout and "manifest.json" not in os.listdir(tmp_path)


def test_inspect_prints_the_manifest_and_writes_nothing(vault, analyses, researcher, key_file, tmp_path):
    export = _export(vault, analyses, researcher, tmp_path)
    before = sorted(os.listdir(tmp_path))
    out = run_cli("inspect", str(export), "--identity", str(key_file), "--json")
    assert out.returncode == 0, out.stderr
    manifest = json.loads(out.stdout[out.stdout.index("{"):])
    assert manifest["plant"] == "plant-A" and len(manifest["images"]) == 3
    assert sorted(os.listdir(tmp_path)) == before


# ------------------------------------------------------------------------------------------------ hostile archives
def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize("members, message", [
    ([(f"{ROOT}/../escape.txt", b"x")], "unexpected file"),
    ([("/etc/cron.d/x", b"x")], "unexpected file"),
    ([_link(f"{ROOT}/data.yaml", "/etc/passwd")], "link or special file"),
    ([(f"{ROOT}/data.yaml", b"a"), (f"{ROOT}/data.yaml", b"b")], "twice"),
    ([(f"{ROOT}/images/train/notes.exe", b"x")], "unexpected file"),
])
def test_hostile_archives_are_refused(members, message):
    with pytest.raises(ExportFormatError, match=message):
        rtool.read_archive(_tar(members))


def test_altered_or_unlisted_files_are_refused_even_if_encrypted_properly(vault, analyses, researcher, identity):
    ts = build_training_set(vault, analyses, options(), recipient=researcher)
    files = list(ts.files)
    label = next(i for i, f in enumerate(files) if f.kind == "label")
    swapped = files.copy()
    swapped[label] = ExportFile(files[label].path, b"0 0.5 0.5 0.9 0.9\n", "label")
    extra = files + [ExportFile(f"{ROOT}/images/train/{'0' * 16}.png", b"\x89PNG", "image")]
    key = identity_file_text(identity[0])
    for bad, message in ((swapped, "does not match its sha256"), (extra, "does not list")):
        sealed = encrypt(tar_bytes(bad, mtime=0), identity[1])
        with pytest.raises(ExportFormatError, match=message):
            rtool.open_export(sealed, key)
