"""Synthetic 2D-3D test cases for the localization tests (exact geometry, optional noise and outliers)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kd3d_core.geometry import look_at
from kd3d_core.prediction import ScenePrediction

K_640 = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


class Case(NamedTuple):
    """A camera, its exact dense prediction on a stride-8 grid, and the image size."""

    world_T_cam: np.ndarray
    prediction: ScenePrediction
    K: np.ndarray
    size_wh: tuple[int, int]


def make_case(rng: np.random.Generator, sigma_m: float = 0.0, outliers: float = 0.0, stride: int = 8,
              size_wh: tuple[int, int] = (640, 480), K: np.ndarray = K_640) -> Case:
    """Random camera in a room looking at random depths 1-5 m; noise and outliers on the world points."""
    eye = rng.uniform([-1, -1, 1], [1, 1, 2])
    world_T_cam = look_at(eye, eye + np.r_[rng.normal(size=2), 0.2 * rng.normal()])
    w, h = size_wh
    u, v = np.meshgrid(np.arange(stride // 2, w, stride), np.arange(stride // 2, h, stride))
    uv = np.stack([u, v], axis=-1).astype(np.float64)
    z = rng.uniform(1.0, 5.0, size=u.shape)
    cam = np.concatenate([(uv - K[:2, 2]) / np.diag(K)[:2] * z[..., None], z[..., None]], axis=-1)
    world = cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]
    world += rng.normal(scale=sigma_m, size=world.shape) if sigma_m > 0 else 0.0
    bad = rng.random(u.shape) < outliers
    world[bad] = rng.uniform(-4, 4, size=(int(bad.sum()), 3))
    pred = ScenePrediction(world.astype(np.float32), np.ones(u.shape, np.float32), uv.astype(np.float32))
    return Case(world_T_cam, pred, K, size_wh)
