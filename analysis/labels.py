"""YOLO detection labels from an analysis result (for training data made from reviewed images).

One line per labelled object: ``<class id> <x centre> <y centre> <width> <height>``, the four numbers normalised to
the image size (0..1, six decimals), class ids in the order of ``classes`` - the format Ultralytics reads and the
synthetic generator writes (``detection.synthetic.labels.yolo_lines``).

Which particles become objects:

* every particle that is not excluded (``excluded_reason is None``) and whose class is crystal or agglomerate;
* border-touching particles ARE labelled, whatever ``include_border`` says: ``include_border`` is a counting rule
  (a crystal cut by the frame edge has an unknown size, so it may be left out of the size statistics), but the object
  is real and a detector must still find it; leaving it unlabelled would teach the model that cut crystals are
  background. The synthetic training truth does the same (cut objects are labelled unless tiny);
* excluded objects (dust, fibres, bubbles, out-of-focus or low-confidence objects) are NOT labelled: they are the
  mimics the product must not count, so in training they are background.
"""
from __future__ import annotations

from collections.abc import Sequence

from analysis.records import COUNTED_CLASSES, ImageResult

#: Class names in class-id order, as the shipped model and ``detection.train`` expect them.
CLASS_NAMES: tuple[str, ...] = COUNTED_CLASSES


def yolo_labels(result: ImageResult, *, classes: Sequence[str] = CLASS_NAMES) -> str:
    """The YOLO label file text of ``result`` (lines ending in newline; "" when nothing is labelled).

    classes: class names by id; every labelled particle's class must be among them (a counted agglomerate is never
    silently dropped: that would make it background in training).
    Boxes are the particles' integer boxes (x_max/y_max exclusive) in full-image pixels of the size in
    ``result.meta``; objects come in particle order.

    Raises:
        ValueError: ``classes`` empty or with repeats, the image size is not positive, a labelled particle's class
        is not in ``classes``, or a box lies outside the image.
    """
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct class names, got {classes!r}")
    width, height = int(result.meta.width), int(result.meta.height)
    if width <= 0 or height <= 0:
        raise ValueError(f"the image size {width} x {height} px is not positive")
    lines = []
    for p in result.particles:
        if p.excluded_reason is not None:
            continue
        if p.class_name not in classes:
            raise ValueError(f"particle {p.particle_id} is a {p.class_name!r}, which is not one of the label classes"
                             f" {list(classes)}")
        if not (0 <= p.x_min < p.x_max <= width and 0 <= p.y_min < p.y_max <= height):
            raise ValueError(f"particle {p.particle_id}: box ({p.x_min}, {p.y_min}, {p.x_max}, {p.y_max}) is not"
                             f" inside the {width} x {height} px image")
        xc, yc = (p.x_min + p.x_max) / 2 / width, (p.y_min + p.y_max) / 2 / height
        w, h = (p.x_max - p.x_min) / width, (p.y_max - p.y_min) / height
        lines.append(f"{classes.index(p.class_name)} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def data_yaml(names: Sequence[str] = CLASS_NAMES, *, images: str = "images") -> str:
    """Text of an Ultralytics ``data.yaml`` for a folder holding ``images/`` and ``labels/`` side by side.

    ``path`` is the folder of the yaml itself ('.'); train and val both point at ``images`` (a reviewed set is one
    pool: split it before training if an honest validation figure is wanted - said in the file too).
    """
    names = tuple(names)
    lines = ["# Labelled images exported from crystal QC after review (YOLO detection format).",
             "# train and val are the same images: split them before training for an honest validation figure.",
             "path: .", f"train: {images}", f"val: {images}", f"nc: {len(names)}", "names:"]
    lines += [f"  {i}: {name}" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


__all__ = ["CLASS_NAMES", "yolo_labels", "data_yaml"]
