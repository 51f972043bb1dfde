"""detection/device_train.sh refuses bad settings before it renders or trains anything (no torch needed here; the
tiny real run is in tests_training/test_device_train.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "detection" / "device_train.sh"


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"OUT", "DATA_SEED", "WORK"}}
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**base, "PY": "/bin/false", **env})


def test_out_is_required(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode != 0 and "set OUT" in done.stderr


def test_held_out_seeds_are_refused(tmp_path):
    for seed in ("800000", "900123"):
        done = run_script(tmp_path, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "w"), DATA_SEED=seed)
        assert done.returncode == 2 and "held-out" in done.stderr
    assert not (tmp_path / "w").exists()  # nothing rendered


def test_an_earlier_run_is_not_overwritten(tmp_path):
    (tmp_path / "w" / "runs" / "device").mkdir(parents=True)
    done = run_script(tmp_path, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "w"))
    assert done.returncode == 2 and "exists from an earlier run" in done.stderr
