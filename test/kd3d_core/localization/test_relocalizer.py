"""Relocalizer: exact and noisy correspondences, distortion, failure paths, covariance."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from localization_cases import make_case

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import pose_error
from kd3d_core.localization import FailureReason, RansacMethod, RefineMethod, Relocalizer, RelocalizerConfig
from kd3d_core.prediction import ScenePrediction


class FixedPredictor:
    """Returns a prepared prediction whatever the image (the geometry under test is in the prediction)."""

    world_frame = "map"

    def __init__(self, prediction: ScenePrediction) -> None:
        self.prediction = prediction

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        return self.prediction


class RaisingPredictor:
    world_frame = "map"

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        raise RuntimeError("CUDA out of memory")


def _image(case) -> np.ndarray:
    """A textured image of the case's size (a blank one would be refused before the predictor runs)."""
    return np.random.default_rng(0).integers(0, 256, (case.size_wh[1], case.size_wh[0], 3), dtype=np.uint8)


def test_exact_correspondences_give_exact_pose(rng):
    case = make_case(rng)
    est = Relocalizer(FixedPredictor(case.prediction)).localize(_image(case), case.K, stamp_ns=42)
    assert est.success and est.failure is None and est.stamp_ns == 42
    err = pose_error(est.world_T_cam, case.world_T_cam)
    assert err.translation_m < 1e-4 and err.rotation_deg < 1e-3
    assert est.inliers == est.correspondences == 2048
    assert est.inlier_ratio == pytest.approx(1.0)
    t = est.timings
    assert min(t.predict_ms, t.select_ms, t.pnp_ms, t.refine_ms) >= 0 and t.total_ms > 0


@pytest.mark.parametrize("ransac", [RansacMethod.RANSAC, RansacMethod.USAC_DEFAULT, RansacMethod.USAC_FAST,
                                    RansacMethod.USAC_ACCURATE, RansacMethod.USAC_LIGHT])
def test_noise_and_outliers(rng, ransac):
    """2 cm point noise and 40 % gross outliers: within 3 cm / 1 degree on all of several cameras."""
    relocalizer_cfg = RelocalizerConfig(ransac=ransac)
    for _ in range(4):
        case = make_case(rng, sigma_m=0.02, outliers=0.4)
        est = Relocalizer(FixedPredictor(case.prediction), relocalizer_cfg).localize(_image(case), case.K)
        assert est.success, est.detail
        err = pose_error(est.world_T_cam, case.world_T_cam)
        assert err.translation_m < 0.03 and err.rotation_deg < 1.0, err
        assert 0.4 < est.inlier_ratio < 0.75


def test_distorted_pixels_are_undistorted(rng):
    """Observed pixels come from a distorted camera; passing the coefficients recovers the exact pose."""
    case = make_case(rng)
    dist = np.array([-0.25, 0.08, 0.001, -0.0005, 0.0])
    pts = case.prediction.points_hw3.reshape(-1, 3).astype(np.float64)
    cam_T_world = np.linalg.inv(case.world_T_cam)
    rvec, _ = cv2.Rodrigues(cam_T_world[:3, :3])
    uv_dist, _ = cv2.projectPoints(pts, rvec, cam_T_world[:3, 3], case.K, dist)
    pred = ScenePrediction(case.prediction.points_hw3, case.prediction.conf_hw,
                           uv_dist.reshape(case.prediction.uv_hw2.shape).astype(np.float32))
    reloc = Relocalizer(FixedPredictor(pred))
    good = reloc.localize(_image(case), case.K, dist_coeffs=dist)
    assert good.success
    err = pose_error(good.world_T_cam, case.world_T_cam)
    assert err.translation_m < 1e-3 and err.rotation_deg < 0.01
    ignored = reloc.localize(_image(case), case.K)
    assert not ignored.success or pose_error(ignored.world_T_cam, case.world_T_cam).translation_m > 10 * \
        err.translation_m


def test_confidence_threshold_and_top_k(rng):
    """Cells below the threshold are never used: making them gross outliers changes nothing."""
    case = make_case(rng)
    conf = rng.uniform(0, 1, case.prediction.conf_hw.shape).astype(np.float32)
    pts = case.prediction.points_hw3.copy()
    pts[conf <= 0.5] += 3.0
    pred = ScenePrediction(pts, conf, case.prediction.uv_hw2)
    cfg = RelocalizerConfig(min_confidence=0.5, max_correspondences=500, refine_rounds=0)
    est = Relocalizer(FixedPredictor(pred), cfg).localize(_image(case), case.K)
    assert est.success and est.correspondences == 500 and est.inliers == 500


@pytest.mark.parametrize("image, reason", [
    (np.zeros((0, 0, 3), np.uint8), FailureReason.BAD_IMAGE),
    (np.zeros((48, 64, 3), np.float32), FailureReason.BAD_IMAGE),
    (np.zeros((48, 64), np.uint8), FailureReason.BAD_IMAGE),
    ("not an image", FailureReason.BAD_IMAGE),
])
def test_bad_images_fail_with_reason(rng, image, reason):
    case = make_case(rng)
    est = Relocalizer(FixedPredictor(case.prediction)).localize(image, case.K)
    assert not est.success and est.failure is reason and est.world_T_cam is None and est.detail


def test_bad_intrinsics_and_raising_predictor(rng):
    case = make_case(rng)
    reloc = Relocalizer(FixedPredictor(case.prediction))
    assert reloc.localize(_image(case), np.full((3, 3), np.nan)).failure is FailureReason.BAD_INTRINSICS
    assert reloc.localize(_image(case), case.K, dist_coeffs=np.ones(3)).failure is FailureReason.BAD_INTRINSICS
    est = Relocalizer(RaisingPredictor()).localize(_image(case), case.K)
    assert est.failure is FailureReason.PREDICTION_FAILED and "CUDA out of memory" in est.detail


def test_nan_and_empty_predictions(rng):
    case = make_case(rng)
    nan = ScenePrediction(np.full_like(case.prediction.points_hw3, np.nan), case.prediction.conf_hw,
                          case.prediction.uv_hw2)
    est = Relocalizer(FixedPredictor(nan)).localize(_image(case), case.K)
    assert est.failure is FailureReason.TOO_FEW_CORRESPONDENCES and est.correspondences == 0
    nan_conf = ScenePrediction(case.prediction.points_hw3, np.full_like(case.prediction.conf_hw, np.nan),
                               case.prediction.uv_hw2)
    assert Relocalizer(FixedPredictor(nan_conf)).localize(_image(case), case.K).failure is \
        FailureReason.TOO_FEW_CORRESPONDENCES
    wrong = ScenePrediction(case.prediction.points_hw3[..., :2], case.prediction.conf_hw, case.prediction.uv_hw2)
    assert Relocalizer(FixedPredictor(wrong)).localize(_image(case), case.K).failure is FailureReason.BAD_PREDICTION


def test_random_points_fail_sanity_checks(rng):
    """Pure noise must not produce a 'successful' pose."""
    case = make_case(rng, outliers=1.0)
    est = Relocalizer(FixedPredictor(case.prediction), RelocalizerConfig(min_inliers=100)).localize(
        _image(case), case.K)
    assert not est.success
    assert est.failure in (FailureReason.TOO_FEW_INLIERS, FailureReason.PNP_FAILED, FailureReason.LOW_INLIER_RATIO)


def test_config_validation():
    with pytest.raises(ConfigError, match="min_inliers"):
        RelocalizerConfig(min_inliers=2)
    with pytest.raises(ConfigError, match="ransac must be one of"):
        RelocalizerConfig(ransac="magic")
    assert RelocalizerConfig(refine="vvs").refine is RefineMethod.VVS
