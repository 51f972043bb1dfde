"""Sample images for the repository and the README picture grid.

``python -m detection.synthetic.showcase [--samples samples] [--grid docs/synthetic_grid.png]`` writes

* ``samples/synthetic_<difficulty>_NN.jpg`` (1280x1024, JPEG quality 90) with ``.json`` truth next to each;
* ``docs/synthetic_grid.png``: 6 rendered crops with outlines coloured by class and a legend.

Deterministic: fixed seeds below.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from detection.synthetic.dataset import encode
from detection.synthetic.options import COUNTED_CLASSES
from detection.synthetic.render import render_image

#: (difficulty, seed) of the shipped samples.
SAMPLES: tuple[tuple[str, int], ...] = (("easy", 4), ("medium", 9), ("medium", 24), ("hard", 17), ("hard", 4))
#: (difficulty, seed) of the grid crops.
GRID: tuple[tuple[str, int], ...] = (("easy", 11), ("medium", 8), ("medium", 10), ("hard", 7), ("hard", 24),
                                     ("medium", 2))
#: Outline colours (BGR) per class.
COLOURS: dict[str, tuple[int, int, int]] = {
    "crystal": (60, 200, 60), "agglomerate": (230, 70, 230), "out_of_focus": (0, 150, 255),
    "bubble": (255, 200, 0), "dust": (40, 40, 235), "fibre": (40, 40, 235), "scratch": (40, 40, 235),
    "smudge": (170, 170, 170), "debris": (0, 0, 150),
}


def write_samples(folder: Path) -> list[Path]:
    """Render the sample micrographs (grey, 8 bit) and their truth JSON into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    numbers: dict[str, int] = {}
    for difficulty, seed in SAMPLES:
        numbers[difficulty] = numbers.get(difficulty, 0) + 1
        name = f"synthetic_{difficulty}_{numbers[difficulty]:02d}"
        image, truth = render_image(seed, size=(1280, 1024), difficulty=difficulty, colour="grey")
        data, _ = encode(image, "jpg", jpeg_quality=90)
        (folder / f"{name}.jpg").write_bytes(data)
        truth["file"] = f"{name}.jpg"
        (folder / f"{name}.json").write_text(json.dumps(truth, separators=(",", ":")))
        written.append(folder / f"{name}.jpg")
    return written


def _best_window(truth: dict, size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    cw, ch = crop
    best, best_score = (0, 0), -1
    for x0 in np.linspace(0, w - cw, 5).astype(int):
        for y0 in np.linspace(0, h - ch, 5).astype(int):
            score = 0
            for o in truth["objects"]:
                bx0, by0, bx1, by1 = o["box"]
                inside = bx0 >= x0 and by0 >= y0 and bx1 <= x0 + cw and by1 <= y0 + ch
                score += inside * (3 if o["counted"] else 1 if o["class"] in ("out_of_focus", "bubble") else 0)
            if score > best_score:
                best, best_score = (int(x0), int(y0)), score
    return best


def draw_outlines(image: np.ndarray, truth: dict) -> np.ndarray:
    """BGR copy of ``image`` with object polygons in their class colours: counted ones solid, ignored ones faint."""
    base = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    faint = base.copy()
    for o in truth["objects"]:
        if o["counted"] or o["class"] == "dust" or len(o["polygon"]) < 2:
            continue
        pts = np.round(np.asarray(o["polygon"]) - 0.5).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(faint, [pts], True, COLOURS[o["class"]], 1, lineType=cv2.LINE_AA)
    out = cv2.addWeighted(base, 0.5, faint, 0.5, 0.0)
    for o in truth["objects"]:
        if o["counted"] and len(o["polygon"]) >= 2:
            pts = np.round(np.asarray(o["polygon"]) - 0.5).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [pts], True, COLOURS[o["class"]], 1, lineType=cv2.LINE_AA)
    return out


def write_grid(path: Path, *, crop: tuple[int, int] = (440, 360), columns: int = 3) -> Path:
    """Render the grid picture: crops with outlines, a caption per tile and a legend strip."""
    tiles = []
    for difficulty, seed in GRID:
        image, truth = render_image(seed, size=(1280, 1024), difficulty=difficulty, colour="grey")
        x0, y0 = _best_window(truth, (1280, 1024), crop)
        full = draw_outlines(image, truth)
        tile = full[y0:y0 + crop[1], x0:x0 + crop[0]].copy()
        cv2.rectangle(tile, (0, 0), (150, 20), (255, 255, 255), -1)
        cv2.putText(tile, f"{difficulty} seed {seed}", (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        tiles.append(tile)
    gap = 4
    rows = [np.concatenate(sum([[t, np.full((crop[1], gap, 3), 255, np.uint8)] for t in tiles[r:r + columns]],
                               [])[:-1], axis=1) for r in range(0, len(tiles), columns)]
    width = rows[0].shape[1]
    body = np.concatenate(sum([[r, np.full((gap, width, 3), 255, np.uint8)] for r in rows], [])[:-1], axis=0)
    legend = np.full((30, width, 3), 255, np.uint8)
    x = 6
    entries = [(c, COLOURS[c]) for c in COUNTED_CLASSES] + [
        ("out_of_focus", COLOURS["out_of_focus"]), ("bubble", COLOURS["bubble"]),
        ("fibre/scratch", COLOURS["fibre"]), ("smudge", COLOURS["smudge"]), ("debris", COLOURS["debris"])]
    for label, colour in entries:
        counted = label in COUNTED_CLASSES
        cv2.rectangle(legend, (x, 8), (x + 22, 22), colour, 2 if counted else 1)
        text = label + (" (counted)" if counted else "")
        cv2.putText(legend, text, (x + 28, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 40 + int(cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0])
    grid = np.concatenate([body, legend], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if ok:
        path.write_bytes(buf.tobytes())
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m detection.synthetic.showcase", description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="samples")
    ap.add_argument("--grid", default="docs/synthetic_grid.png")
    args = ap.parse_args(argv)
    write_samples(Path(args.samples))
    write_grid(Path(args.grid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
