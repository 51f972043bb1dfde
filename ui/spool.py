"""Keep uploaded files in memory: stop the web server from spooling uploads over 1 MiB to a temporary file.

Streamlit 1.67 serves the app with Starlette/uvicorn. ``st.file_uploader`` sends each file as a multipart PUT to
``/_stcore/upload_file/<session_id>/<file_id>``; the handler calls Starlette's ``Request.form()``, whose
``starlette.formparsers.MultiPartParser`` writes every file part into ``tempfile.SpooledTemporaryFile(max_size=
MultiPartParser.spool_max_size)`` - 1 MiB by default. A larger upload rolls over to ``tempfile.TemporaryFile()`` in
``$TMPDIR``: plaintext image bytes on disk (unnamed on Linux, but written to the file system all the same).

:func:`keep_uploads_in_memory` raises that class attribute to the largest request body Streamlit accepts
(``server.maxUploadSize`` + the 1 MiB multipart framing margin that Streamlit's streaming cap allows, + 64 KiB), so a
file part can never exceed the threshold before Streamlit aborts the request: no upload ever rolls over. Streamlit
itself then reads the part into ``bytes`` and keeps it in its in-memory upload manager. The patch is process-wide
and idempotent; app.py calls it on every run, so it is in place before the first file uploader is shown.
tests/e2e/test_no_plaintext.py proves it against a running server.
"""
from __future__ import annotations

import logging

from streamlit import config

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Streamlit's framing margin on top of server.maxUploadSize (starlette_routes._MAX_UPLOAD_MULTIPART_OVERHEAD_BYTES).
MULTIPART_OVERHEAD_BYTES = MIB
SAFETY_MARGIN_BYTES = 64 * 1024
_UNSUPPORTED = ("This Streamlit/Starlette version handles uploads in a way crystal QC has not been checked against:"
                " uploads might be written to disk unencrypted. Install the versions from requirements.txt.")


def upload_spool_threshold() -> int:
    """Bytes a file part may reach before it would be spooled: the largest request body the server accepts."""
    return int(config.get_option("server.maxUploadSize")) * MIB + MULTIPART_OVERHEAD_BYTES + SAFETY_MARGIN_BYTES


def keep_uploads_in_memory() -> int:
    """Raise Starlette's multipart spool threshold above the upload cap; returns the threshold now in force (bytes;
    0 means "never spool", which Starlette/``SpooledTemporaryFile`` also treat as unlimited).

    Raises:
        RuntimeError: Starlette is missing or has no ``MultiPartParser.spool_max_size`` (another Streamlit web server
        or a changed upload path: the no-plaintext guarantee must be re-checked before this app runs on it).
    """
    try:
        from starlette.formparsers import MultiPartParser
    except ImportError as e:
        raise RuntimeError(_UNSUPPORTED) from e
    current = getattr(MultiPartParser, "spool_max_size", None)
    if isinstance(current, bool) or not isinstance(current, int):
        raise RuntimeError(_UNSUPPORTED)
    wanted = upload_spool_threshold()
    if current != 0 and current < wanted:
        MultiPartParser.spool_max_size = wanted
        logger.info("multipart spool threshold raised to %d bytes (uploads stay in memory)", wanted)
        return wanted
    return current
