"""bench/bench_acceptance.py runs end to end on a few small images (its timing is never asserted)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_acceptance", ROOT / "bench" / "bench_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_acceptance_bench_compares_the_model_with_itself_on_the_reviewed_images(monkeypatch, capsys):
    bench = _bench()
    monkeypatch.setattr(sys, "argv", ["bench_acceptance.py", "--images", "5", "--size", "320x256"])
    bench.main()
    out = capsys.readouterr().out
    assert "5 reviewed 320x256 analyses: plant_set" in out
    assert "plant: 5 images; labels from classical (5)" in out
    assert "F1 +0.000 [+0.000, +0.000], count accuracy +0.000 [+0.000, +0.000]" in out  # the same model twice
