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


def test_stage_line_gives_medians_in_pipeline_order_with_parts_inside_their_stage_and_the_rest():
    clocks = [{"detect": 0.5, "detect.network": 0.3, "clean": 0.1, "load": 0.05},
              {"detect": 0.7, "detect.network": 0.5, "clean": 0.1, "load": 0.05},
              {"detect": 0.6, "detect.network": 0.4, "clean": 0.3, "load": 0.05}]
    wall = [0.7, 0.9, 1.0]  # less the top-level stages: 0.05, 0.05, 0.05
    line = bench_pipeline.stage_line(clocks, wall)
    assert line == "load 0.050 · clean 0.100 · detect 0.600 (network 0.400) · other 0.050"


def test_stage_line_keeps_the_pipelines_order_whatever_order_the_stages_were_seen_in():
    clock = {"measure": 0.01, "detect.outlines": 0.2, "exotic": 0.0, "detect": 0.5, "detect.network": 0.25,
             "load": 0.1}
    line = bench_pipeline.stage_line([clock], [0.61])
    assert line == ("load 0.100 · detect 0.500 (network 0.250, outlines 0.200) · measure 0.010 · exotic 0.000 · "
                    "other 0.000")
