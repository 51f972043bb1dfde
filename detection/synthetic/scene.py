"""Scene composition: how many of what, where, in which order, and who owns which pixel.

:func:`sample_scene` draws per-image scene numbers for a difficulty; :func:`compose` renders the float32 (H, W)
transmission image (1.0 = clear medium) and an int32 (H, W) *owner map*: pixel value k > 0 belongs to counted object
k (crystal or agglomerate), k < 0 to ignored object -k, 0 to the background. Counted objects overwrite every owner
(a crystal drawn later hides the earlier one's pixels: visible masks stay consistent with the picture), ignored
objects only take pixels that no counted object owns. Draw order: smudges, out-of-focus crystals behind the focal
plane, bubbles, edge debris, in-focus crystals and agglomerates, dust, out-of-focus crystals in front, fibres,
scratches.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from detection.synthetic import artefacts
from detection.synthetic.looks import LOOK_STYLES, TRANSLUCENT_FAINT_WEIGHT, inradius, paint_crystal, sample_look
from detection.synthetic.shapes import SHAPE_KINDS, crystal_polygon

#: Ranges per difficulty. Densities are objects per megapixel (log-uniform between the bounds).
_RANGES: dict[str, dict] = {
    "easy": dict(crystals=(3.0, 40.0), agg=(0.0, 0.04), ecd_med=(18.0, 60.0), ecd_sigma=(0.3, 0.55), cover=0.15,
                 contrast=(0.8, 1.45), touch=(0.0, 0.08), overlap=0.0, oof=(4.0, 40.0), oof_sigma=(3.0, 22.0),
                 bubbles=(0.1, 2.0), dust=(2.0, 40.0), fibres=(0.05, 0.6), scratches=(0.05, 0.8),
                 smudges=(0.1, 1.5), debris=(0.1, 1.0), styles=(7.0, 2.5, 0.3, 0.5), tilt=0.6),
    "medium": dict(crystals=(5.0, 150.0), agg=(0.02, 0.12), ecd_med=(14.0, 70.0), ecd_sigma=(0.35, 0.7), cover=0.3,
                   contrast=(0.7, 1.4), touch=(0.03, 0.25), overlap=0.15, oof=(10.0, 110.0), oof_sigma=(2.2, 26.0),
                   bubbles=(0.2, 6.0), dust=(10.0, 150.0), fibres=(0.1, 2.0), scratches=(0.1, 2.0),
                   smudges=(0.2, 4.0), debris=(0.2, 2.0), styles=(5.0, 2.5, 1.0, 1.0), tilt=0.9),
    "hard": dict(crystals=(15.0, 520.0), agg=(0.05, 0.22), ecd_med=(10.0, 80.0), ecd_sigma=(0.4, 0.85), cover=0.42,
                 contrast=(0.35, 1.25), touch=(0.1, 0.4), overlap=0.3, oof=(20.0, 180.0), oof_sigma=(2.0, 32.0),
                 bubbles=(0.5, 12.0), dust=(40.0, 400.0), fibres=(0.3, 5.0), scratches=(0.2, 3.0),
                 smudges=(1.0, 6.0), debris=(0.3, 3.0), styles=(4.0, 2.0, 1.5, 1.0), tilt=1.1),
}
_SHAPE_CONCENTRATION = (2.0, 1.5, 1.5, 0.8, 1.0, 1.0)  # aligned with SHAPE_KINDS
MIN_ECD_PX = 8.0
#: Blur that a *counted* crystal may have of its own (Gaussian sigma, px; a fraction of them): slightly off the focal
#: plane but still counted. Real in-focus crystals are softer than our first renderings (edge 10-90 % width median
#: 4.5 px on the real tiles against 3.6-3.9 px rendered, bench/realism.py), so the model must count moderately soft
#: outlines too.
COUNTED_SOFT_MAX_PX = 2.2
COUNTED_SOFT_FRACTION = 0.6
#: Least blur (sigma, px) of an out-of-focus (never counted) crystal: clearly above COUNTED_SOFT_MAX_PX, so no
#: rendered pair of crystals differs only by a blur the labels cannot justify; blurred objects on the real tiles have
#: edge widths of 7.3-22.6 px (10-90 %), i.e. sigma ~2.9-8.8 px.
OOF_MIN_SIGMA_PX = 3.0
#: blur_rule 'relative' (detection.synthetic.options.BLUR_RULES): a counted crystal's own blur goes up to
#: ECD / RELATIVE_SOFT_DIVISOR (clipped to RELATIVE_SOFT_RANGE_PX), an out-of-focus crystal's starts at
#: ECD / RELATIVE_OOF_DIVISOR (and never below OOF_MIN_SIGMA_PX); a share RELATIVE_SMALL_OOF_FRACTION of the
#: out-of-focus crystals is drawn small (ECD 0.4-0.9 x the scene median): small soft blobs that must not count, which
#: the model counted on the real tiles. Measured by ECD / edge width (~ ECD / (2.5 sqrt(1 + sigma^2)) px), a 20 px
#: crystal may then have sigma <= 2.0 (score >= 3.7) and a 60 px one sigma <= 3.5 (score >= 6.6) and still count;
#: out of focus they start at sigma 3.0 (score <= 2.5) and 8.6 (score <= 2.8).
RELATIVE_SOFT_DIVISOR = 10.0
RELATIVE_SOFT_RANGE_PX = (1.0, 3.5)
RELATIVE_OOF_DIVISOR = 7.0
RELATIVE_SMALL_OOF_FRACTION = 0.3
#: blur_rule 'large': a counted crystal's own blur goes up to max(COUNTED_SOFT_MAX_PX, ECD / LARGE_SOFT_DIVISOR), at
#: most LARGE_SOFT_MAX_PX, i.e. the fixed rule's 2.2 px up to ECD ~40 px and 4.5 px from ~80 px; out of focus and small
#: out-of-focus blobs as with 'relative'. 'relative' counted sigma 2.5-4 px on 25-40 px crystals, and the model trained
#: on it boxed more unlabelled soft ovals of that size on the real tiles (docs/model_history.md, session 14).
LARGE_SOFT_DIVISOR = 18.0
LARGE_SOFT_MAX_PX = 4.5
#: ``near_oof``: the share of out-of-focus crystals drawn *just* past the counted limit - own blur sigma uniform in [lo,
#: NEAR_OOF_SPAN x lo] with lo = max(OOF_MIN_SIGMA_PX, 1.5 x the frame blur, the counted limit for their size +
#: NEAR_OOF_MARGIN_PX), contrast kept at NEAR_OOF_KEEP, sized like the counted crystals, never a blob. The ordinary
#: out-of-focus crystals are mostly far past the limit (log-uniform sigma up to 22-32 px, half of them blobs, contrast x
#: 0.3-1.0), so the model saw few negatives near the boundary; on the real tiles its unmatched boxes were 15-40 px soft
#: but clearly visible ovals whose edges are ~30 % wider than the matched crystals' (session 15: 10-90 % edge width
#: median 7.6 vs 5.8 px at 25-40 px ECD). Measured once (share 0.4, docs/model_history.md, *Session 15*): real precision
#: up, recall down as much (the real labels count many such ovals too); not in the shipped model's recipe.
NEAR_OOF_MARGIN_PX = 0.8
NEAR_OOF_SPAN = 1.5
NEAR_OOF_KEEP = (0.8, 1.0)
NEAR_OOF_SCALE = (0.5, 1.5)
#: blur_rule 'large-tight': counted as 'large'; out of focus from just past the counted limit for every size
#: (max(OOF_MIN_SIGMA_PX, limit + NEAR_OOF_MARGIN_PX)) instead of ECD / RELATIVE_OOF_DIVISOR, which under 'large'
#: leaves a band of blur that no rendered crystal has (a 30 px crystal: counted up to 2.2 px, out of focus from 4.3 px;
#: a 60 px one: 3.3 and 8.6 px), where the real tiles' unlabelled soft ovals lie.
LARGE_RULES = ("large", "large-tight")
#: Rules whose out-of-focus blur starts at ECD / RELATIVE_OOF_DIVISOR.
SIZE_AWARE_OOF_RULES = ("relative", "large")
#: Rules that draw a share of the out-of-focus crystals small (RELATIVE_SMALL_OOF_FRACTION).
SMALL_OOF_RULES = ("relative", "large", "large-tight")


def counted_soft_max_px(ecd_px: float, blur_rule: str) -> float:
    """Most blur (sigma, px) of its own a counted crystal of this ECD may get under ``blur_rule``."""
    if blur_rule == "relative":
        return float(np.clip(ecd_px / RELATIVE_SOFT_DIVISOR, *RELATIVE_SOFT_RANGE_PX))
    if blur_rule in LARGE_RULES:
        return float(max(COUNTED_SOFT_MAX_PX, min(ecd_px / LARGE_SOFT_DIVISOR, LARGE_SOFT_MAX_PX)))
    return COUNTED_SOFT_MAX_PX


def near_oof_min_sigma_px(ecd_px: float, blur_rule: str, *, frame_sigma_px: float) -> float:
    """Least blur (sigma, px) of a crystal just out of focus (``near_oof``; every out-of-focus crystal under
    'large-tight'): past the counted limit for its size by NEAR_OOF_MARGIN_PX, 1.5 x the frame's own blur and the
    least out-of-focus blur of the fixed rule."""
    return max(OOF_MIN_SIGMA_PX, 1.5 * frame_sigma_px, counted_soft_max_px(ecd_px, blur_rule) + NEAR_OOF_MARGIN_PX)


def oof_min_sigma_px(ecd_px: float, blur_rule: str, *, scene_min_px: float, frame_sigma_px: float) -> float:
    """Least blur (sigma, px) of an out-of-focus crystal of this ECD under ``blur_rule``: the scene's lower bound,
    1.5 x the frame's own blur and OOF_MIN_SIGMA_PX, and with 'relative' or 'large' ECD / RELATIVE_OOF_DIVISOR, with
    'large-tight' the counted limit for its size + NEAR_OOF_MARGIN_PX."""
    lo = max(scene_min_px, 1.5 * frame_sigma_px, OOF_MIN_SIGMA_PX)
    if blur_rule in SIZE_AWARE_OOF_RULES:
        return max(lo, ecd_px / RELATIVE_OOF_DIVISOR)
    if blur_rule == "large-tight":
        return max(scene_min_px, near_oof_min_sigma_px(ecd_px, blur_rule, frame_sigma_px=frame_sigma_px))
    return lo


@dataclass(frozen=True)
class SceneParams:
    """Per-image scene numbers (densities per megapixel, sizes in pixels)."""

    difficulty: str
    crystals_per_mp: float
    agglomerate_frac: float
    ecd_median_px: float
    ecd_sigma: float  # sigma of ln(ECD)
    max_cover: float  # cap on the expected area fraction covered by counted objects
    shape_weights: tuple[float, ...]  # aligned with SHAPE_KINDS
    style_weights: tuple[float, ...]  # aligned with LOOK_STYLES
    contrast: tuple[float, float]
    tilt_max_rad: float
    touch_frac: float
    overlap_prob: float
    oof_per_mp: float
    oof_sigma_px: tuple[float, float]
    bubbles_per_mp: float
    dust_per_mp: float
    fibres_per_mp: float
    scratches_per_mp: float
    smudges_per_mp: float
    debris_per_mp: float

    def to_dict(self) -> dict:
        return asdict(self)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_scene(difficulty: str, rng: np.random.Generator) -> SceneParams:
    """Random scene numbers for ``difficulty`` 'easy' | 'medium' | 'hard' (validated by the caller)."""
    r = _RANGES[difficulty]
    lu = lambda key: _log_uniform(rng, *r[key])  # noqa: E731
    c_lo = rng.uniform(*r["contrast"])
    c_hi = min(r["contrast"][1], c_lo + rng.uniform(0.1, 0.6))
    return SceneParams(
        difficulty=difficulty, crystals_per_mp=lu("crystals"), agglomerate_frac=float(rng.uniform(*r["agg"])),
        ecd_median_px=lu("ecd_med"), ecd_sigma=float(rng.uniform(*r["ecd_sigma"])), max_cover=r["cover"],
        shape_weights=tuple(float(x) for x in rng.dirichlet(_SHAPE_CONCENTRATION)),
        style_weights=tuple(float(x) for x in rng.dirichlet(r["styles"])),
        contrast=(float(c_lo), float(c_hi)), tilt_max_rad=r["tilt"], touch_frac=float(rng.uniform(*r["touch"])),
        overlap_prob=r["overlap"], oof_per_mp=lu("oof"), oof_sigma_px=r["oof_sigma"], bubbles_per_mp=lu("bubbles"),
        dust_per_mp=lu("dust"), fibres_per_mp=lu("fibres"), scratches_per_mp=lu("scratches"),
        smudges_per_mp=lu("smudges"), debris_per_mp=lu("debris"))


@dataclass
class ObjectRecord:
    """One rendered object before truth extraction. ``oid`` > 0 counted, < 0 ignored (the owner-map value)."""

    oid: int
    kind: str  # 'crystal' | 'agglomerate' | one of the ignored kinds
    truncated: bool
    extra: dict = field(default_factory=dict)


@dataclass
class _Counted:
    centre: np.ndarray  # (2,)
    poly: np.ndarray  # (K, 2) outline relative to centre (convex hull for agglomerates)
    area: float  # pixels it still owns (approx.)


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.t_all = np.ones((height, width), np.float32)  # everything
        self.t_nc = np.ones((height, width), np.float32)  # everything except counted objects
        self.owner = np.zeros((height, width), np.int32)
        self.records: list[ObjectRecord] = []
        self.counted: dict[int, _Counted] = {}
        self._next_counted, self._next_ignored = 1, -1

    def clip(self, x0: int, y0: int, h: int, w: int) -> tuple[slice, slice, slice, slice] | None:
        """Image and crop slices of a crop at (x0, y0) of shape (h, w); None when it misses the image."""
        ix0, iy0 = max(0, x0), max(0, y0)
        ix1, iy1 = min(self.w, x0 + w), min(self.h, y0 + h)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return (slice(iy0, iy1), slice(ix0, ix1), slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))

    def add_ignored(self, layer: artefacts.Layer, kind: str, **extra) -> None:
        h, w = layer.factor.shape
        sl = self.clip(layer.x0, layer.y0, h, w)
        if sl is None:
            return
        iy, ix, cy, cx = sl
        factor = layer.factor[cy, cx]
        self.t_all[iy, ix] *= factor
        self.t_nc[iy, ix] *= factor
        mask = layer.mask[cy, cx]
        truncated = int(mask.sum()) < int(layer.mask.sum())
        oid = self._next_ignored
        self._next_ignored -= 1
        own = self.owner[iy, ix]
        own[mask & (own <= 0)] = oid
        self.records.append(ObjectRecord(oid, kind, truncated, extra))

    def overlap(self, centre: np.ndarray, poly: np.ndarray) -> dict[int, int]:
        """Counted owners (id -> pixels) under a rasterised outline placed at ``centre``."""
        pts = poly + centre
        x0, y0 = int(math.floor(pts[:, 0].min())), int(math.floor(pts[:, 1].min()))
        x1, y1 = int(math.ceil(pts[:, 0].max())) + 1, int(math.ceil(pts[:, 1].max())) + 1
        sl = self.clip(x0, y0, y1 - y0, x1 - x0)
        if sl is None:
            return {}
        iy, ix, cy, cx = sl
        raster = np.zeros((y1 - y0, x1 - x0), np.uint8)
        fixed = np.round((pts - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(raster, [fixed], 1, lineType=cv2.LINE_8, shift=4)
        under = self.owner[iy, ix][raster[cy, cx].astype(bool)]
        ids, counts = np.unique(under[under > 0], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    def add_counted(self, kind: str, centre: np.ndarray, parts: list[tuple[np.ndarray, object]], hull: np.ndarray,
                    rng: np.random.Generator, *, soft_px: float = 0.0, **extra) -> None:
        """Paint a crystal (one part) or an agglomerate (several parts, later parts over earlier ones).

        ``soft_px`` blurs this object a little (slightly off the focal plane but still counted); its truth mask stays
        the sharp outline.
        """
        allpts = np.concatenate([p for p, _ in parts]) + centre
        margin = 6 + int(math.ceil(2.0 * soft_px))
        x0, y0 = int(math.floor(allpts[:, 0].min())) - margin, int(math.floor(allpts[:, 1].min())) - margin
        x1, y1 = int(math.ceil(allpts[:, 0].max())) + margin, int(math.ceil(allpts[:, 1].max())) + margin
        sl = self.clip(x0, y0, y1 - y0, x1 - x0)
        if sl is None:
            return
        iy, ix, _, _ = sl
        cx0, cy0 = ix.start, iy.start
        shape = (iy.stop - iy.start, ix.stop - ix.start)
        t = np.ones(shape, np.float32)
        alpha = np.zeros(shape, np.float32)
        halo = np.ones(shape, np.float32)
        for i, (poly, look) in enumerate(parts):
            local = poly + centre - [cx0, cy0]
            tp, ap, hp = paint_crystal(local, shape, look, rng)
            if i > 0 and rng.random() < 0.3:  # translucent crossing: both outlines show
                t *= 1.0 + ap * (tp - 1.0)
            else:
                t += (tp - t) * ap
            alpha = np.maximum(alpha, ap)
            halo *= hp
        halo = np.where(alpha > 0, 1.0, halo).astype(np.float32)
        mask = alpha > 0.5  # the truth is the sharp outline, also when the picture is slightly soft
        cover, tinted = alpha, alpha * t  # premultiplied, so a slight own blur stays a proper composite
        if soft_px >= 0.25:
            cover = cv2.GaussianBlur(cover, (0, 0), soft_px, borderType=cv2.BORDER_REPLICATE)
            tinted = cv2.GaussianBlur(tinted, (0, 0), soft_px, borderType=cv2.BORDER_REPLICATE)
            halo = cv2.GaussianBlur(halo, (0, 0), soft_px, borderType=cv2.BORDER_REPLICATE)
        under_all, under_nc = self.t_all[iy, ix], self.t_nc[iy, ix]
        self.t_all[iy, ix] = (under_all * (1.0 - cover) + under_nc * tinted) * halo
        oid = self._next_counted
        self._next_counted += 1
        own = self.owner[iy, ix]
        lost = own[mask]
        for other, n in zip(*np.unique(lost[lost > 0], return_counts=True)):
            self.counted[int(other)].area -= int(n)
        own[mask] = oid
        truncated = bool(allpts[:, 0].min() < 0 or allpts[:, 1].min() < 0 or allpts[:, 0].max() > self.w
                         or allpts[:, 1].max() > self.h)
        self.records.append(ObjectRecord(oid, kind, truncated, extra))
        self.counted[oid] = _Counted(centre, hull, float(mask.sum()))


def _poisson(rng: np.random.Generator, per_mp: float, mp: float) -> int:
    return int(rng.poisson(per_mp * mp))


def _choice(rng: np.random.Generator, names: tuple[str, ...], weights: tuple[float, ...]) -> str:
    return names[int(rng.choice(len(names), p=np.asarray(weights) / sum(weights)))]


def _ecd(rng: np.random.Generator, median: float, sigma: float, max_ecd: float) -> float:
    return float(np.clip(median * math.exp(rng.normal(0.0, sigma)), MIN_ECD_PX, max_ecd))


def _crystal(rng: np.random.Generator, scene: SceneParams, ecd: float, *, style: str | None = None,
             contrast: float | None = None, angle: float | None = None, translucent: bool = False
             ) -> tuple[np.ndarray, object, str]:
    kind = _choice(rng, SHAPE_KINDS, scene.shape_weights)
    tilt = rng.uniform(0, scene.tilt_max_rad) if rng.random() < 0.5 else 0.0
    poly = crystal_polygon(kind, ecd_px=ecd, angle_rad=rng.uniform(0, 2 * math.pi) if angle is None else angle,
                           rng=rng, tilt_rad=tilt, perspective=rng.uniform(0, 0.12) if tilt else 0.0)
    style = style or _choice(rng, LOOK_STYLES, scene.style_weights)
    contrast = rng.uniform(*scene.contrast) if contrast is None else contrast
    look = sample_look(style, len(poly), inradius_px=inradius(poly), contrast=contrast, rng=rng,
                       translucent=translucent)
    return poly, look, kind


def _agglomerate_parts(rng: np.random.Generator, scene: SceneParams, ecd: float, *, translucent: bool = False
                       ) -> list[tuple[np.ndarray, object]]:
    n = int(rng.integers(2, 7))
    style = _choice(rng, LOOK_STYLES, scene.style_weights)
    contrast = rng.uniform(*scene.contrast)
    base_angle = rng.uniform(0, 2 * math.pi)
    parallel = rng.random() < 0.5
    parts: list[tuple[np.ndarray, object]] = []
    for i in range(n):
        size = max(MIN_ECD_PX, ecd * rng.uniform(0.45, 0.85))
        angle = base_angle + (rng.normal(0, 0.2) if parallel else rng.uniform(0, math.pi))
        poly, look, _ = _crystal(rng, scene, size, style=style, contrast=contrast, angle=angle,
                                 translucent=translucent)
        if i > 0:
            anchor = parts[int(rng.integers(0, len(parts)))][0]
            direction = rng.normal(size=2)
            direction /= max(1e-9, float(np.linalg.norm(direction)))
            reach = float((anchor @ direction).max() + (poly @ -direction).max())
            poly = poly + anchor.mean(axis=0) + direction * reach * rng.uniform(0.35, 0.8)
        parts.append((poly, look))
    shift = np.concatenate([p for p, _ in parts]).mean(axis=0)
    return [(p - shift, look) for p, look in parts]


def _touching_centre(canvas: _Canvas, rng: np.random.Generator, poly: np.ndarray) -> np.ndarray | None:
    """A centre where ``poly`` just touches (0-1 px gap) a random counted object, or None."""
    if not canvas.counted:
        return None
    keys = list(canvas.counted)
    anchor = canvas.counted[keys[int(rng.integers(0, len(keys)))]]
    direction = rng.normal(size=2)
    direction /= max(1e-9, float(np.linalg.norm(direction)))
    reach = float((anchor.poly @ direction).max() + (poly @ -direction).max())
    best = None
    for step in range(0, 16):
        c = anchor.centre + direction * (reach - step)
        if canvas.overlap(c, poly):
            break
        best = c
    return best


def compose(size: tuple[int, int], scene: SceneParams, rng: np.random.Generator, *,
            frame_sigma_px: float = 0.0, blur_rule: str = "fixed", near_oof: float = 0.0, looks: str = "default"
            ) -> tuple[np.ndarray, np.ndarray, list[ObjectRecord]]:
    """Render a scene. Returns (transmission float32 (H, W), owner map int32 (H, W), object records).

    ``frame_sigma_px`` is the camera's whole-frame blur: out-of-focus objects get at least 1.5x that on top, so they
    stay clearly softer than the (equally blurred) in-focus crystals. ``blur_rule``: 'fixed', 'relative', 'large' or
    'large-tight' (how much blur of its own a counted crystal may have, and from which blur a crystal is out of focus;
    module constants). ``near_oof``: share (0-1) of the out-of-focus crystals drawn just past the counted limit
    (NEAR_OOF_*); 0 draws nothing extra from ``rng``, so the images of earlier recipes stay byte for byte the same.
    ``looks``: 'default' or 'translucent' (detection.synthetic.looks, TRANSLUCENT_*; the same random draws either way).
    """
    translucent = looks == "translucent"
    if translucent:  # the scene as recorded keeps its sampled weights; only this composition uses fewer faint ones
        weights = np.array(scene.style_weights) * np.where(np.array(LOOK_STYLES) == "faint",
                                                            TRANSLUCENT_FAINT_WEIGHT, 1.0)
        scene = replace(scene, style_weights=tuple(float(x) for x in weights / weights.sum()))
    relative = blur_rule in SMALL_OOF_RULES  # a share of the out-of-focus crystals is drawn small
    w, h = size
    mp = w * h / 1e6
    canvas = _Canvas(w, h)
    max_ecd = max(MIN_ECD_PX + 1, min(0.5 * min(w, h), 360.0))
    uni = lambda: np.array([rng.uniform(0, w), rng.uniform(0, h)])  # noqa: E731

    for _ in range(_poisson(rng, scene.smudges_per_mp, mp)):
        canvas.add_ignored(artefacts.smudge_layer(centre=uni(), radius_px=rng.uniform(20, 200), rng=rng), "smudge")

    n_oof = _poisson(rng, scene.oof_per_mp, mp)
    oof_front = [rng.random() < 0.35 for _ in range(n_oof)]

    def add_oof(front: bool) -> None:
        near = near_oof > 0 and rng.random() < near_oof
        if near:
            scale = rng.uniform(*NEAR_OOF_SCALE)
        elif relative and rng.random() < RELATIVE_SMALL_OOF_FRACTION:
            scale = rng.uniform(0.4, 0.9)
        else:
            scale = rng.uniform(0.8, 2.0)
        ecd = _ecd(rng, scene.ecd_median_px * scale, scene.ecd_sigma + 0.1, min(max_ecd, 220.0))
        poly, look, kind = _crystal(rng, scene, ecd, style="bevel" if rng.random() < 0.6 else None,
                                    contrast=rng.uniform(0.6, 1.3), translucent=translucent)
        if near:
            lo = near_oof_min_sigma_px(ecd, blur_rule, frame_sigma_px=frame_sigma_px)
            sigma = rng.uniform(lo, NEAR_OOF_SPAN * lo)
            keep, glow = rng.uniform(*NEAR_OOF_KEEP), 0.0
        else:
            lo, hi = scene.oof_sigma_px
            lo = oof_min_sigma_px(ecd, blur_rule, scene_min_px=lo, frame_sigma_px=frame_sigma_px)
            sigma = _log_uniform(rng, lo, max(hi, 1.5 * lo))
            if rng.random() < 0.5:  # most defocused crystals are blobs: blur comparable to their size
                sigma = max(sigma, ecd * rng.uniform(0.08, 0.35))
            keep = rng.uniform(0.3, 1.0) * (0.7 if front else 1.0)
            glow = rng.uniform(-0.08, 0.15) if rng.random() < 0.5 else 0.0
        layer = artefacts.out_of_focus_layer(poly, look, centre=tuple(uni()), sigma_px=sigma, keep=keep,
                                             centre_glow=glow, rng=rng)
        canvas.add_ignored(layer, "out_of_focus", blur_sigma_px=round(sigma, 2), shape=kind)

    for front in oof_front:
        if not front:
            add_oof(False)
    for _ in range(_poisson(rng, scene.bubbles_per_mp, mp)):
        radius = float(np.clip(12.0 * math.exp(rng.normal(0, 0.6)), 3.0, 90.0))
        canvas.add_ignored(artefacts.bubble_layer(centre=tuple(uni()), radius_px=radius, rng=rng,
                                                  contrast=rng.uniform(0.5, 1.0)), "bubble")
    for _ in range(_poisson(rng, scene.debris_per_mp, mp)):
        radius = rng.uniform(8.0, 60.0)
        side = int(rng.integers(0, 4))
        along = rng.uniform(0, w if side < 2 else h)
        off = rng.uniform(-0.4, 0.3) * radius
        centre = [(along, off), (along, h - off), (off, along), (w - off, along)][side]
        canvas.add_ignored(artefacts.debris_layer(centre=centre, radius_px=radius, rng=rng), "debris")

    mean_area = math.pi / 4 * scene.ecd_median_px ** 2 * math.exp(2 * scene.ecd_sigma ** 2)
    n_counted = min(_poisson(rng, scene.crystals_per_mp, mp), int(scene.max_cover * w * h / mean_area) + 1)
    for _ in range(n_counted):
        ecd = _ecd(rng, scene.ecd_median_px, scene.ecd_sigma, max_ecd)
        if rng.random() < scene.agglomerate_frac:
            parts = _agglomerate_parts(rng, scene, ecd * rng.uniform(1.2, 1.8), translucent=translucent)
            hull = cv2.convexHull(np.concatenate([p for p, _ in parts]).astype(np.float32)).reshape(-1, 2)
            kind, extra = "agglomerate", {"n_parts": len(parts)}
        else:
            poly, look, shape = _crystal(rng, scene, ecd, translucent=translucent)
            parts, hull = [(poly, look)], poly
            kind, extra = "crystal", {"shape": shape}
        centre = _touching_centre(canvas, rng, hull) if rng.random() < scene.touch_frac else None
        for _try in range(6):
            if centre is None:
                centre = uni()
            under = canvas.overlap(centre, hull)
            if not under:
                break
            if rng.random() < scene.overlap_prob and all(
                    n <= 0.3 * canvas.counted[k].area for k, n in under.items()):
                break
            centre = None
        if centre is None:
            continue
        soft_max = counted_soft_max_px(ecd, blur_rule)
        soft = float(rng.uniform(0.3, soft_max)) if rng.random() < COUNTED_SOFT_FRACTION else 0.0
        canvas.add_counted(kind, centre, parts, hull, rng, soft_px=soft, **extra)

    for _ in range(_poisson(rng, scene.dust_per_mp, mp)):
        size_px = float(np.clip(2.5 * math.exp(rng.normal(0, 0.5)), 1.0, 9.0))
        canvas.add_ignored(artefacts.dust_layer(centre=tuple(uni()), size_px=size_px, rng=rng), "dust")
    for front in oof_front:
        if front:
            add_oof(True)
    for _ in range(_poisson(rng, scene.fibres_per_mp, mp)):
        canvas.add_ignored(artefacts.fibre_layer(start=tuple(uni()), length_px=rng.uniform(30, 400), rng=rng),
                           "fibre")
    for _ in range(_poisson(rng, scene.scratches_per_mp, mp)):
        length = rng.uniform(0.2, 1.2) * math.hypot(w, h)
        canvas.add_ignored(artefacts.scratch_layer(start=tuple(uni()), length_px=length, rng=rng), "scratch")
    return canvas.t_all, canvas.owner, canvas.records
