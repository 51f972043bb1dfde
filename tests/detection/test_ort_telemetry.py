"""onnxruntime is imported with its telemetry off: loading the detector writes nothing to TMPDIR. (onnxruntime 1.32
drops a ``.ses`` session file there at import on a developer machine; on CI, where its own heuristics already keep
telemetry off, it does not - so the test checks our guard, not the library's behaviour.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _import_in_fresh_process(tmp: Path, code: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=120)
    return sorted(p.name for p in tmp.iterdir())


def test_loading_the_detector_writes_nothing_to_tmpdir(tmp_path):
    quiet = tmp_path / "ours"
    quiet.mkdir()
    assert _import_in_fresh_process(quiet, "import detection.onnx_detector") == []
