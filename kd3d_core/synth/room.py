"""Room layouts: an inward-facing room box plus furniture-like boxes, and the texture atlas of all their faces."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kd3d_core.synth.textures import Material, make_texture

# Face f of a box: axis f // 2, sign (+1 for odd f, -1 for even f), in the box's local (yaw-rotated) frame.
N_FACES = 6


@dataclass(frozen=True)
class Box:
    """An oriented box: centre, half extents (x, y, z) and yaw about z. `inside` marks the room itself."""

    center: np.ndarray
    half: np.ndarray
    yaw: float = 0.0
    inside: bool = False

    @property
    def rotation(self) -> np.ndarray:
        """world_R_box."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def face_size(self, face: int) -> tuple[float, float]:
        """Texture extent (u, v) in metres of a face."""
        u_axis, v_axis = face_uv_axes(face)
        return 2 * float(self.half[u_axis]), 2 * float(self.half[v_axis])


def face_uv_axes(face: int) -> tuple[int, int]:
    """Which local axes a face's texture u and v run along (v is height on vertical faces)."""
    axis = face // 2
    return {0: (1, 2), 1: (0, 2), 2: (0, 1)}[axis]


@dataclass(frozen=True)
class Lighting:
    """Per-light intensity and the ambient level of the renderer's shading (1.0 = as built)."""

    gains: tuple[float, ...] | None = None
    ambient: float = 1.0


@dataclass(frozen=True)
class Room:
    """A synthetic room: boxes (room first), lights, and one texture atlas for every face."""

    boxes: tuple[Box, ...]
    lights: np.ndarray
    atlas: np.ndarray
    face_rects: np.ndarray  # (n_boxes, 6, 4) atlas x0, y0, width, height in pixels
    ppm: float
    lighting: Lighting = Lighting()

    @property
    def size(self) -> np.ndarray:
        """Room extent (x, y, z) in metres."""
        return 2 * self.boxes[0].half


def _overlaps(a_min: np.ndarray, a_max: np.ndarray, others: list[tuple[np.ndarray, np.ndarray]], gap: float) -> bool:
    return any(np.all(a_min < o_max + gap) and np.all(o_min - gap < a_max) for o_min, o_max in others)


def _wall_furniture(size: np.ndarray, rng: np.random.Generator, count: int, max_depth: float) -> list[Box]:
    """Cupboards, shelves, desks and sofas standing against the walls, not overlapping."""
    boxes: list[Box] = []
    footprints: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        wall = int(rng.integers(0, 4))
        along = 0 if wall in (0, 1) else 1  # walls 0/1 run along x (y = 0 / y = max)
        width = rng.uniform(0.4, min(1.8, size[along] * 0.4))
        depth = rng.uniform(0.3, max_depth)
        height = float(rng.choice([rng.uniform(0.4, 0.9), rng.uniform(0.9, 2.1)]))
        pos = rng.uniform(width / 2 + 0.05, size[along] - width / 2 - 0.05)
        half = np.array([width / 2, depth / 2, height / 2]) if along == 0 else np.array([depth / 2, width / 2,
                                                                                         height / 2])
        center = np.zeros(3)
        center[along] = pos
        center[1 - along] = depth / 2 + 0.01 if wall in (0, 2) else size[1 - along] - depth / 2 - 0.01
        center[2] = height / 2
        lo, hi = center[:2] - half[:2], center[:2] + half[:2]
        if _overlaps(lo, hi, footprints, 0.05):
            continue
        footprints.append((lo, hi))
        boxes.append(Box(center, half))
    return boxes


def _center_furniture(size: np.ndarray, rng: np.random.Generator, count: int) -> list[Box]:
    """Low tables and boxes in the middle of the room, below the camera paths."""
    boxes = []
    for _ in range(count):
        half = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.45), rng.uniform(0.15, 0.4)])
        center = np.array([size[0] / 2 + rng.uniform(-0.15, 0.15) * size[0],
                           size[1] / 2 + rng.uniform(-0.15, 0.15) * size[1], half[2]])
        boxes.append(Box(center, half, yaw=float(rng.uniform(-np.pi, np.pi))))
    return boxes


def _pack_atlas(textures: list[np.ndarray], width: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Shelf-pack textures into one atlas (with a 2-pixel gutter); returns atlas and (x0, y0, w, h) per texture."""
    order = sorted(range(len(textures)), key=lambda i: -textures[i].shape[0])
    rects = np.zeros((len(textures), 4), np.int32)
    x = y = shelf_h = 0
    for i in order:
        h, w = textures[i].shape[:2]
        if x + w + 2 > width:
            x, y, shelf_h = 0, y + shelf_h + 2, 0
        rects[i] = (x, y, w, h)
        x += w + 2
        shelf_h = max(shelf_h, h)
    atlas = np.zeros((y + shelf_h + 2, width, 3), np.uint8)
    for i, (x0, y0, w, h) in enumerate(rects):
        atlas[y0:y0 + h, x0:x0 + w] = textures[i]
    return atlas, rects


def _face_material(box: Box, face: int, rng: np.random.Generator, low_texture: bool) -> Material:
    if low_texture:
        return Material.CEILING if box.inside and face == 5 else Material.PAINT
    if not box.inside:
        return Material.WOOD if rng.random() < 0.5 else Material.FABRIC
    if face == 4:
        return Material.FLOOR
    if face == 5:
        return Material.CEILING
    return Material.WALL


def build_room(size: np.ndarray, n_wall: int, n_center: int, max_depth: float, ppm: float,
               rng: np.random.Generator, low_texture: bool = False, paint_contrast: float = 0.04) -> Room:
    """Lay out a room and texture every face of every box (paint of `paint_contrast` everywhere when low_texture)."""
    room = Box(size / 2, size / 2, inside=True)
    boxes = [room] + _wall_furniture(size, rng, n_wall, max_depth) + _center_furniture(size, rng, n_center)
    textures = []
    for box in boxes:
        for face in range(N_FACES):
            fw, fh = box.face_size(face)
            tex_ppm = ppm if fw * fh * ppm * ppm < 2.5e6 else np.sqrt(2.5e6 / (fw * fh))
            textures.append(make_texture(_face_material(box, face, rng, low_texture), (fw, fh), tex_ppm, rng,
                                         paint_contrast))
    atlas, rects = _pack_atlas(textures)
    n_lights = max(2, int(size[0] * size[1] / 8))
    lights = np.column_stack([rng.uniform(0.2, 0.8, n_lights) * size[0], rng.uniform(0.2, 0.8, n_lights) * size[1],
                              np.full(n_lights, size[2] - 0.1)])
    return Room(tuple(boxes), lights, atlas, rects.reshape(len(boxes), N_FACES, 4), ppm)
