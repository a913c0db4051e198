"""Frame arithmetic for handing a camera relocalization to a robot's navigation stack (no ROS needed).

A relocalizer measures `map_T_cam` (the REP 105 map -> odom correction built from it lives with the other
output messages in kd3d_core.localization.outputs). nav2's /initialpose wants the pose of the robot base
instead: map_T_base = map_T_cam @ inv(base_T_cam), and its covariance moves with the lever arm between the
two origins.

tf2's `lookup_transform(target, source, t)` returns `target_T_source` in this naming (kd3d_core.messages'
`transform_to_matrix` turns it into a 4x4).
"""
from __future__ import annotations

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import invert_pose, is_valid_pose


def _checked(name: str, T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not is_valid_pose(T):
        raise Kd3dError(f"{name} is not a rigid 4x4 transform")
    return T


def frame_pose_in_map(map_T_cam: np.ndarray, frame_T_cam: np.ndarray) -> np.ndarray:
    """Pose of another rigidly attached frame (e.g. base_link) in the map: map_T_cam @ inv(frame_T_cam)."""
    return _checked("map_T_cam", map_T_cam) @ invert_pose(_checked("frame_T_cam", frame_T_cam))


def move_pose_covariance(cov_6x6: np.ndarray, old_origin: np.ndarray, new_origin: np.ndarray) -> np.ndarray:
    """Covariance of a pose after moving the reference point of the same rigid body.

    ROS PoseWithCovariance order (x, y, z, rotation about the fixed x, y, z axes). A small rotation dtheta of the
    body moves a point at lever r = new_origin - old_origin (map frame) by dtheta x r, so
    d(position_new) = d(position_old) - [r]x dtheta and the rotation block is unchanged: cov' = J cov J^T with
    J = [[I, -[r]x], [0, I]].

    Raises:
        Kd3dError: the covariance is not a finite 6x6 matrix.
    """
    cov = np.asarray(cov_6x6, dtype=np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        raise Kd3dError(f"pose covariance must be a finite 6x6 matrix, got shape {cov.shape}")
    r = np.asarray(new_origin, dtype=np.float64).reshape(3) - np.asarray(old_origin, dtype=np.float64).reshape(3)
    skew = np.array([[0.0, -r[2], r[1]], [r[2], 0.0, -r[0]], [-r[1], r[0], 0.0]])
    J = np.eye(6)
    J[:3, 3:] = -skew
    moved = J @ cov @ J.T
    return 0.5 * (moved + moved.T)
