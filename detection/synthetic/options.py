"""Names, choices and argument checks shared by the synthetic generator's modules."""
from __future__ import annotations

from analysis.errors import CrystalQCError

#: Counted classes, in YOLO class-id order (0 crystal, 1 agglomerate).
COUNTED_CLASSES: tuple[str, ...] = ("crystal", "agglomerate")
#: Kinds of objects that are rendered and recorded in the truth but never counted.
IGNORED_KINDS: tuple[str, ...] = ("out_of_focus", "bubble", "dust", "fibre", "scratch", "smudge", "debris")
#: Extra YOLO class (id 2) for look-alikes when the caller asks for it (``mimic_class=True``).
MIMIC_CLASS = "mimic"
MIMIC_KINDS: tuple[str, ...] = ("out_of_focus", "bubble")
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
DIFFICULTY_CHOICES: tuple[str, ...] = DIFFICULTIES + ("mixed",)
#: Probabilities of easy / medium / hard when ``difficulty='mixed'``.
MIXED_WEIGHTS: tuple[float, ...] = (0.25, 0.45, 0.30)
FORMATS: tuple[str, ...] = ("png", "jpg", "png16", "mixed")
#: Probabilities of png / jpg / png16 when ``fmt='mixed'``.
MIXED_FORMAT_WEIGHTS: tuple[float, ...] = (0.4, 0.45, 0.15)
COLOURS: tuple[str, ...] = ("auto", "grey", "bgr")
#: Which blurred crystals count (``blur_rule``): 'fixed' - a crystal's own blur up to a fixed sigma counts, from a
#: larger fixed sigma on it is out of focus, whatever its size; 'relative' - the limits grow with the crystal's size
#: (blur small against the crystal counts, as the focus rule of analysis.exclude and the real tiles' labels judge it);
#: 'large' - the fixed limit for crystals up to ~40 px, growing only above (large soft crystals count, small soft blobs
#: do not: what the session-14 error analysis of the real tiles found; detection.synthetic.scene, LARGE_*).
#: 'large-tight' - counted as 'large', out of focus from just past that limit at every size (scene.py).
BLUR_RULES: tuple[str, ...] = ("fixed", "relative", "large", "large-tight")
#: How crystals look (``looks``): 'default' - every style as drawn so far; 'translucent' - bevel crystals keep a light
#: inner facet and faint crystals are rarer, as on the real tiles (detection.synthetic.looks, TRANSLUCENT_*).
LOOKS: tuple[str, ...] = ("default", "translucent")
#: Smallest visible area (pixels) of a counted object; smaller visible remains become 'dust' (or 'debris' at the edge).
MIN_COUNTED_AREA_PX = 20
MIN_SIZE_PX = 32
MAX_SIZE_PX = 8192


class SyntheticConfigError(CrystalQCError, ValueError):
    """A generator option is out of range (image size, difficulty, split, format, ...)."""


def check_near_oof(near_oof: float) -> float:
    """Validate the share of just-out-of-focus crystals (0-1); returns it as a float."""
    try:
        value = float(near_oof)
    except (TypeError, ValueError):
        raise SyntheticConfigError(f"near_oof must be a number from 0 to 1, got {near_oof!r}") from None
    if not 0.0 <= value <= 1.0:
        raise SyntheticConfigError(f"near_oof must be a number from 0 to 1, got {near_oof!r}")
    return value


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate an image size (W, H) in pixels; returns it as a tuple of ints."""
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError) as e:
        raise SyntheticConfigError(f"size must be (width, height) in pixels, got {size!r}") from e
    if not (MIN_SIZE_PX <= w <= MAX_SIZE_PX and MIN_SIZE_PX <= h <= MAX_SIZE_PX):
        raise SyntheticConfigError(
            f"image size {w}x{h} is out of range: width and height must be {MIN_SIZE_PX}..{MAX_SIZE_PX} pixels")
    return w, h


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise SyntheticConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WxH' (e.g. '640x640') into (W, H)."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise SyntheticConfigError(f"size must look like 1280x1024 (width x height), got {text!r}")
    return check_size((int(parts[0]), int(parts[1])))


def parse_split(text_or_seq: str | tuple[float, ...]) -> tuple[float, float, float]:
    """Parse '0.8,0.1,0.1' (train, val, test fractions, each >= 0, summing to 1 within 1e-6)."""
    try:
        if isinstance(text_or_seq, str):
            parts = tuple(float(p) for p in text_or_seq.split(","))
        else:
            parts = tuple(float(p) for p in text_or_seq)
    except (TypeError, ValueError) as e:
        raise SyntheticConfigError(f"split must be three fractions like 0.8,0.1,0.1; got {text_or_seq!r}") from e
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise SyntheticConfigError(
            f"split must be three non-negative fractions (train, val, test) that sum to 1; got {text_or_seq!r}")
    return parts  # type: ignore[return-value]
