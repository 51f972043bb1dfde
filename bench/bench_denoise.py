"""Benchmark of the denoisers in analysis.preprocess: quality and speed on a 2592 x 1944 image.

Builds a clean synthetic brightfield frame (background 0.75, translucent polygons with 2 px dark rims, a vertical
step edge for the edge-width measurement, optical blur sigma 0.7 px), adds Poisson-Gaussian noise at two levels,
runs each method and prints:
  PSNR (dB) against the clean frame (higher is better),
  10-90 % width (px) of the step edge, averaged over 400 rows (clean frame as reference; lower = sharper),
  rim contrast kept (%): mean depth of the polygon rims after denoising relative to the clean frame,
  ms per image (median of 3 runs, includes the noise estimate the adaptive methods make).
Optionally (--real PATH) repeats the measurement on a real tile (cleaned, taken as 'clean') + added noise.

Run: .venv/bin/python bench/bench_denoise.py [--real ../shared/real-dev/Crys_train_140_0_1.jpg]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.preprocess import DENOISE_METHODS, correct_background, denoise  # noqa: E402

H, W = 1944, 2592
EDGE_ROWS = slice(200, 600)
EDGE_X = 300


def make_clean(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (clean float32 image, bool rim mask) rendered at 2x and area-downsampled."""
    ss = 2
    big = np.full((H * ss, W * ss), 0.75, np.float32)
    big[:, : EDGE_X * ss] = 0.35  # step edge at x = EDGE_X
    rim = np.zeros((H * ss, W * ss), np.uint8)
    for _ in range(120):
        cx, cy = rng.uniform(700, W - 80) * ss, rng.uniform(80, H - 80) * ss
        r = rng.uniform(10, 60) * ss
        n = rng.integers(4, 8)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([cx + r * np.cos(ang), cy + r * 0.6 * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(big, [pts], float(rng.uniform(0.68, 0.8)))
        cv2.polylines(big, [pts], True, float(rng.uniform(0.15, 0.35)), thickness=2 * ss)
        cv2.polylines(rim, [pts], True, 1, thickness=2 * ss)
    clean = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)
    clean = cv2.GaussianBlur(clean, (0, 0), 0.7)
    rim_small = cv2.resize(rim, (W, H), interpolation=cv2.INTER_NEAREST) > 0
    return clean.astype(np.float32), rim_small


def add_noise(clean: np.ndarray, *, photons_at_one: float, read_sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = rng.poisson(clean * photons_at_one) / photons_at_one + rng.normal(0, read_sigma, clean.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def edge_width_10_90(img: np.ndarray) -> float:
    prof = img[EDGE_ROWS, EDGE_X - 12 : EDGE_X + 12].mean(axis=0).astype(np.float64)
    lo, hi = prof[:4].mean(), prof[-4:].mean()
    t = (prof - lo) / (hi - lo)
    x = np.arange(t.size, dtype=np.float64)
    x10 = np.interp(0.1, t, x)  # profile rises monotonically (dark -> bright)
    x90 = np.interp(0.9, t, x)
    return float(x90 - x10)


def rim_depth(img: np.ndarray, rim: np.ndarray) -> float:
    return float(0.75 - img[rim].mean())


def time_ms(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def run(clean: np.ndarray, rim: np.ndarray | None, noisy: np.ndarray, label: str, with_edge: bool) -> None:
    print(f"\n== {label}: noisy PSNR {psnr(noisy, clean):.2f} dB")
    ref_w = edge_width_10_90(clean) if with_edge else float("nan")
    ref_depth = rim_depth(clean, rim) if rim is not None else float("nan")
    print(f"{'method':>10} {'PSNR dB':>8} {'edge 10-90 px':>14} {'rim kept %':>10} {'ms/img':>8}")
    print(f"{'(clean)':>10} {'inf':>8} {ref_w:14.2f} {100.0:10.1f} {'':>8}")
    for method in DENOISE_METHODS:
        out = denoise(noisy, method=method)
        ms = time_ms(lambda: denoise(noisy, method=method), reps=1 if method == "nlm" else 3)
        w = edge_width_10_90(out) if with_edge else float("nan")
        kept = 100 * rim_depth(out, rim) / ref_depth if rim is not None else float("nan")
        print(f"{method:>10} {psnr(out, clean):8.2f} {w:14.2f} {kept:10.1f} {ms:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", type=Path, default=None, help="optional real tile to use as a second clean image")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    clean, rim = make_clean(rng)
    for photons, read in ((2000.0, 0.004), (400.0, 0.01)):
        noisy = add_noise(clean, photons_at_one=photons, read_sigma=read, rng=rng)
        run(clean, rim, noisy, f"synthetic {W}x{H}, Poisson {photons:.0f} e-/full scale + read noise {read}", True)
    if args.real is not None:
        img = cv2.imread(str(args.real), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise SystemExit(f"cannot read {args.real}")
        real = correct_background(img.astype(np.float32) / 255.0)
        noisy = add_noise(real, photons_at_one=400.0, read_sigma=0.01, rng=rng)
        run(real, None, noisy, f"real tile {args.real.name} ({real.shape[1]}x{real.shape[0]}) + noise", False)


if __name__ == "__main__":
    main()
