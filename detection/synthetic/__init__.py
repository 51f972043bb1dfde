"""Synthetic brightfield micrographs of translucent crystals with exact ground truth (training data of the detector).

Public API: :func:`render_image` (one image + truth dict) and :func:`write_dataset` (a YOLO dataset on disk);
command line: ``python -m detection.synthetic --help``.
"""
from detection.synthetic.options import COUNTED_CLASSES, IGNORED_KINDS, SyntheticConfigError
from detection.synthetic.dataset import write_dataset
from detection.synthetic.render import render_image

__all__ = ["COUNTED_CLASSES", "IGNORED_KINDS", "SyntheticConfigError", "render_image", "write_dataset"]
