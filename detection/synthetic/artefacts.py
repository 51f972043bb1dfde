"""Layers for everything that must NOT be counted: out-of-focus crystals, bubbles, dust, fibres, scratches,
smudges and debris.

Each maker returns a :class:`Layer`: a multiplicative factor on the transmission image (float32 (h, w), 1.0 = no
effect) and the object's footprint (bool (h, w)), placed with its top-left pixel at (x0, y0) in image pixels (the
crop may stick out of the image; the compositor clips it). Sizes and widths are in pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from detection.synthetic.looks import CrystalLook, paint_crystal
from detection.synthetic.shapes import radial_polygon


@dataclass(frozen=True, eq=False)
class Layer:
    """A local multiplicative layer: ``T[y0:y0+h, x0:x0+w] *= factor``; ``mask`` is the object's footprint."""

    x0: int
    y0: int
    factor: np.ndarray  # float32 (h, w)
    mask: np.ndarray  # bool (h, w)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(w, dtype=np.float32) + 0.5)[None, :], (np.arange(h, dtype=np.float32) + 0.5)[:, None]


def _blur(arr: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px < 0.25:
        return arr
    return cv2.GaussianBlur(arr, (0, 0), sigmaX=float(sigma_px), borderType=cv2.BORDER_REPLICATE)


def out_of_focus_layer(poly: np.ndarray, look: CrystalLook, *, centre: tuple[float, float], sigma_px: float,
                       keep: float, centre_glow: float, rng: np.random.Generator) -> Layer:
    """A crystal outside the focal plane: its painted layer blurred by ``sigma_px``, contrast multiplied by ``keep``.

    poly: (K, 2) outline centred on the origin. ``centre_glow`` (-0.1 .. 0.15) adds a brighter (or darker) soft centre
    as a transparent object above (below) the focal plane shows. Work is done at 1/f resolution (integer f ~ sigma/2.5)
    and upsampled, so large blurs stay cheap. Footprint: blurred coverage above half its peak.
    """
    f = max(1, int(round(sigma_px / 2.5)))
    radius = float(np.linalg.norm(poly, axis=1).max())
    half = radius + 3.0 * sigma_px + 2.0
    ws = max(3, int(math.ceil(2.0 * half / f)))
    w_full = ws * f
    x0 = int(math.floor(centre[0] - w_full / 2.0))
    y0 = int(math.floor(centre[1] - w_full / 2.0))
    local = (poly + np.array([centre[0] - x0, centre[1] - y0])) / f
    t, alpha, halo = paint_crystal(local, (ws, ws), look, rng)
    delta = alpha * (t - 1.0) + (halo - 1.0)
    if centre_glow:
        xs, ys = _grid(ws, ws)
        cx, cy = local.mean(axis=0)
        rr = ((xs - cx) ** 2 + (ys - cy) ** 2) / max(1e-6, (0.45 * radius / f) ** 2)
        delta = delta + np.float32(centre_glow) * np.exp(-rr)
    s = sigma_px / f
    delta = _blur(delta.astype(np.float32), s)
    alpha = _blur(alpha, s)
    if f > 1:
        delta = cv2.resize(delta, (w_full, w_full), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha, (w_full, w_full), interpolation=cv2.INTER_LINEAR)
    factor = np.maximum(1.0 + np.float32(keep) * delta, 0.02).astype(np.float32)
    return Layer(x0, y0, factor, alpha > 0.5 * max(float(alpha.max()), 1e-6))


def bubble_layer(*, centre: tuple[float, float], radius_px: float, rng: np.random.Generator,
                 contrast: float = 1.0) -> Layer:
    """Air bubble: thick dark ring (15-45 % of the radius), bright centre, sometimes a specular spot."""
    u = rng.uniform
    ell, ang = u(1.0, 1.15), u(0, math.pi)
    half = radius_px * ell + 4.0
    size = int(math.ceil(2 * half)) + 1
    x0, y0 = int(math.floor(centre[0] - size / 2)), int(math.floor(centre[1] - size / 2))
    xs, ys = _grid(size, size)
    dx, dy = xs - (centre[0] - x0), ys - (centre[1] - y0)
    c, s = math.cos(ang), math.sin(ang)
    a, b = (c * dx + s * dy) / ell, -s * dx + c * dy
    rho = np.sqrt(a * a + b * b)
    dist_edge = radius_px - rho  # pixels inside the outline
    ring_w = radius_px * u(0.15, 0.45)
    soft = u(0.6, 3.0)
    ring = 1.0 / (1.0 + np.exp(np.clip((dist_edge - ring_w) / soft, -30, 30)))
    ring_t, centre_t = u(0.08, 0.45), u(0.98, 1.25)
    t = centre_t + (ring_t - centre_t) * ring * (0.75 + 0.25 * np.clip(1 - dist_edge / max(ring_w, 1e-6), 0, 1))
    if rng.random() < 0.6:
        sx, sy = u(-0.4, 0.4, size=2) * radius_px
        spot = max(0.8, radius_px * u(0.05, 0.15))
        t = t + u(0.2, 0.8) * np.exp(-((dx - sx) ** 2 + (dy - sy) ** 2) / (2 * spot * spot))
    alpha = np.clip(dist_edge + 0.5, 0.0, 1.0)
    factor = 1.0 + contrast * alpha * (t - 1.0)
    factor = _blur(factor.astype(np.float32), u(0.0, 1.2))
    return Layer(x0, y0, np.maximum(factor, 0.02).astype(np.float32), alpha > 0.5)


def dust_layer(*, centre: tuple[float, float], size_px: float, rng: np.random.Generator) -> Layer:
    """Dust speck: 1-4 small dark discs (radius ~ ``size_px`` / 2), slightly soft."""
    u = rng.uniform
    n = int(rng.integers(1, 5))
    pad = int(math.ceil(size_px * 1.5 + 4))
    size = 2 * pad + 1
    x0, y0 = int(math.floor(centre[0])) - pad, int(math.floor(centre[1])) - pad
    xs, ys = _grid(size, size)
    cx, cy = centre[0] - x0, centre[1] - y0
    alpha = np.zeros((size, size), np.float32)
    for _ in range(n):
        ox, oy = u(-0.5, 0.5, size=2) * size_px
        r = max(0.5, size_px / 2 * u(0.5, 1.0))
        alpha = np.maximum(alpha, np.clip(r + 0.5 - np.sqrt((xs - cx - ox) ** 2 + (ys - cy - oy) ** 2), 0, 1))
    sigma = u(0.0, 1.3)
    soft = _blur(alpha, sigma)
    factor = 1.0 - u(0.25, 0.85) * soft
    mask = soft > 0.5 if (soft > 0.5).any() else soft >= soft.max() * 0.99
    return Layer(x0, y0, factor.astype(np.float32), mask)


def _polyline_layer(points: np.ndarray, *, width_px: float, strength: float, sigma_px: float,
                    mask_level: float) -> Layer:
    """Thin line through ``points`` (N, 2) image coordinates; ``strength`` < 0 darkens, > 0 brightens."""
    pad = int(math.ceil(width_px + 3 * sigma_px + 3))
    x0, y0 = int(math.floor(points[:, 0].min())) - pad, int(math.floor(points[:, 1].min())) - pad
    w = int(math.ceil(points[:, 0].max())) + pad + 1 - x0
    h = int(math.ceil(points[:, 1].max())) + pad + 1 - y0
    canvas = np.zeros((h, w), np.uint8)
    shift = 4
    pts = np.round((points - [x0 + 0.5, y0 + 0.5]) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 255, thickness=max(1, int(round(width_px))), lineType=cv2.LINE_AA,
                  shift=shift)
    alpha = _blur(canvas.astype(np.float32) / 255.0, sigma_px)
    factor = (1.0 + strength * alpha).astype(np.float32)
    return Layer(x0, y0, np.maximum(factor, 0.02), alpha > mask_level)


def fibre_layer(*, start: tuple[float, float], length_px: float, rng: np.random.Generator) -> Layer:
    """Curved thin fibre (a smooth random walk), 1-3 px wide, dark, sometimes soft."""
    n = max(4, int(length_px / 4))
    turn = rng.uniform(0.01, 0.12)
    ang = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, turn, size=n))
    step = length_px / n
    pts = np.array(start) + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], axis=1) * step, axis=0)
    return _polyline_layer(pts, width_px=rng.uniform(1.0, 3.0), strength=-rng.uniform(0.2, 0.7),
                           sigma_px=rng.uniform(0.0, 1.5), mask_level=0.4)


def scratch_layer(*, start: tuple[float, float], length_px: float, rng: np.random.Generator) -> Layer:
    """Straight, long, low-contrast line (on the glass): darker or brighter than the background."""
    ang = rng.uniform(0, 2 * math.pi)
    end = (start[0] + length_px * math.cos(ang), start[1] + length_px * math.sin(ang))
    strength = -rng.uniform(0.03, 0.15) if rng.random() < 0.7 else rng.uniform(0.03, 0.12)
    return _polyline_layer(np.array([start, end]), width_px=rng.uniform(1.0, 2.2), strength=strength,
                           sigma_px=rng.uniform(0.0, 0.8), mask_level=0.3)


def smudge_layer(*, centre: tuple[float, float], radius_px: float, rng: np.random.Generator) -> Layer:
    """Low-contrast blotch (residue on the glass): an irregular heavily blurred patch, 2-8 % darker or lighter."""
    f = max(1, int(radius_px / 12))
    sigma = radius_px * rng.uniform(0.15, 0.4)
    half = radius_px * 1.6 + 3 * sigma
    ws = max(3, int(math.ceil(2 * half / f)))
    w_full = ws * f
    x0, y0 = int(math.floor(centre[0] - w_full / 2)), int(math.floor(centre[1] - w_full / 2))
    poly = radial_polygon(radius_px=radius_px / f, n_vertices=int(rng.integers(6, 14)), roughness=0.45, rng=rng)
    canvas = np.zeros((ws, ws), np.uint8)
    pts = np.round((poly + ws / 2.0) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = _blur(canvas.astype(np.float32) / 255.0, sigma / f)
    if f > 1:
        alpha = cv2.resize(alpha, (w_full, w_full), interpolation=cv2.INTER_LINEAR)
    amp = -rng.uniform(0.02, 0.08) if rng.random() < 0.7 else rng.uniform(0.02, 0.05)
    return Layer(x0, y0, (1.0 + amp * alpha).astype(np.float32), alpha > 0.5)


def debris_layer(*, centre: tuple[float, float], radius_px: float, rng: np.random.Generator) -> Layer:
    """Dark irregular chunk (typically cut by the frame edge): opaque, textured, slightly soft."""
    size = int(math.ceil(2 * radius_px * 1.5 + 8))
    x0, y0 = int(math.floor(centre[0] - size / 2)), int(math.floor(centre[1] - size / 2))
    poly = radial_polygon(radius_px=radius_px, n_vertices=int(rng.integers(7, 16)), roughness=0.5, rng=rng)
    canvas = np.zeros((size, size), np.uint8)
    pts = np.round((poly + [centre[0] - x0, centre[1] - y0]) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) / 255.0
    texture = _blur(rng.normal(0.0, 1.0, size=(size, size)).astype(np.float32), rng.uniform(1.0, 4.0))
    texture /= max(1e-6, float(texture.std()))
    t = np.clip(rng.uniform(0.05, 0.45) + 0.08 * texture, 0.02, 1.0)
    factor = _blur((1.0 + alpha * (t - 1.0)).astype(np.float32), rng.uniform(0.3, 2.0))
    return Layer(x0, y0, factor, alpha > 0.5)
