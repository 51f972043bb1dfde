"""Can the model's own confidence say which analysis scale suits an image? (Session 13, model 1.4.1: not on real ones.)

A calibration profile's analysis scale (``AnalysisOptions.scale``) rescues images whose crystals look much larger
than the model was made for, but the QC lead has to choose it. This measures whether the model's confidence could
choose instead. Every image of each set (the real tiles and, optionally, held-out renderings, each re-imaged at
the ``--magnifications``) is analysed at its own size and resized by each ``--scales`` factor. Printed per set:

- F1 at each fixed scale (what the QC lead's setting would give);
- ``conf x``: the set's summed confidence of counted objects at that scale over the sum at its own size (what a
  "suggest a scale" helper would read from a few sample images: it works if it is above 1 where the scale's F1 is
  higher and below 1 elsewhere);
- ``rule``: F1 when each image takes the coarser result whose confidence sum exceeds the ordinary pass's by
  ``--margin`` (plus 0.5, so that a near-empty image does not switch on one object), only when the ordinary pass's
  counted median ECD is at least ``--min-ecd`` px; and how many images switched.

Run it again after a new model: one whose confidence follows the scale on the real tiles would make the rule or a
helper worth building (docs/model_history.md, *Session 13*).

Run: .venv/bin/python bench/scale_choice.py [--magnifications 1,1.5,2] [--scales 0.667] [--synthetic 6]
     [--seed 900000] [--margin 0.3] [--min-ecd 45] [--model FILE]
The real tiles are only measured here, never trained on and never copied into the repository.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.pipeline import AnalysisOptions, analyze_bytes, make_detector  # noqa: E402
from detection.evaluate import (HELD_OUT_SEED_BASE, LabelledImage, _counted, particle_boxes, real_set,  # noqa: E402
                                synthetic_set)
from detection.metrics import score_detections  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness import DEFAULT_DATA, transform_item  # noqa: E402

#: Added to the ordinary pass's confidence sum before the margin is applied (one confident object's worth).
SLACK = 0.5


@dataclass(frozen=True)
class Pass:
    """The counted objects of one image analysed at one scale."""

    boxes: np.ndarray  # (N, 4) xyxy in the image's own pixels
    confidence_sum: float
    median_ecd_px: float  # 0 when nothing is counted


def rule_choice(passes: Mapping[float, Pass], *, margin: float, min_ecd_px: float) -> float:
    """The scale the per-image rule takes: 1.0 unless the ordinary pass's counted median ECD is at least
    ``min_ecd_px`` and a coarser pass's confidence sum exceeds ``(1 + margin) * sum(1.0) + SLACK``; of several
    such, the one with the largest sum."""
    own = passes[1.0]
    if own.median_ecd_px < min_ecd_px:
        return 1.0
    bar = (1.0 + margin) * own.confidence_sum + SLACK
    better = {s: p.confidence_sum for s, p in passes.items() if s != 1.0 and p.confidence_sum > bar}
    return max(better, key=better.__getitem__) if better else 1.0


def analyse(detector, item: LabelledImage, scales: Sequence[float]) -> dict[float, Pass]:
    out = {}
    for scale in (1.0, *scales):
        result = analyze_bytes(item.data, name=item.name, detector=detector, keep_cleaned=False,
                               options=AnalysisOptions(include_border=True, scale=scale))
        kept = _counted(result)
        out[scale] = Pass(
            boxes=particle_boxes(kept),
            confidence_sum=float(sum(p.confidence for p in kept)),
            median_ecd_px=float(np.median([p.ecd_px for p in kept])) if kept else 0.0)
    return out


def f1(chosen: Sequence[Pass], items: Sequence[LabelledImage], iou: float) -> float:
    return score_detections([p.boxes for p in chosen], [i.boxes for i in items], iou_threshold=iou).f1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--magnifications", default="1,1.5,2", help="re-imaging factors of every set")
    ap.add_argument("--scales", default="0.667", help="analysis scales tried besides 1")
    ap.add_argument("--synthetic", type=int, default=0, help="also N renderings per difficulty")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE)
    ap.add_argument("--margin", type=float, default=0.3)
    ap.add_argument("--min-ecd", type=float, default=45.0)
    args = ap.parse_args(argv)
    magnifications = [float(v) for v in args.magnifications.split(",") if v]
    scales = [float(v) for v in args.scales.split(",") if v]
    if not scales or any(not 0.25 <= s < 1.0 for s in scales):
        ap.error("--scales: factors between 0.25 and 1 (coarser than the image)")
    sets: list[tuple[str, list[LabelledImage], float]] = []
    if (args.data / "truth.json").is_file():
        sets.append(("real", real_set(args.data), 0.3))
    else:
        print(f"no real tiles at {args.data}; rendered sets only", file=sys.stderr)
    for k, diff in enumerate(("easy", "medium", "hard") if args.synthetic else ()):
        sets.append((diff, list(synthetic_set(args.synthetic, seed=args.seed + 10_000 * k, difficulty=diff,
                                              size=(1280, 1024))), 0.5))
    detector = make_detector("onnx", model_path=args.model)
    print(f"{detector.label}; rule: margin {args.margin:g}, counted median ECD >= {args.min_ecd:g} px")
    print(f"{'set':<16} " + " ".join(f"{'F1 @' + format(s, 'g'):>9} {'conf x':>6}" for s in (1.0, *scales))
          + f" {'rule F1':>8} {'switched':>8}")
    for name, items, iou in sets:
        for mag in magnifications:
            moved = items if mag == 1.0 else [transform_item(i, "scale", mag) for i in items]
            passes = [analyse(detector, i, scales) for i in moved]
            own_sum = sum(p[1.0].confidence_sum for p in passes) or 1.0
            cells = [f"{f1([p[s] for p in passes], moved, iou):>9.3f} "
                     f"{sum(p[s].confidence_sum for p in passes) / own_sum:>6.2f}" for s in (1.0, *scales)]
            picks = [rule_choice(p, margin=args.margin, min_ecd_px=args.min_ecd) for p in passes]
            rule = f1([p[s] for p, s in zip(passes, picks)], moved, iou)
            switched = sum(s != 1.0 for s in picks)
            print(f"{f'{name} x{mag:g}':<16} " + " ".join(cells) + f" {rule:>8.3f} {switched:>4}/{len(picks):<3}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
