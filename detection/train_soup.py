"""Weight interpolation between a model and its fine-tune ("model soup", WiSE-FT style; training venv only).

Usage (training venv)::

    python -m detection.train_soup --base runs/rebuilt/crystal-yolo11n-1.1.0-train.pt \\
        --tuned runs/ft9/weights/last.pt --alpha 0.5 --out runs/soup50/weights/soup.pt

Writes a checkpoint whose every floating-point parameter and BatchNorm statistic is
``(1 - alpha) * base + alpha * tuned`` (integer buffers such as BatchNorm's batch counter come from ``tuned``), and
``training.json`` beside its ``weights/`` folder: the tuned run's record with a ``soup`` entry (both sources with
their sha256, alpha), so :mod:`detection.export` writes an honest recipe into the manifest.

Why: a fine-tune on our renderings gains on renderings and loses on real micrographs (docs/model_history.md, fine-tunes
2-5). Averaging the weights of a network and its fine-tune, which share one starting point, often keeps most of the
fine-tune's gain and the starting model's robustness to images unlike the training data (Wortsman et al., "Robust
fine-tuning of zero-shot models", 2022). Whether it does here is measured, not assumed (docs/model_history.md).

The arithmetic (:func:`blend_states`) works on any mapping of arrays (numpy or torch) and is tested without torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.errors import CrystalQCError


def _is_float(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return False
    is_fp = getattr(dtype, "is_floating_point", None)  # torch
    if is_fp is not None:
        return bool(is_fp)
    return getattr(dtype, "kind", "") == "f"  # numpy


def blend_states(base: Mapping[str, Any], tuned: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """``(1 - alpha) * base + alpha * tuned`` for every floating entry; other entries (integer counters) from tuned.

    Both mappings must hold the same keys with the same shapes (the same architecture), else CrystalQCError names
    the first difference. ``alpha`` in [0, 1]: 0 = base, 1 = tuned. Floating entries come out float32, whatever
    their stored precision (ultralytics saves EMA weights in float16)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise CrystalQCError(f"alpha must lie in [0, 1], got {alpha}")
    missing = sorted(set(base) ^ set(tuned))
    if missing:
        raise CrystalQCError(f"the two models differ in their parameters (first: {missing[0]}); same architecture?")
    out: dict[str, Any] = {}
    for key, t in tuned.items():
        b = base[key]
        if tuple(b.shape) != tuple(t.shape):
            raise CrystalQCError(f"{key}: shape {tuple(b.shape)} vs {tuple(t.shape)}; same architecture?")
        if _is_float(t) and _is_float(b):
            b32 = b.float() if hasattr(b, "float") else b.astype("float32")
            t32 = t.float() if hasattr(t, "float") else t.astype("float32")
            out[key] = (1.0 - alpha) * b32 + alpha * t32
        else:
            out[key] = t
    return out


def _network(ckpt: Mapping[str, Any]) -> Any:
    model = ckpt.get("ema") or ckpt.get("model")
    if model is None:
        raise CrystalQCError("the checkpoint holds no model (neither 'ema' nor 'model')")
    return model


def soup(base_path: Path, tuned_path: Path, alpha: float, out_path: Path) -> Path:
    """Write the interpolated checkpoint to out_path and the run record beside its weights folder."""
    import copy

    import torch

    from detection.export import sha256_file
    from detection.train import RECORD_NAME, read_record, write_json_atomic

    base = torch.load(base_path, map_location="cpu", weights_only=False)
    tuned = torch.load(tuned_path, map_location="cpu", weights_only=False)
    net_b, net_t = _network(base), _network(tuned)
    mixed = copy.deepcopy(net_t).float()
    mixed.load_state_dict(blend_states(net_b.state_dict(), net_t.state_dict(), alpha))
    ckpt = {k: v for k, v in tuned.items() if k not in ("ema", "model", "optimizer", "updates")}
    ckpt.update({"model": mixed, "ema": None, "optimizer": None})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out_path)
    record = dict(read_record(tuned_path.parent.parent))
    record["soup"] = {
        "alpha": float(alpha),
        "base": {"file": base_path.name, "sha256": sha256_file(base_path)},
        "tuned": {"file": tuned_path.name, "sha256": sha256_file(tuned_path)},
        "rule": "(1 - alpha) * base + alpha * tuned, every float parameter and BatchNorm statistic",
    }
    record.pop("metrics", None)  # the tuned run's validation metrics are not the soup's
    write_json_atomic(out_path.parent.parent / RECORD_NAME, record)
    return out_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m detection.train_soup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the starting checkpoint of the fine-tune")
    ap.add_argument("--tuned", type=Path, required=True, help="the fine-tuned checkpoint")
    ap.add_argument("--alpha", type=float, required=True, help="0 = base, 1 = tuned")
    ap.add_argument("--out", type=Path, required=True, help="RUN/weights/NAME.pt")
    args = ap.parse_args(argv)
    try:
        path = soup(args.base, args.tuned, args.alpha, args.out)
    except CrystalQCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"wrote": str(path), "alpha": args.alpha}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
