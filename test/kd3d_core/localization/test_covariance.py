"""The pose covariance: shape, symmetry, positive definiteness, and agreement with Monte Carlo scatter."""
from __future__ import annotations

import cv2
import numpy as np
from localization_cases import K_640, make_case
from scipy.spatial.transform import Rotation

from kd3d_core.geometry import invert_pose, make_pose
from kd3d_core.localization.config import RelocalizerConfig
from kd3d_core.localization.pnp import CameraPose, pose_covariance, pose_jacobian, refine_pose, reprojection_errors


def _world_delta(est_world_T_cam: np.ndarray, ref_world_T_cam: np.ndarray) -> np.ndarray:
    """(dx, dy, dz, rot x, rot y, rot z) with R_est = exp([dtheta]x) R_ref: the REP 103 parameterisation."""
    dtheta = Rotation.from_matrix(est_world_T_cam[:3, :3] @ ref_world_T_cam[:3, :3].T).as_rotvec()
    return np.concatenate([est_world_T_cam[:3, 3] - ref_world_T_cam[:3, 3], dtheta])


def test_jacobian_matches_finite_differences(rng):
    case = make_case(rng, stride=64)
    pts = case.prediction.points_hw3.reshape(-1, 3).astype(np.float64)
    J = pose_jacobian(pts, K_640, case.world_T_cam)

    def project(world_T_cam):
        cam_T_world = invert_pose(world_T_cam)
        pc = pts @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
        return (pc[:, :2] / pc[:, 2:] * np.diag(K_640)[:2] + K_640[:2, 2]).reshape(-1)

    eps = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        T = make_pose(Rotation.from_rotvec(d[3:]).as_matrix() @ case.world_T_cam[:3, :3],
                      case.world_T_cam[:3, 3] + d[:3])
        numeric = (project(T) - project(case.world_T_cam)) / eps
        np.testing.assert_allclose(J[:, k], numeric, rtol=1e-3, atol=1e-3)


def test_covariance_matches_monte_carlo(rng):
    """1 px Gaussian pixel noise: predicted covariance agrees with the scatter of refined poses."""
    case = make_case(rng, stride=32)
    pts = case.prediction.points_hw3.reshape(-1, 3).astype(np.float64)
    uv_true = case.prediction.uv_hw2.reshape(-1, 2).astype(np.float64)
    cam_T_world = invert_pose(case.world_T_cam)
    start = CameraPose(cv2.Rodrigues(cam_T_world[:3, :3])[0], cam_T_world[:3, 3].reshape(3, 1))
    cfg = RelocalizerConfig(refine_rounds=0)
    deltas, covs = [], []
    for _ in range(300):
        uv = uv_true + rng.normal(scale=1.0, size=uv_true.shape)
        pose, _ = refine_pose(pts, uv, K_640, start, np.arange(len(pts)), cfg)
        world_T_cam = invert_pose(make_pose(cv2.Rodrigues(pose.rvec)[0], pose.tvec))
        deltas.append(_world_delta(world_T_cam, case.world_T_cam))
        covs.append(pose_covariance(pts, reprojection_errors(pts, uv, K_640, pose), K_640, world_T_cam))
    sample = np.cov(np.array(deltas).T)
    predicted = np.mean(covs, axis=0)
    assert predicted.shape == (6, 6)
    np.testing.assert_allclose(predicted, predicted.T)
    assert np.all(np.linalg.eigvalsh(predicted) > 0)
    ratio = np.diag(sample) / np.diag(predicted)
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio
    # Correlations too (normalised so every entry is comparable).
    d = 1 / np.sqrt(np.diag(predicted))
    np.testing.assert_allclose(sample * np.outer(d, d), predicted * np.outer(d, d), atol=0.2)


def test_covariance_none_when_degenerate():
    pts = np.array([[0.0, 0.0, 2.0]] * 10)
    assert pose_covariance(pts, np.ones(10), K_640, np.eye(4)) is None
    assert pose_covariance(pts[:3], np.ones(3), K_640, np.eye(4)) is None
