"""No plaintext on disk: a random marker planted in an uploaded image (PNG tEXt chunk, and in the file name) must
never appear in any file the app or its web server writes - only inside the vault's ciphertext, where it cannot be
found.

Two real attempts:

1. In process (AppTest): create the vault, upload a >1 MiB image carrying the marker, analyse and save it, reopen it
   in History, download a CSV, lock. TMPDIR points at a scanned folder and ``tempfile.TemporaryFile`` is replaced by
   a spy that writes NAMED files there (on Linux the real one is an unnamed O_TMPFILE, invisible to a folder scan).
   The vault folder, the seen-file folder, TMPDIR and HOME are scanned, and every log record is checked.
2. Over HTTP: ``streamlit run app.py`` on a free 127.0.0.1 port (XSRF protection on, as configured) with the same
   TemporaryFile spy loaded through ``sitecustomize``. The test opens a websocket session (/_stcore/stream, XSRF
   token from the /_stcore/health cookie), waits until app.py has run, then PUTs a >1 MiB multipart upload to
   /_stcore/upload_file/<session_id>/<file_id> exactly as the browser's file uploader does. TMPDIR, HOME (with
   ~/.streamlit, Streamlit's cache folder), the vault and state folders and the repository's top level and
   .streamlit/ are scanned. A control server running a bare Streamlit script (without ui.spool) receives the same
   upload and MUST leave the marker in its TMPDIR: this proves the spy would catch a spill.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from tests.e2e.conftest import PASSPHRASE, ROOT, Server

MIB = 1024 * 1024

# ------------------------------------------------------------------------------------------------ helpers
def marked_png(marker: bytes, *, min_bytes: int = int(1.5 * MIB)) -> bytes:
    """A valid grey PNG larger than ``min_bytes`` (noise pixels do not compress) with ``marker`` in a tEXt chunk."""
    import cv2

    side = int(np.ceil(np.sqrt(min_bytes))) + 16
    rng = np.random.default_rng(7)
    ok, buf = cv2.imencode(".png", rng.integers(0, 256, (side, side), dtype=np.uint8))
    assert ok
    png = buf.tobytes()
    body = b"comment\x00" + marker
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    out = png[:ihdr_end] + chunk + png[ihdr_end:]
    assert len(out) > min_bytes and marker in out
    return out


def find_marker(marker: bytes, *roots: Path) -> list[str]:
    """Files under ``roots`` whose bytes or path contain ``marker`` (symlinks are not followed)."""
    hits = []
    for root in roots:
        if not root.exists():
            continue
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for p in paths:
            if marker.decode() in str(p):
                hits.append(str(p))
                continue
            try:
                if marker in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


def repo_top_level_files() -> list[Path]:
    """What a server started in the repository could write next to app.py (not .venv, .git or data folders)."""
    return [p for p in ROOT.iterdir() if p.is_file()] + [ROOT / ".streamlit", ROOT / "ui", ROOT / "screens"]


# ------------------------------------------------------------------------------------------------ 1: in process
def test_analyse_save_reopen_export_lock_leaves_no_plaintext(tmp_path, monkeypatch, caplog):
    from streamlit.testing.v1 import AppTest

    import ui.session
    from vault import KdfParams

    scan_tmp, home, vault_dir, state_dir = (tmp_path / n for n in ("tmp", "home", "vault", "state"))
    for d in (scan_tmp, home):
        d.mkdir()
    monkeypatch.setenv("TMPDIR", str(scan_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(scan_tmp))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CRYSTALQC_VAULT", str(vault_dir))
    monkeypatch.setenv("CRYSTALQC_STATE_DIR", str(state_dir))
    monkeypatch.setattr(ui.session, "KDF_PARAMS", KdfParams.minimum())
    real_named = tempfile.NamedTemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile",
                        lambda *a, **k: real_named(*a, **{**k, "delete": False, "prefix": "spill-"}))
    caplog.set_level(logging.DEBUG)

    marker = secrets.token_hex(32).encode()
    image = marked_png(marker)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.text_input(key="create_name").input("alice")
    at.text_input(key="create_pass").input(PASSPHRASE)
    at.text_input(key="create_repeat").input(PASSPHRASE)
    at.button(key="create_vault").click()
    at.run()
    at.checkbox(key="recovery_written").check()
    at.run()
    at.button(key="recovery_done").click()
    at.run()
    at.file_uploader(key="upload").set_value((f"{marker.decode()}.png", image, "image/png"))
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Saved in the vault" in c.value for c in at.caption)
    at.get("download_button")[0].click()  # export
    at.run()
    at.switch_page("screens/history.py")
    at.run()
    at.button(key="history_open").click()
    at.run()
    assert at.metric and not at.exception
    at.sidebar.button(key="lock_button").click()
    at.run()
    assert [t.value for t in at.title] == ["crystal QC is locked"]

    # The data really is in the vault (so the scan below searched where it lives).
    from ui.analyses import list_analyses
    from vault import Vault
    with Vault.open(vault_dir, PASSPHRASE, user="test") as v:
        [info] = list_analyses(v)
        assert info.image_name == f"{marker.decode()}.png"
        assert v.get(f"images/{hashlib.sha256(image).hexdigest()}") == image

    assert find_marker(marker, vault_dir, state_dir, scan_tmp, home, *repo_top_level_files()) == []
    assert not list(scan_tmp.iterdir()), "something was written to TMPDIR"
    # Nothing the app logs at the level the server prints (`[logger] level = "warning"`) carries the marker.
    assert all(marker.decode() not in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert all(marker.decode() not in r.getMessage() for r in caplog.records if r.name.startswith(("ui", "vault")))


# ------------------------------------------------------------------------------------------------ 2: over HTTP
def upload_like_the_browser(server: Server, http, xsrf: str, file_name: str, payload: bytes) -> int:
    """Open a session over the websocket, let the main script run once, PUT the file; return the HTTP status."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server.port}/_stcore/stream", subprotocols=["streamlit", xsrf],
                 additional_headers={"Cookie": f"_streamlit_xsrf={xsrf}"}, proxy=None, max_size=None,
                 open_timeout=30) as ws:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        rerun.rerun_script.page_script_hash = ""
        ws.send(rerun.SerializeToString())
        session_id, finished = None, False
        deadline = time.monotonic() + 60
        while not (session_id and finished) and time.monotonic() < deadline:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=60))
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                session_id = msg.new_session.initialize.session_id
            elif kind == "script_finished":
                finished = True
        assert session_id and finished, "the app script did not run"
        boundary = secrets.token_hex(16)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
        r = http.put(f"{server.url}/_stcore/upload_file/{session_id}/{secrets.token_hex(8)}", data=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Xsrftoken": xsrf},
                     cookies={"_streamlit_xsrf": xsrf}, timeout=60)
        return r.status_code


def test_http_upload_over_1_mib_is_never_spooled_to_disk(tmp_path):
    import requests

    control_dir = tmp_path / "control"
    control_dir.mkdir()
    (control_dir / "bare_app.py").write_text("import streamlit as st\nst.file_uploader('file')\n")
    vault_dir, state_dir = tmp_path / "app" / "vault", tmp_path / "app" / "state"
    app = Server(ROOT / "app.py", ROOT, tmp_path / "app",
                 {"CRYSTALQC_VAULT": str(vault_dir), "CRYSTALQC_STATE_DIR": str(state_dir)})
    control = Server(control_dir / "bare_app.py", control_dir, tmp_path / "ctl", {})
    http = requests.Session()
    http.trust_env = False  # never a proxy for 127.0.0.1
    try:
        marker = secrets.token_hex(32).encode()
        payload = marked_png(marker)
        app_xsrf, control_xsrf = app.wait_ready(http), control.wait_ready(http)
        assert app_xsrf and control_xsrf  # XSRF protection is on

        # Control: the bare script has no ui.spool, so Starlette spills the part and the spy keeps it visible.
        assert upload_like_the_browser(control, http, control_xsrf, "control.png", payload) == 204
        assert find_marker(marker, control.tmp), "the spy did not see the spill: this test could not fail"

        # Without the XSRF token the upload is refused (the route really is protected).
        assert http.put(f"{app.url}/_stcore/upload_file/x/y", data=b"", timeout=10).status_code == 403
        assert upload_like_the_browser(app, http, app_xsrf, f"{marker.decode()}.png", payload) == 204
        time.sleep(0.5)
        hits = find_marker(marker, app.tmp, app.home, vault_dir, state_dir, *repo_top_level_files())
        assert hits == []
        assert not [p for p in app.tmp.rglob("*") if p.name.startswith("spill-")]
    finally:
        app.stop()
        control.stop()
    assert marker.decode() not in app.log.read_text(errors="replace")
