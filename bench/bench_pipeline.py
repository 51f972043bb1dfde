"""Whole-pipeline speed: median seconds per image (load -> clean -> detect -> exclude -> measure -> tables).

    python bench/bench_pipeline.py [--detector classical|onnx|auto] [--repeats 5]

Images are rendered by the synthetic generator (medium difficulty) at 1280x1024 and 2592x1944 and encoded as PNG,
so decoding is part of the time. Prints one row per size; medians over the repeats. Never asserts on time.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402

from analysis.pipeline import AnalysisOptions, analyze_bytes, make_detector  # noqa: E402
from analysis.report import particles_table, summary_table  # noqa: E402
from detection.synthetic import render_image  # noqa: E402

SIZES = ((1280, 1024), (2592, 1944))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", default="classical")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    options = AnalysisOptions()
    detector = make_detector(args.detector, options=options)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; detector {detector.label}")
    print(f"{'size':>11} {'median s':>9} {'min s':>7} {'particles':>9}")
    for w, h in SIZES:
        times, n = [], 0
        for seed in range(args.repeats):
            image, _truth = render_image(1000 + seed, size=(w, h), difficulty="medium")
            ok, png = cv2.imencode(".png", image)
            data = png.tobytes()
            t0 = time.perf_counter()
            result = analyze_bytes(data, name=f"bench_{seed}.png", detector=detector, options=options)
            particles_table([result])
            summary_table([result])
            times.append(time.perf_counter() - t0)
            n += sum(p.counted for p in result.particles)
        print(f"{w:>5}x{h:<5} {statistics.median(times):9.3f} {min(times):7.3f} {n / args.repeats:9.0f}")


if __name__ == "__main__":
    main()
