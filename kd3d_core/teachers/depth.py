"""Depth teacher: sensor depth + known poses -> world pointmaps at label resolution.

Confidence reflects what makes depth labels wrong: invalid or out-of-range depth (0), depth discontinuities
(a relative jump to a 4-neighbour above `edge_rel`, dilated by one pixel: mixed pixels and flying points), and
range (noise of structured-light/ToF depth grows with distance: 1 / (1 + (d / range_scale)^2)). Points are
averaged over each label pixel's footprint (area resampling of camera-frame points, exact centres for any
ratio) from good pixels only; a footprint with bad pixels (its centroid would drift off the pixel centre) or spanning a
depth jump gets confidence 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import backproject_depth, is_valid_pose, scale_intrinsics, transform_points


@dataclass(frozen=True)
class DepthTeacherConfig:
    """Depth teacher settings (metres)."""

    min_depth: float = 0.1
    max_depth: float = 10.0
    edge_rel: float = 0.05
    range_scale: float = 4.0
    min_good_fraction: float = 0.99


def depth_confidence(depth_HW: np.ndarray, cfg: DepthTeacherConfig) -> np.ndarray:
    """Per-pixel confidence in [0, 1] of a depth map (validity, edges, range)."""
    d = depth_HW.astype(np.float32)
    valid = np.isfinite(d) & (d > cfg.min_depth) & (d < cfg.max_depth)
    d = np.where(valid, d, 0.0)
    pad = np.pad(d, 1, mode="edge")
    jump = np.zeros_like(d)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[dy:dy + d.shape[0], dx:dx + d.shape[1]]
        jump = np.maximum(jump, np.where(nb > 0, np.abs(d - nb), np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        edge = jump > cfg.edge_rel * np.maximum(d, 1e-6)
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    good = valid & ~edge
    return np.where(good, 1.0 / (1.0 + (d / cfg.range_scale) ** 2), 0.0).astype(np.float32)


def depth_label(depth_HW: np.ndarray, K: np.ndarray, world_T_cam: np.ndarray, label_wh: tuple[int, int],
                cfg: DepthTeacherConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points (h, w, 3), confidence (h, w) and K at label resolution from one depth map on the colour grid.

    Raises Kd3dError for inputs that would give plausible-looking garbage: a non-rigid or non-finite pose, or a K
    that is not finite with positive focal lengths.
    """
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise Kd3dError(f"depth teacher: K must be finite with positive focal lengths, got {K.ravel().tolist()}")
    if not is_valid_pose(np.asarray(world_T_cam, np.float64)):
        raise Kd3dError("depth teacher: the frame's pose is not a finite rigid transform")
    if depth_HW.ndim != 2 or depth_HW.size == 0:
        raise Kd3dError(f"depth teacher: depth must be a non-empty (h, w) map, got shape {depth_HW.shape}")
    H, W = depth_HW.shape
    conf_full = depth_confidence(depth_HW, cfg)
    good = (conf_full > 0).astype(np.float32)
    d = np.where(good > 0, depth_HW, 0.0).astype(np.float32)
    pts = backproject_depth(d, K).astype(np.float32) * good[..., None]
    interp = cv2.INTER_AREA if label_wh[0] <= W and label_wh[1] <= H else cv2.INTER_LINEAR
    area = lambda x: cv2.resize(x, label_wh, interpolation=interp)  # noqa: E731
    frac = area(good)
    with np.errstate(invalid="ignore", divide="ignore"):
        pts_l = area(pts) / frac[..., None]
        mean_d = area(d) / frac
        var_d = area(d * d) / frac - mean_d ** 2
        conf = area(conf_full) / frac
    smooth = np.sqrt(np.maximum(var_d, 0.0)) <= cfg.edge_rel * mean_d
    ok = (frac >= cfg.min_good_fraction) & smooth & np.isfinite(pts_l).all(axis=-1)
    world = np.where(ok[..., None], transform_points(world_T_cam, pts_l.astype(np.float64)), 0.0)
    K_label = scale_intrinsics(K, label_wh[0] / W, label_wh[1] / H)
    return world.astype(np.float32), np.where(ok, conf, 0.0).astype(np.float32), K_label
