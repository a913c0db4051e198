"""The predicted world point cloud of one frame (what the node publishes as PointCloud2 in the map frame)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.prediction import ScenePrediction


class PointCloud(NamedTuple):
    """World points (N, 3) float32 and optional colours (N, 3) uint8 RGB."""

    points_N3: np.ndarray
    colors_N3: np.ndarray | None


def predicted_cloud(prediction: ScenePrediction, rgb: np.ndarray | None = None, min_conf: float = 0.0,
                    voxel: float | None = None, max_points: int | None = None) -> PointCloud:
    """Confident, finite predicted world points, optionally coloured from the input image and thinned.

    Args:
        prediction: the frame's dense prediction.
        rgb: the input image (h, w, 3) uint8 whose pixels `prediction.uv_hw2` refer to; gives colours.
        min_conf: keep cells whose confidence is above this.
        voxel: voxel size in metres; keeps one point (the first) per occupied voxel.
        max_points: at most this many points, evenly spread over the kept ones.
    """
    if voxel is not None and not voxel > 0:
        raise Kd3dError(f"voxel size must be > 0 metres, got {voxel}")
    points = prediction.points_hw3.reshape(-1, 3)
    conf = prediction.conf_hw.reshape(-1)
    keep = np.flatnonzero((conf > min_conf) & np.isfinite(points).all(axis=1))
    if voxel is not None and keep.size:
        keys = np.floor(points[keep] / voxel).astype(np.int64)
        _, first = np.unique(keys, axis=0, return_index=True)
        keep = keep[np.sort(first)]
    if max_points is not None and keep.size > max_points:
        keep = keep[np.linspace(0, keep.size - 1, max(max_points, 0)).astype(np.int64)]
    points_N3 = np.ascontiguousarray(points[keep], dtype=np.float32)
    if rgb is None:
        return PointCloud(points_N3, None)
    uv = prediction.uv_hw2.reshape(-1, 2)[keep]
    h, w = rgb.shape[:2]
    col = np.clip(np.rint(uv[:, 0]), 0, w - 1).astype(np.intp)
    row = np.clip(np.rint(uv[:, 1]), 0, h - 1).astype(np.intp)
    return PointCloud(points_N3, np.ascontiguousarray(rgb[row, col, :3], dtype=np.uint8))
