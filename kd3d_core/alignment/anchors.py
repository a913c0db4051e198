"""Depth anchors from the images themselves: features matched across mapping frames, triangulated at known poses.

When the mapping frames have reference poses (TF/odometry) and calibrated intrinsics, the position of a textured
point seen in several frames follows from the pixels alone, independent of any network's depth. A pairwise
teacher's depth carries a smooth distortion that every view of a surface may share (so multi-view fusion cannot
average it out); triangulated points measure it. This module only produces the anchors -- per frame, pixels with
a triangulated depth and its uncertainty; kd3d_core.alignment.depth_correction turns them into a correction.

Steps: SIFT (or ORB) keypoints per frame; mutual nearest-neighbour matches with a ratio test between each frame
and the next `window` frames; matches off their epipolar line under the known poses are dropped; matches are
chained into tracks (a track seeing one frame twice is dropped); each track is triangulated as the point closest
to its rays (least squares), views reprojecting beyond `max_reproj_px` are dropped and the track re-solved; a
track is kept with at least `min_views` views, a triangulation angle of at least `min_angle_deg` and every view
in front of its camera.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import invert_pose


class FeatureKind(str, Enum):
    """Keypoint detector and descriptor used for the anchors."""

    SIFT = "sift"
    ORB = "orb"


@dataclass(frozen=True)
class AnchorConfig:
    """How depth anchors are found (pixels at the colour image's resolution).

    Attributes:
        features: detector/descriptor.
        max_features: keypoints per frame at most.
        ratio: Lowe ratio test (best / second-best descriptor distance).
        window: each frame is matched with the next `window` frames of the sequence.
        epipolar_px: largest distance of a match from its epipolar line under the known poses.
        min_views: frames a track must be seen in.
        max_reproj_px: largest reprojection error of a view of a kept track.
        min_angle_deg: smallest triangulation angle (between the two most separated rays) of a kept track.
        pixel_sigma: keypoint localisation noise (px) assumed for the depth uncertainty.
        sift_contrast: SIFT's contrast threshold (lower finds keypoints on fainter texture).
    """

    features: FeatureKind = FeatureKind.SIFT
    max_features: int = 2000
    ratio: float = 0.8
    window: int = 12
    epipolar_px: float = 1.5
    min_views: int = 3
    max_reproj_px: float = 1.0
    min_angle_deg: float = 2.0
    pixel_sigma: float = 0.5
    sift_contrast: float = 0.005


class DepthAnchors(NamedTuple):
    """Triangulated anchors of one frame: pixel (M, 2) in its image, depth along z (M,) in metres, and the
    relative depth uncertainty (M,) (standard deviation of log depth) from the triangulation geometry."""

    uv_M2: np.ndarray
    depth_M: np.ndarray
    sigma_M: np.ndarray


class _Features(NamedTuple):
    uv: np.ndarray
    desc: np.ndarray


def detect(rgb_HW3: np.ndarray, config: AnchorConfig) -> _Features:
    """Keypoints (K, 2) and descriptors of one image."""
    gray = cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2GRAY)
    if config.features is FeatureKind.SIFT:
        det = cv2.SIFT_create(nfeatures=config.max_features, contrastThreshold=config.sift_contrast)
    else:
        det = cv2.ORB_create(nfeatures=config.max_features)
    kps, desc = det.detectAndCompute(gray, None)
    if desc is None or not kps:
        return _Features(np.zeros((0, 2)), np.zeros((0, 32 if config.features is FeatureKind.ORB else 128),
                                                    np.uint8 if config.features is FeatureKind.ORB else np.float32))
    return _Features(np.array([k.pt for k in kps], np.float64), desc)


def match_mutual(a: _Features, b: _Features, config: AnchorConfig) -> np.ndarray:
    """(P, 2) index pairs: mutual nearest neighbours passing the ratio test both ways."""
    if len(a.desc) < 2 or len(b.desc) < 2:
        return np.zeros((0, 2), np.int64)
    if config.features is FeatureKind.SIFT:  # one distance matrix serves both directions
        da, db = a.desc.astype(np.float32), b.desc.astype(np.float32)
        dist = np.sqrt(np.maximum((da * da).sum(1)[:, None] + (db * db).sum(1)[None, :] - 2.0 * da @ db.T, 0.0))
    else:  # Hamming distances of binary descriptors
        ba_bits = np.unpackbits(a.desc, axis=1).astype(np.float32)
        bb_bits = np.unpackbits(b.desc, axis=1).astype(np.float32)
        dist = ba_bits @ (1.0 - bb_bits).T + (1.0 - ba_bits) @ bb_bits.T
    ab, ba = _ratio_best(dist, config.ratio), _ratio_best(dist.T, config.ratio)
    i = np.flatnonzero(ab >= 0)
    i = i[ba[ab[i]] == i]
    return np.stack([i, ab[i]], axis=1)


def _ratio_best(dist: np.ndarray, ratio: float) -> np.ndarray:
    """Per row: the column of the smallest distance when it beats the second smallest by `ratio`, else -1."""
    two = np.partition(dist, 1, axis=1)[:, :2]
    best = np.argmin(dist, axis=1)
    return np.where(two[:, 0] < ratio * two[:, 1], best, -1)


def epipolar_distance(uv_a: np.ndarray, uv_b: np.ndarray, K_a: np.ndarray, K_b: np.ndarray,
                      b_T_a: np.ndarray) -> np.ndarray:
    """Symmetric point-to-epipolar-line distance (px) of matches under a known relative pose."""
    t = b_T_a[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K_b).T @ tx @ b_T_a[:3, :3] @ np.linalg.inv(K_a)
    ha = np.c_[uv_a, np.ones(len(uv_a))]
    hb = np.c_[uv_b, np.ones(len(uv_b))]
    lb, la = ha @ F.T, hb @ F
    alg = np.abs(np.sum(hb * lb, axis=1))
    return 0.5 * alg * (1 / np.maximum(np.hypot(lb[:, 0], lb[:, 1]), 1e-12)
                        + 1 / np.maximum(np.hypot(la[:, 0], la[:, 1]), 1e-12))


class _Tracks(NamedTuple):
    frame: np.ndarray   # (O,) frame of each observation
    uv: np.ndarray      # (O, 2) its pixel
    track: np.ndarray   # (O,) track id 0..T-1


def build_tracks(uv_per_frame: Sequence[np.ndarray], matches: dict[tuple[int, int], np.ndarray]) -> _Tracks:
    """Chain pairwise matches (keypoint indices of frames a, b) into tracks (connected components); tracks seeing
    a frame twice are dropped."""
    offset = np.concatenate([[0], np.cumsum([len(uv) for uv in uv_per_frame])]).astype(np.int64)
    rows = [offset[a] + m[:, 0] for (a, _), m in matches.items()]
    cols = [offset[b] + m[:, 1] for (_, b), m in matches.items()]
    n = int(offset[-1])
    if not rows or n == 0:
        return _Tracks(np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0, np.int64))
    r, c = np.concatenate(rows), np.concatenate(cols)
    _, label = connected_components(sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)), directed=False)
    frame_of = np.repeat(np.arange(len(uv_per_frame)), np.diff(offset))
    size = np.bincount(label)
    node = np.flatnonzero(size[label] >= 2)
    key = label[node].astype(np.int64) * len(uv_per_frame) + frame_of[node]
    dup = np.bincount(key)[key] > 1 if len(key) else np.zeros(0, bool)
    bad = np.unique(label[node[dup]])
    node = node[~np.isin(label[node], bad)]
    uv = np.concatenate(list(uv_per_frame))[node]
    _, track = np.unique(label[node], return_inverse=True)
    return _Tracks(frame_of[node], uv, track)


def _rays(tracks: _Tracks, K_N33: np.ndarray, world_T_cam: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """World ray origins (O, 3) and unit directions (O, 3) of the observations."""
    T = np.array([world_T_cam[f] for f in tracks.frame])
    K = K_N33[tracks.frame]
    x = np.stack([(tracks.uv[:, 0] - K[:, 0, 2]) / K[:, 0, 0], (tracks.uv[:, 1] - K[:, 1, 2]) / K[:, 1, 1],
                  np.ones(len(tracks.uv))], axis=1)
    d = np.einsum("oab,ob->oa", T[:, :3, :3], x)
    return T[:, :3, 3], d / np.linalg.norm(d, axis=1, keepdims=True)


def _closest_points(origin: np.ndarray, d: np.ndarray, track: np.ndarray, use: np.ndarray, n: int) -> np.ndarray:
    """Per track, the point minimising the squared distances to its used rays (NaN when degenerate)."""
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = np.zeros((n, 3, 3))
    b = np.zeros((n, 3))
    np.add.at(A, track[use], P[use])
    np.add.at(b, track[use], np.einsum("oab,ob->oa", P[use], origin[use]))
    X = np.full((n, 3), np.nan)
    ok = np.linalg.cond(A) < 1e6
    X[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    return X


def _reproject(X: np.ndarray, tracks: _Tracks, K_N33: np.ndarray,
               cam_T_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reprojection error (px) and depth along z of every observation of its track's point."""
    T = cam_T_world[tracks.frame]
    p = np.einsum("oab,ob->oa", T[:, :3, :3], X[tracks.track]) + T[:, :3, 3]
    K = K_N33[tracks.frame]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[:, 0, 0] * p[:, 0] / p[:, 2] + K[:, 0, 2]
        v = K[:, 1, 1] * p[:, 1] / p[:, 2] + K[:, 1, 2]
        err = np.hypot(u - tracks.uv[:, 0], v - tracks.uv[:, 1])
    return np.where(np.isfinite(err), err, np.inf), p[:, 2]


def triangulate(tracks: _Tracks, K_N33: np.ndarray, world_T_cam: Sequence[np.ndarray],
                config: AnchorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate tracks; per observation: kept flag, depth along z and log-depth uncertainty."""
    n = int(tracks.track.max()) + 1 if len(tracks.track) else 0
    origin, d = _rays(tracks, K_N33, world_T_cam)
    cam_T_world = np.array([invert_pose(T) for T in world_T_cam])
    use = np.ones(len(tracks.track), bool)
    for _ in range(2):  # solve, drop views that reproject badly, solve again
        X = _closest_points(origin, d, tracks.track, use, n)
        err, z = _reproject(X, tracks, K_N33, cam_T_world)
        use &= (err <= config.max_reproj_px) & (z > 0)
    views = np.bincount(tracks.track[use], minlength=n)
    # triangulation angle: each used ray against the track's first used ray (frames come in sequence order)
    first = np.full(n, -1)
    order = np.flatnonzero(use)[::-1]
    first[tracks.track[order]] = order
    cos = np.sum(d * d[np.maximum(first[tracks.track], 0)], axis=1)
    angle = np.zeros(n)
    np.maximum.at(angle, tracks.track[use], np.arccos(np.clip(cos[use], -1.0, 1.0)))
    good = (views >= config.min_views) & (angle >= np.radians(config.min_angle_deg)) & np.isfinite(X).all(1)
    keep = use & good[tracks.track]
    focal = K_N33[tracks.frame, 0, 0]
    sigma = config.pixel_sigma / focal / np.maximum(np.sin(angle[tracks.track]), 1e-3)
    return keep, z, sigma


def find_anchors(load_rgb: Callable[[int], np.ndarray], K_N33: np.ndarray, world_T_cam: Sequence[np.ndarray | None],
                 config: AnchorConfig) -> list[DepthAnchors | None]:
    """Depth anchors of every frame (None for frames without a reference pose or without anchors).

    Args:
        load_rgb: frame index -> RGB image (the pixels the anchors are measured on).
        K_N33: intrinsics of those images.
        world_T_cam: reference poses (TF/odometry); frames without one take no part.
        config: matching and triangulation settings.
    """
    n = len(world_T_cam)
    if len(K_N33) != n:
        raise Kd3dError(f"depth anchors: {len(K_N33)} intrinsics for {n} frames")
    uv: list[np.ndarray] = []
    recent: dict[int, _Features] = {}  # descriptors of the last `window` frames only (memory stays flat)
    matches = {}
    for b in range(n):
        if world_T_cam[b] is None:
            uv.append(np.zeros((0, 2)))
            continue
        fb = detect(load_rgb(b), config)
        uv.append(fb.uv)
        for a, fa in recent.items():
            m = match_mutual(fa, fb, config)
            if len(m):
                b_T_a = invert_pose(world_T_cam[b]) @ world_T_cam[a]
                m = m[epipolar_distance(fa.uv[m[:, 0]], fb.uv[m[:, 1]], K_N33[a], K_N33[b], b_T_a)
                      <= config.epipolar_px]
            if len(m):
                matches[(a, b)] = m
        recent[b] = fb
        recent = {a: f for a, f in recent.items() if a > b - config.window}
    tracks = build_tracks(uv, matches)
    if not len(tracks.track):
        return [None] * n
    poses = [T if T is not None else np.eye(4) for T in world_T_cam]
    keep, z, sigma = triangulate(tracks, np.asarray(K_N33, np.float64), poses, config)
    out: list[DepthAnchors | None] = [None] * n
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(tracks.frame[kept], kind="stable")]
    frames, starts = np.unique(tracks.frame[kept], return_index=True)
    for k, sel in zip(frames.tolist(), np.split(kept, starts[1:])):
        out[k] = DepthAnchors(tracks.uv[sel], z[sel], sigma[sel])
    return out


def anchors_on_grid(anchors: DepthAnchors | None, K_from: np.ndarray, K_to: np.ndarray) -> DepthAnchors | None:
    """The same anchors on another pixel grid of the same camera (e.g. the label grid after the network crop)."""
    if anchors is None:
        return None
    x = (anchors.uv_M2 - K_from[[0, 1], [2, 2]]) / K_from[[0, 1], [0, 1]]
    return DepthAnchors(x * K_to[[0, 1], [0, 1]] + K_to[[0, 1], [2, 2]], anchors.depth_M, anchors.sigma_M)
