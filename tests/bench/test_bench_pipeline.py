"""bench/bench_pipeline.py: the line through time against particles per image that the benchmark prints."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("bench_pipeline",
                                               Path(__file__).resolve().parents[2] / "bench" / "bench_pipeline.py")
bench_pipeline = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = bench_pipeline
_SPEC.loader.exec_module(bench_pipeline)


def test_per_particle_recovers_a_known_line_and_names_the_slowest_image():
    particles = [40, 120, 320, 60]
    seconds = [0.5 + 0.002 * n for n in particles]
    line = bench_pipeline.per_particle(seconds, particles)
    assert "time ~ 0.500 s + 2.00 ms x particles (40-320 per image)" in line
    assert line.endswith("slowest image 1.140 s (320 particles)")


def test_per_particle_without_two_different_counts_gives_only_the_slowest_image():
    assert bench_pipeline.per_particle([0.4, 0.6], [50, 50]) == "slowest image 0.600 s (50 particles)"
