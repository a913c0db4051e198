"""Global alignment entry point: pairwise pointmaps -> every frame's world_T_cam and world pointmap.

Two streaming passes over the pair source (canonical pointmaps, then one relative similarity per edge), a
robust Sim(3) pose graph, then the gauge: the first aligned frame by default, a Sim(3) (Umeyama) onto
reference poses when the scene has them (labels become metric and in the map frame), or metric scale from
sensor depth.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from kd3d_core.alignment.anchors import DepthAnchors
from kd3d_core.alignment.depth_correction import DepthCorrectionConfig, correct_depths
from kd3d_core.alignment.filters import LabelFilterConfig, filter_masks
from kd3d_core.alignment.graph import EdgeSet, GraphConfig, solve_graph
from kd3d_core.alignment.pairwise import (CanonicalFrames, PairPrediction, accumulate_canonical, fit_edge,
                                          subsample_index)
from kd3d_core.alignment.sim3 import Sim3Array, compose, project_to_rotation
from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import make_pose, umeyama
from kd3d_core.labels import ScaleSource


@dataclass(frozen=True)
class AlignConfig:
    """Global alignment settings.

    Attributes:
        min_conf: DUSt3R confidence at or below which a pixel carries no label.
        fit_points: pixels per frame used for the per-edge similarity fits.
        residual_points: sample points per frame used for edge residuals.
        shared_focal: with unknown K, one focal length for all frames (one camera).
        reference_poses: when frames have reference poses (TF/odometry), label them at those poses (the pose
            graph then only contributes each frame's scale, after one Sim(3) onto the reference camera
            centres). Pairwise relative poses drift along a sequence by degrees at DUSt3R's error level;
            odometry does not. False keeps the pose graph's own poses (one global Sim(3) only).
        graph: robustness settings of the pose graph.
        filters: label filters after alignment (kd3d_core.alignment.filters); None keeps every label.
        depth_correction: smooth per-frame depth correction from triangulated anchors, applied before the
            filters when the caller passes anchors and the scale comes from reference poses
            (kd3d_core.alignment.depth_correction); None: never.
    """

    min_conf: float = 1.5
    fit_points: int = 3072
    residual_points: int = 64
    shared_focal: bool = True
    reference_poses: bool = True
    graph: GraphConfig = field(default_factory=GraphConfig)
    filters: LabelFilterConfig | None = field(default_factory=LabelFilterConfig)
    depth_correction: DepthCorrectionConfig | None = field(default_factory=DepthCorrectionConfig)


@dataclass(frozen=True)
class AlignmentResult:
    """Aligned frames. Metric depth of frame k is scale_N[k] * canonical.depth_NHW[k]."""

    world_T_cam_N44: np.ndarray
    scale_N: np.ndarray
    canonical: CanonicalFrames
    aligned_N: np.ndarray
    residual_N: np.ndarray
    scale_source: ScaleSource
    edges: EdgeSet
    edge_inlier: np.ndarray
    min_conf: float
    keep_NHW: np.ndarray | None = None
    depth_factor_NHW: np.ndarray | None = None
    filter_stats: dict = field(default_factory=dict)
    correction_stats: dict = field(default_factory=dict)

    def labelled(self, k: int) -> np.ndarray:
        """Pixels of frame k that carry a label before the filters (confident, valid depth, frame aligned)."""
        weight = self.canonical.weight_NHW[k]
        return (weight > np.log(max(self.min_conf, 1.0))) & (self.canonical.depth_NHW[k] > 0) & self.aligned_N[k]

    def world_points(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """World pointmap (h, w, 3) and label confidence (h, w) in [0, 1) of frame k (0 = no label)."""
        pts = self.canonical.points(k) * self.scale_N[k]
        if self.depth_factor_NHW is not None:
            pts = pts * self.depth_factor_NHW[k][..., None]
        T = self.world_T_cam_N44[k]
        world = (pts @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
        weight = self.canonical.weight_NHW[k]
        ok = self.labelled(k)
        if self.keep_NHW is not None:
            ok = ok & self.keep_NHW[k]
        conf = np.where(ok, 1.0 - np.exp(-weight), 0.0).astype(np.float32)
        return np.where(ok[..., None], world, 0.0).astype(np.float32), conf


def _fit_edges(source: Iterable[PairPrediction], canon: CanonicalFrames, cfg: AlignConfig,
               size_hw: tuple[int, int]) -> tuple[EdgeSet, np.ndarray]:
    sub = subsample_index(*size_hw, cfg.fit_points)
    pts = np.stack([canon.points(k).reshape(-1, 3)[sub] for k in range(len(canon.depth_NHW))]).astype(np.float64)
    w = canon.weight_NHW.reshape(len(pts), -1)[:, sub]
    meas = [m for m in (fit_edge(p, pts, w, sub, cfg.min_conf) for p in source) if m is not None]
    if not meas:
        raise Kd3dError("global alignment: no pair has enough confident pixels to relate its two frames")
    edges = EdgeSet(np.array([m.i for m in meas]), np.array([m.j for m in meas]),
                    Sim3Array(np.array([m.S.scale for m in meas]), np.array([m.S.R for m in meas]),
                              np.array([m.S.t for m in meas])), np.array([m.weight for m in meas]))
    return edges, np.array([m.fit_residual for m in meas])


def _sample_points(canon: CanonicalFrames, size_hw: tuple[int, int], m: int) -> np.ndarray:
    """(N, m, 3) canonical points per frame on a fixed grid (invalid pixels replaced by the median point)."""
    sub = subsample_index(*size_hw, m)
    out = np.zeros((len(canon.depth_NHW), len(sub), 3))
    for k in range(len(out)):
        p = canon.points(k).reshape(-1, 3)[sub].astype(np.float64)
        ok = p[:, 2] > 0
        out[k] = np.where(ok[:, None], p, np.median(p[ok], axis=0) if ok.any() else 1.0)
    return out


def align_pairs(source: Iterable[PairPrediction], n_frames: int, size_hw: tuple[int, int], config: AlignConfig,
                K_N33: np.ndarray | None = None, ref_world_T_cam: list[np.ndarray | None] | None = None,
                metric_depth: Callable[[int], np.ndarray | None] | None = None,
                anchors: Sequence[DepthAnchors | None] | None = None) -> AlignmentResult:
    """Align all frames of a pair source into one world frame.

    Args:
        source: re-iterable stream of directed predictions at label resolution `size_hw` (h, w).
        n_frames: number of frames (frame indices in the predictions are 0..n_frames-1).
        config: alignment settings.
        K_N33: known intrinsics at label resolution, or None to estimate the focal length.
        ref_world_T_cam: reference poses (None entries for unknown) to fix gauge and metric scale.
        metric_depth: frame index -> sensor depth (h, w) in metres at label resolution, for metric scale.
        anchors: per frame, triangulated depth anchors on the label grid in the reference poses' metric frame
            (kd3d_core.alignment.anchors), for the depth correction.
    """
    canon = accumulate_canonical(source, n_frames, size_hw, config.min_conf, K_N33, config.shared_focal)
    edges, _ = _fit_edges(source, canon, config, size_hw)
    samples = _sample_points(canon, size_hw, config.residual_points)
    sol = solve_graph(n_frames, edges, samples, config.graph)
    S, source_kind = _apply_gauge(sol.S, sol.aligned, ref_world_T_cam)
    if config.reference_poses and source_kind is ScaleSource.POSES:
        S = _snap_to_reference(_scale_from_baselines(S, edges, sol.inlier, ref_world_T_cam), sol.aligned,
                               ref_world_T_cam)
    if source_kind is ScaleSource.ARBITRARY and metric_depth is not None:
        S, source_kind = _metric_from_depth(S, sol.aligned, canon, metric_depth)
    stats: dict = {}
    if anchors is not None and config.depth_correction is not None and source_kind is ScaleSource.POSES:
        canon, stats = _corrected(canon, S.s, sol.aligned, config, anchors)
    residual = np.full(n_frames, np.nan)
    for k in np.flatnonzero(sol.aligned):
        inc = sol.inlier & ((edges.i == k) | (edges.j == k))
        if inc.any():
            residual[k] = float(np.median(sol.point_residual[inc] * S.s[edges.i[inc]]))
    poses = np.array([make_pose(S.R[k], S.t[k]) for k in range(n_frames)])
    result = AlignmentResult(poses, S.s.copy(), canon, sol.aligned, residual, source_kind, edges, sol.inlier,
                             config.min_conf, correction_stats=stats)
    return result if config.filters is None else _filtered(result, config.filters)


def _corrected(canon: CanonicalFrames, scale_N: np.ndarray, aligned: np.ndarray, config: AlignConfig,
               anchors: Sequence[DepthAnchors | None]) -> tuple[CanonicalFrames, dict]:
    """Canonical depths times each frame's smooth correction from its anchors (metric depth = scale x depth)."""
    usable = (canon.weight_NHW > np.log(max(config.min_conf, 1.0))) & (canon.depth_NHW > 0) & aligned[:, None, None]
    metric = canon.depth_NHW * scale_N[:, None, None].astype(np.float32)
    out = correct_depths(metric, usable, anchors, config.depth_correction)
    return canon._replace(depth_NHW=(canon.depth_NHW * out.factor_NHW).astype(np.float32)), out.stats


def _filtered(result: AlignmentResult, cfg: LabelFilterConfig) -> AlignmentResult:
    """The result with its label filter masks; refused frames are no longer aligned."""
    n = len(result.scale_N)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    e = result.edges
    for i, j in zip(e.i[result.edge_inlier].tolist(), e.j[result.edge_inlier].tolist()):
        neighbours[i].add(j)
        neighbours[j].add(i)
    labelled = np.stack([result.labelled(k) for k in range(n)])
    conf = np.where(labelled, 1.0 - np.exp(-result.canonical.weight_NHW), 0.0)
    out = filter_masks(result.world_T_cam_N44, result.scale_N, result.canonical, labelled, conf,
                       [sorted(s) for s in neighbours], cfg)
    aligned = result.aligned_N & ~(labelled.reshape(n, -1).any(1) & ~out.keep_NHW.reshape(n, -1).any(1))
    return replace(result, aligned_N=aligned, keep_NHW=out.keep_NHW, depth_factor_NHW=out.depth_factor_NHW,
                   filter_stats=out.stats)


def _apply_gauge(S: Sim3Array, aligned: np.ndarray,
                 ref: list[np.ndarray | None] | None) -> tuple[Sim3Array, ScaleSource]:
    """Map the graph world onto the reference poses (Sim(3) on camera centres, or rotation only if degenerate)."""
    if ref is None:
        return S, ScaleSource.ARBITRARY
    idx = [k for k, T in enumerate(ref) if T is not None and aligned[k]]
    if not idx:
        return S, ScaleSource.ARBITRARY
    est_c, ref_c = S.t[idx], np.array([ref[k][:3, 3] for k in idx])
    spread = np.linalg.svd(ref_c - ref_c.mean(0), compute_uv=False) if len(idx) >= 3 else np.zeros(3)
    if spread[1] > 1e-3 * max(spread[0], 1e-9) and spread[0] > 1e-6:
        G = umeyama(est_c, ref_c)
        g, Rg, tg, kind = G.scale, G.R, G.t, ScaleSource.POSES
    else:
        Rg = project_to_rotation(sum(ref[k][:3, :3] @ S.R[k].T for k in idx)[None])[0]
        d_est = np.linalg.norm(est_c - est_c[0], axis=1).max()
        d_ref = np.linalg.norm(ref_c - ref_c[0], axis=1).max()
        metric = d_est > 1e-9 and d_ref > 1e-6
        g = d_ref / d_est if metric else 1.0
        tg = np.mean(ref_c - g * est_c @ Rg.T, axis=0)
        kind = ScaleSource.POSES if metric else ScaleSource.ARBITRARY
    G = Sim3Array(np.array([g]), Rg[None], np.asarray(tg)[None])
    n = len(S)
    return compose(Sim3Array(np.repeat(G.s, n), np.repeat(G.R, n, 0), np.repeat(G.t, n, 0)), S), kind


def _scale_from_baselines(S: Sim3Array, edges: EdgeSet, inlier: np.ndarray, ref: list[np.ndarray | None],
                          min_ratio: float = 0.1) -> Sim3Array:
    """Metric scale from pair baselines: median over edges of |reference baseline| / (pair baseline along it).

    The Sim(3) onto camera centres measures scale by trajectory length, which translation-direction errors
    shorten (a zig-zag of pairwise directions covers less ground): at DUSt3R's error level that biased the
    labels 1.4 % too deep. Lengths of noisy short baselines are biased the other way (the norm of a noisy
    vector), so each pair's baseline is measured along the reference direction, in the reference frame, and
    the median ignores the pairs with large direction errors. Edges whose reference baseline is under
    `min_ratio` of the pair's depth are skipped.
    """
    ratios = []
    for e in np.flatnonzero(inlier):
        i, j = int(edges.i[e]), int(edges.j[e])
        if ref[i] is None or ref[j] is None:
            continue
        base = ref[i][:3, :3].T @ (ref[j][:3, 3] - ref[i][:3, 3])  # reference baseline in camera i
        length = float(np.linalg.norm(base))
        if length < min_ratio * S.s[i]:
            continue
        along = float(edges.M.t[e] @ base) / length
        if along > 0:
            ratios.append(length / (S.s[i] * along))
    if len(ratios) < 3:
        return S
    f = float(np.median(ratios))
    return Sim3Array(S.s * f, S.R, S.t * f)


def _snap_to_reference(S: Sim3Array, aligned: np.ndarray, ref: list[np.ndarray | None]) -> Sim3Array:
    """Rotations and centres of the frames with a reference pose replaced by it (scales kept)."""
    R, t = S.R.copy(), S.t.copy()
    for k, T in enumerate(ref):
        if T is not None and aligned[k]:
            R[k], t[k] = T[:3, :3], T[:3, 3]
    return Sim3Array(S.s.copy(), R, t)


def _metric_from_depth(S: Sim3Array, aligned: np.ndarray, canon: CanonicalFrames,
                       metric_depth: Callable[[int], np.ndarray | None]) -> tuple[Sim3Array, ScaleSource]:
    """One global scale: median over frames of median(sensor depth / aligned depth)."""
    ratios = []
    for k in np.flatnonzero(aligned):
        d = metric_depth(int(k))
        if d is None:
            continue
        est = S.s[k] * canon.depth_NHW[k]
        ok = (d > 0) & (est > 0) & (canon.weight_NHW[k] > 0)
        if ok.sum() >= 16:
            ratios.append(float(np.median(d[ok] / est[ok])))
    if not ratios:
        return S, ScaleSource.ARBITRARY
    f = float(np.median(ratios))
    return Sim3Array(S.s * f, S.R, S.t * f), ScaleSource.DEPTH
