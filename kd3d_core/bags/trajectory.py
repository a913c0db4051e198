"""Time-stamped rigid transforms with interpolation and nearest-stamp association.

One rule serves pose topics and each dynamic TF edge: a query stamp gets
  - the sample itself when a sample has exactly that stamp,
  - linear (translation) + slerp (rotation) interpolation between its two neighbours when it lies between
    two samples and the nearer one is within `max_dt` (tf2 interpolates across any gap; the limit keeps a
    long dropout from being bridged silently),
  - otherwise the nearest sample when it lies within `max_dt`,
  - otherwise nothing (None).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kd3d_core.geometry import make_pose, matrix_to_quat_xyzw, quat_xyzw_to_matrix


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical interpolation of unit (x, y, z, w) quaternions, shortest path; alpha in [0, 1]."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to float precision and avoids 0/0
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1.0 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Pose between T0 (alpha 0) and T1 (alpha 1): lerp of translations, slerp of rotations."""
    q = slerp(matrix_to_quat_xyzw(T0[:3, :3]), matrix_to_quat_xyzw(T1[:3, :3]), alpha)
    return make_pose(quat_xyzw_to_matrix(q), (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3])


def associate_nearest(query_ns: Sequence[int] | np.ndarray, ref_ns: Sequence[int] | np.ndarray,
                      max_dt_ns: int) -> np.ndarray:
    """Index into sorted `ref_ns` of the nearest stamp to each query stamp, or -1 when farther than max_dt_ns."""
    ref = np.asarray(ref_ns, dtype=np.int64)
    query = np.asarray(query_ns, dtype=np.int64)
    if ref.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    right = np.clip(np.searchsorted(ref, query), 0, ref.size - 1)
    left = np.clip(right - 1, 0, ref.size - 1)
    pick = np.where(np.abs(ref[left] - query) <= np.abs(ref[right] - query), left, right)
    return np.where(np.abs(ref[pick] - query) <= max_dt_ns, pick, -1)


class Trajectory:
    """Poses frame_T_child sorted by stamp (ns); duplicates keep the last sample given."""

    def __init__(self, stamps_ns: Sequence[int], poses: Sequence[np.ndarray], frame_id: str = "",
                 child_frame_id: str = "") -> None:
        by_stamp = {int(s): np.asarray(T, dtype=np.float64) for s, T in zip(stamps_ns, poses)}
        order = sorted(by_stamp)
        self.stamps_ns = np.array(order, dtype=np.int64)
        self.poses = np.stack([by_stamp[s] for s in order]) if order else np.zeros((0, 4, 4))
        self.frame_id = frame_id
        self.child_frame_id = child_frame_id

    def __len__(self) -> int:
        return int(self.stamps_ns.size)

    def at(self, stamp_ns: int, max_dt_ns: int) -> np.ndarray | None:
        """frame_T_child at `stamp_ns` by the module's rule, or None when no sample is close enough."""
        stamps = self.stamps_ns
        if stamps.size == 0:
            return None
        i = int(np.searchsorted(stamps, stamp_ns))
        if i < stamps.size and stamps[i] == stamp_ns:
            return self.poses[i].copy()
        if 0 < i < stamps.size and min(stamp_ns - stamps[i - 1], stamps[i] - stamp_ns) <= max_dt_ns:
            alpha = (stamp_ns - stamps[i - 1]) / float(stamps[i] - stamps[i - 1])
            return interpolate_pose(self.poses[i - 1], self.poses[i], alpha)
        j = int(associate_nearest([stamp_ns], stamps, max_dt_ns)[0])
        return None if j < 0 else self.poses[j].copy()

    @property
    def span_ns(self) -> tuple[int, int] | None:
        """(first, last) stamp, or None when empty."""
        return (int(self.stamps_ns[0]), int(self.stamps_ns[-1])) if len(self) else None
