"""Tile geometry and the merging of detections across tile seams (pure arithmetic on numpy arrays).

Tiles are full-size windows (the model input size) laid out with a fixed overlap; the last tile of a row/column is
shifted back so that it stays inside the image. An image smaller than a tile along an axis gets one tile as large as
the image along that axis (the detector pads it by letterboxing).

Seam rule (:func:`merge_tile_detections`), for detections already in full-image pixels:

1. A detection is *truncated* when its box touches (within ``edge_margin_px``) an edge of its own tile that lies
   inside the image (an interior seam), i.e. the object may continue beyond the tile. Otherwise it is *complete*.
2. Two detections from different, overlapping tiles (of the same class, unless class ids are None) are the same
   object when, clipped to the region both tiles see, their boxes agree: IoU of the clipped boxes
   >= ``iou_threshold``. Matches are joined transitively (an object across a tile corner may be seen by 4 tiles).
3. Per group: if any member is complete, the highest-scoring complete member is kept as is (a tile saw the whole
   object); otherwise the object is wider than the overlap and no tile saw it whole, so the group becomes one box:
   the union of the members' boxes, with the best member's score and class.
4. A final greedy pass (complete boxes first, then by score) removes a box whose IoU with a kept box exceeds
   ``iou_threshold``, and a truncated box lying mostly inside a kept box from another tile (intersection over its
   own area >= ``ios_threshold``), so a stray partial box inside a full box is not counted twice.

An object narrower than the overlap always lies whole inside some tile, so step 3 normally finds a complete member;
the union of step 3 handles the larger ones.

Which tiles a model runs on (:func:`plan_tiles`): a model with a fixed input size gets tiles of that size; a model
that accepts any input size (exported with dynamic height/width) gets the whole image in one pass, padded up to a
multiple of its stride, while the padded image stays within a pixel budget, and the fewest equal large tiles beyond.
"""
from __future__ import annotations

import math

import numpy as np

from detection.yolo import box_area, nms, pairwise_intersection, pairwise_iou


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((length - overlap) / step)
    starts = [i * step for i in range(n)]
    starts[-1] = length - tile  # shift the last tile back inside the image
    return sorted(set(starts))


def tile_boxes(width: int, height: int, *, tile: int | tuple[int, int], overlap: int) -> np.ndarray:
    """Tiles covering a ``width`` x ``height`` image, row by row.

    ``tile``: tile side in pixels, or (tile_height, tile_width) like a model's imgsz. ``overlap``: minimum overlap
    between neighbouring tiles in pixels (0 <= overlap < tile side; the last tile may overlap more).
    Returns int64 (T, 4) xyxy boxes (x_max/y_max exclusive), all of size min(tile, image) per axis.
    Raises ValueError for a non-positive image or tile size or an overlap outside [0, tile).
    """
    tile_h, tile_w = (tile, tile) if isinstance(tile, (int, np.integer)) else (int(tile[0]), int(tile[1]))
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if tile_w <= 0 or tile_h <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < min(tile_w, tile_h):
        raise ValueError(f"overlap must be in [0, tile size), got {overlap} for tile {tile}")
    xs = _starts(width, tile_w, overlap)
    ys = _starts(height, tile_h, overlap)
    tw, th = min(tile_w, width), min(tile_h, height)
    out = [(x, y, x + tw, y + th) for y in ys for x in xs]
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` (> 0) that is >= ``value`` (>= 1)."""
    return -(-int(value) // int(multiple)) * int(multiple)


#: Most tiles per axis :func:`plan_tiles` considers for a dynamic-size model.
MAX_GRID = 64


def plan_tiles(
    width: int,
    height: int,
    *,
    fixed_input: tuple[int, int] | None,
    stride: int,
    overlap: int,
    single_pass_max_pixels: int,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The tiles to run a model on for a ``width`` x ``height`` image, and the model input (height, width) for them.

    ``fixed_input``: the (height, width) a fixed-size model accepts, or None for a model with dynamic height/width.
    Fixed: tiles of the input size with ``overlap`` (:func:`tile_boxes`); each is padded to the input.
    Dynamic: the fewest input pixels in passes of at most ``single_pass_max_pixels`` (sizes rounded up to
    ``stride``): the whole image in one pass when it fits, else an nx x ny grid of equal tiles overlapping by at
    least ``overlap`` (e.g. 2592x1944 at 3 MP: two 1360x1944 tiles). The input is the tile size rounded up to a
    multiple of ``stride`` (padding only; pixels are never rescaled).
    Returns (int64 (T, 4) xyxy tiles, (input_height, input_width)). Raises ValueError for a non-positive size or
    stride, an overlap outside [0, tile), or a budget no grid of up to MAX_GRID x MAX_GRID tiles fits.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if fixed_input is not None:
        return tile_boxes(width, height, tile=fixed_input, overlap=overlap), (int(fixed_input[0]), int(fixed_input[1]))
    if stride <= 0 or overlap < 0:
        raise ValueError(f"stride must be positive and overlap >= 0, got {stride} and {overlap}")
    best: tuple[int, int, int] | None = None  # (total padded pixels, tile height, tile width)
    for ny in range(1, MAX_GRID + 1):
        tile_h = -(-(height + (ny - 1) * overlap) // ny)
        if ny > 1 and tile_h <= overlap:
            break
        for nx in range(1, MAX_GRID + 1):
            tile_w = -(-(width + (nx - 1) * overlap) // nx)
            if nx > 1 and tile_w <= overlap:
                break
            area = round_up(tile_h, stride) * round_up(tile_w, stride)
            if area <= single_pass_max_pixels:
                if best is None or nx * ny * area < best[0]:
                    best = (nx * ny * area, tile_h, tile_w)
                break  # more columns for this row count only add overlap
    if best is None:
        raise ValueError(f"no grid of up to {MAX_GRID}x{MAX_GRID} tiles with overlap {overlap} fits passes of "
                         f"{single_pass_max_pixels} pixels for a {width}x{height} image")
    _, tile_h, tile_w = best
    if tile_h >= height and tile_w >= width:
        tiles = np.array([[0, 0, width, height]], dtype=np.int64)
    else:
        # an axis that needs no split gets one tile as large as the image (tile_boxes clips it)
        tiles = tile_boxes(width, height, overlap=overlap,
                           tile=(max(tile_h, overlap + 1), max(tile_w, overlap + 1)))
    tile_w, tile_h = int(tiles[0, 2] - tiles[0, 0]), int(tiles[0, 3] - tiles[0, 1])
    return tiles, (round_up(tile_h, stride), round_up(tile_w, stride))


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def truncated_mask(
    boxes: np.ndarray, tile_index: np.ndarray, tiles: np.ndarray, *, edge_margin_px: float
) -> np.ndarray:
    """Bool (N,): the box touches an interior edge (one not on the image border) of its own tile."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(tiles, dtype=np.float64)[np.asarray(tile_index, dtype=np.int64)]
    if b.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    img_w, img_h = float(np.max(tiles[:, 2])), float(np.max(tiles[:, 3]))
    m = edge_margin_px
    return (
        ((t[:, 0] > 0) & (b[:, 0] <= t[:, 0] + m))
        | ((t[:, 1] > 0) & (b[:, 1] <= t[:, 1] + m))
        | ((t[:, 2] < img_w) & (b[:, 2] >= t[:, 2] - m))
        | ((t[:, 3] < img_h) & (b[:, 3] >= t[:, 3] - m))
    )


def merge_tile_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None,
    tile_index: np.ndarray,
    tiles: np.ndarray,
    *,
    iou_threshold: float,
    edge_margin_px: float,
    ios_threshold: float = 0.7,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge detections of overlapping tiles so that each object is reported once (rule in the module docstring).

    boxes: (N, 4) xyxy in full-image pixels; scores: (N,); class_ids: (N,) ints, or None for class-agnostic
    merging; tile_index: (N,) index into ``tiles`` of the tile each detection came from; tiles: (T, 4) from
    :func:`tile_boxes` (the image size is taken as the tiles' extent).
    Returns ``(keep, merged_boxes)``: int64 (K,) indices of the detections that stand for the objects, highest
    score first, and float32 (K, 4) their boxes, which differ from ``boxes[keep]`` only where truncated parts were
    joined into one box. Raises ValueError on inconsistent lengths or a tile index out of range.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ti = np.asarray(tile_index, dtype=np.int64).reshape(-1)
    tl = np.asarray(tiles, dtype=np.float64).reshape(-1, 4)
    n = b.shape[0]
    c = np.zeros(n, dtype=np.int64) if class_ids is None else np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if not (s.shape[0] == ti.shape[0] == c.shape[0] == n):
        raise ValueError("merge_tile_detections: boxes, scores, class_ids and tile_index differ in length")
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32)
    if ti.min() < 0 or ti.max() >= tl.shape[0]:
        raise ValueError("merge_tile_detections: tile_index out of range")

    truncated = truncated_mask(b, ti, tl, edge_margin_px=edge_margin_px)

    # Step 2: match detections of overlapping tile pairs inside the region both tiles see.
    parent = np.arange(n)
    pair_inter = pairwise_intersection(tl, tl)
    ta, tb = np.nonzero(np.triu(pair_inter > 0, k=1))
    for a, bt in zip(ta.tolist(), tb.tolist()):
        region = np.array(
            [max(tl[a, 0], tl[bt, 0]), max(tl[a, 1], tl[bt, 1]), min(tl[a, 2], tl[bt, 2]), min(tl[a, 3], tl[bt, 3])]
        )
        ia = np.flatnonzero(ti == a)
        ib = np.flatnonzero(ti == bt)
        if ia.size == 0 or ib.size == 0:
            continue
        ca = _clip(b[ia], region)
        cb = _clip(b[ib], region)
        inter = pairwise_intersection(ca, cb)
        union = box_area(ca)[:, None] + box_area(cb)[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        same = (iou >= iou_threshold) & (c[ia][:, None] == c[ib][None, :])
        for i, j in zip(*np.nonzero(same)):
            ri, rj = _find(parent, int(ia[i])), _find(parent, int(ib[j]))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([_find(parent, i) for i in range(n)])

    # Step 3: one representative per group; complete members first, then by score.
    order = np.lexsort((-s, truncated, roots))  # sorted by root, then complete first, then score desc
    first = np.ones(n, dtype=bool)
    first[1:] = roots[order][1:] != roots[order][:-1]
    starts = np.flatnonzero(first)
    reps = order[starts]
    sorted_boxes = b[order]
    union_boxes = np.concatenate(
        [
            np.minimum.reduceat(sorted_boxes[:, :2], starts, axis=0),
            np.maximum.reduceat(sorted_boxes[:, 2:], starts, axis=0),
        ],
        axis=1,
    )
    rep_boxes = np.where(truncated[reps][:, None], union_boxes, b[reps])
    rep_trunc = truncated[reps]

    # Step 4: greedy clean-up, complete boxes first, then by score.
    prio = np.lexsort((-s[reps], rep_trunc))
    area = box_area(rep_boxes)
    keep_local: list[int] = []
    remaining = prio
    while remaining.size:
        i = remaining[0]
        keep_local.append(int(i))
        rest = remaining[1:]
        inter = pairwise_intersection(rep_boxes[i : i + 1], rep_boxes[rest])[0]
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        ios = np.divide(inter, area[rest], out=np.zeros_like(inter), where=area[rest] > 0)
        other_tile = ti[reps[rest]] != ti[reps[i]]
        drop = (iou > iou_threshold) | (rep_trunc[rest] & other_tile & (ios >= ios_threshold))
        drop &= c[reps[rest]] == c[reps[i]]
        remaining = rest[~drop]
    keep_local_arr = np.asarray(keep_local, dtype=np.int64)
    by_score = keep_local_arr[np.argsort(-s[reps[keep_local_arr]], kind="stable")]
    return reps[by_score].astype(np.int64), rep_boxes[by_score].astype(np.float32)


def _clip(boxes: np.ndarray, region: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], region[0], region[2])
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], region[1], region[3])
    return out


def coarse_support(
    fine_boxes: np.ndarray,
    coarse_boxes: np.ndarray,
    *,
    iou_threshold: float,
    contain_fraction: float = 0.8,
    min_area_ratio: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The native-support rule of :func:`merge_scales`: ``(supported, is_part)``, bool (C,) and (F, C).

    ``is_part[i, j]``: fine box i lies mostly inside coarse box j (intersection over its own area >=
    ``contain_fraction``) and j is at least ``min_area_ratio`` times larger - i is a piece (a rim, a facet) of a
    large object. ``supported[j]``: coarse box j holds such a part, or a fine box matches it (IoU >= ``iou_threshold``).
    """
    fb, cb = np.asarray(fine_boxes).reshape(-1, 4), np.asarray(coarse_boxes).reshape(-1, 4)
    inside = pairwise_intersection(fb, cb) >= contain_fraction * np.maximum(box_area(fb), 1e-6)[:, None]
    is_part = inside & (box_area(cb)[None, :] >= min_area_ratio * box_area(fb)[:, None])
    supported = is_part.any(axis=0) | (pairwise_iou(fb, cb) >= iou_threshold).any(axis=0)
    return supported, is_part


def merge_scales(
    fine: tuple[np.ndarray, np.ndarray, np.ndarray],
    coarse: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    iou_threshold: float,
    class_agnostic: bool = True,
    contain_fraction: float = 0.8,
    min_area_ratio: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join the detections of a native-scale pass (``fine``) and a downscaled pass (``coarse``), both already in
    full-image pixels, each ``(boxes (N, 4) xyxy, scores (N,), class_ids (N,))``.

    The coarse pass is there for objects too large for the model at native scale, which sees only their parts
    (a rim, a bright facet). Rule (:func:`coarse_support`): (1) a fine box lying mostly inside a coarse box
    (intersection over its own area >= ``contain_fraction``) that is at least ``min_area_ratio`` times larger is
    such a part; (2) a coarse box is used only when the native pass supports it: it holds such a part, or a fine box
    matches it (IoU >= ``iou_threshold``). A large object in focus shows sharp parts at native scale; a large
    crystal blurred at another depth shows none (the model was trained to ignore blur), though at half scale it can
    look sharp enough to be boxed; (3) the parts inside a used coarse box are dropped, and the rest of both passes
    goes through one NMS at ``iou_threshold`` (class-agnostic unless told otherwise), so an object both passes found
    is kept once, with the higher score. Returns ``(boxes, scores, class_ids)`` highest score first (float32,
    float32, int32).
    """
    fb, fs, fc = (np.asarray(a) for a in fine)
    cb, cs, cc = (np.asarray(a) for a in coarse)
    fb, cb = fb.reshape(-1, 4), cb.reshape(-1, 4)
    supported, is_part = coarse_support(fb, cb, iou_threshold=iou_threshold, contain_fraction=contain_fraction,
                                        min_area_ratio=min_area_ratio)
    cb, cs, cc = cb[supported], cs[supported], cc[supported]
    part = is_part[:, supported].any(axis=1)
    fb, fs, fc = fb[~part], fs[~part], fc[~part]
    boxes = np.concatenate([fb, cb]).astype(np.float32)
    scores = np.concatenate([fs.reshape(-1), cs.reshape(-1)]).astype(np.float32)
    classes = np.concatenate([fc.reshape(-1), cc.reshape(-1)]).astype(np.int32)
    keep = nms(boxes, scores, iou_threshold=iou_threshold, class_ids=None if class_agnostic else classes)
    return boxes[keep], scores[keep], classes[keep]


def overlap_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection of each box of ``a`` with each box of ``b`` over the smaller of the two areas (0..1)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    smaller = np.minimum(box_area(a)[:, None], box_area(b)[None, :])
    return pairwise_intersection(a, b) / np.maximum(smaller, 1e-6)


def outside_boxes(candidates: np.ndarray, boxes: np.ndarray, *, max_overlap: float) -> np.ndarray:
    """Bool (N,): candidate boxes that overlap none of ``boxes`` by more than ``max_overlap`` of the smaller box
    (:func:`overlap_over_smaller`), i.e. that could be an object not found yet rather than a piece or a double of
    one already found."""
    cand = np.asarray(candidates).reshape(-1, 4)
    if cand.shape[0] == 0 or np.asarray(boxes).size == 0:
        return np.ones(cand.shape[0], bool)
    return overlap_over_smaller(cand, boxes).max(axis=1) <= max_overlap
