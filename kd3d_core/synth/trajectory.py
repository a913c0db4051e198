"""Camera paths through a synthetic room: a mapping walk and a different query walk.

Mapping: two loops, an outer one looking outward at walls and furniture (yaw swinging along the walls) and an
inner one looking across the room. Query: one loop between them, walked the other way, with its own swing, so
query views overlap the mapped surfaces without repeating any mapping viewpoint.
"""
from __future__ import annotations

import numpy as np

from kd3d_core.geometry import make_pose


def _camera(eye: np.ndarray, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """world_T_cam of an optical camera at eye with heading yaw (about z), pitch (up +) and roll."""
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(forward, right)
    cr, sr = np.cos(roll), np.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    return make_pose(np.stack([right, down, forward], axis=1), eye)


def _loop(size: np.ndarray, n: int, radius: float, turns: float, phase: float, height: float, height_amp: float,
          look_out: bool, swing: float, swing_freq: float, pitch0: float, rng_phase: float) -> list[np.ndarray]:
    """Poses along an elliptical loop scaled by `radius` (fraction of the half extents)."""
    centre = size / 2
    poses = []
    for s in np.arange(n) / n:
        theta = phase + 2 * np.pi * turns * s
        eye = np.array([centre[0] + radius * (centre[0] - 0.2) * np.cos(theta),
                        centre[1] + radius * (centre[1] - 0.2) * np.sin(theta),
                        height + height_amp * np.sin(3 * theta + rng_phase)])
        base = np.arctan2(np.sin(theta) * size[0], np.cos(theta) * size[1])
        if not look_out:
            base += np.pi
        yaw = base + swing * np.sin(swing_freq * theta + rng_phase)
        pitch = pitch0 + 0.12 * np.sin(2 * swing_freq * theta + 2 * rng_phase)
        roll = 0.05 * np.sin(5 * theta + rng_phase)
        poses.append(_camera(eye, yaw, pitch, roll))
    return poses


def mapping_trajectory(size: np.ndarray, n: int, rng: np.random.Generator, outer: float) -> list[np.ndarray]:
    """Mapping walk: an outer outward-looking loop then an inner loop looking across the room."""
    n_outer = (2 * n) // 3
    ph = float(rng.uniform(0, 2 * np.pi))
    poses = _loop(size, n_outer, outer, 1.0, ph, 1.5, 0.15, True, 0.75, 4.0, -0.15, ph)
    poses += _loop(size, n - n_outer, outer * 0.45, 1.0, ph + 1.0, 1.35, 0.1, False, 0.5, 3.0, -0.2, ph + 2.0)
    return poses


def query_trajectory(size: np.ndarray, n: int, rng: np.random.Generator, outer: float) -> list[np.ndarray]:
    """Query walk: one loop between the mapping loops, in the opposite direction, with its own swing."""
    ph = float(rng.uniform(0, 2 * np.pi))
    return _loop(size, n, outer * 0.75, -1.0, ph, 1.2, 0.1, True, 0.6, 3.5, -0.05, ph + 1.3)
