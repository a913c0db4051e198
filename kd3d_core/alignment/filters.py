"""Label filters after global alignment: what a student should not learn from a pairwise teacher.

A network teacher's labels are wrong in ways a depth sensor's are not: whole regions off by tens of percent
(textureless walls, misjudged objects), points smeared across depth discontinuities, and frames whose scale or
pose the alignment got wrong. Measured on the simulated DUSt3R (bench section `teacher_quality`), these filters
decide which label pixels survive:
  * depth-edge masking: pixels at a relative depth jump (to a 4-neighbour) in the aligned depth, dilated by
    one pixel -- the regression head bleeds there;
  * multi-view consistency: each pixel is projected into the frames it was paired with; where they see the
    same surface (inside their image, in front of their camera) the depths must agree within a tolerance
    that follows the teacher's own noise (max(consistency_rel, 3 x the robust spread of all disagreements)).
    A pixel that more neighbours contradict than confirm is dropped;
  * refused frames: a frame keeping less than `min_frame_fraction` of its labels after the checks (its scale
    or pose is off everywhere) gets no labels at all;
  * confidence threshold: labels below `min_conf` (in the labels' 0-1 confidence) are dropped;
  * multi-view fusion: each kept pixel's depth becomes the log-mean of its own and its confirming neighbours'
    depths (per-image errors average out; errors every view shares do not -- where the frames have reference
    poses, kd3d_core.alignment.depth_correction removes those first, from triangulated image features).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from kd3d_core.alignment.pairwise import CanonicalFrames


@dataclass(frozen=True)
class LabelFilterConfig:
    """Which label filters run (0 disables a numeric one).

    Attributes:
        edge_rel: relative depth jump that marks a discontinuity (masked with a one-pixel margin).
        consistency_rel: smallest relative depth disagreement that counts as a contradiction.
        consistency_spread: tolerance = max(consistency_rel, this x 1.4826 x median |disagreement|).
        min_frame_fraction: refuse a frame keeping less than this fraction of its labelled pixels.
        min_conf: drop labels whose confidence (0-1) is below this.
        fuse: move each kept pixel along its ray to the mean (in log depth) of its own depth and the depths
            of the neighbours that confirm it (multi-view averaging of independent per-image errors).
        extra_neighbours: also compare with the frames up to this many positions away in the sequence (besides
            the frames each was paired with).
    """

    edge_rel: float = 0.05
    consistency_rel: float = 0.03
    consistency_spread: float = 3.0
    min_frame_fraction: float = 0.3
    min_conf: float = 0.0
    fuse: bool = True
    extra_neighbours: int = 10


def depth_edges(depth_HW: np.ndarray, edge_rel: float) -> np.ndarray:
    """Pixels at a relative depth jump above `edge_rel` to a valid 4-neighbour, dilated by one pixel."""
    d = depth_HW.astype(np.float32)
    pad = np.pad(d, 1, mode="edge")
    h, w = d.shape
    jump = np.zeros_like(d)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[dy:dy + h, dx:dx + w]
        jump = np.maximum(jump, np.where((nb > 0) & (d > 0), np.abs(d - nb), 0.0))
    edge = jump > edge_rel * np.maximum(d, 1e-6)
    return cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def _camera_points(canon: CanonicalFrames, scale_N: np.ndarray, k: int) -> np.ndarray:
    return canon.points(k) * np.float32(scale_N[k])


def _disagreement(pts_world: np.ndarray, depth_n: np.ndarray, K_n: np.ndarray, world_T_cam_n: np.ndarray
                  ) -> np.ndarray:
    """Relative depth difference (projected - seen) / seen of world points in frame n; NaN where n cannot see."""
    h, w = depth_n.shape
    R, t = world_T_cam_n[:3, :3], world_T_cam_n[:3, 3]
    p = (pts_world.reshape(-1, 3) - t) @ R
    z = p[:, 2]
    out = np.full(len(p), np.nan, np.float32)
    ok = z > 1e-6
    u = np.round(K_n[0, 0] * p[ok, 0] / z[ok] + K_n[0, 2]).astype(np.int64)
    v = np.round(K_n[1, 1] * p[ok, 1] / z[ok] + K_n[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    idx = np.flatnonzero(ok)[inside]
    seen = depth_n[v[inside], u[inside]]
    good = seen > 0
    out[idx[good]] = (z[idx[good]] - seen[good]) / seen[good]
    return out.reshape(pts_world.shape[:2])


def consistency_votes(world_T_cam_N44: np.ndarray, scale_N: np.ndarray, canon: CanonicalFrames,
                      labelled_NHW: np.ndarray, neighbours: list[list[int]]) -> list[np.ndarray]:
    """Per frame: stacked relative disagreements (V, h, w) with each neighbour (NaN where not comparable)."""
    depths = [np.where(labelled_NHW[k], canon.depth_NHW[k] * np.float32(scale_N[k]), 0.0)
              for k in range(len(scale_N))]
    out = []
    for k, nbrs in enumerate(neighbours):
        if not nbrs or not labelled_NHW[k].any():
            out.append(np.zeros((0,) + labelled_NHW[k].shape, np.float32))
            continue
        T = world_T_cam_N44[k]
        pts = _camera_points(canon, scale_N, k) @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
        out.append(np.stack([_disagreement(pts, depths[n], canon.K_N33[n], world_T_cam_N44[n]) for n in nbrs]))
    return out


class FilterResult(NamedTuple):
    """Surviving pixels (N, h, w), a depth factor per pixel from multi-view fusion (N, h, w), and counts."""

    keep_NHW: np.ndarray
    depth_factor_NHW: np.ndarray
    stats: dict


def _consistency(votes: list[np.ndarray], keep: np.ndarray, config: LabelFilterConfig,
                 factor: np.ndarray) -> float:
    """Drop contradicted pixels in place; fuse the confirmed ones into `factor`; returns the tolerance used."""
    every = np.concatenate([np.abs(v[np.isfinite(v)]) for v in votes] or [np.zeros(0)])
    tol = max(config.consistency_rel, config.consistency_spread * 1.4826 * float(np.median(every))
              if every.size else 0.0)
    for k, v in enumerate(votes):
        if not len(v):
            continue
        with np.errstate(invalid="ignore"):
            ok = np.abs(v) <= tol
            contra = np.sum(np.abs(v) > tol, axis=0)
        agree = ok.sum(axis=0)
        keep[k] &= contra <= agree
        if config.fuse:
            # seen / projected = 1 / (1 + v): where a confirming neighbour puts this pixel's surface
            logs = np.where(ok, -np.log1p(np.where(ok, v, 0.0)), 0.0).sum(axis=0)
            factor[k] = np.exp(logs / (agree + 1.0)).astype(np.float32)
    return tol


def filter_masks(world_T_cam_N44: np.ndarray, scale_N: np.ndarray, canon: CanonicalFrames, labelled_NHW: np.ndarray,
                 conf_NHW: np.ndarray, neighbours: list[list[int]], config: LabelFilterConfig) -> FilterResult:
    """Which labelled pixels survive the filters, their fused depth factors, and what each filter removed."""
    keep = labelled_NHW.copy()
    factor = np.ones(keep.shape, np.float32)
    if config.extra_neighbours > 0:
        n = len(keep)
        neighbours = [sorted(set(nb) | {m for m in range(k - config.extra_neighbours, k + config.extra_neighbours + 1)
                                        if 0 <= m < n and m != k}) for k, nb in enumerate(neighbours)]
    stats: dict = {"labelled": int(keep.sum())}
    if config.min_conf > 0:
        keep &= conf_NHW >= config.min_conf
    if config.edge_rel > 0:
        for k in range(len(keep)):
            keep[k] &= ~depth_edges(np.where(labelled_NHW[k], canon.depth_NHW[k], 0.0), config.edge_rel)
    stats["after_conf_edges"] = int(keep.sum())
    if config.consistency_rel > 0:
        votes = consistency_votes(world_T_cam_N44, scale_N, canon, keep, neighbours)
        stats["consistency_tolerance"] = round(_consistency(votes, keep, config, factor), 4)
    stats["after_consistency"] = int(keep.sum())
    n = len(keep)
    fractions = keep.reshape(n, -1).sum(1) / np.maximum(labelled_NHW.reshape(n, -1).sum(1), 1)
    refused = labelled_NHW.reshape(n, -1).any(1) & (fractions < config.min_frame_fraction)
    keep[refused] = False
    stats["refused_frames"] = int(refused.sum())
    stats["kept"] = int(keep.sum())
    return FilterResult(keep, factor, stats)
