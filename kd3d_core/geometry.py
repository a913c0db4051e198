"""Rigid-body and camera geometry shared by every stage.

Conventions (DESIGN.md): metres and radians; camera frames are OpenCV optical (x right, y down, z forward);
a pose named `a_T_b` is a 4x4 matrix mapping points in frame b to frame a; quaternions are (x, y, z, w) as in ROS.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from kd3d_core.errors import Kd3dError


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build a 4x4 pose from a 3x3 rotation and a translation."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def rotation_z(angle_rad: float) -> np.ndarray:
    """3x3 rotation by angle_rad about z (for a camera frame: a roll about the optical axis)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def invert_pose(a_T_b: np.ndarray) -> np.ndarray:
    """Invert a rigid 4x4 pose without a general matrix inverse."""
    R = a_T_b[:3, :3]
    t = a_T_b[:3, 3]
    return make_pose(R.T, -R.T @ t)


def transform_points(a_T_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Map points (..., 3) from frame b to frame a."""
    return points_b @ a_T_b[:3, :3].T + a_T_b[:3, 3]


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (x, y, z, w) quaternion (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise Kd3dError(f"invalid quaternion {q.tolist()}")
    return Rotation.from_quat(q / n).as_matrix()


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion of a rotation matrix, with w >= 0."""
    q = Rotation.from_matrix(R).as_quat()
    return q if q[3] >= 0 else -q


def pose_from_tq(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 pose from a translation and a (x, y, z, w) quaternion."""
    return make_pose(quat_xyzw_to_matrix(q_xyzw), t)


def is_valid_pose(T: np.ndarray | None, tol: float = 1e-3) -> bool:
    """True for a finite 4x4 rigid transform (orthonormal rotation, last row 0 0 0 1)."""
    if T is None or T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1) < tol
                and np.allclose(T[3], [0, 0, 0, 1], atol=tol))


class PoseError(NamedTuple):
    """Difference between two camera poses: camera-centre distance and rotation angle."""

    translation_m: float
    rotation_deg: float


def pose_error(est_world_T_cam: np.ndarray, ref_world_T_cam: np.ndarray) -> PoseError:
    """Translation error of camera centres (m) and rotation error (degrees) between two world_T_cam."""
    dt = float(np.linalg.norm(est_world_T_cam[:3, 3] - ref_world_T_cam[:3, 3]))
    R = est_world_T_cam[:3, :3].T @ ref_world_T_cam[:3, :3]
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    return PoseError(dt, float(np.degrees(np.arccos(cos))))


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """world_T_cam of an optical-frame camera at `eye` looking at `target` (z forward, y down, x right)."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], axis=1), eye)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K for an image resized by (sx, sy), with the pixel-centre convention (u + 0.5) * s - 0.5."""
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= sx
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 1] *= sy
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    K2[0, 1] *= sx
    return K2


def resize_with_intrinsics(image: np.ndarray, K: np.ndarray, size_wh: tuple[int, int],
                           nearest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (or depth map, with `nearest`) to (w, h) and return it with its rescaled K."""
    h, w = image.shape[:2]
    new_w, new_h = size_wh
    if (new_w, new_h) == (w, h):
        return image, np.array(K, dtype=np.float64)
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if new_w < w else cv2.INTER_LINEAR)
    out = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return out, scale_intrinsics(K, new_w / w, new_h / h)


def pixel_grid(width: int, height: int) -> np.ndarray:
    """Pixel centres (h, w, 2) as (u, v) float64."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u, v], axis=-1)


def backproject_depth(depth_HW: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (h, w, 3) of a depth map in metres; invalid depth (0) gives z = 0 points."""
    h, w = depth_HW.shape
    uv = pixel_grid(w, h)
    z = depth_HW.astype(np.float64)
    x = (uv[..., 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[..., 1] - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=-1)


def project_points(K: np.ndarray, cam_T_world: np.ndarray, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (N, 3): pixel coordinates (N, 2) and depth along z (N,)."""
    pc = transform_points(cam_T_world, points_world)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc[:, :2] / z[:, None]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, z


class Similarity(NamedTuple):
    """A Sim(3) transform: dst = scale * R @ src + t."""

    scale: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map points (..., 3)."""
        return self.scale * points @ self.R.T + self.t

    def apply_pose(self, world_T_cam: np.ndarray) -> np.ndarray:
        """Map a camera pose; the result stays a rigid transform (scale acts on the position only)."""
        return make_pose(self.R @ world_T_cam[:3, :3], self.scale * self.R @ world_T_cam[:3, 3] + self.t)


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> Similarity:
    """Least-squares Sim(3) (or SE(3)) aligning src (N, 3) onto dst (N, 3) (Umeyama 1991), optionally weighted."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[0] < 3:
        raise Kd3dError(f"umeyama needs two (N>=3, 3) point sets, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    s0 = src - mu_s
    d0 = dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var_s = float(w @ np.sum(s0 ** 2, axis=1))
    scale = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - scale * R @ mu_s
    return Similarity(scale, R, t)
