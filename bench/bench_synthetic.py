"""Speed of the synthetic renderer: median seconds per image (render + PNG encode) per size and difficulty.

Usage: .venv/bin/python bench/bench_synthetic.py [--n 12] [--sizes 640x640,1280x1024,2592x1944]
Runs in ONE process (one core; cv2 threads limited to 1) so the figure times the number of cores gives the
throughput of ``python -m detection.synthetic --workers K``. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detection.synthetic import render_image  # noqa: E402
from detection.synthetic.dataset import encode, image_seed  # noqa: E402
from detection.synthetic.options import parse_size  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="images per size and difficulty")
    ap.add_argument("--sizes", default="640x640,1280x1024,2592x1944")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"{'size':>10s} {'difficulty':>10s} {'median s/img':>13s} {'p90 s/img':>10s} {'img/s/core':>11s} "
          f"{'objects/img':>12s}")
    for text in args.sizes.split(","):
        size = parse_size(text)
        n = args.n if size[0] * size[1] <= 2_000_000 else max(3, args.n // 3)
        for difficulty in ("easy", "medium", "hard", "mixed"):
            times, objects = [], []
            for i in range(n):
                t0 = time.perf_counter()
                img, truth = render_image(image_seed(args.seed, i), size=size, difficulty=difficulty)
                encode(img, "png")
                times.append(time.perf_counter() - t0)
                objects.append(len(truth["objects"]))
            med = statistics.median(times)
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            print(f"{text:>10s} {difficulty:>10s} {med:13.3f} {p90:10.3f} {1 / med:11.1f} "
                  f"{statistics.median(objects):12.0f}")


if __name__ == "__main__":
    main()
