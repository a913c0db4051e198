"""From pairwise pointmaps to compact per-frame and per-edge state (the only state global alignment keeps).

Pass 1 (`CanonicalAccumulator`): every directed prediction i->j carries frame i's pointmap in its own camera
frame at an arbitrary pair scale. Normalised by their median depth and confidence-averaged, these give one
canonical pointmap per frame (arbitrary but fixed scale), and its focal length when K is unknown.
Pass 2 (`fit_edge`): a prediction i->j also holds frame j's pointmap in camera i. Two weighted Umeyama fits on a
fixed pixel subsample (canonical i -> pair frame, canonical j -> pair frame) give the relative similarity
i_S_j mapping canonical j into canonical i. Only that similarity (7 numbers) survives per edge, so memory grows
with frames x pixels, never with edges x pixels.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import Similarity, backproject_depth, umeyama


@dataclass(frozen=True)
class PairPrediction:
    """One directed pair prediction (DUSt3R's view1 = i, view2 = j): both pointmaps in camera i's frame.

    Confidences follow DUSt3R: >= 1, larger is better; pixels with conf <= 1 carry no information.
    """

    i: int
    j: int
    pts_i_HW3: np.ndarray
    conf_i_HW: np.ndarray
    pts_j_HW3: np.ndarray
    conf_j_HW: np.ndarray


class PairSource(Protocol):
    """Streams directed predictions; iterated once per alignment pass, so it must be re-iterable."""

    def __iter__(self) -> Iterator[PairPrediction]: ...


def conf_weight(conf: np.ndarray) -> np.ndarray:
    """Weight of a DUSt3R confidence: log(conf), 0 for conf <= 1 (as DUSt3R's own aligner weights them)."""
    return np.log(np.maximum(conf, 1.0)).astype(np.float32)


def subsample_index(h: int, w: int, max_points: int) -> np.ndarray:
    """Flat indices of a regular pixel grid with at most `max_points` pixels (all pixels when few)."""
    step = max(1, int(np.ceil(np.sqrt(h * w / max_points))))
    v, u = np.meshgrid(np.arange(step // 2, h, step), np.arange(step // 2, w, step), indexing="ij")
    return (v * w + u).ravel()


class CanonicalFrames(NamedTuple):
    """Per-frame canonical state: depth (arbitrary per-frame scale), mean log-confidence, intrinsics."""

    depth_NHW: np.ndarray
    weight_NHW: np.ndarray
    K_N33: np.ndarray
    count_N: np.ndarray
    focal_estimated: bool

    def points(self, i: int) -> np.ndarray:
        """Canonical camera-frame points (h, w, 3) of frame i."""
        return backproject_depth(self.depth_NHW[i], self.K_N33[i]).astype(np.float32)


class CanonicalAccumulator:
    """Pass 1: confidence-weighted average of each frame's own-frame pointmaps, normalised to median depth 1."""

    def __init__(self, n_frames: int, size_hw: tuple[int, int], min_conf: float) -> None:
        h, w = size_hw
        self.size_hw = size_hw
        self.min_weight = float(np.log(max(min_conf, 1.0)))
        self.acc_NHW3 = np.zeros((n_frames, h, w, 3), np.float32)
        self.wsum_NHW = np.zeros((n_frames, h, w), np.float32)
        self.count_N = np.zeros(n_frames, np.int64)

    def add(self, pred: PairPrediction) -> None:
        """Accumulate view1's own-frame pointmap of a directed prediction."""
        if pred.pts_i_HW3.shape[:2] != self.size_hw:
            raise Kd3dError(f"pair ({pred.i},{pred.j}) pointmap is {pred.pts_i_HW3.shape[:2]}, expected {self.size_hw}")
        w = conf_weight(pred.conf_i_HW)
        z = pred.pts_i_HW3[..., 2]
        good = (w > self.min_weight) & (z > 0) & np.all(np.isfinite(pred.pts_i_HW3), axis=-1)
        if good.sum() < 16:
            return
        med = float(np.median(z[good]))
        w = np.where(good, w, 0.0)
        self.acc_NHW3[pred.i] += w[..., None] * np.nan_to_num(pred.pts_i_HW3) / med
        self.wsum_NHW[pred.i] += w
        self.count_N[pred.i] += 1

    def finish(self, K_N33: np.ndarray | None, shared_focal: bool = True) -> CanonicalFrames:
        """Canonical depths; K given (rays from K) or estimated from the averaged pointmaps (centred pp)."""
        safe = np.maximum(self.wsum_NHW, 1e-12)[..., None]
        pts = self.acc_NHW3 / safe
        depth = np.where(self.wsum_NHW > 0, pts[..., 2], 0.0).astype(np.float32)
        weight = (self.wsum_NHW / np.maximum(self.count_N, 1)[:, None, None]).astype(np.float32)
        estimated = K_N33 is None
        if estimated:
            K_N33 = estimate_intrinsics(pts, self.wsum_NHW, shared_focal)
        del self.acc_NHW3
        return CanonicalFrames(depth, weight, np.asarray(K_N33, np.float64), self.count_N.copy(), estimated)


def estimate_intrinsics(pts_NHW3: np.ndarray, w_NHW: np.ndarray, shared: bool) -> np.ndarray:
    """Focal length from pointmaps with the principal point at the image centre (least squares, as DUSt3R).

    Minimises sum w * |(u - c) - f * (x, y) / z|^2 per frame; `shared` takes the median over frames (one camera).
    """
    n, h, w, _ = pts_NHW3.shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    u, v = np.meshgrid(np.arange(w) - cx, np.arange(h) - cy)
    focals = np.full(n, np.nan)
    for k in range(n):
        z = pts_NHW3[k, ..., 2]
        ok = (w_NHW[k] > 0) & (z > 1e-6)
        if ok.sum() < 16:
            continue
        a, b, wk = pts_NHW3[k, ..., 0][ok] / z[ok], pts_NHW3[k, ..., 1][ok] / z[ok], w_NHW[k][ok]
        focals[k] = np.sum(wk * (u[ok] * a + v[ok] * b)) / max(np.sum(wk * (a * a + b * b)), 1e-12)
    valid = np.isfinite(focals) & (focals > 0)
    if not valid.any():
        raise Kd3dError("cannot estimate focal length: no frame has a usable pointmap")
    if shared:
        focals[:] = np.median(focals[valid])
    else:
        focals[~valid] = np.median(focals[valid])
    K = np.tile(np.eye(3), (n, 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = focals
    K[:, 0, 2], K[:, 1, 2] = cx, cy
    return K


class EdgeMeasurement(NamedTuple):
    """Relative similarity i_S_j (canonical j -> canonical i) from one directed prediction."""

    i: int
    j: int
    S: Similarity
    weight: float
    fit_residual: float


def _robust_umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[Similarity, float]:
    """Weighted Umeyama, refitted once without points beyond 3x the median residual; returns relative RMS."""
    S = umeyama(src, dst, w)
    res = np.linalg.norm(S.apply(src) - dst, axis=1)
    keep = res <= 3.0 * np.median(res) + 1e-12
    if keep.sum() >= 8 and not keep.all():
        S = umeyama(src[keep], dst[keep], w[keep])
        res = np.linalg.norm(S.apply(src) - dst, axis=1)
    scale = float(np.median(np.linalg.norm(dst - np.average(dst, axis=0, weights=w), axis=1))) + 1e-12
    return S, float(np.sqrt(np.average(res[keep] ** 2, weights=w[keep])) / scale)


def fit_edge(pred: PairPrediction, canon_pts_NM3: np.ndarray, canon_w_NM: np.ndarray, sub: np.ndarray,
             min_conf: float) -> EdgeMeasurement | None:
    """Relative similarity of one directed prediction; None when too few confident pixels.

    Args:
        pred: the directed prediction.
        canon_pts_NM3, canon_w_NM: canonical points and weights of every frame at the pixels `sub`.
        sub: flat pixel indices (the fitting subsample).
        min_conf: DUSt3R confidence below which pixels are ignored.
    """
    min_w = np.log(max(min_conf, 1.0))
    fits = []
    for frame, pts, conf in ((pred.i, pred.pts_i_HW3, pred.conf_i_HW), (pred.j, pred.pts_j_HW3, pred.conf_j_HW)):
        src = canon_pts_NM3[frame]
        dst = pts.reshape(-1, 3)[sub].astype(np.float64)
        w = conf_weight(conf).ravel()[sub] * canon_w_NM[frame]
        ok = (w > min_w * min_w) & (src[:, 2] > 0) & np.all(np.isfinite(dst), axis=1)
        if ok.sum() < 16:
            return None
        fits.append((*_robust_umeyama(src[ok], dst[ok], w[ok].astype(np.float64)), float(w[ok].mean())))
    (A, res_a, w_a), (B, res_b, w_b) = fits
    # i_S_j = A^-1 o B : canonical j -> pair frame -> canonical i
    R = A.R.T @ B.R
    s = B.scale / A.scale
    t = A.R.T @ (B.t - A.t) / A.scale
    return EdgeMeasurement(pred.i, pred.j, Similarity(s, R, t), min(w_a, w_b), max(res_a, res_b))


def accumulate_canonical(source: Iterable[PairPrediction], n_frames: int, size_hw: tuple[int, int],
                         min_conf: float, K_N33: np.ndarray | None, shared_focal: bool) -> CanonicalFrames:
    """Run pass 1 over a pair source."""
    acc = CanonicalAccumulator(n_frames, size_hw, min_conf)
    for pred in source:
        acc.add(pred)
    return acc.finish(K_N33, shared_focal)
