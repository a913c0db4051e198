"""Exact-geometry pairwise pointmaps for tests and benchmarks: a box room with furniture, a camera loop.

`SyntheticPairs` plays the role of a DUSt3R pair cache: it yields directed predictions with an unknown scale
per pair, pixel noise proportional to depth, DUSt3R-like confidences and optional outlier pairs whose relative
pose is wrong (consistently in both directions, as a network that confused two places would predict).
Per-frame camera pointmaps live in a disk-backed array so that memory measurements see the aligner only.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from kd3d_core.alignment.pairwise import PairPrediction
from kd3d_core.errors import ConfigError
from kd3d_core.geometry import invert_pose, look_at, make_pose, pixel_grid, transform_points

ROOM = (np.zeros(3), np.array([5.0, 4.0, 3.0]))
FURNITURE = ((np.array([0.3, 0.3, 0.0]), np.array([1.5, 1.1, 0.9])),
             (np.array([3.6, 2.6, 0.0]), np.array([4.7, 3.7, 1.8])),
             (np.array([3.8, 0.2, 0.0]), np.array([4.6, 0.7, 0.75])))


@dataclass(frozen=True)
class SyntheticConfig:
    """A synthetic sequence: n frames on a loop through the room, pairs within a window plus extra pairs."""

    n_frames: int = 40
    size_wh: tuple[int, int] = (64, 48)
    focal: float = 50.0
    window: int = 3
    noise: float = 0.005
    n_outliers: int = 3
    seed: int = 0


def camera_poses(n: int, rng: np.random.Generator) -> np.ndarray:
    """world_T_cam (n, 4, 4): a loop around the room centre looking outwards at the walls, with jitter."""
    centre = np.array([2.5, 2.0, 1.4])
    poses = []
    for k in range(n):
        a = 2 * np.pi * k / n
        eye = centre + np.array([0.9 * np.cos(a), 0.7 * np.sin(a), 0.2 * np.sin(3 * a)]) + rng.normal(0, 0.03, 3)
        target = centre + np.array([3 * np.cos(a + 0.6), 3 * np.sin(a + 0.6), -0.6 + 0.3 * np.cos(2 * a)])
        poses.append(look_at(eye, target))
    return np.array(poses)


def render_points(world_T_cam: np.ndarray, K: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Camera-frame points (h, w, 3) of the room seen by one camera (exact ray-box intersections)."""
    w, h = size_wh
    uv = pixel_grid(w, h).reshape(-1, 2)
    rays_c = np.column_stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))])
    o = world_T_cam[:3, 3]
    d = rays_c @ world_T_cam[:3, :3].T
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        lo, hi = (ROOM[0] - o) * inv, (ROOM[1] - o) * inv
        t = np.min(np.maximum(lo, hi), axis=1)  # exit of the room box: a wall, floor or ceiling
        for bmin, bmax in FURNITURE:
            lo, hi = (bmin - o) * inv, (bmax - o) * inv
            t_in = np.max(np.minimum(lo, hi), axis=1)
            t_out = np.min(np.maximum(lo, hi), axis=1)
            hit = (t_in <= t_out) & (t_in > 1e-6)
            t = np.where(hit & (t_in < t), t_in, t)
    return (rays_c * t[:, None]).reshape(h, w, 3)


def _random_rigid(rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    angle = np.radians(rng.uniform(20, 60))
    return make_pose(Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix(), rng.normal(0, 0.6, 3))


class SyntheticPairs:
    """Re-iterable source of directed predictions over a synthetic sequence (see module docstring)."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        n = config.n_frames
        w, h = config.size_wh
        self.K = np.array([[config.focal, 0, (w - 1) / 2], [0, config.focal, (h - 1) / 2], [0, 0, 1.0]])
        self.poses = camera_poses(n, rng)
        self._tmp = tempfile.TemporaryFile()
        self.points = np.memmap(self._tmp, dtype=np.float32, mode="w+", shape=(n, h, w, 3))
        for k in range(n):
            self.points[k] = render_points(self.poses[k], self.K, config.size_wh)
        pairs = {(i, (i + d) % n) for i in range(n) for d in range(1, config.window + 1)}
        # wrong "loop" pairs: frames further apart than the window (too few frames -> clear error, not a hang)
        far = [(i, j) for i in range(n) for j in range(i + 1, n) if min(j - i, n - j + i) > config.window]
        if len(far) < config.n_outliers:
            raise ConfigError(f"{n} frames with window {config.window} allow only {len(far)} outlier pairs, "
                              f"{config.n_outliers} asked for")
        chosen = rng.choice(len(far), config.n_outliers, replace=False) if config.n_outliers else []
        outliers = {far[k] for k in chosen}
        self.outlier_pairs = outliers
        self.pairs = sorted({(min(a, b), max(a, b)) for a, b in pairs} | outliers)
        self.corruption = {p: _random_rigid(rng) for p in outliers}
        self.generation_s = 0.0

    def relative(self, i: int, j: int) -> np.ndarray:
        """i_T_j that the (possibly corrupted) pair predicts."""
        T = invert_pose(self.poses[i]) @ self.poses[j]
        key = (min(i, j), max(i, j))
        if key in self.corruption:
            C = self.corruption[key]
            T = T @ C if i < j else invert_pose(C) @ T
        return T

    def _predict(self, i: int, j: int) -> PairPrediction:
        c = self.config
        rng = np.random.default_rng((c.seed, i, j))
        scale = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
        pi, pj = np.asarray(self.points[i], np.float64), transform_points(self.relative(i, j), self.points[j])
        out = []
        for p in (pi, pj):
            noisy = scale * (p + rng.normal(0, 1, p.shape) * c.noise * p[..., 2:3])
            out += [noisy.astype(np.float32), (1.0 + np.exp(rng.uniform(0.5, 2.5, p.shape[:2]))).astype(np.float32)]
        return PairPrediction(i, j, *out)

    def __iter__(self) -> Iterator[PairPrediction]:
        for i, j in self.pairs:
            for a, b in ((i, j), (j, i)):
                t0 = time.perf_counter()
                pred = self._predict(a, b)
                self.generation_s += time.perf_counter() - t0
                yield pred
