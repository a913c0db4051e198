"""Local features (OpenCV ORB / SIFT), matching with Lowe's ratio test, and lifting keypoints to 3D."""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from kd3d_core.baselines.config import ClassicalConfig, FeatureType


class Features(NamedTuple):
    """Keypoints of one image: pixel positions (N, 2) float32 and descriptors (N, D).

    ORB descriptors are uint8 (N, 32) packed bits; SIFT descriptors are uint8 (N, 128) (OpenCV's SIFT values
    are saturated to 0..255, so uint8 storage is lossless up to rounding and a quarter of float32's size).
    """

    uv_N2: np.ndarray
    descriptors_ND: np.ndarray


def descriptor_width(feature: FeatureType) -> int:
    """Bytes per descriptor."""
    return 32 if feature is FeatureType.ORB else 128


def make_detector(config: ClassicalConfig) -> cv2.Feature2D:
    """A detector/descriptor for the configured feature type."""
    if config.feature is FeatureType.ORB:
        return cv2.ORB_create(nfeatures=config.max_features, scaleFactor=1.2, nlevels=8, fastThreshold=12)
    return cv2.SIFT_create(nfeatures=config.max_features)


def detect(detector: cv2.Feature2D, feature: FeatureType, rgb_HW3: np.ndarray) -> Features:
    """Detect and describe features of an RGB uint8 image."""
    grey = cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    width = descriptor_width(feature)
    if descriptors is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, width), np.uint8))
    uv = np.array([kp.pt for kp in keypoints], np.float32).reshape(-1, 2)
    if feature is FeatureType.SIFT:
        descriptors = np.clip(np.rint(descriptors), 0, 255)
    return Features(uv, descriptors.astype(np.uint8).reshape(-1, width))


def lift_to_world(features: Features, depth_HW: np.ndarray, K: np.ndarray, world_T_cam: np.ndarray,
                  config: ClassicalConfig) -> tuple[Features, np.ndarray]:
    """Keep the keypoints with reliable depth and return them with their world points (N, 3) float32.

    A keypoint is kept when its depth is in range and its 5x5 depth neighbourhood is smooth: corners often sit
    on occlusion edges, where the depth at the rounded pixel may belong to either surface.
    """
    h, w = depth_HW.shape
    u = np.clip(np.rint(features.uv_N2[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.rint(features.uv_N2[:, 1]).astype(int), 0, h - 1)
    padded = np.pad(depth_HW, 2, mode="edge")
    patches = np.stack([padded[v + dv, u + du] for dv in range(5) for du in range(5)], axis=1)
    z = depth_HW[v, u]
    valid_patch = np.all(patches > 0, axis=1)
    spread = patches.max(axis=1) - patches.min(axis=1)
    keep = ((z > config.min_depth_m) & (z < config.max_depth_m) & valid_patch
            & (spread <= config.depth_edge_ratio * z))
    uv, z = features.uv_N2[keep].astype(np.float64), z[keep].astype(np.float64)
    cam = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z], axis=1)
    world = cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]
    return Features(features.uv_N2[keep], features.descriptors_ND[keep]), world.astype(np.float32)


def ratio_matches(query_ND: np.ndarray, train_ND: np.ndarray, feature: FeatureType,
                  ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (query, train) of matches passing Lowe's ratio test (brute force, k = 2)."""
    if len(query_ND) < 2 or len(train_ND) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    if feature is FeatureType.ORB:
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        knn = matcher.knnMatch(query_ND, train_ND, k=2)
    else:
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        knn = matcher.knnMatch(query_ND.astype(np.float32), train_ND.astype(np.float32), k=2)
    pairs = [(m[0].queryIdx, m[0].trainIdx) for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if not pairs:
        return np.zeros(0, int), np.zeros(0, int)
    q, t = np.array(pairs, int).T
    return q, t
