"""Appearance of in-focus crystals: sampling a look and painting it into a local crop.

A crystal is painted as a *transmission* layer ``t`` (float32, 1.0 = no effect on the light, < 1 darker, > 1 brighter
than the local background) plus a coverage ``alpha`` (float32 in [0, 1], anti-aliased) on a crop of shape (h, w).
Geometry comes from the convex outline's edge distance field: for every pixel centre p and edge i,
``e_i(p) = offset_i - normal_i . p`` is the distance to that edge (positive inside). From it we get

* the refraction rim: the outer ``rim_w_px`` of the outline (dark, sometimes bright, optionally a double rim);
* bevel bands: facet i covers ``e_i / band_i < 1`` (owner = argmin of e_i / band_i), so the inner facet is the
  polygon with every edge moved inward by ``band_i`` and the mitre lines run from outer to inner vertices, as the
  inclined facets of a real prism look from above;
* the inner facet: base level, shading gradient, an optional bright split half and a bright stripe;
* a faint halo just outside the outline (Fresnel fringe), returned separately as a multiplicative factor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detection.synthetic.shapes import edge_equations

#: Crystal looks: "bevel" (L-alanine: dark facet bands, lighter inner facet), "thin" (translucent, thin dark rim),
#: "faint" (nearly invisible but for a thin rim), "bright" (bright refraction rim).
LOOK_STYLES: tuple[str, ...] = ("bevel", "thin", "faint", "bright")
#: ``looks='translucent'`` (detection.synthetic.options.LOOKS): bevel bands from TRANSLUCENT_BAND_FRAC of the inradius
#: (they never meet, so the inner facet stays), an inner facet of transmission TRANSLUCENT_INNER_T, and the 'faint'
#: style TRANSLUCENT_FAINT_WEIGHT as often. On the real development tiles 17 % of the labelled 15-80 px crystals are not
#: darker at their rim than at their centre and the 10th percentile of their contrast is 0.43 of the background; in the
#: default renderings 40-42 % and 0.08 (bench/realism.py, session 15). Measured once with 'large'
#: (docs/model_history.md, *Session 15*): real precision fell; the inside comes out lighter than real (0.80-0.88 of the
#: background against 0.66) and the rims narrower. Not in the shipped model's recipe.
TRANSLUCENT_BAND_FRAC = (0.15, 0.6)
TRANSLUCENT_INNER_T = (0.7, 1.0)
TRANSLUCENT_FAINT_WEIGHT = 0.25


@dataclass(frozen=True)
class CrystalLook:
    """All appearance numbers of one crystal (transmissions are relative to the local background = 1.0)."""

    rim_t: float  # transmission of the outer rim
    rim_w_px: float  # rim width in pixels
    band_frac: np.ndarray  # (K,) bevel band width per edge as a fraction of the inradius (0 = no band)
    band_t: np.ndarray  # (K,) transmission of each bevel band
    inner_t: float  # transmission of the inner facet
    grad: tuple[float, float]  # shading gradient across the crystal (per circumradius, x and y)
    facet_line: float  # amplitude of the thin line at the inner facet boundary (+ bright, - dark)
    stripe: tuple[float, float, float, float] | None  # (angle_rad, offset_frac, width_frac, transmission)
    split: tuple[float, float, float] | None  # (angle_rad, offset_frac, factor) brighter/darker half of inner facet
    double_rim: tuple[float, float] | None  # (width_px, transmission) bright line just inside the dark rim
    halo: tuple[float, float]  # (amplitude, width_px) multiplicative halo outside the outline
    inclusions: int  # number of small dark inclusions in the inner facet


def sample_look(style: str, n_edges: int, *, inradius_px: float, contrast: float,
                rng: np.random.Generator, translucent: bool = False) -> CrystalLook:
    """Draw a random look of ``style`` for a crystal with ``n_edges`` edges and inscribed radius ``inradius_px``.

    ``contrast`` (0.2 .. 1.5) scales every deviation from the background. ``translucent``: a 'bevel' crystal keeps a
    light inner facet (bands TRANSLUCENT_BAND_FRAC of the inradius, inner transmission TRANSLUCENT_INNER_T) instead of
    bands that may meet and darken it whole; the same number of random draws either way. Raises ValueError for an
    unknown style.
    """
    if style not in LOOK_STYLES:
        raise ValueError(f"unknown crystal look {style!r}; expected one of {', '.join(LOOK_STYLES)}")
    u = rng.uniform
    stripe = split = double_rim = None
    inclusions = 0
    if style == "bevel":
        rim_t = u(0.06, 0.4)
        rim_w = u(1.0, 3.5)
        band_frac = u(*(TRANSLUCENT_BAND_FRAC if translucent else (0.2, 1.15)), size=n_edges) * \
            (rng.random(n_edges) < 0.9)
        band_t = np.clip(rim_t + u(0.02, 0.4, size=n_edges), 0.08, 0.8)
        inner_t = u(*(TRANSLUCENT_INNER_T if translucent else (0.4, 0.97)))
        facet_line = u(-0.15, 0.1)
        if rng.random() < 0.55:
            stripe = (u(0, math.pi), u(-0.5, 0.5), u(0.04, 0.2), u(1.0, 1.3))
        if rng.random() < 0.35:
            split = (u(0, math.pi), u(-0.4, 0.4), u(1.1, 1.45))
        halo = (u(-0.06, 0.08), u(1.0, 3.0))
        inclusions = int(rng.integers(0, 6)) if rng.random() < 0.12 else 0
    elif style == "thin":
        rim_t = u(0.25, 0.75)
        rim_w = u(1.0, 4.0)
        band_frac = u(0.15, 0.5, size=n_edges) * (rng.random(n_edges) < 0.6)
        inner_t = u(0.86, 1.06)
        band_t = np.clip(inner_t + u(-0.12, 0.06, size=n_edges), 0.5, 1.1)
        facet_line = u(-0.25, 0.15) if rng.random() < 0.7 else 0.0
        if rng.random() < 0.3:
            stripe = (u(0, math.pi), u(-0.5, 0.5), u(0.03, 0.12), u(1.02, 1.2))
        if rng.random() < 0.25:
            split = (u(0, math.pi), u(-0.4, 0.4), u(0.9, 1.12))
        if rng.random() < 0.4:
            double_rim = (u(0.8, 2.0), u(1.05, 1.3))
        halo = (u(-0.05, 0.1), u(1.0, 3.5))
    elif style == "faint":
        rim_t = u(0.55, 0.88)
        rim_w = u(0.8, 1.8)
        band_frac = u(0.15, 0.5, size=n_edges) * (rng.random(n_edges) < 0.3)
        inner_t = u(0.96, 1.03)
        band_t = np.clip(inner_t + u(-0.05, 0.03, size=n_edges), 0.7, 1.1)
        facet_line = u(-0.08, 0.06) if rng.random() < 0.5 else 0.0
        if rng.random() < 0.3:
            double_rim = (u(0.8, 1.5), u(1.03, 1.15))
        halo = (u(-0.03, 0.06), u(1.0, 3.0))
    else:  # bright
        rim_t = u(1.12, 1.5)
        rim_w = u(1.0, 3.0)
        band_frac = u(0.1, 0.4, size=n_edges) * (rng.random(n_edges) < 0.4)
        inner_t = u(0.85, 1.05)
        band_t = np.clip(inner_t + u(-0.1, 0.1, size=n_edges), 0.5, 1.2)
        facet_line = u(-0.15, 0.15) if rng.random() < 0.5 else 0.0
        double_rim = (u(0.8, 1.8), u(0.45, 0.8)) if rng.random() < 0.5 else None  # dark line inside the bright rim
        halo = (u(-0.12, -0.03), u(1.0, 2.5))  # dark fringe outside
    # small crystals: keep rims inside the outline
    rim_w = float(min(rim_w, max(0.8, 0.45 * inradius_px)))
    band_frac = np.where(band_frac * inradius_px < 1.2, 0.0, band_frac)

    def scale(t: float | np.ndarray) -> float | np.ndarray:
        return 1.0 + (np.asarray(t) - 1.0) * contrast

    grad = (u(-0.15, 0.15), u(-0.15, 0.15))
    return CrystalLook(rim_t=float(max(0.03, scale(rim_t))), rim_w_px=rim_w, band_frac=band_frac,
                       band_t=np.maximum(0.03, scale(band_t)), inner_t=float(max(0.05, scale(inner_t))),
                       grad=(grad[0] * contrast, grad[1] * contrast), facet_line=float(facet_line * contrast),
                       stripe=None if stripe is None else (stripe[0], stripe[1], stripe[2], float(scale(stripe[3]))),
                       split=None if split is None else (split[0], split[1], float(scale(split[2]))),
                       double_rim=None if double_rim is None else (double_rim[0], float(scale(double_rim[1]))),
                       halo=(halo[0] * contrast, halo[1]), inclusions=inclusions)


def inradius(poly: np.ndarray) -> float:
    """Largest edge distance of the vertex centroid: a cheap inscribed radius estimate in pixels (>= 0.5)."""
    normals, offsets = edge_equations(poly)
    return max(0.5, float((offsets - normals @ poly.mean(axis=0)).min()))


def paint_crystal(poly: np.ndarray, shape: tuple[int, int], look: CrystalLook,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint one convex crystal into a crop.

    poly: (K, 2) convex counter-clockwise outline in crop coordinates (pixel (x, y) has its centre at x+0.5, y+0.5).
    shape: (h, w) of the crop. Returns ``(t, alpha, halo)``, float32 (h, w) each: transmission inside the crystal,
    anti-aliased coverage, and a multiplicative halo factor for the outside (1.0 = none).
    """
    h, w = shape
    normals, offsets = edge_equations(poly)
    xs = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]
    ys = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]
    nx = normals[:, 0].astype(np.float32)[:, None, None]
    ny = normals[:, 1].astype(np.float32)[:, None, None]
    dist = offsets.astype(np.float32)[:, None, None] - nx * xs - ny * ys  # (K, h, w)
    d = dist.min(axis=0)
    r_in = inradius(poly)
    centre = poly.mean(axis=0)
    px = xs[0] - np.float32(centre[0])  # (1, w)
    py = ys[0] - np.float32(centre[1])  # (h, 1)

    t = np.full((h, w), look.inner_t, np.float32)
    r_out = max(1.0, float(np.linalg.norm(poly - centre, axis=1).max()))
    t += np.float32(look.grad[0] / r_out) * px + np.float32(look.grad[1] / r_out) * py
    if look.split is not None:
        ang, off, factor = look.split
        s = math.cos(ang) * px + math.sin(ang) * py - off * r_in
        t *= 1.0 + (factor - 1.0) * np.clip(s + 0.5, 0.0, 1.0)
    if look.stripe is not None:
        ang, off, width, stripe_t = look.stripe
        s = -math.sin(ang) * px + math.cos(ang) * py - off * r_in
        half = max(0.6, width * r_in)
        weight = np.clip(half + 0.5 - np.abs(s), 0.0, 1.0)
        t += (np.float32(stripe_t) - t) * weight
    for _ in range(look.inclusions):
        cx, cy = centre + rng.uniform(-0.5, 0.5, size=2) * r_in
        rad = rng.uniform(0.6, max(0.8, 0.08 * r_in))
        blob = np.clip(rad + 0.5 - np.sqrt((xs[0] - cx) ** 2 + (ys[0] - cy) ** 2), 0.0, 1.0)
        t *= 1.0 - rng.uniform(0.2, 0.6) * blob

    band_px = (look.band_frac * r_in).astype(np.float32)
    if np.any(band_px > 0):
        scale = np.where(band_px > 0, 1.0 / np.maximum(band_px, 1e-6), 0.0).astype(np.float32)
        never = np.where(band_px > 0, 0.0, 1e9).astype(np.float32)  # edges without a band never own a pixel
        ratio = dist * scale[:, None, None] + never[:, None, None]
        owner = ratio.argmin(axis=0)
        r = np.take_along_axis(ratio, owner[None], axis=0)[0]
        owner_px = band_px[owner]
        depth = (1.0 - r) * owner_px  # > 0 inside the band, in pixels from the inner facet boundary
        band_w = np.clip(depth + 0.5, 0.0, 1.0)
        t += (look.band_t.astype(np.float32)[owner] - t) * band_w
        if look.facet_line:
            t += np.float32(look.facet_line) * np.exp(-(depth * depth) / 0.6) * (owner_px > 0)
    if look.double_rim is not None:
        width, inner_rim_t = look.double_rim
        a = np.clip(d - look.rim_w_px + 0.5, 0.0, 1.0) * np.clip(look.rim_w_px + width + 0.5 - d, 0.0, 1.0)
        t += (np.float32(inner_rim_t) - t) * a
    rim = np.clip(look.rim_w_px + 0.5 - d, 0.0, 1.0)
    t += (np.float32(look.rim_t) - t) * rim
    alpha = np.clip(d + 0.5, 0.0, 1.0)
    amp, width = look.halo
    halo = 1.0 + np.float32(amp) * np.exp(np.minimum(d, 0.0) / np.float32(width)) * (1.0 - alpha)
    return np.maximum(t, 0.02).astype(np.float32), alpha.astype(np.float32), halo.astype(np.float32)
