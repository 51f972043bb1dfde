"""Illumination and camera: uneven background, whole-frame defocus, Poisson-Gaussian noise, quantisation to 8 or
16 bit, JPEG round trip and colour cast.

The scene is a float32 (H, W) transmission image ``T`` (1.0 = clear medium). The camera sees
``I = illumination * T`` (float, 0..1 full scale), blurs it, adds noise and quantises.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraParams:
    """Per-image illumination and camera settings (intensities are fractions of full scale)."""

    level: float  # mean background level, 0..1
    vignette: float  # relative darkening at the far corner (0 = none)
    vignette_centre: tuple[float, float]  # centre of the illumination spot, fractions of (W, H)
    gradient: tuple[float, float]  # relative linear change of the illumination across the frame (x, y)
    lowfreq: float  # relative amplitude of smooth illumination unevenness
    mottle: float  # relative amplitude of fine background texture
    mottle_sigma_px: float  # grain size of that texture
    defocus_sigma_px: float  # Gaussian blur of the whole frame
    photons: float  # photo-electrons at full scale (Poisson part of the noise)
    read_noise: float  # Gaussian read noise, fraction of full scale
    jpeg_quality: int | None  # JPEG round trip applied inside the camera (8-bit only), None = none
    colour_gains: tuple[float, float, float] | None  # (B, G, R) gains of a colour cast; None = grey output
    effective_bits: int  # ADC bits (8, 10, 12, 14 or 16); the output is scaled to the full 8/16-bit range

    def to_dict(self) -> dict:
        return asdict(self)


def _smooth_noise(shape: tuple[int, int], grid: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth field from a ``grid`` x ``grid`` random lattice upsampled bicubically."""
    h, w = shape
    small = rng.normal(0.0, 1.0, size=(grid, grid)).astype(np.float32)
    field = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(1e-6, float(field.std()))


def illumination(shape: tuple[int, int], cam: CameraParams, rng: np.random.Generator) -> np.ndarray:
    """Background illumination float32 (H, W): vignetting, gradient, smooth unevenness and fine mottle."""
    h, w = shape
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    cx, cy = cam.vignette_centre
    aspect = h / w
    r2 = (xs[None, :] - cx) ** 2 + ((ys[:, None] - cy) * aspect) ** 2
    r2max = max((0 - cx) ** 2, (1 - cx) ** 2) + max((0 - cy) ** 2, (1 - cy) ** 2) * aspect * aspect
    field = 1.0 - cam.vignette * (r2 / r2max)
    field = field + cam.gradient[0] * (xs[None, :] - 0.5) + cam.gradient[1] * (ys[:, None] - 0.5)
    if cam.lowfreq:
        field = field + cam.lowfreq * _smooth_noise(shape, int(rng.integers(3, 7)), rng)
    if cam.mottle:
        f = max(1, int(cam.mottle_sigma_px / 2))
        small = rng.normal(0.0, 1.0, size=(max(2, h // f), max(2, w // f))).astype(np.float32)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(0.5, cam.mottle_sigma_px / f))
        small /= max(1e-6, float(small.std()))
        field = field + cam.mottle * cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return (cam.level * field).astype(np.float32)


def expose(transmission: np.ndarray, cam: CameraParams, rng: np.random.Generator, *,
           bit_depth: int) -> np.ndarray:
    """Turn a float32 (H, W) transmission image into camera output.

    Returns uint8 or uint16 (``bit_depth`` 8 or 16), shape (H, W) for grey or (H, W, 3) BGR when the camera has a
    colour cast. Raises ValueError for another bit depth.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    h, w = transmission.shape
    img = illumination((h, w), cam, rng) * transmission
    if cam.defocus_sigma_px >= 0.2:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=cam.defocus_sigma_px)
    channels = [img] if cam.colour_gains is None else [img * g for g in cam.colour_gains]
    out = []
    for ch in channels:
        noisy = ch + np.sqrt(np.maximum(ch, 0.0) / cam.photons + cam.read_noise ** 2) * rng.standard_normal(
            size=ch.shape, dtype=np.float32)
        levels = float((1 << cam.effective_bits) - 1)
        q = np.round(np.clip(noisy, 0.0, 1.0) * levels) / levels
        full = 255.0 if bit_depth == 8 else 65535.0
        out.append(np.round(q * full).astype(np.uint8 if bit_depth == 8 else np.uint16))
    result = out[0] if len(out) == 1 else np.stack(out, axis=2)
    if cam.jpeg_quality is not None and bit_depth == 8:
        ok, buf = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, int(cam.jpeg_quality)])
        if ok:
            flag = cv2.IMREAD_GRAYSCALE if result.ndim == 2 else cv2.IMREAD_COLOR
            result = cv2.imdecode(buf, flag)
    return result


def sample_camera(difficulty: str, rng: np.random.Generator, *, allow_colour: bool) -> CameraParams:
    """Random camera for a difficulty level ('easy' | 'medium' | 'hard')."""
    u = rng.uniform
    hard = {"easy": 0.0, "medium": 0.5, "hard": 1.0}[difficulty]
    level = u(0.5, 0.85) if hard == 0 else u(0.38 - 0.08 * hard, 0.9)
    photons = math.exp(u(math.log(2500 + 7500 * (1 - hard)), math.log(120000)))
    read_noise = u(0.0003, 0.002 + 0.004 * hard)
    jpeg = int(rng.integers(35 + int(25 * (1 - hard)), 92)) if rng.random() < 0.15 + 0.4 * hard else None
    colour = None
    if allow_colour and rng.random() < 0.05 + 0.2 * hard:
        colour = tuple(float(g) for g in 1.0 + u(-0.08, 0.08, size=3) * (0.5 + hard))
    bits = int(rng.choice([8, 10, 12, 14, 16]))
    return CameraParams(
        level=float(level), vignette=float(u(0.0, 0.12 + 0.3 * hard)),
        vignette_centre=(float(u(0.2, 0.8)), float(u(0.2, 0.8))),
        gradient=(float(u(-0.1, 0.1) * (0.5 + hard)), float(u(-0.1, 0.1) * (0.5 + hard))),
        lowfreq=float(u(0.0, 0.02 + 0.04 * hard)), mottle=float(u(0.0, 0.006 + 0.012 * hard)),
        mottle_sigma_px=float(u(1.5, 8.0)), defocus_sigma_px=float(u(0.6, 3.3 + 0.3 * hard)),
        photons=float(photons), read_noise=float(read_noise), jpeg_quality=jpeg, colour_gains=colour,
        effective_bits=bits)
