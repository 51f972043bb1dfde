"""Crystal outlines: convex polygons in continuous pixel coordinates.

Every polygon is a float64 array of shape (K, 3 <= K <= 16, 2) holding (x, y) vertices in counter-clockwise order
(in image coordinates, y pointing down, "counter-clockwise" means positive shoelace area), convex, centred on the
origin unless translated. Sizes are given as the equivalent circle diameter ``ecd_px`` of the polygon area
(area = pi / 4 * ecd_px**2). Pure geometry: no images, no randomness beyond the ``rng`` passed in.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

#: Crystal habits the renderer draws (all convex).
SHAPE_KINDS: tuple[str, ...] = ("prism", "rhomb", "hex_plate", "rod", "fragment", "octagon")


def polygon_area(poly: np.ndarray) -> float:
    """Signed shoelace area of a (K, 2) polygon; positive for counter-clockwise vertex order (y down)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _normalise(poly: np.ndarray) -> np.ndarray:
    """Convex hull, counter-clockwise order, centroid at the origin, no repeated vertices."""
    hull = cv2.convexHull(poly.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if polygon_area(hull) < 0:
        hull = hull[::-1]
    keep = np.linalg.norm(hull - np.roll(hull, 1, axis=0), axis=1) > 1e-6
    hull = hull[keep]
    return hull - hull.mean(axis=0)


def _unit_prism(rng: np.random.Generator) -> np.ndarray:
    """Elongated hexagon (L-alanine prism): a rectangle with pointed, possibly off-centre ends."""
    length = rng.uniform(1.0, 3.2)
    half_w = 0.5
    tip = rng.uniform(0.05, 0.6)
    y1, y2 = rng.uniform(-0.25, 0.25, size=2)
    return np.array([[-length / 2, -half_w], [length / 2, -half_w], [length / 2 + tip, y1],
                     [length / 2, half_w], [-length / 2, half_w], [-length / 2 - tip, y2]])


def _unit_rhomb(rng: np.random.Generator) -> np.ndarray:
    """Parallelogram/rhomb with acute angle 40-85 degrees; acute corners sometimes truncated."""
    a, b = 1.0, rng.uniform(0.45, 1.0)
    theta = math.radians(rng.uniform(40.0, 85.0))
    u, v = np.array([a, 0.0]), b * np.array([math.cos(theta), math.sin(theta)])
    pts = np.array([[0.0, 0.0], u, u + v, v])
    if rng.random() < 0.35:  # cut the two acute corners (0 and u + v)
        cut = rng.uniform(0.08, 0.25)
        pts = np.array([cut * u, u, u + (1 - cut) * v, u + v - cut * u, v, cut * v])
    return pts


def _unit_hex_plate(rng: np.random.Generator) -> np.ndarray:
    angles = np.arange(6) * (math.pi / 3) + rng.uniform(-0.1, 0.1, size=6)
    radii = 1.0 + rng.uniform(-0.12, 0.12, size=6)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    pts[:, 0] *= rng.uniform(1.0, 1.9)
    return pts


def _unit_rod(rng: np.random.Generator) -> np.ndarray:
    """Long rod or needle, aspect 4-14, with flat or pointed ends."""
    length = rng.uniform(4.0, 14.0)
    tip = rng.uniform(0.0, 1.2) if rng.random() < 0.6 else 0.0
    h = 0.5
    if tip == 0.0:
        return np.array([[-length / 2, -h], [length / 2, -h], [length / 2, h], [-length / 2, h]])
    return np.array([[-length / 2, -h], [length / 2, -h], [length / 2 + tip, 0.0],
                     [length / 2, h], [-length / 2, h], [-length / 2 - tip, 0.0]])


def _unit_fragment(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 12))
    ang = rng.uniform(0, 2 * math.pi, size=n)
    rad = np.sqrt(rng.uniform(0.35, 1.0, size=n))
    pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
    pts[:, 0] *= rng.uniform(1.0, 2.5)
    return pts


def _unit_octagon(rng: np.random.Generator) -> np.ndarray:
    """Rectangle with all four corners cut (bipyramid seen from above)."""
    w, h = rng.uniform(1.0, 1.8), 1.0
    cx, cy = rng.uniform(0.1, 0.35) * w, rng.uniform(0.1, 0.35) * h
    return np.array([[-w / 2 + cx, -h / 2], [w / 2 - cx, -h / 2], [w / 2, -h / 2 + cy], [w / 2, h / 2 - cy],
                     [w / 2 - cx, h / 2], [-w / 2 + cx, h / 2], [-w / 2, h / 2 - cy], [-w / 2, -h / 2 + cy]])


_MAKERS = {"prism": _unit_prism, "rhomb": _unit_rhomb, "hex_plate": _unit_hex_plate, "rod": _unit_rod,
           "fragment": _unit_fragment, "octagon": _unit_octagon}


def tilt_polygon(poly: np.ndarray, *, tilt_rad: float, axis_rad: float, perspective: float) -> np.ndarray:
    """Foreshorten a centred polygon as if tilted by ``tilt_rad`` about an in-plane axis at ``axis_rad``.

    ``perspective`` (0 .. ~0.15, dimensionless) adds a mild projective keystone along the tilt direction; small values
    keep the polygon convex. Returns a new (K, 2) array.
    """
    c, s = math.cos(axis_rad), math.sin(axis_rad)
    rot = np.array([[c, -s], [s, c]])
    local = poly @ rot  # coordinates along (axis, normal)
    local[:, 1] *= math.cos(tilt_rad)
    if perspective:
        extent = max(float(np.abs(local[:, 1]).max()), 1e-9)
        local = local / (1.0 + perspective * local[:, 1:2] / extent)
    return local @ rot.T


def crystal_polygon(kind: str, *, ecd_px: float, angle_rad: float, rng: np.random.Generator,
                    tilt_rad: float = 0.0, perspective: float = 0.0) -> np.ndarray:
    """Random convex outline of one crystal habit, centred on the origin.

    kind: one of :data:`SHAPE_KINDS`. ecd_px: target equivalent circle diameter (> 0) in pixels.
    Returns float64 (K, 2), counter-clockwise, area = pi/4 * ecd_px**2. Raises ValueError for an unknown kind or a
    non-positive size.
    """
    if kind not in _MAKERS:
        raise ValueError(f"unknown crystal shape {kind!r}; expected one of {', '.join(SHAPE_KINDS)}")
    if not ecd_px > 0:
        raise ValueError(f"ecd_px must be > 0, got {ecd_px}")
    poly = _normalise(_MAKERS[kind](rng))
    if tilt_rad or perspective:
        poly = _normalise(tilt_polygon(poly, tilt_rad=tilt_rad, axis_rad=rng.uniform(0, math.pi),
                                       perspective=perspective))
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    poly = poly @ np.array([[c, s], [-s, c]])
    target = math.pi / 4.0 * ecd_px * ecd_px
    return poly * math.sqrt(target / polygon_area(poly))


def radial_polygon(*, radius_px: float, n_vertices: int, roughness: float, rng: np.random.Generator) -> np.ndarray:
    """Irregular (possibly non-convex) star-shaped outline around the origin for debris and blotches.

    Returns float64 (n_vertices, 2); radii vary by +-``roughness`` (0..1) around ``radius_px``.
    """
    ang = np.sort(rng.uniform(0, 2 * math.pi, size=n_vertices))
    rad = radius_px * (1.0 + roughness * rng.uniform(-1.0, 1.0, size=n_vertices))
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def edge_equations(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals (K, 2) and offsets (K,) of a counter-clockwise convex polygon.

    A point p is inside when ``offsets - normals @ p > 0`` for every edge; that value is its distance to each edge.
    """
    nxt = np.roll(poly, -1, axis=0)
    edge = nxt - poly
    length = np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), 1e-12)
    normals = np.stack([edge[:, 1], -edge[:, 0]], axis=1) / length
    offsets = np.einsum("ij,ij->i", normals, poly)
    if np.any(offsets - normals @ poly.mean(axis=0) < 0):  # that was the inward normal: flip
        normals, offsets = -normals, -offsets
    return normals, offsets
