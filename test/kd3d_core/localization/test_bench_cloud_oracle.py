"""Stage benchmark helper, predicted point clouds and the oracle predictors on a rendered view."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import pose_error
from kd3d_core.localization import OracleDepthPredictor, OracleNoise, OracleScenePredictor, Relocalizer, predicted_cloud
from kd3d_core.localization.bench import time_relocalizer
from kd3d_core.synth import SynthConfig, make_room, render_view, synth_intrinsics, synth_poses


@pytest.fixture(scope="module")
def view():
    cfg = SynthConfig(preset="tiny", seed=2, mapping_frames=2, query_frames=2, size_wh=(160, 120))
    pose = synth_poses(cfg)[1][0]
    K = synth_intrinsics(cfg.size_wh)
    r = render_view(make_room(cfg), K, pose, cfg.size_wh)
    return r.rgb, r.depth, K, pose


def test_oracle_localizes_exactly_and_with_noise(view):
    rgb, depth, K, pose = view
    exact = Relocalizer(OracleDepthPredictor(depth, K, pose, stride=4)).localize(rgb, K)
    assert exact.success and pose_error(exact.world_T_cam, pose).translation_m < 1e-5
    noisy = OracleDepthPredictor(depth, K, pose, stride=4, noise=OracleNoise(0.005, 0.3),
                                 rng=np.random.default_rng(0))
    est = Relocalizer(noisy).localize(rgb, K)
    err = pose_error(est.world_T_cam, pose)
    assert est.success and err.translation_m < 0.01 and err.rotation_deg < 0.5
    with pytest.raises(Kd3dError, match="needs a random generator"):
        OracleDepthPredictor(depth, K, pose, noise=OracleNoise(0.01))
    with pytest.raises(Kd3dError, match="built for 160x120"):
        OracleDepthPredictor(depth, K, pose).predict(rgb[:60])
    with pytest.raises(Kd3dError, match="no ground truth"):
        OracleScenePredictor([(rgb, OracleDepthPredictor(depth, K, pose))]).predict(rgb[::-1].copy())


def test_predicted_cloud(view):
    rgb, depth, K, pose = view
    pred = OracleDepthPredictor(depth, K, pose, stride=2).predict(rgb)
    cloud = predicted_cloud(pred, rgb)
    n = int((pred.conf_hw > 0).sum())
    assert cloud.points_N3.shape == (n, 3) and cloud.points_N3.dtype == np.float32
    assert cloud.colors_N3.shape == (n, 3) and cloud.colors_N3.dtype == np.uint8
    # Colours are the input pixels the cells stand for.
    u, v = pred.uv_hw2.reshape(-1, 2)[0].astype(int)
    np.testing.assert_array_equal(cloud.colors_N3[0], rgb[v, u])
    thin = predicted_cloud(pred, None, voxel=0.1)
    keys = np.floor(thin.points_N3 / 0.1).astype(np.int64)
    assert thin.colors_N3 is None and len(np.unique(keys, axis=0)) == len(keys) < n
    assert len(predicted_cloud(pred, rgb, max_points=100).points_N3) == 100
    assert len(predicted_cloud(pred, rgb, min_conf=2.0).points_N3) == 0
    with pytest.raises(Kd3dError, match="voxel size"):
        predicted_cloud(pred, rgb, voxel=0.0)


def test_time_relocalizer(view):
    rgb, depth, K, pose = view
    bench = time_relocalizer(Relocalizer(OracleDepthPredictor(depth, K, pose, stride=4)), rgb, K, runs=3, warmup=1)
    assert bench.size_wh == (160, 120) and bench.runs == 3 and bench.success_rate == 1.0
    assert set(bench.median_ms) == {"predict", "select", "pnp", "refine", "total"}
    assert bench.min_ms["total"] <= bench.median_ms["total"] <= bench.max_ms["total"] and bench.hz > 0
