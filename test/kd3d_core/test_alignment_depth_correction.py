"""Depth correction from triangulated anchors: the smooth field fit, the anchors themselves, the alignment path."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.alignment import AlignConfig, align_pairs
from kd3d_core.alignment.anchors import (AnchorConfig, DepthAnchors, FeatureKind, _Features, anchors_on_grid,
                                         build_tracks, epipolar_distance, find_anchors, match_mutual)
from kd3d_core.alignment.depth_correction import DepthCorrectionConfig, correct_depths, field_image
from kd3d_core.alignment.pairwise import PairPrediction
from kd3d_core.alignment.synthetic import SyntheticConfig, SyntheticPairs
from kd3d_core.geometry import make_pose, transform_points
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene

H, W = 48, 64


def _distortion(h: int = H, w: int = W) -> np.ndarray:
    """A smooth multiplicative depth distortion of about 5 % (what a network's depth gets wrong alike)."""
    u, v = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    return np.exp(0.05 * np.sin(2.5 * u + 1.0) * np.cos(2.0 * v) + 0.03 * (u - 0.5)).astype(np.float32)


def _anchors_from(depth_HW: np.ndarray, m: int, rng: np.random.Generator, noise: float = 0.003) -> DepthAnchors:
    h, w = depth_HW.shape
    uv = np.column_stack([rng.uniform(0, w - 1, m), rng.uniform(0, h - 1, m)])
    d = depth_HW[np.round(uv[:, 1]).astype(int), np.round(uv[:, 0]).astype(int)]
    return DepthAnchors(uv, d * np.exp(rng.normal(0, noise, m)), np.full(m, noise))


def test_a_known_smooth_distortion_is_measured_and_removed():
    rng = np.random.default_rng(0)
    true = np.full((H, W), 2.0, np.float32) + np.linspace(0, 1, W, dtype=np.float32)[None]
    teacher = true * _distortion() * np.exp(rng.normal(0, 0.01, (H, W))).astype(np.float32)  # + per-pixel noise
    out = correct_depths(teacher[None], np.ones((1, H, W), bool), [_anchors_from(true, 150, rng)],
                         DepthCorrectionConfig())
    before = np.median(np.abs(np.log(teacher / true)))
    after = np.median(np.abs(np.log(teacher * out.factor_NHW[0] / true)))
    assert after < 0.5 * before, (before, after)
    assert out.stats["frames_corrected"] == 1


def test_gross_anchor_outliers_do_not_drag_the_correction():
    rng = np.random.default_rng(1)
    true = np.full((H, W), 3.0, np.float32)
    anchors = _anchors_from(true, 200, rng)
    bad = rng.random(200) < 0.2  # a fifth of the tracks wrong by 30 %
    anchors = anchors._replace(depth_M=np.where(bad, anchors.depth_M * 1.3, anchors.depth_M))
    out = correct_depths(true[None], np.ones((1, H, W), bool), [anchors], DepthCorrectionConfig())
    assert np.median(np.abs(np.log(out.factor_NHW[0]))) < 0.01


def test_frames_with_few_anchors_or_none_are_left_alone():
    rng = np.random.default_rng(2)
    depth = np.full((2, H, W), 2.0, np.float32)
    few = _anchors_from(depth[0] * 1.1, 5, rng)
    out = correct_depths(depth, np.ones((2, H, W), bool), [few, None], DepthCorrectionConfig(min_anchors=20))
    assert np.all(out.factor_NHW == 1.0) and out.stats["frames_corrected"] == 0


def test_the_field_fades_to_no_correction_far_from_anchors():
    rng = np.random.default_rng(3)
    true = np.full((H, W), 2.0, np.float32)
    anchors = _anchors_from(true * 1.08, 200, rng)  # 8 % deeper, but only seen in the left quarter
    anchors = anchors._replace(uv_M2=anchors.uv_M2 * [0.25, 1.0])
    cfg = DepthCorrectionConfig(grid=(4, 8), smooth_sigma=0.01)
    f = np.log(correct_depths(true[None], np.ones((1, H, W), bool), [anchors], cfg).factor_NHW[0])
    assert abs(np.median(f[:, :W // 5]) - np.log(1.08)) < 0.01
    assert abs(np.median(f[:, -3:])) < abs(np.median(f[:, :W // 5]))


def test_field_image_is_bilinear_between_nodes():
    nodes = np.array([[0.0, 1.0], [2.0, 3.0]])
    img = field_image(nodes, (3, 5))
    assert img[0, 0] == pytest.approx(0.0) and img[2, 4] == pytest.approx(3.0)
    assert img[1, 2] == pytest.approx(1.5)


def test_anchors_move_to_the_label_grid_with_its_intrinsics():
    K_color = np.array([[256.0, 0, 159.5], [0, 256.0, 119.5], [0, 0, 1]])
    K_label = np.array([[128.0, 0, 79.5], [0, 128.0, 59.5], [0, 0, 1]])
    a = DepthAnchors(np.array([[159.5, 119.5], [319.0, 0.0]]), np.array([1.0, 2.0]), np.array([0.01, 0.01]))
    b = anchors_on_grid(a, K_color, K_label)
    np.testing.assert_allclose(b.uv_M2, [[79.5, 59.5], [79.5 + 159.5 / 2, 59.5 - 119.5 / 2]])
    assert anchors_on_grid(None, K_color, K_label) is None


def test_epipolar_distance_is_zero_for_true_matches_and_large_for_wrong_ones():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20), rng.uniform(2, 4, 20)])
    b_T_a = make_pose(np.eye(3), np.array([-0.2, 0.0, 0.0]))
    uv_a = X[:, :2] / X[:, 2:] * 100 + [32, 24]
    Xb = transform_points(b_T_a, X)
    uv_b = Xb[:, :2] / Xb[:, 2:] * 100 + [32, 24]
    assert epipolar_distance(uv_a, uv_b, K, K, b_T_a).max() < 1e-6
    assert np.median(epipolar_distance(uv_a, uv_b + [0, 5.0], K, K, b_T_a)) > 4.0


def test_matches_are_mutual_and_pass_the_ratio_test():
    rng = np.random.default_rng(7)
    desc = rng.random((6, 128)).astype(np.float32)
    b = np.concatenate([desc[::-1] + 0.01, desc[:1] + 0.012])  # a's keypoint 0 has two near-equal candidates
    m = match_mutual(_Features(np.zeros((6, 2)), desc), _Features(np.zeros((7, 2)), b), AnchorConfig())
    assert sorted(map(tuple, m.tolist())) == [(k, 5 - k) for k in range(1, 6)]


def test_tracks_seeing_one_frame_twice_are_dropped():
    uv = [np.zeros((3, 2)) for _ in range(3)]
    matches = {(0, 1): np.array([[0, 0], [1, 1]]), (1, 2): np.array([[0, 0], [1, 1]]),
               (0, 2): np.array([[0, 0], [1, 2]])}  # the track of keypoint 1 meets frame 2 twice
    tracks = build_tracks(uv, matches)
    assert tracks.track.max() == 0 and sorted(tracks.frame.tolist()) == [0, 1, 2]


@pytest.fixture(scope="module")
def textured_scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("anchors") / "room"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=16, query_frames=1, size_wh=(160, 120)), out,
                 progress=False)
    scene = open_scene(out)
    return scene, scene.split(Split.MAPPING)


@pytest.mark.parametrize("features,median,p90", [(FeatureKind.SIFT, 0.01, 0.04), (FeatureKind.ORB, 0.03, 0.1)])
def test_triangulated_anchors_match_the_rendered_depth(textured_scene, features, median, p90):
    scene, frames = textured_scene
    anchors = find_anchors(lambda k: frames[k].load_rgb(), np.array([f.K for f in frames]),
                           [f.world_T_cam for f in frames], AnchorConfig(features=features))
    errs = []
    for f, a in zip(frames, anchors):
        if a is None:
            continue
        depth = f.load_depth_for_color(scene.info.color_size)
        d = depth[np.round(a.uv_M2[:, 1]).astype(int), np.round(a.uv_M2[:, 0]).astype(int)]
        errs.append(np.log(a.depth_M[d > 0] / d[d > 0]))
    e = np.abs(np.concatenate(errs))
    assert len(e) >= 30
    assert np.median(e) < median and np.quantile(e, 0.9) < p90


def test_frames_without_a_pose_get_no_anchors(textured_scene):
    _, frames = textured_scene
    poses = [f.world_T_cam for f in frames]
    poses[1] = None
    anchors = find_anchors(lambda k: frames[k].load_rgb(), np.array([f.K for f in frames]), poses, AnchorConfig())
    assert anchors[1] is None


class _DistortedPairs(SyntheticPairs):
    """Synthetic pairs in which every view of a frame carries that frame's smooth depth distortion (the same in
    all of its pairs, so fusion cannot average it away), as the simulated DUSt3R's shared error."""

    def _predict(self, i: int, j: int) -> PairPrediction:
        c = self.config
        rng = np.random.default_rng((c.seed, i, j))
        scale = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))
        own = [np.asarray(self.points[k], np.float64) * self.distortion(k)[..., None] for k in (i, j)]
        out = []
        for p in (own[0], transform_points(self.relative(i, j), own[1])):
            noisy = scale * (p + rng.normal(0, 1, p.shape) * c.noise * p[..., 2:3])
            out += [noisy.astype(np.float32), np.full(p.shape[:2], 5.0, np.float32)]
        return PairPrediction(i, j, *out)

    def distortion(self, k: int) -> np.ndarray:
        h, w = self.config.size_wh[1], self.config.size_wh[0]
        return _distortion(h, w) if k % 2 else _distortion(h, w)[::-1, ::-1]


def _label_error(result, src) -> float:
    errs = []
    for k in range(len(src.poses)):
        pts, conf = result.world_points(k)
        true = transform_points(src.poses[k], np.asarray(src.points[k], np.float64))
        errs.append(np.linalg.norm(pts[conf > 0] - true[conf > 0], axis=1))
    return float(np.median(np.concatenate(errs)))


def test_alignment_with_anchors_removes_a_shared_depth_distortion():
    src = _DistortedPairs(SyntheticConfig(n_frames=16, size_wh=(W, H), focal=50.0, window=3, noise=0.002,
                                          n_outliers=0, seed=5))
    rng = np.random.default_rng(6)
    K = np.repeat(src.K[None], 16, 0)
    anchors = [_anchors_from(np.asarray(src.points[k][..., 2]), 80, rng) for k in range(16)]
    args = dict(K_N33=K, ref_world_T_cam=list(src.poses))
    plain = align_pairs(src, 16, (H, W), AlignConfig(), **args)
    fixed = align_pairs(src, 16, (H, W), AlignConfig(), anchors=anchors, **args)
    off = align_pairs(src, 16, (H, W), AlignConfig(depth_correction=None), anchors=anchors, **args)
    assert fixed.correction_stats["frames_corrected"] == 16
    assert _label_error(fixed, src) < 0.5 * _label_error(plain, src)
    assert _label_error(off, src) == pytest.approx(_label_error(plain, src))
