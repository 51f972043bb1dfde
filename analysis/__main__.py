"""Batch CLI: analyse image files or folders and write particles.csv and summary.csv.

    python -m analysis PATH... --out DIR [--pixel-size-um F] [--detector auto|onnx|classical] [--model FILE]
                       [--include-border] [--overlays]

Exit status: 0 all images analysed; 1 at least one image failed (each reported by name on stderr, the rest are still
written); 2 usage error (bad arguments, no images found, detector unavailable).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from analysis.errors import CrystalQCError
from analysis.overlay import render_overlay
from analysis.io import encode_png
from analysis.pipeline import DETECTOR_CHOICES, AnalysisOptions, analyze_many, make_detector
from analysis.report import particles_table, summary_table, to_csv_bytes

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def collect_images(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (folders: image suffixes only, sorted, not recursive). Returns (files, problems)."""
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{p}: folder holds no PNG/JPEG/TIFF/BMP images")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems


def display_names(files: Sequence[Path]) -> list[str]:
    """File names as they appear in the CSVs: the bare name, or the path as given when two files share a name."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f.name] = counts.get(f.name, 0) + 1
    return [f.name if counts[f.name] == 1 else str(f) for f in files]


def _progress_bar(done: int, total: int, name: str) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:40]:<40}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of µm per pixel")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    ap.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    ap.add_argument("--pixel-size-um", type=_positive_float, default=None, help="calibration: µm per pixel")
    ap.add_argument("--detector", choices=DETECTOR_CHOICES, default="auto",
                    help="auto = shipped ONNX model when present, else classical")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model file (for --detector onnx/auto)")
    ap.add_argument("--include-border", action="store_true", help="count particles touching the image border")
    ap.add_argument("--overlays", action="store_true", help="also write <image>_overlay.png per image")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    options = AnalysisOptions(pixel_size_um=args.pixel_size_um, include_border=args.include_border)
    try:
        detector = make_detector(args.detector, model_path=args.model, options=options)
    except CrystalQCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files, problems = collect_images(args.paths)
    for msg in problems:
        print(f"error: {msg}", file=sys.stderr)
    if not files:
        print("error: no images to analyse", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"analysing {len(files)} image(s) with the {detector.label} detector", file=sys.stderr)
    items = list(zip(display_names(files), (f.read_bytes for f in files)))
    results, failures = analyze_many(items, detector=detector, options=options, keep_cleaned=args.overlays,
                                     progress=_progress_bar)
    for name, msg in failures:
        print(f"error: {name}: {msg} (skipped)", file=sys.stderr)
    for r in results:
        for note in r.meta.notes:  # also in summary.csv, column "notes"
            print(f"note: {r.name}: {note}", file=sys.stderr)
    (args.out / "particles.csv").write_bytes(to_csv_bytes(particles_table(results)))
    (args.out / "summary.csv").write_bytes(to_csv_bytes(summary_table(results)))
    if args.overlays:
        for r in results:
            png = encode_png(render_overlay(r.cleaned, r.particles, include_border=r.include_border))
            stem = Path(r.name).stem if Path(r.name).name == r.name else r.name.replace("/", "_").rsplit(".", 1)[0]
            (args.out / f"{stem}_overlay.png").write_bytes(png)
    n_ok = len(results)
    print(f"done: {n_ok} analysed, {len(failures) + len(problems)} failed; wrote {args.out}/particles.csv and "
          f"summary.csv", file=sys.stderr)
    return 1 if (failures or problems) else 0


if __name__ == "__main__":
    sys.exit(main())
