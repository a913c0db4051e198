"""Procedural textures for synthetic rooms: varied, non-repeating, deterministic by generator.

Every surface gets its own texture so that local appearance identifies the place (relocalization is possible),
while plain ceilings, similar tiles and repeated planks keep it from being trivial.
"""
from __future__ import annotations

from enum import Enum

import cv2
import numpy as np


class Material(str, Enum):
    """What a surface looks like."""

    WALL = "wall"
    FLOOR = "floor"
    CEILING = "ceiling"
    WOOD = "wood"
    FABRIC = "fabric"
    PAINT = "paint"  # near-uniform paint with a rare poster (the low-texture preset)


def value_noise(h: int, w: int, rng: np.random.Generator, cell_px: float, octaves: int = 4) -> np.ndarray:
    """Smooth multi-octave noise in [0, 1], float32 (h, w)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        cell_px = max(cell_px / 2.0, 2.0)
    out /= total
    return np.clip((out - out.min()) / max(float(np.ptp(out)), 1e-6), 0, 1)


def _random_color(rng: np.random.Generator, sat: float = 0.5, val: tuple[float, float] = (0.3, 0.95)) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _tint(noise: np.ndarray, color: np.ndarray, contrast: float) -> np.ndarray:
    return color[None, None, :] * (1.0 - contrast + 2.0 * contrast * noise[..., None])


def _draw_decorations(img: np.ndarray, rng: np.random.Generator, ppm: float, count: int) -> None:
    """Posters, blobs and scribbles: the distinctive local features of a surface."""
    h, w = img.shape[:2]
    for _ in range(count):
        kind = rng.integers(0, 4)
        color = tuple(float(c) for c in _random_color(rng, sat=0.9, val=(0.1, 1.0)))
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        size = int(rng.uniform(0.05, 0.5) * ppm)
        if kind == 0:  # poster: a patterned rectangle
            pw, ph = size, int(size * rng.uniform(0.6, 1.6))
            x0, y0 = max(cx - pw // 2, 0), max(cy - ph // 2, 0)
            x1, y1 = min(x0 + pw, w), min(y0 + ph, h)
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            patch = _tint(value_noise(y1 - y0, x1 - x0, rng, max(size / 6, 3)), np.array(color, np.float32), 0.5)
            img[y0:y1, x0:x1] = patch
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (20, 20, 20), max(1, size // 40))
        elif kind == 1:
            cv2.circle(img, (cx, cy), max(size // 2, 2), color, -1, cv2.LINE_AA)
        elif kind == 2:
            pts = (np.array([cx, cy]) + rng.normal(0, size / 2, (6, 2))).astype(np.int32)
            cv2.polylines(img, [pts], False, color, max(1, size // 20), cv2.LINE_AA)
        else:
            pts = (np.array([cx, cy]) + rng.normal(0, size / 2, (5, 2))).astype(np.int32)
            cv2.fillPoly(img, [cv2.convexHull(pts)], color, cv2.LINE_AA)


def _planks(h: int, w: int, rng: np.random.Generator, ppm: float) -> np.ndarray:
    base = _random_color(rng, sat=0.5, val=(0.35, 0.7))
    img = np.empty((h, w, 3), np.float32)
    plank = max(int(rng.uniform(0.12, 0.25) * ppm), 4)
    grain = value_noise(h, w, rng, cell_px=max(plank / 3, 3))
    for y0 in range(0, h, plank):
        tone = rng.uniform(0.75, 1.25)
        img[y0:y0 + plank] = _tint(grain[y0:y0 + plank], base * tone, 0.25)
        img[y0:y0 + 1] *= 0.5
    return img


def _tiles(h: int, w: int, rng: np.random.Generator, ppm: float) -> np.ndarray:
    base = _random_color(rng, sat=0.3, val=(0.5, 0.9))
    tile = max(int(rng.uniform(0.25, 0.6) * ppm), 6)
    tones = rng.uniform(0.8, 1.2, (h // tile + 1, w // tile + 1)).astype(np.float32)
    tone_img = cv2.resize(tones, (w, h), interpolation=cv2.INTER_NEAREST)
    img = _tint(value_noise(h, w, rng, cell_px=tile / 2), base, 0.15) * tone_img[..., None]
    img[::tile] = img[::tile] * 0.4
    img[:, ::tile] = img[:, ::tile] * 0.4
    return img


def make_texture(material: Material, size_m: tuple[float, float], ppm: float, rng: np.random.Generator,
                 paint_contrast: float = 0.04) -> np.ndarray:
    """A uint8 RGB texture covering a surface of size_m (width, height) metres at ppm pixels per metre;
    paint_contrast: the PAINT material's value-noise contrast (0.04 near-uniform, 0.2 that of WALL)."""
    w, h = max(int(size_m[0] * ppm), 8), max(int(size_m[1] * ppm), 8)
    area = size_m[0] * size_m[1]
    if material is Material.FLOOR:
        img = _planks(h, w, rng, ppm) if rng.random() < 0.5 else _tiles(h, w, rng, ppm)
        _draw_decorations(img, rng, ppm, int(area * 1.5))
    elif material is Material.CEILING:
        img = _tint(value_noise(h, w, rng, ppm * 0.5), np.array([225.0, 225.0, 220.0]), 0.05)
        for _ in range(max(1, int(area / 4))):
            x, y = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            s = int(0.3 * ppm)
            cv2.rectangle(img, (x, y), (x + s, y + 2 * s), (250, 250, 240), -1)
            cv2.rectangle(img, (x, y), (x + s, y + 2 * s), (120, 120, 120), 2)
    elif material is Material.PAINT:
        img = _tint(value_noise(h, w, rng, ppm * 0.5), _random_color(rng, sat=0.25, val=(0.55, 0.85)), paint_contrast)
        posters = rng.poisson(area / 6.0)
        _draw_decorations(img, rng, ppm, int(posters))
    elif material is Material.WALL:
        img = _tint(value_noise(h, w, rng, ppm * 0.3), _random_color(rng, sat=0.35, val=(0.55, 0.9)), 0.2)
        _draw_decorations(img, rng, ppm, int(area * 6))
    else:
        if material is Material.WOOD:
            img = _planks(w, h, rng, ppm).transpose(1, 0, 2).copy()
        else:
            img = _tint(value_noise(h, w, rng, ppm * 0.05), _random_color(rng, sat=0.8), 0.3)
        _draw_decorations(img, rng, ppm, int(area * 8) + 2)
    return np.clip(img, 0, 255).astype(np.uint8)
