"""The one way this project imports onnxruntime: with its telemetry switched off first.

onnxruntime 1.32 on Linux ships Microsoft's 1DS telemetry client: importing it writes a session file (``$TMPDIR/.ses``:
a time stamp and a random id) and the library can send usage events over HTTP. A plant PC must not write or send
anything the plant did not ask for, so ``ORT_DISABLE_TELEMETRY=1`` is set before the library is loaded (the variable
is read at load time; ``onnxruntime.disable_telemetry_events()`` afterwards is too late for the file).
tests/e2e/test_no_plaintext.py checks that nothing lands in TMPDIR.
"""
from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import onnxruntime as ort  # noqa: E402  (must follow the environment setting above)

__all__ = ["ort"]
