"""Stage-micrometer calibration: accuracy, refusals and time of analysis.calibration.measure_stage_micrometer.

    python bench/bench_calibration.py [--size 384x448] [--big 1944x2592]

Rulings are rendered by tests/analysis/test_calibration.render_ruling (dark Gaussian-profile lines) for spacings
8-60 px, angles 0-160 deg and three conditions: clean; noise sigma 0.3 with uneven (tilted + curved) illumination;
thin 0.7 px lines only in a band with every 5th line longer (a real micrometer's ticks) and noise sigma 0.2. Prints
the worst and median relative spacing error per condition, the refusals, how many of 20 noise and 20 random-crystal
images were (wrongly) accepted, and the time for one full-size camera frame. Never asserts.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from analysis.calibration import CalibrationError, measure_stage_micrometer  # noqa: E402
from tests.analysis.test_calibration import _random_crystals, render_ruling  # noqa: E402

CONDITIONS = {"clean": {}, "noisy+uneven": dict(noise=0.3, uneven=0.4),
              "ticks+noise": dict(ticks=True, noise=0.2, width=0.7)}


def _shape(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=_shape, default=(384, 448), help="H x W of the test rulings")
    parser.add_argument("--big", type=_shape, default=(1944, 2592), help="H x W of the timed camera frame")
    args = parser.parse_args()
    for name, kwargs in CONDITIONS.items():
        errors, refused, seconds = [], [], []
        for spacing in (8.0, 15.0, 27.5, 45.0, 60.0):
            for angle in (0.0, 20.0, 45.0, 90.0, 160.0):
                img = render_ruling(args.size, spacing, angle, seed=int(spacing + angle), **kwargs)
                start = time.perf_counter()
                try:
                    m = measure_stage_micrometer(img, division_um=10.0)
                except CalibrationError as e:
                    refused.append(f"{spacing:g} px @ {angle:g} deg: {e}")
                    continue
                finally:
                    seconds.append(time.perf_counter() - start)
                errors.append(abs(m.spacing_px / spacing - 1.0) * 100.0)
        print(f"{name:14s} {len(errors)} measured: worst {max(errors):.3f} %, median {statistics.median(errors):.4f} %"
              f", over 1 %: {sum(e > 1 for e in errors)}; median {statistics.median(seconds):.2f} s / image;"
              f" refused {len(refused)}")
        for line in refused:
            print("    refused", line)
    rng = np.random.default_rng(0)
    for label, make in (("noise", lambda s: rng.normal(0.5, 0.1, args.size).astype(np.float32)),
                        ("random crystals", _random_crystals)):
        accepted = 0
        for seed in range(20):
            try:
                measure_stage_micrometer(make(seed), division_um=10.0)
                accepted += 1
            except CalibrationError:
                pass
        print(f"{label}: {accepted} of 20 wrongly accepted")
    big = render_ruling(args.big, 20.0, 12.0, noise=0.05)
    start = time.perf_counter()
    m = measure_stage_micrometer(big, division_um=10.0)
    print(f"{args.big[1]} x {args.big[0]} frame: {time.perf_counter() - start:.2f} s, spacing {m.spacing_px:.4f} px"
          f" (truth 20)")


if __name__ == "__main__":
    main()
