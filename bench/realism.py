"""How realistic is the synthetic renderer? Compare rendered images with the real tiles, number by number.

Usage: .venv/bin/python bench/realism.py [--real ../shared/real-dev] [--n 12] [--seed 1000]
                                         [--looks default|translucent]

Both sets go through the SAME measurements (8-bit grey, intensities as fractions of full scale):
  bg level        median grey level of the background (outside dilated labelled objects)
  bg noise        robust std (1.4826 MAD) of the high-pass (image - Gaussian sigma 2) in the background, grey levels/255
  rim contrast    1 - min of the crystal's radial profile (median intensity per 1-px distance-to-outline band,
                  divided by the local background 6-12 px outside), over the outer 8 px inside the outline
  rim width       pixels (0-15 px inside the outline) of that profile darker than half the rim contrast: the width
                  of the dark outline band (FWHM of the dip; wide for L-alanine's dark bevel facets)
  interior        median of the profile deeper than 40 % of the crystal's largest inside distance (relative to bg)
  interior lift   interior minus the rim's darkest profile value (relative to bg): how much lighter a crystal is
                  inside than at its rim; ~0 for a uniformly dark (or uniformly blurred) object
  edge 10-90 in   10-90 % width of the outer edge of labelled crystals: 1.0225 * step / (90th pct gradient in the
                  outline band), in px (exact for a Gaussian-blurred step)
  edge 10-90 blob the same for unlabelled dark blobs (background-normalised < 0.93, >= 150 px, away from labels):
                  mostly out-of-focus crystals
  blobs / MP      how many such unlabelled blobs per megapixel
  ECD             equivalent circle diameter of labelled (counted) objects, px
  count / MP      labelled (counted) objects per megapixel, per image
Cells show median [10th-90th percentile] over objects (profile/edge/ECD rows) or images (the others).
The real tiles are only measured, never used for rendering. Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detection.synthetic import render_image  # noqa: E402
from detection.synthetic.options import LOOKS  # noqa: E402


def _grey01(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)  # same 8-bit quantisation as the real JPEGs
    return img.astype(np.float32) / 255.0


def _background_field(img: np.ndarray) -> np.ndarray:
    small = cv2.resize(img, (img.shape[1] // 8, img.shape[0] // 8), interpolation=cv2.INTER_AREA)
    small = cv2.medianBlur((small * 255).astype(np.uint8), 15).astype(np.float32) / 255.0
    return cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)


def _gradient(img: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.sqrt(gx * gx + gy * gy)


def _edge_width(step: float, grad_band: np.ndarray) -> float | None:
    if grad_band.size < 8 or step <= 0.02:
        return None
    g = float(np.percentile(grad_band, 90))
    return 1.0225 * step / g if g > 1e-6 else None


def measure_image(img: np.ndarray, labels: np.ndarray) -> dict:
    """Measurements of one float32 (H, W) [0, 1] image with an int32 label map of its counted objects (0 = none)."""
    h, w = img.shape
    counted = labels > 0
    near = cv2.dilate(counted.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    bg = ~near
    hp = img - cv2.GaussianBlur(img, (0, 0), 2.0)
    vals = hp[bg]
    noise = 1.4826 * float(np.median(np.abs(vals - np.median(vals)))) if vals.size else float("nan")
    out = {"bg_level": float(np.median(img[bg])) if bg.any() else float("nan"), "bg_noise": noise * 255.0,
           "rim_contrast": [], "rim_width": [], "interior": [], "lift": [], "edge_in": [], "edge_blob": [], "ecd": [],
           "count_per_mp": 0.0, "blobs_per_mp": 0.0}
    grad = _gradient(img)
    n_obj = int(labels.max())
    n_counted = 0
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask_full = labels[sl] == k
        area = int(mask_full.sum())
        if area < 20:
            continue
        n_counted += 1
        out["ecd"].append(math.sqrt(4 * area / math.pi))
        y0, x0 = sl[0].start, sl[1].start
        y1, x1 = sl[0].stop, sl[1].stop
        if y0 == 0 or x0 == 0 or y1 == h or x1 == w or area < 80:
            continue
        pad = 14
        cy0, cx0, cy1, cx1 = max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)
        crop = img[cy0:cy1, cx0:cx1]
        m = (labels[cy0:cy1, cx0:cx1] == k).astype(np.uint8)
        others = (labels[cy0:cy1, cx0:cx1] > 0) & (m == 0)
        d_in = cv2.distanceTransform(m, cv2.DIST_L2, 5)
        d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
        signed = np.where(m > 0, d_in - 0.5, -(d_out - 0.5))
        ring = (signed <= -6) & (signed >= -12) & ~others
        if ring.sum() < 10:
            continue
        bgl = float(np.median(crop[ring]))
        if bgl <= 0.05:
            continue
        prof = {}
        for d in range(0, 16):
            sel = (signed >= d - 0.5) & (signed < d + 0.5) & (m > 0)
            if sel.sum() >= 3:
                prof[d] = float(np.median(crop[sel])) / bgl
        if len(prof) < 2:
            continue
        pmin = min(v for d, v in prof.items() if d <= 8)
        contrast = 1.0 - pmin
        out["rim_contrast"].append(contrast)
        out["rim_width"].append(sum(1 for v in prof.values() if v < 1.0 - 0.5 * contrast) if contrast > 0.03 else 0)
        deep = m.astype(bool) & (d_in >= 0.4 * float(d_in.max()))
        if deep.sum() >= 3:
            out["interior"].append(float(np.median(crop[deep])) / bgl)
            out["lift"].append(out["interior"][-1] - pmin)
        band = (np.abs(signed) <= 2.0) & ~others
        ew = _edge_width(abs(bgl - pmin * bgl), grad[cy0:cy1, cx0:cx1][band])
        if ew is not None:
            out["edge_in"].append(ew)
    mp = h * w / 1e6
    out["count_per_mp"] = n_counted / mp
    # unlabelled dark blobs (mostly out-of-focus crystals)
    norm = img / np.maximum(_background_field(img), 1e-3)
    dark = (norm < 0.93).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    near_lab = cv2.dilate(counted.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    n, lab, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    gnorm = _gradient(norm)
    blobs = 0
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area < 150 or x == 0 or y == 0 or x + bw == w or y + bh == h:
            continue
        sub = lab[y:y + bh, x:x + bw] == i
        if (near_lab[y:y + bh, x:x + bw] & sub).any():
            continue
        blobs += 1
        pad = 10
        cy0, cx0, cy1, cx1 = max(0, y - pad), max(0, x - pad), min(h, y + bh + pad), min(w, x + bw + pad)
        m = (lab[cy0:cy1, cx0:cx1] == i).astype(np.uint8)
        band = cv2.dilate(m, np.ones((5, 5), np.uint8)) > cv2.erode(m, np.ones((5, 5), np.uint8))
        step = 1.0 - float(norm[cy0:cy1, cx0:cx1][m > 0].min())
        ew = _edge_width(step, gnorm[cy0:cy1, cx0:cx1][band])
        if ew is not None:
            out["edge_blob"].append(ew)
    out["blobs_per_mp"] = blobs / mp
    out["n_labels"] = n_obj
    return out


def _real_set(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image
    pairs = []
    for jpg in sorted(folder.glob("*.jpg")):
        mask_path = jpg.with_name(jpg.stem + "_mask.png")
        if not mask_path.exists():
            continue
        img = _grey01(cv2.imread(str(jpg), cv2.IMREAD_GRAYSCALE))
        mask = np.array(Image.open(mask_path)) > 0
        _, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        pairs.append((img, lab.astype(np.int32)))
    return pairs


def _synthetic_set(difficulty: str, n: int, seed: int, size: tuple[int, int], looks: str = "default"
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i in range(n):
        img, truth = render_image(seed + i, size=size, difficulty=difficulty, looks=looks)
        lab = np.zeros((size[1], size[0]), np.int32)
        k = 0
        for obj in truth["objects"]:
            if obj["counted"] and len(obj["polygon"]) >= 3:
                k += 1
                pts = np.round((np.array(obj["polygon"]) - 0.5)).astype(np.int32).reshape(-1, 1, 2)
                cv2.fillPoly(lab, [pts], k)
        pairs.append((_grey01(img), lab))
    return pairs


def _summ(values: list[float], fmt: str = "{:.3f}") -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return "-"
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return f"{fmt.format(p50)} [{fmt.format(p10)}-{fmt.format(p90)}]"


ROWS = [("bg level (0-1)", "bg_level", "img", "{:.2f}"), ("bg noise (grey lv)", "bg_noise", "img", "{:.2f}"),
        ("rim contrast", "rim_contrast", "obj", "{:.2f}"), ("rim width px", "rim_width", "obj", "{:.0f}"),
        ("interior / bg", "interior", "obj", "{:.2f}"), ("interior lift", "lift", "obj", "{:.2f}"),
        ("edge 10-90 in px", "edge_in", "obj", "{:.1f}"),
        ("edge 10-90 blob px", "edge_blob", "obj", "{:.1f}"), ("blobs / MP", "blobs_per_mp", "img", "{:.0f}"),
        ("ECD px", "ecd", "obj", "{:.0f}"), ("count / MP", "count_per_mp", "img", "{:.0f}")]


def summarise(measures: list[dict]) -> dict[str, str]:
    cells = {}
    for _, key, level, fmt in ROWS:
        if level == "img":
            cells[key] = _summ([m[key] for m in measures], fmt)
        else:
            cells[key] = _summ([v for m in measures for v in m[key]], fmt)
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "real-dev"))
    ap.add_argument("--n", type=int, default=12, help="synthetic images per difficulty")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    ap.add_argument("--looks", default="default", choices=LOOKS, help="the renderer's crystal looks")
    args = ap.parse_args()
    columns: dict[str, dict[str, str]] = {}
    real = Path(args.real)
    size = (1112, 1000)
    if real.is_dir():
        columns["real"] = summarise([measure_image(img, lab) for img, lab in _real_set(real)])
    else:
        print(f"(no real tiles at {real}: synthetic columns only)")
    for diff in ("easy", "medium", "hard"):
        columns[diff] = summarise([measure_image(img, lab) for img, lab in _synthetic_set(diff, args.n, args.seed,
                                                                                            size, args.looks)])
    names = list(columns)
    width = max(len(c) for col in columns.values() for c in col.values()) + 2
    print(f"{'metric':22s}" + "".join(f"{n:>{width}s}" for n in names))
    for label, key, _, _ in ROWS:
        print(f"{label:22s}" + "".join(f"{columns[n][key]:>{width}s}" for n in names))
    if args.json:
        Path(args.json).write_text(json.dumps(columns, indent=1))


if __name__ == "__main__":
    main()
