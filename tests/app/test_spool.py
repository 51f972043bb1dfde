"""ui.spool at the parser level: Streamlit's upload route parses with Starlette's Request.form(); without the patch a
file part over 1 MiB rolls over to a temporary file on disk, with it the part stays in memory.

The rollover is observed by replacing ``tempfile.TemporaryFile`` (what SpooledTemporaryFile.rollover calls) with a
spy that records each call and writes a NAMED file in a scanned folder, so a spilled upload becomes visible.
tests/e2e/test_no_plaintext.py checks the same against a running ``streamlit run`` server."""
from __future__ import annotations

import asyncio
import os
import secrets
import tempfile

import pytest
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from streamlit.testing.v1.util import patch_config_options
from streamlit.web.server.starlette import starlette_routes

from ui.spool import MIB, MULTIPART_OVERHEAD_BYTES, SAFETY_MARGIN_BYTES, keep_uploads_in_memory, upload_spool_threshold


def multipart(field: str, file_name: str, payload: bytes) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request with one file part."""
    boundary = secrets.token_hex(16)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _parse(body: bytes, content_type: str) -> bytes:
    chunks = [body[i:i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "PUT", "path": "/", "headers": [(b"content-type", content_type.encode())]}
    form = await Request(scope, receive).form()
    upload = form["file"]
    try:
        return await upload.read()
    finally:
        await form.close()


@pytest.fixture
def spill_spy(tmp_path, monkeypatch):
    """Record every rollover of a SpooledTemporaryFile; spilled data lands in named files under tmp_path/spill."""
    spill = tmp_path / "spill"
    spill.mkdir()
    calls = []

    def visible_temporary_file(*args, **kwargs):
        calls.append(kwargs)
        kwargs.pop("dir", None)
        return tempfile.NamedTemporaryFile(*args, dir=spill, delete=False, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", visible_temporary_file)
    # Starlette's default (app.py may have raised it already in this process: AppTest runs it in process).
    monkeypatch.setattr(MultiPartParser, "spool_max_size", MIB)
    return spill, calls


def _found(folder, marker: bytes) -> list[str]:
    return [p.name for p in folder.iterdir() if marker in p.read_bytes()]


def test_without_the_patch_a_large_upload_spills_to_disk(spill_spy):
    """Control: proves the spy sees a spill, so the next test can fail."""
    spill, calls = spill_spy
    marker = secrets.token_hex(32).encode()
    payload = os.urandom(MIB) + marker + os.urandom(512 * 1024)
    assert asyncio.run(_parse(*multipart("file", "big.png", payload))) == payload
    assert len(calls) == 1 and _found(spill, marker)


def test_with_the_patch_the_largest_accepted_upload_stays_in_memory(spill_spy):
    spill, calls = spill_spy
    with patch_config_options({"server.maxUploadSize": 3}):
        threshold = keep_uploads_in_memory()
        assert threshold == 3 * MIB + MULTIPART_OVERHEAD_BYTES + SAFETY_MARGIN_BYTES
        # The largest body Streamlit's streaming cap lets through: maxUploadSize + its 1 MiB framing margin.
        marker = secrets.token_hex(32).encode()
        payload = os.urandom(3 * MIB) + marker + os.urandom(MIB - 64 - 1024)
        body, content_type = multipart("file", "big.png", payload)
        assert len(body) <= 3 * MIB + starlette_routes._MAX_UPLOAD_MULTIPART_OVERHEAD_BYTES
        assert asyncio.run(_parse(body, content_type)) == payload
    assert calls == [] and _found(spill, marker) == []


def test_our_margin_covers_streamlits_streaming_cap():
    assert MULTIPART_OVERHEAD_BYTES >= starlette_routes._MAX_UPLOAD_MULTIPART_OVERHEAD_BYTES


def test_threshold_follows_the_upload_cap_and_is_never_lowered(monkeypatch):
    monkeypatch.setattr(MultiPartParser, "spool_max_size", MIB)
    with patch_config_options({"server.maxUploadSize": 200}):
        assert upload_spool_threshold() == 201 * MIB + SAFETY_MARGIN_BYTES
        assert keep_uploads_in_memory() == MultiPartParser.spool_max_size == 201 * MIB + SAFETY_MARGIN_BYTES
        assert keep_uploads_in_memory() == 201 * MIB + SAFETY_MARGIN_BYTES  # idempotent
    with patch_config_options({"server.maxUploadSize": 10}):
        assert keep_uploads_in_memory() == 201 * MIB + SAFETY_MARGIN_BYTES  # a higher value is kept
    monkeypatch.setattr(MultiPartParser, "spool_max_size", 0)  # 0 = never spool: kept
    assert keep_uploads_in_memory() == 0


def test_unknown_starlette_upload_handling_is_refused(monkeypatch):
    monkeypatch.setattr(MultiPartParser, "spool_max_size", None)
    with pytest.raises(RuntimeError, match="uploads might be written to disk"):
        keep_uploads_in_memory()
