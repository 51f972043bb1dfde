"""How the pipeline holds up when the acquisition changes: the labelled real tiles (and, optionally, held-out
renderings) re-imaged with another magnification, contrast, gamma, noise, defocus or JPEG quality.

A plant's microscope is not the one that took the development tiles: its objective, camera, condenser and
compression differ. This measures the same metrics as ``python -m detection.evaluate`` (count accuracy, precision,
recall, F1 at IoU 0.3 on the real tiles / 0.5 on renderings, D50 error) on transformed copies of the same labelled
images, and says where the missed crystals went (no detection at all, or detected and then excluded: out of focus,
dust = below the minimum size, ...). Labels follow the transform (boxes and sizes scale with the image).

Transforms (name = kind + value): ``scale`` resamples the whole frame (0.5 = half the magnification; area
interpolation down, cubic up); ``contrast`` scales grey levels around the image mean; ``gamma`` maps g -> 255 (g /
255) ** v; ``noise`` adds Gaussian noise of that std (grey levels, fixed seed); ``blur`` a Gaussian of that sigma
(px: slight defocus of the whole frame); ``jpeg`` re-encodes at that quality; ``gain`` multiplies the grey levels
(exposure: above 1 the bright parts clip at white, see ``analysis.exposure``); ``rotate`` turns the frame by 90 / 180
/ 270 degrees counter-clockwise (the same crystals met in another orientation: how much the figures move without any
change in the images' content). ``none`` is the image as stored.

Run: .venv/bin/python bench/robustness.py [--detector onnx|classical ...] [--only scale0.5,contrast0.5]
     [--synthetic N] [--min-ecd PX] [--no-upscale] [--analysis-scale S]

``--only`` takes any transform written as kind + value (``scale0.55``), not only the default list.
``--no-upscale`` analyses every image in one pass at its own size (``AnalysisOptions.upscale_small=False``: no
automatic enlargement of small-crystal images); ``--analysis-scale`` sets a calibration profile's analysis scale
(``AnalysisOptions.scale``), e.g. 0.5 with ``--only scale2``.
The real tiles are only measured here, never trained on and never copied into the repository.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.pipeline import AnalysisOptions, analyze_bytes, make_detector  # noqa: E402
from detection.evaluate import (HEADER, HELD_OUT_SEED_BASE, LabelledImage, _counted, evaluate,  # noqa: E402
                                format_row, particle_boxes, real_set, synthetic_set)
from detection.metrics import box_iou, match_boxes  # noqa: E402
from ui.settings import area_from_ecd  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "real-dev"
TRANSFORMS: tuple[tuple[str, float], ...] = (
    ("none", 0), ("scale", 0.5), ("scale", 0.75), ("scale", 1.5), ("scale", 2.0), ("contrast", 0.5),
    ("contrast", 0.75), ("gamma", 0.6), ("gamma", 1.6), ("noise", 4.0), ("noise", 8.0), ("blur", 1.0), ("jpeg", 50),
)


def transform_name(kind: str, value: float) -> str:
    return kind if kind == "none" else f"{kind}{value:g}"


KINDS = ("scale", "contrast", "gamma", "noise", "blur", "jpeg", "gain", "rotate")


def parse_transform(name: str) -> tuple[str, float]:
    """``"scale0.55"`` -> ("scale", 0.55); ``"none"`` -> ("none", 0). Raises ValueError for anything else."""
    if name == "none":
        return ("none", 0)
    for kind in KINDS:
        if name.startswith(kind):
            try:
                return (kind, float(name[len(kind):]))
            except ValueError:
                break
    raise ValueError(f"unknown transform {name!r} (kind + value, e.g. scale0.5, or none)")


def transform_grey(img: np.ndarray, kind: str, value: float, *, seed: int = 0) -> np.ndarray:
    """The 8-bit grey image ``img`` re-imaged by one transform (see the module docstring); uint8 out."""
    out = img.astype(np.float32)
    if kind == "scale":
        h, w = img.shape
        size = (max(8, round(w * value)), max(8, round(h * value)))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if value < 1 else cv2.INTER_CUBIC)
    elif kind == "contrast":
        out = out.mean() + (out - out.mean()) * value
    elif kind == "gamma":
        out = 255.0 * (out / 255.0) ** value
    elif kind == "noise":
        out = out + np.random.default_rng(seed).normal(0.0, value, out.shape)
    elif kind == "gain":
        out = out * value
    elif kind == "rotate":
        out = np.ascontiguousarray(np.rot90(out, _quarter_turns(value)))
    elif kind == "blur":
        out = cv2.GaussianBlur(out, (0, 0), value)
    elif kind == "jpeg":
        ok, data = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(value)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    elif kind != "none":
        raise ValueError(f"unknown transform {kind!r}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns for a ``rotate`` transform of 90, 180 or 270 degrees."""
    if degrees not in (90, 180, 270):
        raise ValueError(f"rotate takes 90, 180 or 270 degrees, got {degrees:g}")
    return int(degrees) // 90


def _turned_boxes(boxes: np.ndarray, shape: tuple[int, int], turns: int) -> np.ndarray:
    """xyxy boxes (exclusive max) of an (H, W) image after ``turns`` counter-clockwise quarter turns."""
    h, w = shape
    for _ in range(turns):  # one turn: (x, y) -> (y, w - x); the image becomes (w, h)
        boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], axis=1)
        h, w = w, h
    return boxes


def transform_item(item: LabelledImage, kind: str, value: float, *, seed: int = 0) -> LabelledImage:
    """``item`` re-imaged, PNG-encoded (lossless, so only the transform changes the pixels), its truth following:
    boxes and ECDs scale with a ``scale`` transform, boxes turn with a ``rotate`` one; kept otherwise."""
    img = cv2.imdecode(np.frombuffer(item.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{item.name} cannot be decoded")
    out = transform_grey(img, kind, value, seed=seed)
    boxes = item.boxes.reshape(-1, 4).astype(float)
    if kind == "scale":
        boxes = boxes * np.array([out.shape[1] / img.shape[1], out.shape[0] / img.shape[0]] * 2)
    elif kind == "rotate":
        boxes = _turned_boxes(boxes, img.shape, _quarter_turns(value))
    ok, png = cv2.imencode(".png", out)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return dataclasses.replace(item, data=png.tobytes(), boxes=boxes,
                               ecd_px=item.ecd_px * (value if kind == "scale" else 1.0))


def where_misses_went(detector, items: Sequence[LabelledImage], *, iou_threshold: float,
                      options: AnalysisOptions) -> Counter:
    """For every true object no counted particle matches: the exclusion reason of the best-overlapping particle
    (IoU above ``iou_threshold``), or "no detection"."""
    out: Counter = Counter()
    for item in items:
        result = analyze_bytes(item.data, name=item.name, detector=detector, options=options, keep_cleaned=False)
        kept = _counted(result)
        kb = particle_boxes(kept)
        _, matched = match_boxes(kb, item.boxes, iou_threshold=iou_threshold)
        missed = sorted(set(range(len(item.boxes))) - set(matched))
        every = particle_boxes(result.particles)
        for j in missed:
            iou = box_iou(item.boxes[j:j + 1], every)[0] if len(every) else np.zeros(0)
            k = int(np.argmax(iou)) if iou.size else -1
            out[result.particles[k].excluded_reason or "counted, box off" if k >= 0 and iou[k] > iou_threshold
                else "no detection"] += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--detector", action="append", choices=("onnx", "classical"))
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--only", default="", help="comma-separated transform names, e.g. none,scale0.5")
    ap.add_argument("--synthetic", type=int, default=0, help="also N held-out renderings per difficulty")
    ap.add_argument("--min-ecd", type=float, default=None, help="minimum size (px ECD) instead of the default")
    ap.add_argument("--no-upscale", action="store_true", help="no automatic enlargement of small-crystal images")
    ap.add_argument("--analysis-scale", type=float, default=1.0, help="resize every image by this factor first")
    args = ap.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    try:
        transforms = [parse_transform(w) for w in wanted] if wanted else list(TRANSFORMS)
    except ValueError as e:
        ap.error(str(e))
    options = AnalysisOptions(include_border=True, upscale_small=not args.no_upscale, scale=args.analysis_scale)
    if args.min_ecd is not None:
        options = dataclasses.replace(options, exclusion=dataclasses.replace(
            options.exclusion, min_area_px=area_from_ecd(args.min_ecd)))
    sets: list[tuple[str, list[LabelledImage], float, bool]] = []
    if (args.data / "truth.json").is_file():
        sets.append(("real", real_set(args.data), 0.3, False))
    else:
        print(f"no real tiles at {args.data}; rendered sets only", file=sys.stderr)
    for k, diff in enumerate(("easy", "medium", "hard") if args.synthetic else ()):
        sets.append((diff, list(synthetic_set(args.synthetic, seed=HELD_OUT_SEED_BASE + 10_000 * k, difficulty=diff,
                                              size=(1280, 1024))), 0.5, True))
    for kind in args.detector or ["onnx"]:
        detector = make_detector(kind, model_path=args.model)
        print(f"\n{detector.label}" + (f", minimum size {args.min_ecd:g} px ECD" if args.min_ecd is not None else "")
              + (", no automatic enlargement" if args.no_upscale else "")
              + (f", analysis scale {args.analysis_scale:g}" if args.analysis_scale != 1.0 else ""))
        print(HEADER + "  misses: where they went")
        for set_name, items, iou, classes in sets:
            for t in transforms:
                moved = [transform_item(i, *t) for i in items]
                report = evaluate(detector, moved, set_name=f"{set_name} {transform_name(*t)}",
                                  iou_threshold=iou, score_classes=classes, options=options)
                misses = where_misses_went(detector, moved, iou_threshold=iou, options=options)
                print(format_row(report) + "  " + ", ".join(f"{k} {v}" for k, v in misses.most_common()),
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
