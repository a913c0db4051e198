"""2D-3D correspondences from a dense prediction: confident, finite cells, best first; undistorted pixels."""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from kd3d_core.prediction import ScenePrediction


class Correspondences(NamedTuple):
    """Selected cells, most confident first (the order PROSAC-style samplers rely on)."""

    points_N3: np.ndarray
    uv_N2: np.ndarray
    conf_N: np.ndarray


class TieBreaker:
    """Fixed pseudo-random ranks per grid size, so equal confidences are not picked in raster order.

    Picking the top-k of many equal confidences by index would keep one image region only, which makes PnP
    ill-conditioned; a fixed permutation keeps the choice spread over the image and deterministic.
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._ranks: dict[int, np.ndarray] = {}

    def ranks(self, n: int) -> np.ndarray:
        """A permutation of range(n) (cached)."""
        ranks = self._ranks.get(n)
        if ranks is None:
            ranks = np.random.default_rng(self._seed).permutation(n).astype(np.int32)
            self._ranks[n] = ranks
        return ranks


def validate_prediction(prediction: ScenePrediction) -> str | None:
    """A one-line problem with the prediction's shapes, or None when it is usable."""
    pts, conf, uv = prediction.points_hw3, prediction.conf_hw, prediction.uv_hw2
    for name, arr, ndim, last in (("points_hw3", pts, 3, 3), ("conf_hw", conf, 2, None), ("uv_hw2", uv, 3, 2)):
        if not isinstance(arr, np.ndarray) or arr.ndim != ndim or (last is not None and arr.shape[-1] != last):
            return f"prediction {name} has shape {getattr(arr, 'shape', None)}"
    if pts.shape[:2] != conf.shape or uv.shape[:2] != conf.shape:
        return f"prediction grids differ: points {pts.shape}, conf {conf.shape}, uv {uv.shape}"
    return None


def select_correspondences(prediction: ScenePrediction, min_confidence: float, max_count: int,
                           tie_breaker: TieBreaker) -> Correspondences:
    """Cells above the confidence threshold with finite values, at most `max_count`, most confident first.

    Works on reshaped views of the prediction; only the selected cells are gathered (copied).
    """
    conf_n = prediction.conf_hw.reshape(-1)
    candidates = np.flatnonzero(conf_n > min_confidence)  # NaN confidences compare False and drop out
    if max_count and candidates.size > max_count:
        ranks = tie_breaker.ranks(conf_n.size)[candidates]
        order = np.lexsort((ranks, -conf_n[candidates]))[:max_count]
    else:
        order = np.lexsort((tie_breaker.ranks(conf_n.size)[candidates], -conf_n[candidates]))
    chosen = candidates[order]
    points = prediction.points_hw3.reshape(-1, 3)[chosen]
    uv = prediction.uv_hw2.reshape(-1, 2)[chosen]
    finite = np.isfinite(points).all(axis=1) & np.isfinite(uv).all(axis=1)
    if not finite.all():
        points, uv, chosen = points[finite], uv[finite], chosen[finite]
    return Correspondences(points, uv, conf_n[chosen])


def undistort_pixels(uv_N2: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None) -> np.ndarray:
    """Pixel coordinates of an ideal pinhole camera with the same K (cv2.undistortPoints with P=K).

    Returns the input unchanged (no copy) when there is no distortion.
    """
    if dist_coeffs is None or len(uv_N2) == 0 or not np.any(dist_coeffs):
        return uv_N2
    pts = np.ascontiguousarray(uv_N2, dtype=np.float64).reshape(-1, 1, 2)
    out = cv2.undistortPoints(pts, K, np.asarray(dist_coeffs, np.float64).reshape(-1), P=K)
    return out.reshape(-1, 2).astype(uv_N2.dtype, copy=False)
