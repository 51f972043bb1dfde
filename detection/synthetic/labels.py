"""Ground truth from the owner map: per-object visible masks -> polygon, box, area, ECD; YOLO label lines;
``data.yaml``.

Truth JSON (one per image)::

    {"size": [W, H], "seed": int, "difficulty": str, "bit_depth": 8|16, "channels": 1|3,
     "counts": {class: n for every class and ignored kind}, "n_counted": int,
     "ecd_px": [ECD of each counted object, in object order],
     "objects": [{"id", "class", "counted", "box": [x_min, y_min, x_max, y_max], "area_px", "ecd_px",
                  "truncated", "polygon": [[x, y], ...], ...extra}], "render": {...}}

Boxes are full-pixel xyxy with x_max/y_max exclusive; ``area_px`` counts the visible mask's pixels and
``ecd_px = sqrt(4 * area_px / pi)``. The polygon is the outer contour of the largest visible piece through the
centres of its boundary pixels (pixel (x, y) has its centre at (x + 0.5, y + 0.5)). ``truncated`` is True when the
frame edge cuts the object. Ignored objects have ``counted`` False and their kind as ``class``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from detection.synthetic.options import (
    COUNTED_CLASSES, IGNORED_KINDS, MIMIC_CLASS, MIMIC_KINDS, MIN_COUNTED_AREA_PX,
)
from detection.synthetic.scene import ObjectRecord


def _polygon(mask: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    biggest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    if len(biggest) > 8:
        biggest = cv2.approxPolyDP(biggest, 0.7, True)
    pts = biggest.reshape(-1, 2).astype(np.float64) + [x0 + 0.5, y0 + 0.5]
    return [[round(float(x), 2), round(float(y), 2)] for x, y in pts]


def extract_objects(owner: np.ndarray, records: list[ObjectRecord]) -> list[dict]:
    """Per-object truth from the owner map (int32 (H, W); > 0 counted id, < 0 ignored id).

    Objects that own no pixel are dropped. Counted objects whose visible area is below ``MIN_COUNTED_AREA_PX``
    are demoted to ignored 'debris' (cut by the frame edge) or 'dust'. Returns dicts in record order, ids renumbered
    1..N in that order.
    """
    n_pos = max([r.oid for r in records if r.oid > 0], default=0)
    n_neg = max([-r.oid for r in records if r.oid < 0], default=0)
    index = np.where(owner > 0, owner, np.where(owner < 0, n_pos - owner, 0)).astype(np.int32)
    slices = ndimage.find_objects(index, max_label=n_pos + n_neg)
    objects: list[dict] = []
    for rec in records:
        idx = rec.oid if rec.oid > 0 else n_pos - rec.oid
        sl = slices[idx - 1]
        if sl is None:
            continue
        mask = index[sl] == idx
        area = int(mask.sum())
        counted = rec.oid > 0
        kind = rec.kind
        if counted and area < MIN_COUNTED_AREA_PX:
            counted, kind = False, ("debris" if rec.truncated else "dust")
        y0, x0 = sl[0].start, sl[1].start
        obj = {
            "id": len(objects) + 1, "class": kind, "counted": counted,
            "box": [int(x0), int(y0), int(sl[1].stop), int(sl[0].stop)], "area_px": area,
            "ecd_px": round(math.sqrt(4.0 * area / math.pi), 3), "truncated": bool(rec.truncated),
            "polygon": _polygon(mask, x0, y0),
        }
        obj.update(rec.extra)
        objects.append(obj)
    return objects


def count_objects(objects: list[dict]) -> dict[str, int]:
    """Number of objects per class (every counted class and ignored kind appears, possibly with 0)."""
    counts = {name: 0 for name in COUNTED_CLASSES + IGNORED_KINDS}
    for obj in objects:
        counts[obj["class"]] = counts.get(obj["class"], 0) + 1
    return counts


def class_names(*, mimic_class: bool) -> tuple[str, ...]:
    """YOLO class names in id order."""
    return COUNTED_CLASSES + ((MIMIC_CLASS,) if mimic_class else ())


def yolo_lines(truth: dict, *, mimic_class: bool = False, seg: bool = False) -> list[str]:
    """YOLO label lines for one image.

    Detection: ``cls xc yc w h`` normalised to [0, 1]; segmentation (``seg=True``): ``cls x1 y1 x2 y2 ...``.
    Counted objects get class 0 (crystal) or 1 (agglomerate); with ``mimic_class`` out-of-focus crystals and bubbles
    get class 2 ('mimic'); every other ignored object is left out.
    """
    w, h = truth["size"]
    lines = []
    for obj in truth["objects"]:
        if obj["counted"]:
            cls = COUNTED_CLASSES.index(obj["class"])
        elif mimic_class and obj["class"] in MIMIC_KINDS:
            cls = len(COUNTED_CLASSES)
        else:
            continue
        if seg:
            poly = obj["polygon"]
            if len(poly) < 3:
                x0, y0, x1, y1 = obj["box"]
                poly = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
            coords = " ".join(f"{min(max(x / w, 0.0), 1.0):.6f} {min(max(y / h, 0.0), 1.0):.6f}" for x, y in poly)
            lines.append(f"{cls} {coords}")
        else:
            x0, y0, x1, y1 = obj["box"]
            lines.append(f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                         f"{(y1 - y0) / h:.6f}")
    return lines


def data_yaml(path: str, names: tuple[str, ...]) -> str:
    """Text of an Ultralytics ``data.yaml`` (written by hand: no YAML library needed)."""
    quoted = path.replace("\\", "/").replace("'", "''")
    lines = [f"path: '{quoted}'", "train: images/train", "val: images/val", "test: images/test",
             f"nc: {len(names)}", "names:"]
    lines += [f"  {i}: {name}" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"
