"""PnP-RANSAC, refinement on inliers and the pose covariance (OpenCV for the solvers, NumPy for the rest).

All functions take undistorted pixel coordinates (the relocalizer undistorts first), so no distortion model
appears here and the covariance uses the plain pinhole Jacobian.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

from kd3d_core.localization.config import PnpSolver, RansacMethod, RefineMethod, RelocalizerConfig

_SOLVER_FLAGS = {
    PnpSolver.P3P: cv2.SOLVEPNP_P3P,
    PnpSolver.AP3P: cv2.SOLVEPNP_AP3P,
    PnpSolver.SQPNP: cv2.SOLVEPNP_SQPNP,
    PnpSolver.EPNP: cv2.SOLVEPNP_EPNP,
    PnpSolver.ITERATIVE: cv2.SOLVEPNP_ITERATIVE,
}
_USAC_FLAGS = {
    RansacMethod.USAC_DEFAULT: cv2.USAC_DEFAULT,
    RansacMethod.USAC_FAST: cv2.USAC_FAST,
    RansacMethod.USAC_ACCURATE: cv2.USAC_ACCURATE,
    RansacMethod.USAC_MAGSAC: cv2.USAC_MAGSAC,
    RansacMethod.USAC_PROSAC: cv2.USAC_PROSAC,
    RansacMethod.USAC_PARALLEL: cv2.USAC_PARALLEL,
}
_REFINE_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 20, 1e-8)


class CameraPose(NamedTuple):
    """A cam_T_world pose as OpenCV holds it: Rodrigues vector and translation, both (3, 1) float64."""

    rvec: np.ndarray
    tvec: np.ndarray


def ransac_pnp(points_N3: np.ndarray, uv_N2: np.ndarray, K: np.ndarray,
               config: RelocalizerConfig) -> tuple[CameraPose, np.ndarray] | None:
    """Robust PnP: the cam_T_world pose and the inlier indices, or None when OpenCV finds no pose.

    Args:
        points_N3: world points (float32 or float64).
        uv_N2: undistorted pixel coordinates, same dtype family.
        K: 3x3 intrinsics of those pixels.
        config: solver, estimator, threshold and iteration settings.
    """
    try:
        if config.ransac is RansacMethod.USAC_LIGHT:
            # This overload returns the camera matrix too, so OpenCV needs a writable one: a read-only K (from a
            # decoded CameraInfo message) made it raise "Bad argument" on every frame.
            ok, _, rvec, tvec, inliers = cv2.solvePnPRansac(points_N3, uv_N2, np.array(K, np.float64), None,
                                                            params=_usac_light(config))
        else:
            flags = _USAC_FLAGS.get(config.ransac, _SOLVER_FLAGS[config.solver])
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                points_N3, uv_N2, K, None, iterationsCount=config.ransac_iterations,
                reprojectionError=config.reprojection_threshold_px, confidence=config.ransac_confidence,
                flags=flags)
    except cv2.error:
        # Degenerate samples (all points collinear, too few) make some solvers throw instead of failing.
        return None
    if not ok or inliers is None or len(inliers) == 0:
        return None
    pose = CameraPose(np.asarray(rvec, np.float64).reshape(3, 1), np.asarray(tvec, np.float64).reshape(3, 1))
    return pose, inliers.reshape(-1)


def _usac_light(config: RelocalizerConfig) -> cv2.UsacParams:
    """USAC with uniform sampling, the MSAC score and a short inner local optimisation, no final polishing."""
    params = cv2.UsacParams()
    params.confidence = config.ransac_confidence
    params.maxIterations = config.ransac_iterations
    params.threshold = config.reprojection_threshold_px
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_MSAC
    params.loMethod = cv2.LOCAL_OPTIM_INNER_LO if config.ransac_lo_iterations else cv2.LOCAL_OPTIM_NULL
    params.loIterations = config.ransac_lo_iterations
    params.loSampleSize = config.ransac_lo_sample
    params.final_polisher = cv2.NONE_POLISHER
    return params


def reprojection_errors(points_N3: np.ndarray, uv_N2: np.ndarray, K: np.ndarray, pose: CameraPose) -> np.ndarray:
    """Pixel distance between observed and projected points (inf for points behind the camera)."""
    R, _ = cv2.Rodrigues(pose.rvec)
    pc = points_N3 @ R.T.astype(points_N3.dtype) + pose.tvec.reshape(1, 3).astype(points_N3.dtype)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        du = pc[:, 0] / z * K[0, 0] + K[0, 2] - uv_N2[:, 0]
        dv = pc[:, 1] / z * K[1, 1] + K[1, 2] - uv_N2[:, 1]
        err = np.sqrt(du * du + dv * dv)
    err[~(z > 0)] = np.inf
    return err


def refine_pose(points_N3: np.ndarray, uv_N2: np.ndarray, K: np.ndarray, pose: CameraPose,
                inliers: np.ndarray, config: RelocalizerConfig,
                core_px: float | None = None) -> tuple[CameraPose, np.ndarray]:
    """Refine on the inliers and re-select them with the refined pose, until the inliers stop changing (at most
    config.refine_rounds extra rounds); then refine on the core of the inliers (those within core_px, default
    refine_core_fraction of the threshold) until the core stops changing (at most refine_core_rounds rounds;
    0 = no core step).

    Returns the refined pose and its final inlier indices (within reprojection_threshold_px of the final pose).
    With RefineMethod.NONE the pose is unchanged.
    """
    if config.refine is RefineMethod.NONE:
        return pose, inliers
    refine = cv2.solvePnPRefineLM if config.refine is RefineMethod.LM else cv2.solvePnPRefineVVS
    # A hypothesis far from the optimum (a lighter RANSAC's, on a frame with few inliers) moves a long way over
    # several rounds as the inliers it gathers grow; stopping after a fixed few left such poses 10 cm off.
    for round_index in range(config.refine_rounds + 1):
        if len(inliers) < 4:
            break
        pose = _refined(refine, points_N3[inliers], uv_N2[inliers], K, pose)
        if round_index < config.refine_rounds:
            chosen = np.flatnonzero(reprojection_errors(points_N3, uv_N2, K, pose) < config.reprojection_threshold_px)
            if np.array_equal(chosen, inliers):
                break
            inliers = chosen
    if core_px is None:
        core_px = config.refine_core_fraction * config.reprojection_threshold_px
    if core_px <= 0 or config.refine_core_rounds == 0 or len(inliers) < MIN_CORE_POINTS:
        return pose, inliers
    # Least squares over every inlier is pulled by the matches that are near but wrong (a neighbouring cell's
    # point, several pixels off), which the threshold admits by design; the core excludes them.
    core = None
    for _ in range(config.refine_core_rounds):
        chosen = np.flatnonzero(reprojection_errors(points_N3, uv_N2, K, pose) < core_px)
        if len(chosen) < MIN_CORE_POINTS or (core is not None and np.array_equal(chosen, core)):
            break
        core = chosen
        pose = _refined(refine, points_N3[core], uv_N2[core], K, pose)
    return pose, np.flatnonzero(reprojection_errors(points_N3, uv_N2, K, pose) < config.reprojection_threshold_px)


# The core refinement needs at least this many points (fewer: the pose of the full inlier refinement stays).
MIN_CORE_POINTS = 12


def _refined(refine: Callable, points_N3: np.ndarray, uv_N2: np.ndarray, K: np.ndarray,
             pose: CameraPose) -> CameraPose:
    rvec, tvec = refine(points_N3, uv_N2, K, None, pose.rvec.copy(), pose.tvec.copy(), criteria=_REFINE_CRITERIA)
    return CameraPose(rvec.reshape(3, 1), tvec.reshape(3, 1))


def pose_jacobian(points_N3: np.ndarray, K: np.ndarray, world_T_cam: np.ndarray) -> np.ndarray:
    """Jacobian (2N, 6) of the projections w.r.t. a world-frame perturbation of the camera pose.

    The camera pose is perturbed as t' = t + dt, R' = exp([dtheta]x) R (rotation about the fixed world axes),
    which is the parameterisation of REP 103 / geometry_msgs PoseWithCovariance: (x, y, z, rot x, rot y, rot z).
    A world point X maps to camera coordinates p = R^T (X - t), so dp/dt = -R^T and dp/dtheta = R^T [X - t]x.
    """
    R = world_T_cam[:3, :3]
    d_N3 = np.asarray(points_N3, np.float64) - world_T_cam[:3, 3]
    p_N3 = d_N3 @ R
    x, y, z = p_N3[:, 0], p_N3[:, 1], p_N3[:, 2]
    inv_z = 1.0 / z
    # d(u, v)/dp for the pinhole projection, (N, 2, 3).
    dproj = np.zeros((len(p_N3), 2, 3))
    dproj[:, 0, 0] = K[0, 0] * inv_z
    dproj[:, 0, 2] = -K[0, 0] * x * inv_z * inv_z
    dproj[:, 1, 1] = K[1, 1] * inv_z
    dproj[:, 1, 2] = -K[1, 1] * y * inv_z * inv_z
    # dp/d(dt, dtheta), (N, 3, 6): -R^T and R^T [d]x.
    skew = np.zeros((len(d_N3), 3, 3))
    skew[:, 0, 1], skew[:, 0, 2] = -d_N3[:, 2], d_N3[:, 1]
    skew[:, 1, 0], skew[:, 1, 2] = d_N3[:, 2], -d_N3[:, 0]
    skew[:, 2, 0], skew[:, 2, 1] = -d_N3[:, 1], d_N3[:, 0]
    dp = np.concatenate([np.broadcast_to(-R.T, (len(d_N3), 3, 3)), R.T @ skew], axis=2)
    return (dproj @ dp).reshape(-1, 6)


def pose_covariance(points_N3: np.ndarray, residuals_px: np.ndarray, K: np.ndarray, world_T_cam: np.ndarray,
                    inflation: float = 1.0) -> np.ndarray | None:
    """Gauss-Newton covariance sigma^2 (J^T J)^-1 of world_T_cam, REP 103 order; None when ill-conditioned.

    Args:
        points_N3: inlier world points.
        residuals_px: their reprojection errors (pixel distances), to estimate the pixel noise variance.
        K: intrinsics of the undistorted pixels.
        world_T_cam: the refined camera pose.
        inflation: factor on the result (correlated dense predictions make the textbook value optimistic).
    """
    n = len(points_N3)
    if n < 4:
        return None
    J = pose_jacobian(points_N3, K, world_T_cam)
    dof = max(2 * n - 6, 1)
    sigma2 = float(np.sum(np.square(residuals_px))) / dof
    sigma2 = max(sigma2, 1e-6)  # exact synthetic data would otherwise give a zero (non-PD) covariance
    info = J.T @ J
    if not np.all(np.isfinite(info)) or np.linalg.cond(info) > 1e12:
        return None
    cov = np.linalg.inv(info) * (sigma2 * inflation)
    return 0.5 * (cov + cov.T)
