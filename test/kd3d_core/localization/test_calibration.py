"""Covariance calibration: NEES and ellipsoid coverage against known Gaussian errors, and on a real model."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kd3d_core.geometry import make_pose
from kd3d_core.localization import FailureReason, PoseEstimate, Relocalizer, RelocalizerConfig, StageTimings
from kd3d_core.localization.calibration import covariance_calibration, expected_coverage, pose_nees
from kd3d_core.scene import Split, open_scene
from kd3d_core.students import load_scene_model


def _estimates(rng, n: int, claimed_over_true: float):
    """Poses whose (position, rotation) errors are drawn from P_true, reported with covariance c * P_true."""
    A = rng.normal(size=(6, 6))
    P_true = A @ A.T * 1e-4 + np.eye(6) * 1e-5
    L = np.linalg.cholesky(P_true)
    truths, estimates = [], []
    for _ in range(n):
        truth = make_pose(Rotation.from_rotvec(rng.normal(size=3)).as_matrix(), rng.normal(size=3))
        e = L @ rng.normal(size=6)
        est = make_pose(Rotation.from_rotvec(e[3:]).as_matrix() @ truth[:3, :3], truth[:3, 3] + e[:3])
        estimates.append(PoseEstimate(True, est, P_true * claimed_over_true, 100, 200, 1.0, StageTimings()))
        truths.append(truth)
    return estimates, truths


def test_honest_covariance_gives_chi2_statistics(rng):
    estimates, truths = _estimates(rng, 4000, 1.0)
    cal = covariance_calibration(estimates, truths, inflation=1.0)
    s = cal.summary()
    assert cal.frames == 4000
    assert s["nees_position_mean"] == pytest.approx(3.0, rel=0.08)
    assert s["nees_rotation_mean"] == pytest.approx(3.0, rel=0.08)
    for name, bound in (("1sigma", 1.0), ("2sigma", 4.0), ("chi2_95", 7.815)):
        assert s[f"coverage_position_{name}"] == pytest.approx(expected_coverage(bound), abs=0.025)
    assert cal.inflation_for(0.95) == pytest.approx(1.0, rel=0.1)


def test_overconfident_covariance_is_detected_and_the_inflation_recovered(rng):
    """Reported covariance 10x too small: NEES ~30, and the suggested inflation is ~10x what was used."""
    estimates, truths = _estimates(rng, 3000, 0.1)
    cal = covariance_calibration(estimates, truths, inflation=2.0)
    s = cal.summary()
    assert s["nees_position_mean"] == pytest.approx(30.0, rel=0.1)
    assert s["coverage_position_chi2_95"] < 0.5
    assert cal.inflation_for(0.95) == pytest.approx(20.0, rel=0.12)
    fixed = cal.summary(inflation=cal.inflation_for(0.95))
    assert min(fixed["coverage_position_chi2_95"], fixed["coverage_rotation_chi2_95"]) >= 0.95


def test_failures_and_unknown_truths_are_skipped(rng):
    estimates, truths = _estimates(rng, 3, 1.0)
    estimates.append(PoseEstimate.failed(FailureReason.PNP_FAILED, "none"))
    truths.append(np.eye(4))
    truths[0] = None
    assert covariance_calibration(estimates, truths, 1.0).frames == 2
    with pytest.raises(ValueError, match="3 true poses"):
        covariance_calibration(estimates, truths[:3], 1.0)
    empty = covariance_calibration([], [], 1.0)
    assert empty.frames == 0 and np.isnan(empty.inflation_for())


def test_pose_nees_of_a_known_error():
    P = np.diag([0.01, 0.04, 0.09, 1e-4, 1e-4, 4e-4])
    truth = np.eye(4)
    est = make_pose(Rotation.from_rotvec([0, 0, 0.02]).as_matrix(), [0.1, 0.2, 0.0])
    p, r = pose_nees(est, P, truth)
    assert p == pytest.approx(1.0 + 1.0) and r == pytest.approx(1.0)


def test_default_inflation_covers_real_errors(fast_room):
    """On the real model's query frames the default covariance must not be the ~10x overconfident textbook one:
    most frames fall inside the chi^2(3) 99 % ellipsoid, far fewer with inflation 1."""
    model = load_scene_model(fast_room.model_path, "cpu")
    frames = open_scene(fast_room.root).split(Split.QUERY)
    rgbs = [f.load_rgb() for f in frames]
    truths = [f.world_T_cam for f in frames]
    inside = {}
    for inflation in (1.0, RelocalizerConfig().covariance_inflation):
        reloc = Relocalizer(model, RelocalizerConfig(covariance_inflation=inflation))
        cal = covariance_calibration([reloc.localize(rgb, f.K) for rgb, f in zip(rgbs, frames)], truths, inflation)
        assert cal.frames == len(frames)
        inside[inflation] = float(np.mean(np.maximum(cal.nees_position, cal.nees_rotation) <= 11.34))
    assert inside[RelocalizerConfig().covariance_inflation] >= 5 / 6
    assert inside[1.0] < inside[RelocalizerConfig().covariance_inflation]
