"""Vectorised Sim(3) arithmetic on arrays of (scale, R, t): the language of the pose graph.

A similarity S = (s, R, t) maps x to s * R @ x + t. Arrays carry a leading batch axis: s (N,), R (N, 3, 3),
t (N, 3). Composition follows maps: (S1 o S2)(x) = S1(S2(x)).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.spatial.transform import Rotation


class Sim3Array(NamedTuple):
    """A batch of similarities."""

    s: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:
        return len(self.s)

    def apply(self, points_NM3: np.ndarray) -> np.ndarray:
        """Map points (N, M, 3), one similarity per row."""
        return self.s[:, None, None] * np.einsum("nij,nmj->nmi", self.R, points_NM3) + self.t[:, None, :]

    def take(self, index: np.ndarray) -> Sim3Array:
        """Select rows."""
        return Sim3Array(self.s[index], self.R[index], self.t[index])


def identity(n: int) -> Sim3Array:
    """n identity similarities."""
    return Sim3Array(np.ones(n), np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3)))


def compose(a: Sim3Array, b: Sim3Array) -> Sim3Array:
    """Row-wise a o b."""
    return Sim3Array(a.s * b.s, a.R @ b.R, a.s[:, None] * np.einsum("nij,nj->ni", a.R, b.t) + a.t)


def inverse(a: Sim3Array) -> Sim3Array:
    """Row-wise inverse."""
    Rt = np.transpose(a.R, (0, 2, 1))
    return Sim3Array(1.0 / a.s, Rt, -np.einsum("nij,nj->ni", Rt, a.t) / a.s[:, None])


def rot_log(R: np.ndarray) -> np.ndarray:
    """Rotation vectors (N, 3) of rotation matrices (N, 3, 3)."""
    return Rotation.from_matrix(R).as_rotvec()


def rot_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) of rotation vectors (N, 3)."""
    return Rotation.from_rotvec(w).as_matrix()


def rot_angle(R: np.ndarray) -> np.ndarray:
    """Rotation angles in radians of matrices (N, 3, 3)."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def project_to_rotation(M: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius) of matrices (N, 3, 3), e.g. to average rotations chordally."""
    U, _, Vt = np.linalg.svd(M)
    D = np.ones(M.shape[:-1])
    D[..., 2] = np.sign(np.linalg.det(U @ Vt))
    return (U * D[..., None, :]) @ Vt
