"""Label filters after alignment and the alignment's robustness to DUSt3R-level pair errors."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.alignment import AlignConfig, align_pairs
from kd3d_core.alignment.filters import LabelFilterConfig, depth_edges, filter_masks
from kd3d_core.alignment.graph import EdgeSet, triangle_scores
from kd3d_core.alignment.pairwise import CanonicalFrames
from kd3d_core.alignment.sim3 import Sim3Array
from kd3d_core.alignment.synthetic import SyntheticConfig, SyntheticPairs
from kd3d_core.geometry import make_pose
from kd3d_core.labels import ScaleSource

H, W = 24, 32
K = np.array([[30.0, 0, (W - 1) / 2], [0, 30.0, (H - 1) / 2], [0, 0, 1]])


def _wall(depths: list[np.ndarray], xs: list[float]):
    """Cameras side by side (x offsets) looking at a wall 2 m away; per-frame depth maps as given."""
    n = len(depths)
    canon = CanonicalFrames(np.array(depths, np.float32), np.full((n, H, W), 3.0, np.float32),
                            np.repeat(K[None], n, 0), np.full(n, 4), False)
    poses = np.array([make_pose(np.eye(3), np.array([x, 0.0, 0.0])) for x in xs])
    labelled = np.ones((n, H, W), bool)
    nbrs = [[m for m in range(n) if m != k] for k in range(n)]
    return poses, canon, labelled, nbrs


def test_a_region_two_neighbours_contradict_is_dropped_and_the_rest_kept():
    depths = [np.full((H, W), 2.0) for _ in range(3)]
    depths[1][8:14, 12:20] = 2.6  # a misjudged object: 30 % too deep in one view only
    poses, canon, labelled, nbrs = _wall(depths, [0.0, 0.05, 0.1])
    out = filter_masks(poses, np.ones(3), canon, labelled, np.ones((3, H, W)), nbrs,
                       LabelFilterConfig(edge_rel=0.0))
    assert not out.keep_NHW[1, 9:13, 13:19].any()  # contradicted by both neighbours
    assert out.keep_NHW[0].mean() > 0.9 and out.keep_NHW[2].mean() > 0.9  # one contradiction, one confirmation
    assert out.stats["refused_frames"] == 0


def test_fusion_averages_independent_per_view_errors():
    rng = np.random.default_rng(0)
    errors = [0.03, -0.02, 0.01, -0.03, 0.02]
    depths = [np.full((H, W), 2.0 * (1 + e)) + rng.normal(0, 0.002, (H, W)) for e in errors]
    poses, canon, labelled, nbrs = _wall(depths, [0.02 * k for k in range(5)])
    out = filter_masks(poses, np.ones(5), canon, labelled, np.ones((5, H, W)), nbrs, LabelFilterConfig(edge_rel=0.0))
    fused = canon.depth_NHW * out.depth_factor_NHW
    inner = (slice(4, -4), slice(6, -6))
    before = np.abs(canon.depth_NHW[(slice(None), *inner)] - 2.0).mean()
    after = np.abs(fused[(slice(None), *inner)] - 2.0).mean()
    assert after < 0.3 * before


def test_a_frame_off_in_scale_everywhere_is_refused():
    depths = [np.full((H, W), 2.5 if k == 1 else 2.0) for k in range(6)]
    poses, canon, labelled, nbrs = _wall(depths, [0.02 * k for k in range(6)])
    out = filter_masks(poses, np.ones(6), canon, labelled, np.ones((6, H, W)), nbrs, LabelFilterConfig(edge_rel=0.0))
    assert out.stats["refused_frames"] == 1 and not out.keep_NHW[1].any() and out.keep_NHW[0].mean() > 0.9


def test_depth_edges_mask_both_sides_of_a_jump_and_confidence_threshold_applies():
    d = np.full((H, W), 2.0)
    d[:, 16:] = 1.2
    edges = depth_edges(d, 0.05)
    assert edges[:, 14:18].all() and not edges[:, :13].any() and not edges[:, 19:].any()
    poses, canon, labelled, nbrs = _wall([d, d], [0.0, 0.0])
    conf = np.ones((2, H, W))
    conf[:, :, :4] = 0.5
    out = filter_masks(poses, np.ones(2), canon, labelled, conf, nbrs,
                       LabelFilterConfig(consistency_rel=0.0, min_conf=0.8))
    assert not out.keep_NHW[:, :, :4].any() and not out.keep_NHW[:, :, 15:17].any() and out.keep_NHW[:, :, 6:12].all()


def _edges_with_noise(n: int, wrong: set[tuple[int, int]], noise_deg: float, seed: int = 0) -> EdgeSet:
    """Directed window-3 edges of a chain with small rotation noise and a few grossly wrong pairs."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    ii, jj, Rs = [], [], []
    for i in range(n):
        for j in range(i + 1, min(n, i + 4)):
            big = (i, j) in wrong
            rv = rng.normal(0, np.radians(40 if big else noise_deg) / np.sqrt(3), 3)
            R = Rotation.from_rotvec(rv).as_matrix()
            ii += [i, j]
            jj += [j, i]
            Rs += [R, R.T]
    m = len(ii)
    return EdgeSet(np.array(ii), np.array(jj), Sim3Array(np.ones(m), np.array(Rs), np.zeros((m, 3))), np.ones(m))


def test_worst_first_culling_keeps_the_good_edges_next_to_a_wrong_pair():
    wrong = {(5, 7), (6, 8), (20, 22)}
    edges = _edges_with_noise(40, wrong, noise_deg=2.5)
    _, inlier = triangle_scores(40, edges, np.radians(5.0), 3.0)
    bad = np.array([(min(i, j), max(i, j)) in wrong for i, j in zip(edges.i, edges.j)])
    assert not inlier[bad].any() and inlier[~bad].mean() > 0.97


@pytest.mark.parametrize("reference", [True, False])
def test_reference_poses_are_kept_exactly_when_asked(reference):
    room = SyntheticPairs(SyntheticConfig(n_frames=30, size_wh=(64, 48), window=3, noise=0.01, n_outliers=1, seed=4))
    res = align_pairs(room, 30, (48, 64), AlignConfig(reference_poses=reference),
                      K_N33=np.repeat(room.K[None], 30, 0), ref_world_T_cam=list(room.poses))
    assert res.scale_source is ScaleSource.POSES and res.aligned_N.all()
    gap = np.abs(res.world_T_cam_N44 - room.poses).max()
    assert (gap < 1e-9) if reference else (0 < gap < 0.05)
