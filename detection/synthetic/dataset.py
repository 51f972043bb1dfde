"""Write a YOLO dataset of synthetic micrographs: :func:`write_dataset`.

Layout under ``out_dir``::

    images/{train,val,test}/syn_000000.png|jpg     the rendered images
    labels/{train,val,test}/syn_000000.txt         YOLO labels (class xc yc w h, normalised; polygons with seg)
    truth/{train,val,test}/syn_000000.json         full ground truth (see detection.synthetic.labels)
    data.yaml                                      path, train, val, test, nc, names
    dataset.json                                   generator options and total counts

Image i gets the seed ``image_seed(seed, i)`` (derived from both), so the bytes of each file depend only on
(seed, i, options), never on the number of workers or the order in which they finish. The split is by index: the
first round(n * train) images are train, the next round(n * val) val, the rest test.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from detection.synthetic.labels import class_names, data_yaml, yolo_lines
from detection.synthetic.options import (
    BLUR_RULES, DIFFICULTY_CHOICES, FORMATS, LOOKS, MIXED_FORMAT_WEIGHTS, SyntheticConfigError, check_choice,
    check_near_oof, check_size, parse_split,
)
from detection.synthetic.render import render_image

logger = logging.getLogger(__name__)
SPLITS: tuple[str, ...] = ("train", "val", "test")
_FILE_FORMATS = ("png", "jpg", "png16")


def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of a dataset made with ``seed`` (a 63-bit int from numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def split_of(index: int, n: int, split: tuple[float, float, float]) -> str:
    """Which split image ``index`` of ``n`` falls into (by index order)."""
    n_train = int(round(n * split[0]))
    n_val = int(round(n * split[1]))
    if index < n_train:
        return "train"
    return "val" if index < n_train + n_val else "test"


def encode(image: np.ndarray, file_format: str, *, jpeg_quality: int = 92) -> tuple[bytes, str]:
    """Encode an image as 'png' (8 or 16 bit as given), 'png16' (16-bit PNG) or 'jpg'. Returns (bytes, extension)."""
    check_choice(file_format, _FILE_FORMATS, "file format")
    if file_format == "jpg":
        if image.dtype != np.uint8:
            image = np.round(image / 257.0).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        ext = "jpg"
    else:
        if file_format == "png16" and image.dtype != np.uint16:
            image = image.astype(np.uint16) * 257
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        ext = "png"
    if not ok:
        raise SyntheticConfigError(f"OpenCV could not encode a {file_format} image of shape {image.shape}")
    return buf.tobytes(), ext


def _render_one(job: tuple) -> tuple[int, str, dict[str, int]]:
    index, seed, out, size, difficulty, fmt, split, seg, mimic, blur_rule, near_oof, looks = job
    s = image_seed(seed, index)
    pick = np.random.default_rng([s, 7])  # file-level choices, independent of the image's own stream
    file_format = fmt
    if fmt == "mixed":
        file_format = _FILE_FORMATS[int(pick.choice(3, p=MIXED_FORMAT_WEIGHTS))]
    quality = int(pick.integers(75, 98))
    image, truth = render_image(s, size=size, difficulty=difficulty, bit_depth=16 if file_format == "png16" else 8,
                                blur_rule=blur_rule, near_oof=near_oof, looks=looks)
    data, ext = encode(image, file_format, jpeg_quality=quality)
    name = f"syn_{index:06d}"
    subset = split_of(index, *split)
    truth.update({"index": index, "file": f"images/{subset}/{name}.{ext}", "file_format": file_format,
                  "file_jpeg_quality": quality if file_format == "jpg" else None})
    root = Path(out)
    (root / "images" / subset / f"{name}.{ext}").write_bytes(data)
    lines = yolo_lines(truth, mimic_class=mimic, seg=seg)
    (root / "labels" / subset / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    (root / "truth" / subset / f"{name}.json").write_text(json.dumps(truth, separators=(",", ":")))
    return index, subset, truth["counts"]


def _worker_init() -> None:
    cv2.setNumThreads(1)


def write_dataset(out_dir: str | os.PathLike, *, n: int, seed: int, size: tuple[int, int] = (640, 640),
                  split: tuple[float, float, float] | str = (0.8, 0.1, 0.1), difficulty: str = "mixed",
                  fmt: str = "png", workers: int = 1, seg: bool = False, mimic_class: bool = False,
                  blur_rule: str = "fixed", near_oof: float = 0.0, looks: str = "default",
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Render ``n`` images with labels into ``out_dir`` (created if needed) and return a summary dict.

    size: (W, H) of every image. split: train/val/test fractions. difficulty: 'easy' | 'medium' | 'hard' | 'mixed'.
    fmt: 'png' | 'jpg' | 'png16' | 'mixed'. workers: processes (1 = in this process). seg: YOLO polygons instead of
    boxes. mimic_class: out-of-focus crystals and bubbles as class 2 'mimic'. blur_rule: which blurred crystals count
    (detection.synthetic.options.BLUR_RULES, see detection.synthetic.render.render_image). near_oof: share of the
    out-of-focus crystals drawn just past the counted blur limit (render_image). looks: 'default' or 'translucent'
    (render_image). progress(done, total) is called after
    every image. Raises SyntheticConfigError for bad options (n < 1, unknown choices, bad split or size) and when
    ``out_dir/images`` already holds files (old and new images must not mix).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise SyntheticConfigError(f"n (number of images) must be a positive integer, got {n!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise SyntheticConfigError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SyntheticConfigError(f"seed must be a non-negative integer, got {seed!r}")
    size = check_size(size)
    fractions = parse_split(split)
    check_choice(difficulty, DIFFICULTY_CHOICES, "difficulty")
    check_choice(fmt, FORMATS, "format")
    check_choice(blur_rule, BLUR_RULES, "blur_rule")
    near_oof = check_near_oof(near_oof)
    check_choice(looks, LOOKS, "looks")
    root = Path(out_dir).resolve()
    if (root / "images").is_dir() and any(p.is_file() for p in (root / "images").rglob("*")):
        raise SyntheticConfigError(f"{root} already holds a dataset (images/ is not empty); choose an empty or new "
                                   "folder so old and new images do not mix")
    for sub in ("images", "labels", "truth"):
        for subset in SPLITS:
            (root / sub / subset).mkdir(parents=True, exist_ok=True)
    names = class_names(mimic_class=mimic_class)
    jobs = [(i, int(seed), str(root), size, difficulty, fmt, (n, fractions), seg, mimic_class, blur_rule, near_oof,
             looks) for i in range(n)]
    totals: dict[str, int] = {}
    per_split = {s: 0 for s in SPLITS}

    def collect(result: tuple[int, str, dict[str, int]], done: int) -> None:
        _, subset, counts = result
        per_split[subset] += 1
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        if progress is not None:
            progress(done, n)

    if workers == 1:
        for done, job in enumerate(jobs, start=1):
            collect(_render_one(job), done)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx, initializer=_worker_init) as pool:
            for done, result in enumerate(pool.map(_render_one, jobs, chunksize=4), start=1):
                collect(result, done)
    (root / "data.yaml").write_text(data_yaml(str(root), names))
    summary = {"generator": "detection.synthetic", "n": int(n), "seed": int(seed), "size": list(size),
               "split": list(fractions), "difficulty": difficulty, "format": fmt, "seg": bool(seg),
               "mimic_class": bool(mimic_class), "blur_rule": blur_rule, "near_oof": near_oof, "looks": looks,
               "names": list(names),
               "images_per_split": per_split, "counts": totals}
    (root / "dataset.json").write_text(json.dumps(summary, indent=1))
    logger.info("wrote %d synthetic images to %s", n, root)
    return summary
