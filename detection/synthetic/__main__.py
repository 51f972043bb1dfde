"""Render a synthetic YOLO training set of brightfield crystal micrographs.

Usage::

    python -m detection.synthetic --out DIR --n N --seed S [--size WxH] [--split 0.8,0.1,0.1]
        [--difficulty easy|medium|hard|mixed] [--format png|jpg|png16|mixed] [--workers K] [--seg] [--mimic-class]
        [--blur-rule fixed|relative|large|large-tight] [--near-oof F]
        [--looks default|translucent]

--out DIR         output folder (created): images/, labels/, truth/ per split, data.yaml, dataset.json
--n N             number of images
--seed S          dataset seed; image i uses a seed derived from (S, i): same S -> same bytes, any --workers
--size WxH        image size in pixels (default 640x640 training crops; cameras give 1280x1024, 2592x1944)
--split a,b,c     train, val, test fractions (default 0.8,0.1,0.1), assigned by image index
--difficulty      easy | medium | hard | mixed (default mixed: 25 % easy, 45 % medium, 30 % hard)
--format          png (8 bit) | jpg | png16 (16 bit) | mixed (default png)
--workers K       processes (default 1)
--seg             YOLO segmentation polygons instead of boxes
--mimic-class     label out-of-focus crystals and bubbles as class 2 'mimic' (default: left out)
--blur-rule       fixed (default): a counted crystal's own blur and an out-of-focus crystal's least blur are fixed
                  sigmas; relative: both grow with the crystal's size (detection.synthetic.scene, RELATIVE_*);
                  large: the fixed limit up to ~40 px, growing above (LARGE_*); large-tight: counted as large,
                  out of focus from just past that limit at every size
--near-oof F      share (0-1, default 0) of the out-of-focus crystals drawn just past the counted blur limit with
                  their contrast kept: negatives near the boundary (NEAR_OOF_*)
--looks           default | translucent: bevel crystals keep a light inner facet, faint ones are rarer (TRANSLUCENT_*)

Classes: 0 crystal, 1 agglomerate (2 mimic with --mimic-class). Out-of-focus crystals, bubbles, dust, fibres,
scratches, smudges and edge debris are rendered but never labelled as countable; they are listed, with their kind,
in truth/<split>/<name>.json.
"""
from __future__ import annotations

import argparse
import logging
import sys

from detection.synthetic.dataset import write_dataset
from detection.synthetic.options import (
    BLUR_RULES, DIFFICULTY_CHOICES, FORMATS, LOOKS, SyntheticConfigError, parse_size, parse_split,
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m detection.synthetic",
                                 description="Render a synthetic YOLO dataset of crystal micrographs.")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--n", type=int, required=True, help="number of images")
    ap.add_argument("--seed", type=int, required=True, help="dataset seed")
    ap.add_argument("--size", default="640x640", help="WxH in pixels (default 640x640)")
    ap.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions")
    ap.add_argument("--difficulty", default="mixed", choices=DIFFICULTY_CHOICES)
    ap.add_argument("--format", default="png", choices=FORMATS, dest="fmt")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seg", action="store_true", help="write YOLO segmentation polygons")
    ap.add_argument("--mimic-class", action="store_true", help="label out-of-focus crystals and bubbles as class 2")
    ap.add_argument("--blur-rule", default="fixed", choices=BLUR_RULES,
                    help="which blurred crystals count: fixed sigma limits, limits relative to the crystal's size, "
                         "the fixed limit growing only for large crystals, or that with out of focus just past it")
    ap.add_argument("--near-oof", type=float, default=0.0,
                    help="share (0-1) of out-of-focus crystals drawn just past the counted blur limit")
    ap.add_argument("--looks", default="default", choices=LOOKS,
                    help="default, or translucent: bevel crystals keep a light inner facet and faint ones are rarer")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def bar(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    try:
        summary = write_dataset(args.out, n=args.n, seed=args.seed, size=parse_size(args.size),
                                split=parse_split(args.split), difficulty=args.difficulty, fmt=args.fmt,
                                workers=args.workers, seg=args.seg, mimic_class=args.mimic_class, blur_rule=args.blur_rule,
                                near_oof=args.near_oof, looks=args.looks, progress=None if args.quiet else bar)
    except SyntheticConfigError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    counted = sum(summary["counts"].get(k, 0) for k in ("crystal", "agglomerate"))
    sys.stdout.write(f"wrote {summary['n']} images ({summary['images_per_split']}) with {counted} counted objects "
                     f"to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
