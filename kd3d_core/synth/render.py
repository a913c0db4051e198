"""Ray-cast renderer for synthetic rooms: exact depth, Lambertian shading, bilinear texture lookup."""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from kd3d_core.geometry import invert_pose
from kd3d_core.synth.room import Box, Room, face_uv_axes

_EPS = 1e-9


class Rendering(NamedTuple):
    """One rendered view: RGB uint8 (h, w, 3) and z-depth float32 metres (h, w)."""

    rgb: np.ndarray
    depth: np.ndarray


class _Hits(NamedTuple):
    t: np.ndarray
    box: np.ndarray
    face: np.ndarray


def _slabs(box: Box, origin_w: np.ndarray, dirs_3N: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-axis entry and exit distances (3, N) of rays against a box, and the ray directions in the box frame."""
    R = box.rotation
    o = R.T @ (origin_w - box.center)
    d = (R.T @ dirs_3N).astype(np.float32)
    d[np.abs(d) < _EPS] = _EPS
    inv = 1.0 / d
    t1 = (-box.half - o).astype(np.float32)[:, None] * inv
    t2 = (box.half - o).astype(np.float32)[:, None] * inv
    return np.minimum(t1, t2), np.maximum(t1, t2), d


def _screen_rays(box: Box, cam_T_world: np.ndarray, K: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray | None:
    """Flat indices of the pixels whose rays can hit a box (its projected bounding rectangle); None = all."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    corners = box.center + (signs * box.half) @ box.rotation.T
    cam = corners @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
    if np.any(cam[:, 2] < 0.05):
        return None if np.any(cam[:, 2] > 0) else np.empty(0, np.int64)
    u = cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2]
    v = cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2]
    w, h = size_wh
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, w)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, h)
    if u0 >= u1 or v0 >= v1:
        return np.empty(0, np.int64)
    return (np.arange(v0, v1)[:, None] * w + np.arange(u0, u1)[None, :]).ravel()


def _intersect(room: Room, origin: np.ndarray, dirs_3N: np.ndarray, cam_T_world: np.ndarray, K: np.ndarray,
               size_wh: tuple[int, int]) -> _Hits:
    """Nearest hit per ray: distance along the (z = 1 in camera) ray, box index and face index."""
    _, tmax, d = _slabs(room.boxes[0], origin, dirs_3N)
    t_best = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
    axis = np.where(tmax[0] == t_best, 0, np.where(tmax[1] == t_best, 1, 2))
    face = 2 * axis + (np.take_along_axis(d, axis[None], 0)[0] > 0)
    box_idx = np.zeros(len(t_best), np.int32)
    for i, box in enumerate(room.boxes[1:], start=1):
        rays = _screen_rays(box, cam_T_world, K, size_wh)
        if rays is None:
            rays = np.arange(len(t_best))
        if len(rays) == 0:
            continue
        tmin, tmax, d = _slabs(box, origin, dirs_3N[:, rays])
        t_in = np.maximum(np.maximum(tmin[0], tmin[1]), tmin[2])
        t_out = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
        hit = (t_in <= t_out) & (t_in > 1e-6) & (t_in < t_best[rays])
        if not np.any(hit):
            continue
        th = tmin[:, hit]
        ax = np.where(th[0] == t_in[hit], 0, np.where(th[1] == t_in[hit], 1, 2))
        sel = rays[hit]
        t_best[sel] = t_in[hit]
        box_idx[sel] = i
        face[sel] = 2 * ax + (np.take_along_axis(d[:, hit], ax[None], 0)[0] < 0)
    return _Hits(t_best, box_idx, face)


def _face_normals(room: Room) -> np.ndarray:
    """World normals (n_boxes, 6, 3) of every face, pointing into the free space of the room."""
    table = np.zeros((len(room.boxes), 6, 3))
    for i, box in enumerate(room.boxes):
        for f in range(6):
            n_local = np.zeros(3)
            n_local[f // 2] = (1.0 if f % 2 else -1.0) * (-1.0 if box.inside else 1.0)
            table[i, f] = box.rotation @ n_local
    return table


def _shade(room: Room, points_3N: np.ndarray, hits: _Hits) -> np.ndarray:
    """Lambertian shading factor per hit point from ceiling lights plus ambient light."""
    normals_3N = _face_normals(room)[hits.box, hits.face].T.astype(np.float32)
    shade = np.full(points_3N.shape[1], 0.35 * room.lighting.ambient, np.float32)
    gains = room.lighting.gains or (1.0,) * len(room.lights)
    for light, gain in zip(room.lights.astype(np.float32), gains):
        to_l = light[:, None] - points_3N
        dist2 = (to_l * to_l).sum(axis=0)
        cos = (normals_3N * to_l).sum(axis=0) / np.sqrt(dist2 + _EPS)
        shade += 0.9 * gain * np.maximum(cos, 0) / (1.0 + 0.08 * dist2)
    return np.clip(shade / (0.35 + 0.9 * 0.6), 0.15, 1.15)


def _atlas_coords(room: Room, points: np.ndarray, hits: _Hits) -> tuple[np.ndarray, np.ndarray]:
    """Atlas pixel coordinates (x, y) of each hit point's texture sample."""
    ax = np.zeros(len(points), np.float32)
    ay = np.zeros(len(points), np.float32)
    for i, box in enumerate(room.boxes):
        sel_box = hits.box == i
        if not np.any(sel_box):
            continue
        local = (points[sel_box] - box.center) @ box.rotation + box.half
        faces = hits.face[sel_box]
        out_x = np.empty(len(faces), np.float32)
        out_y = np.empty(len(faces), np.float32)
        for f in np.unique(faces):
            sel = faces == f
            u_axis, v_axis = face_uv_axes(int(f))
            x0, y0, w, h = room.face_rects[i, f]
            u = local[sel, u_axis] / (2 * box.half[u_axis]) * w
            v_raw = local[sel, v_axis] / (2 * box.half[v_axis])
            v = (1.0 - v_raw if v_axis == 2 else v_raw) * h
            out_x[sel] = x0 + np.clip(u - 0.5, 0, w - 1)
            out_y[sel] = y0 + np.clip(v - 0.5, 0, h - 1)
        ax[sel_box], ay[sel_box] = out_x, out_y
    return ax, ay


def render_view(room: Room, K: np.ndarray, world_T_cam: np.ndarray, size_wh: tuple[int, int]) -> Rendering:
    """Render RGB and exact z-depth of the room seen by a pinhole camera (OpenCV optical frame)."""
    w, h = size_wh
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    dirs = rays_cam @ world_T_cam[:3, :3].T
    origin = world_T_cam[:3, 3]
    hits = _intersect(room, origin, np.ascontiguousarray(dirs.T), invert_pose(world_T_cam), K, size_wh)
    points = origin + dirs * hits.t[:, None].astype(np.float64)
    map_x, map_y = _atlas_coords(room, points, hits)
    color = cv2.remap(room.atlas, map_x.reshape(h, w), map_y.reshape(h, w), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    color *= _shade(room, points.T.astype(np.float32), hits).reshape(h, w, 1).astype(np.float32)
    rgb = np.clip(color, 0, 255).astype(np.uint8)
    return Rendering(rgb, hits.t.reshape(h, w).astype(np.float32))
