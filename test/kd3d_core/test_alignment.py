"""Global alignment on exact synthetic geometry with noise, outlier pairs and an unknown scale per pair."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.alignment import AlignConfig, align_pairs
from kd3d_core.alignment.sim3 import Sim3Array, compose, inverse
from kd3d_core.alignment.synthetic import SyntheticConfig, SyntheticPairs
from kd3d_core.geometry import pose_error, umeyama
from kd3d_core.labels import ScaleSource


@pytest.fixture(scope="module")
def room() -> SyntheticPairs:
    """40 frames looping through a 5 x 4 x 3 m room; 0.5 % depth noise; 3 wrong loop pairs."""
    return SyntheticPairs(SyntheticConfig(n_frames=40, size_wh=(64, 48), window=3, noise=0.005, n_outliers=3))


def _errors_after_sim3(poses_est: np.ndarray, poses_ref: np.ndarray) -> tuple[float, float]:
    G = umeyama(poses_est[:, :3, 3], poses_ref[:, :3, 3])
    errs = [pose_error(G.apply_pose(a), b) for a, b in zip(poses_est, poses_ref)]
    return max(e.translation_m for e in errs), max(e.rotation_deg for e in errs)


def test_poses_within_1cm_half_degree_despite_outliers(room):
    n = room.config.n_frames
    res = align_pairs(room, n, (48, 64), AlignConfig(), K_N33=np.repeat(room.K[None], n, 0))
    t_err, r_err = _errors_after_sim3(res.world_T_cam_N44, room.poses)
    assert t_err < 0.01 and r_err < 0.5
    assert res.aligned_N.all() and res.scale_source is ScaleSource.ARBITRARY
    bad = np.array([(min(i, j), max(i, j)) in room.outlier_pairs for i, j in zip(res.edges.i, res.edges.j)])
    assert bad.sum() == 6 and not res.edge_inlier[bad].any() and res.edge_inlier[~bad].mean() > 0.95
    assert np.allclose(res.world_T_cam_N44[0], np.eye(4))  # gauge: first frame


def test_reference_poses_make_labels_metric_in_map_frame(room):
    n = room.config.n_frames
    res = align_pairs(room, n, (48, 64), AlignConfig(), K_N33=np.repeat(room.K[None], n, 0),
                      ref_world_T_cam=list(room.poses))
    assert res.scale_source is ScaleSource.POSES
    errs = [pose_error(a, b) for a, b in zip(res.world_T_cam_N44, room.poses)]
    assert max(e.translation_m for e in errs) < 0.01 and max(e.rotation_deg for e in errs) < 0.5
    pts, conf = res.world_points(5)
    exact = room.points[5] @ room.poses[5][:3, :3].T + room.poses[5][:3, 3]
    err = np.linalg.norm(pts - exact, axis=-1)[conf > 0]
    assert conf.mean() > 0.5 and np.median(err) < 0.01
    assert np.nanmax(res.residual_N) < 0.02


def test_unknown_focal_is_estimated_and_depth_gives_metric_scale():
    room = SyntheticPairs(SyntheticConfig(n_frames=30, size_wh=(64, 48), window=3, noise=0.003, n_outliers=1,
                                          seed=2))
    depth = lambda k: np.asarray(room.points[k][..., 2], np.float32)  # noqa: E731
    res = align_pairs(room, 30, (48, 64), AlignConfig(), K_N33=None, metric_depth=depth)
    assert res.canonical.focal_estimated and abs(res.canonical.K_N33[0, 0, 0] / room.K[0, 0] - 1) < 0.01
    assert res.scale_source is ScaleSource.DEPTH
    G = umeyama(res.world_T_cam_N44[:, :3, 3], room.poses[:, :3, 3])
    assert abs(G.scale - 1) < 0.01
    t_err, r_err = _errors_after_sim3(res.world_T_cam_N44, room.poses)
    assert t_err < 0.01 and r_err < 0.5


def test_frames_without_pairs_are_flagged(room):
    n = room.config.n_frames

    class Dropped:
        def __iter__(self):
            return (p for p in room if 7 not in (p.i, p.j))

    res = align_pairs(Dropped(), n, (48, 64), AlignConfig(), K_N33=np.repeat(room.K[None], n, 0))
    assert not res.aligned_N[7] and res.aligned_N.sum() == n - 1 and np.isnan(res.residual_N[7])
    assert res.world_points(7)[1].max() == 0


def test_sim3_compose_inverse_roundtrip():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    S = Sim3Array(rng.uniform(0.5, 2, 5), Rotation.random(5, random_state=1).as_matrix(), rng.normal(size=(5, 3)))
    ident = compose(S, inverse(S))
    assert np.allclose(ident.s, 1) and np.allclose(ident.R, np.eye(3)) and np.allclose(ident.t, 0)


def test_synthetic_generator_refuses_impossible_outlier_counts():
    """Too few frames for the asked-for wrong loop pairs is an error, not an endless search."""
    from kd3d_core.errors import ConfigError

    with pytest.raises(ConfigError, match="allow only"):
        SyntheticPairs(SyntheticConfig(n_frames=8, window=5, n_outliers=1, size_wh=(16, 12)))
