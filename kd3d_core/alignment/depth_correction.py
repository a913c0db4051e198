"""Smooth per-frame depth correction of aligned teacher depth from triangulated anchors.

A pairwise teacher's depth is right up to a smooth multiplicative distortion of a few per cent, which
neighbouring views of a surface can share, so multi-view fusion cannot remove it. Where the frames have reference
poses, triangulated feature tracks (kd3d_core.alignment.anchors) measure depth independently of the network.
Per frame, the log ratio (anchor depth / aligned depth) at the anchors is fitted by a smooth field -- bilinear
on a coarse grid of nodes, a robust (Cauchy IRLS) weighted least squares in which each anchor counts by its
triangulation uncertainty plus the spread of the teacher's own per-pixel noise, with a prior pulling every node
towards 0 (no correction) and neighbouring nodes towards each other -- so where a frame has few anchors the
correction fades out to none. The field multiplies the frame's depth before the label filters and fusion.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from kd3d_core.alignment.anchors import AnchorConfig, DepthAnchors
from kd3d_core.alignment.filters import depth_edges


@dataclass(frozen=True)
class DepthCorrectionConfig:
    """Depth correction from triangulated anchors (used only when frames have reference poses and known K).

    Attributes:
        anchors: how anchors are matched and triangulated.
        grid: nodes (rows, columns) of the bilinear log-depth correction field.
        prior_sigma: prior standard deviation of a node's log correction (pulls it to no correction).
        smooth_sigma: prior standard deviation of the difference between neighbouring nodes.
        min_anchors: frames with fewer usable anchors are left as they are.
        noise_floor: smallest per-anchor log-depth noise of the teacher assumed.
        edge_rel: anchors on a relative depth jump above this in the teacher's depth are not used.
        iterations: robust reweighting rounds.
    """

    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    grid: tuple[int, int] = (8, 10)
    prior_sigma: float = 0.1
    smooth_sigma: float = 0.1
    min_anchors: int = 20
    noise_floor: float = 0.005
    edge_rel: float = 0.05
    iterations: int = 6


class CorrectionResult(NamedTuple):
    """Per-frame depth factors (N, h, w) (1 where uncorrected) and what the correction did."""

    factor_NHW: np.ndarray
    stats: dict


def bilinear_basis(uv_M2: np.ndarray, size_hw: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(M, gy*gx) bilinear interpolation weights of pixels on a node grid spanning the image."""
    h, w = size_hw
    gy, gx = grid
    x = np.clip(uv_M2[:, 0] / max(w - 1, 1) * (gx - 1), 0, gx - 1 - 1e-9) if gx > 1 else np.zeros(len(uv_M2))
    y = np.clip(uv_M2[:, 1] / max(h - 1, 1) * (gy - 1), 0, gy - 1 - 1e-9) if gy > 1 else np.zeros(len(uv_M2))
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    B = np.zeros((len(uv_M2), gy * gx))
    rows = np.arange(len(uv_M2))
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = np.minimum(y0 + dy, gy - 1), np.minimum(x0 + dx, gx - 1)
        np.add.at(B, (rows, yy * gx + xx), wgt)
    return B


def _smoothness(grid: tuple[int, int]) -> np.ndarray:
    """First differences between horizontally and vertically neighbouring nodes (D, gy*gx)."""
    gy, gx = grid
    idx = np.arange(gy * gx).reshape(gy, gx)
    pairs = [(a, b) for a, b in zip(idx[:, :-1].ravel(), idx[:, 1:].ravel())]
    pairs += [(a, b) for a, b in zip(idx[:-1].ravel(), idx[1:].ravel())]
    D = np.zeros((len(pairs), gy * gx))
    for r, (a, b) in enumerate(pairs):
        D[r, a], D[r, b] = -1.0, 1.0
    return D


def fit_log_field(uv_M2: np.ndarray, log_ratio_M: np.ndarray, sigma_M: np.ndarray, size_hw: tuple[int, int],
                  config: DepthCorrectionConfig) -> np.ndarray:
    """Node values (gy, gx) of the smooth log correction that best explains the anchors' log ratios."""
    B = bilinear_basis(uv_M2, size_hw, config.grid)
    D = _smoothness(config.grid)
    prior = D.T @ D / config.smooth_sigma ** 2 + np.eye(B.shape[1]) / config.prior_sigma ** 2
    c = np.zeros(B.shape[1])
    for _ in range(config.iterations):
        res = log_ratio_M - B @ c
        spread = max(config.noise_floor, 1.4826 * float(np.median(np.abs(res - np.median(res)))))
        s2 = sigma_M ** 2 + spread ** 2
        w = 1.0 / s2 / (1.0 + res ** 2 / (9.0 * s2))  # Cauchy weights at 3 sigma
        c = np.linalg.solve(B.T @ (B * w[:, None]) + prior, B.T @ (w * log_ratio_M))
    return c.reshape(config.grid)


def field_image(nodes: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The bilinear field of node values on every pixel (h, w)."""
    h, w = size_hw
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    B = bilinear_basis(np.stack([u.ravel(), v.ravel()], 1), size_hw, nodes.shape)
    return (B @ nodes.ravel()).reshape(h, w)


def _anchor_ratios(anchors: DepthAnchors, depth_HW: np.ndarray, usable_HW: np.ndarray):
    """Anchors that fall on usable teacher pixels: their pixels, log(anchor / teacher depth), uncertainties."""
    h, w = depth_HW.shape
    u = np.round(anchors.uv_M2[:, 0]).astype(np.int64)
    v = np.round(anchors.uv_M2[:, 1]).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (anchors.depth_M > 0)
    ok = np.zeros(len(u), bool)
    ok[inside] = usable_HW[v[inside], u[inside]]
    ratio = np.log(anchors.depth_M[ok] / depth_HW[v[ok], u[ok]])
    return anchors.uv_M2[ok], ratio, anchors.sigma_M[ok]


def correct_depths(depth_NHW: np.ndarray, usable_NHW: np.ndarray, anchors: Sequence[DepthAnchors | None],
                   config: DepthCorrectionConfig) -> CorrectionResult:
    """Depth factors per frame from its anchors.

    Args:
        depth_NHW: the teacher's aligned metric depth per frame (0 = none).
        usable_NHW: pixels whose teacher depth may be compared with an anchor (labelled, aligned).
        anchors: per frame, anchors on the same pixel grid (None: no correction).
        config: fit settings.
    """
    n, h, w = depth_NHW.shape
    factor = np.ones((n, h, w), np.float32)
    used, corrected, sizes = [], 0, []
    for k in range(n):
        a = anchors[k] if k < len(anchors) else None
        if a is None:
            continue
        usable = usable_NHW[k] & (depth_NHW[k] > 0) & ~depth_edges(np.where(usable_NHW[k], depth_NHW[k], 0.0),
                                                                     config.edge_rel)
        uv, ratio, sigma = _anchor_ratios(a, depth_NHW[k], usable)
        if len(ratio) < config.min_anchors:
            continue
        nodes = fit_log_field(uv, ratio, sigma, (h, w), config)
        factor[k] = np.exp(field_image(nodes, (h, w))).astype(np.float32)
        used.append(len(ratio))
        sizes.append(float(np.median(np.abs(np.log(factor[k])))))
        corrected += 1
    stats = {"frames_corrected": corrected, "anchors_median": int(np.median(used)) if used else 0,
             "log_factor_median": round(float(np.median(sizes)), 4) if sizes else 0.0}
    return CorrectionResult(factor, stats)
