"""Base pose from a camera pose and moving a pose covariance between reference points."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import invert_pose, make_pose
from kd3d_core.tf_math import frame_pose_in_map, move_pose_covariance


def _pose(rotvec, t) -> np.ndarray:
    return make_pose(Rotation.from_rotvec(rotvec).as_matrix(), t)


def test_frame_pose_in_map_composes_with_the_mount():
    map_T_base = _pose([0.0, 0.0, 0.7], [2.0, -1.0, 0.0])
    base_T_cam = _pose([-np.pi / 2, 0.0, -np.pi / 2], [0.2, 0.0, 0.5])  # optical frame on a mast
    map_T_cam = map_T_base @ base_T_cam
    np.testing.assert_allclose(frame_pose_in_map(map_T_cam, base_T_cam), map_T_base, atol=1e-12)
    with pytest.raises(Kd3dError, match="frame_T_cam is not a rigid"):
        frame_pose_in_map(map_T_cam, np.eye(4) * 2)


def _perturbed_base(map_T_cam: np.ndarray, cam_T_base: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Perturb the camera pose (position + rotation about the fixed map axes) and return the base's
    (position, rotation vector relative to the unperturbed base orientation)."""
    R = Rotation.from_rotvec(delta[3:]).as_matrix() @ map_T_cam[:3, :3]
    perturbed = make_pose(R, map_T_cam[:3, 3] + delta[:3]) @ cam_T_base
    nominal = map_T_cam @ cam_T_base
    dtheta = Rotation.from_matrix(perturbed[:3, :3] @ nominal[:3, :3].T).as_rotvec()
    return np.concatenate([perturbed[:3, 3] - nominal[:3, 3], dtheta])


def test_move_pose_covariance_matches_the_linearised_motion():
    """J from finite differences of the actual rigid motion equals the closed form J = [[I, -[r]x], [0, I]]."""
    map_T_cam = _pose([0.3, -0.2, 1.1], [1.0, 2.0, 0.8])
    base_T_cam = _pose([-np.pi / 2, 0.0, -np.pi / 2], [0.3, -0.1, 0.6])
    cam_T_base = invert_pose(base_T_cam)
    eps = 1e-6
    J = np.stack([(_perturbed_base(map_T_cam, cam_T_base, eps * e) - _perturbed_base(map_T_cam, cam_T_base, -eps * e))
                  / (2 * eps) for e in np.eye(6)], axis=1)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6)) * 0.01
    cov = A @ A.T
    map_T_base = map_T_cam @ cam_T_base
    moved = move_pose_covariance(cov, map_T_cam[:3, 3], map_T_base[:3, 3])
    np.testing.assert_allclose(moved, J @ cov @ J.T, atol=1e-9)
    np.testing.assert_allclose(moved[3:, 3:], cov[3:, 3:], atol=1e-15)  # orientation uncertainty is unchanged
    assert not np.allclose(moved[:3, :3], cov[:3, :3])  # the lever arm adds position uncertainty


def test_move_pose_covariance_identity_and_errors():
    cov = np.diag([1e-4, 2e-4, 3e-4, 1e-3, 2e-3, 3e-3])
    np.testing.assert_allclose(move_pose_covariance(cov, np.ones(3), np.ones(3)), cov)
    with pytest.raises(Kd3dError, match="finite 6x6"):
        move_pose_covariance(np.eye(3), np.zeros(3), np.zeros(3))
    bad = cov.copy()
    bad[0, 0] = np.nan
    with pytest.raises(Kd3dError, match="finite 6x6"):
        move_pose_covariance(bad, np.zeros(3), np.zeros(3))
