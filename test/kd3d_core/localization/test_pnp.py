"""refine_pose: the refinement on the inliers and on their core (near-miss matches inside the threshold)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from localization_cases import K_640, make_case

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import invert_pose, make_pose
from kd3d_core.localization.config import RansacMethod, RelocalizerConfig
from kd3d_core.localization.pnp import MIN_CORE_POINTS, CameraPose, ransac_pnp, refine_pose, reprojection_errors


def _near_miss_case(rng: np.random.Generator, near_miss: float = 0.3, same_way: bool = True):
    """Exact world points, pixels with 0.5 px noise, and a fraction of near misses: pixels pushed 5-10 px
    (inside the 12 px threshold, as a neighbouring cell's match is), all the same way or each its own."""
    case = make_case(rng, stride=16)
    points = case.prediction.points_hw3.reshape(-1, 3).astype(np.float64)
    uv = case.prediction.uv_hw2.reshape(-1, 2).astype(np.float64) + rng.normal(scale=0.5, size=(len(points), 2))
    miss = rng.random(len(points)) < near_miss
    angle = np.full(int(miss.sum()), 0.6435) if same_way else rng.uniform(0, 2 * np.pi, int(miss.sum()))
    uv[miss] += rng.uniform(5.0, 10.0, size=(int(miss.sum()), 1)) * np.stack([np.cos(angle), np.sin(angle)], 1)
    cam_T_world = invert_pose(case.world_T_cam)
    start = CameraPose(cv2.Rodrigues(cam_T_world[:3, :3])[0], cam_T_world[:3, 3].reshape(3, 1))
    return case, points, uv, miss, start


def _position_error(case, pose: CameraPose) -> float:
    world_T_cam = invert_pose(make_pose(cv2.Rodrigues(pose.rvec)[0], pose.tvec))
    return float(np.linalg.norm(world_T_cam[:3, 3] - case.world_T_cam[:3, 3]))


def test_core_refinement_is_not_pulled_by_near_misses(rng):
    case, points, uv, miss, start = _near_miss_case(rng)
    inliers = np.flatnonzero(reprojection_errors(points, uv, K_640, start) < 12.0)
    assert miss[inliers].sum() > 0.2 * len(inliers)  # the near misses are inside the threshold
    all_pose, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig(refine_core_fraction=0.0))
    core_pose, core_inliers = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig())
    all_err, core_err = _position_error(case, all_pose), _position_error(case, core_pose)
    assert core_err < 0.25 * all_err, (core_err, all_err)
    # what is returned (and judged) is every inlier within the full threshold of the final pose
    np.testing.assert_array_equal(core_inliers,
                                  np.flatnonzero(reprojection_errors(points, uv, K_640, core_pose) < 12.0))
    assert len(core_inliers) >= 0.95 * len(inliers)


def test_core_refinement_needs_enough_core_points(rng):
    """Every pixel 5-10 px off, each its own way: fewer than MIN_CORE_POINTS in the core, so the full
    refinement's pose stays."""
    case, points, uv, miss, start = _near_miss_case(rng, near_miss=1.0, same_way=False)
    inliers = np.flatnonzero(reprojection_errors(points, uv, K_640, start) < 12.0)
    plain = RelocalizerConfig(refine_core_fraction=0.0)
    all_pose, _ = refine_pose(points, uv, K_640, start, inliers, plain)
    assert np.sum(reprojection_errors(points, uv, K_640, all_pose) < 3.0) < MIN_CORE_POINTS
    core_pose, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig())
    np.testing.assert_array_equal(core_pose.rvec, all_pose.rvec)
    np.testing.assert_array_equal(core_pose.tvec, all_pose.tvec)


def test_core_refinement_off_by_zero_rounds(rng):
    case, points, uv, miss, start = _near_miss_case(rng)
    inliers = np.flatnonzero(reprojection_errors(points, uv, K_640, start) < 12.0)
    a, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig(refine_core_fraction=0.0))
    b, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig(refine_core_rounds=0))
    np.testing.assert_array_equal(a.tvec, b.tvec)


def test_an_explicit_core_radius_overrides_the_fraction(rng):
    case, points, uv, miss, start = _near_miss_case(rng)
    inliers = np.flatnonzero(reprojection_errors(points, uv, K_640, start) < 12.0)
    plain, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig(refine_core_fraction=0.0))
    none, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig(), core_px=0.0)
    np.testing.assert_array_equal(none.tvec, plain.tvec)
    three, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig(refine_core_fraction=0.0), core_px=3.0)
    default, _ = refine_pose(points, uv, K_640, start, inliers, RelocalizerConfig())  # 0.25 x 12 px = 3 px
    np.testing.assert_array_equal(three.tvec, default.tvec)


@pytest.mark.parametrize("size_wh, grid_hw, fraction, expected", [
    ((320, 240), (30, 40), 0.25, 4.0),   # 8-pixel cells: the half-cell floor (4 px) is above 3 px
    ((640, 480), (30, 40), 0.25, 8.0),   # a 320x240 network on 640x480 images: 16-pixel cells
    ((320, 240), (30, 40), 0.5, 6.0),    # 6 px of the threshold is above the floor
    ((320, 240), (30, 40), 0.0, 0.0)])   # off
def test_the_core_radius_has_a_floor_of_half_a_cell(size_wh, grid_hw, fraction, expected):
    from kd3d_core.localization.relocalizer import Relocalizer
    from kd3d_core.prediction import ScenePrediction

    h, w = grid_hw
    prediction = ScenePrediction(np.zeros((h, w, 3), np.float32), np.ones((h, w), np.float32),
                                 np.zeros((h, w, 2), np.float32))
    cfg = RelocalizerConfig(refine_core_fraction=fraction)
    assert Relocalizer._core_px(cfg, prediction, size_wh) == pytest.approx(expected)


@pytest.mark.parametrize("field, value", [("refine_core_fraction", -0.1), ("refine_core_fraction", 1.5),
                                          ("refine_core_fraction", float("nan")), ("refine_core_rounds", -1),
                                          ("refine_core_min_cells", -0.5), ("refine_core_min_cells", 9.0)])
def test_core_refinement_config_is_checked(field, value):
    with pytest.raises(ConfigError, match=field):
        RelocalizerConfig(**{field: value})


@pytest.mark.parametrize("method", [RansacMethod.USAC_LIGHT, RansacMethod.USAC_DEFAULT])
def test_a_read_only_camera_matrix_is_accepted(rng, method):
    """A K decoded from a message can be read-only; OpenCV's USAC-parameters overload of solvePnPRansac writes its
    camera matrix, and used to refuse such a K with "Bad argument" on every frame (the replay tests caught it)."""
    K = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
    K.setflags(write=False)
    points = np.c_[rng.uniform(-1.0, 1.0, (200, 2)), rng.uniform(2.0, 4.0, 200)]
    uv = points[:, :2] / points[:, 2:] * 300.0 + np.array([160.0, 120.0])
    found = ransac_pnp(points.astype(np.float32), uv.astype(np.float32), K, RelocalizerConfig(ransac=method))
    assert found is not None and len(found[1]) == 200
    np.testing.assert_allclose(found[0].tvec.ravel(), 0.0, atol=1e-3)



def test_refinement_rounds_stop_once_the_inliers_stay_the_same(rng, monkeypatch):
    """Rounds are a maximum: from a pose already at the optimum, one solve on the inliers and one on their core
    (their re-selection finds the same points), not refine_rounds + 1 + refine_core_rounds; with the inliers of a
    pose 3 cm off, it goes on until they stop changing and ends where the exact start does."""
    from kd3d_core.localization import pnp

    case, points, uv, miss, start = _near_miss_case(rng)
    calls = []
    real = cv2.solvePnPRefineLM

    def counting(*args, **kwargs):  # the real LM, counted
        calls.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(pnp.cv2, "solvePnPRefineLM", counting)
    cfg = RelocalizerConfig()
    assert cfg.refine_rounds >= 5 and cfg.refine_core_rounds >= 5
    settled, inliers = refine_pose(points, uv, K_640, start, np.arange(len(points)), cfg)
    calls.clear()
    again, _ = refine_pose(points, uv, K_640, settled, inliers, cfg)
    assert len(calls) <= 3, calls  # inliers: 1 solve; core: 1-2 (the first core differs from the inliers)
    assert _position_error(case, again) < 1e-3
    off = invert_pose(case.world_T_cam @ make_pose(np.eye(3), np.array([0.03, 0.0, 0.0])))
    near = CameraPose(cv2.Rodrigues(off[:3, :3])[0], off[:3, 3].reshape(3, 1))
    few = np.flatnonzero(reprojection_errors(points, uv, K_640, near) < 12.0)
    calls.clear()
    moved, final = refine_pose(points, uv, K_640, near, few, cfg)
    assert len(calls) <= cfg.refine_rounds + 1 + cfg.refine_core_rounds
    assert abs(_position_error(case, moved) - _position_error(case, again)) < 2e-3
    np.testing.assert_array_equal(final, np.flatnonzero(reprojection_errors(points, uv, K_640, moved) < 12.0))
