"""One synthetic brightfield micrograph with exact ground truth: :func:`render_image`."""
from __future__ import annotations

import logging

import numpy as np

from detection.synthetic.camera import expose, sample_camera
from detection.synthetic.labels import count_objects, extract_objects
from detection.synthetic.options import (
    BLUR_RULES, COLOURS, DIFFICULTIES, DIFFICULTY_CHOICES, LOOKS, MIXED_WEIGHTS, SyntheticConfigError, check_choice,
    check_near_oof, check_size,
)
from detection.synthetic.scene import compose, sample_scene

logger = logging.getLogger(__name__)


def render_image(seed: int, *, size: tuple[int, int] = (1280, 1024), difficulty: str = "medium",
                 bit_depth: int = 8, colour: str = "auto", blur_rule: str = "fixed",
                 near_oof: float = 0.0, looks: str = "default") -> tuple[np.ndarray, dict]:
    """Render one micrograph and its truth; the same arguments always give the same bytes.

    seed: any non-negative int (the only source of randomness). size: (W, H) pixels, 32..8192 each.
    difficulty: 'easy' | 'medium' | 'hard' | 'mixed' ('mixed' picks one of the three from the seed).
    bit_depth: 8 -> uint8, 16 -> uint16 (full 0..65535 range). colour: 'auto' (a few images get a colour cast and come
    out BGR), 'grey' (always (H, W)) or 'bgr' (always (H, W, 3)). blur_rule: which blurred crystals count, 'fixed'
    (default), 'relative', 'large' or 'large-tight' (detection.synthetic.options.BLUR_RULES; recorded in the truth
    when not 'fixed'). near_oof: share (0-1) of the out-of-focus crystals drawn just past the counted blur limit, with
    their contrast kept (negatives near the boundary; detection.synthetic.scene, NEAR_OOF_*; recorded when not 0).
    looks: 'default' or 'translucent' (detection.synthetic.options.LOOKS; recorded when not 'default').
    Returns (image (H, W) or (H, W, 3), truth dict; see ``detection.synthetic.labels`` for its layout).
    Raises SyntheticConfigError for an out-of-range option.
    """
    w, h = check_size(size)
    check_choice(difficulty, DIFFICULTY_CHOICES, "difficulty")
    check_choice(colour, COLOURS, "colour")
    check_choice(blur_rule, BLUR_RULES, "blur_rule")
    near_oof = check_near_oof(near_oof)
    check_choice(looks, LOOKS, "looks")
    if bit_depth not in (8, 16):
        raise SyntheticConfigError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SyntheticConfigError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    level = difficulty
    if difficulty == "mixed":
        level = DIFFICULTIES[int(rng.choice(len(DIFFICULTIES), p=MIXED_WEIGHTS))]
    scene = sample_scene(level, rng)
    cam = sample_camera(level, rng, allow_colour=colour == "auto")
    if colour == "bgr" and cam.colour_gains is None:
        cam = type(cam)(**{**cam.to_dict(), "colour_gains": tuple(float(g) for g in
                                                                  1.0 + rng.uniform(-0.05, 0.05, size=3))})
    transmission, owner, records = compose((w, h), scene, rng, frame_sigma_px=cam.defocus_sigma_px, blur_rule=blur_rule,
                                         near_oof=near_oof, looks=looks)
    image = expose(transmission, cam, rng, bit_depth=bit_depth)
    objects = extract_objects(owner, records)
    counted = [o for o in objects if o["counted"]]
    truth = {
        "size": [w, h], "seed": int(seed), "difficulty": level, "bit_depth": bit_depth,
        "channels": 1 if image.ndim == 2 else 3, "counts": count_objects(objects), "n_counted": len(counted),
        "ecd_px": [o["ecd_px"] for o in counted], "objects": objects,
        "render": {"scene": scene.to_dict(), "camera": cam.to_dict()},
    }
    if blur_rule != "fixed":  # the default's truth stays byte for byte as before
        truth["blur_rule"] = blur_rule
    if near_oof:
        truth["near_oof"] = near_oof
    if looks != "default":
        truth["looks"] = looks
    logger.debug("rendered seed %d (%s): %d counted, %d objects", seed, level, len(counted), len(objects))
    return image, truth
