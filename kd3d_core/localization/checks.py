"""Checks that keep the relocalizer from answering confidently when it cannot know.

Before the network: is the image the camera's (size, aspect and K agree), and does it show anything (texture,
contrast, exposure)? After PnP: do the inliers carry the pose (enough of them for the number of
correspondences, spread over the image, confidently predicted), and is the pose's own uncertainty bounded?
Each check returns None when it passes, else (FailureReason, one-line detail). Thresholds live in
`RelocalizerConfig`; how they were chosen is documented there.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from kd3d_core.localization.config import RelocalizerConfig
from kd3d_core.localization.result import FailureReason, ImageStats, InlierStats

Problem = tuple[FailureReason, str]
# Image statistics are measured at most this wide (a 640x480 frame is measured at 320x240): the thresholds then
# mean the same at every camera resolution, and the cost stays ~1 ms.
_STATS_WIDTH = 320
_DARK_LEVEL, _BRIGHT_LEVEL = 10, 245
# Inlier coverage is the fraction of these grid cells over the image that hold at least one inlier.
COVERAGE_GRID = (8, 6)


def image_stats(rgb_HW3: np.ndarray, texture_gradient: float) -> ImageStats:
    """Grey-level statistics of an RGB uint8 image (see ImageStats)."""
    grey = cv2.cvtColor(rgb_HW3, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if w > _STATS_WIDTH:
        grey = cv2.resize(grey, (_STATS_WIDTH, max(1, round(h * _STATS_WIDTH / w))), interpolation=cv2.INTER_AREA)
    g = grey.astype(np.int16)
    grad = np.maximum(np.abs(np.diff(g, axis=1))[:-1, :], np.abs(np.diff(g, axis=0))[:, :-1])
    return ImageStats(mean=float(grey.mean()), std=float(grey.std()),
                      textured=float(np.mean(grad >= texture_gradient)) if grad.size else 0.0,
                      dark=float(np.mean(grey <= _DARK_LEVEL)), bright=float(np.mean(grey >= _BRIGHT_LEVEL)))


def check_content(stats: ImageStats, config: RelocalizerConfig) -> Problem | None:
    """Reject frames that show too little to localize: blank, uniform, saturated, black, featureless."""
    if stats.bright > config.max_bright_fraction:
        return (FailureReason.BAD_EXPOSURE, f"over-exposed: {100 * stats.bright:.0f} % of pixels saturated "
                f"(limit {100 * config.max_bright_fraction:.0f} %)")
    if stats.dark > config.max_dark_fraction or stats.mean < config.min_mean_intensity:
        return (FailureReason.BAD_EXPOSURE, f"under-exposed: mean grey level {stats.mean:.1f}, {100 * stats.dark:.0f} "
                f"% of pixels black (limits {config.min_mean_intensity:g}, {100 * config.max_dark_fraction:.0f} %)")
    if stats.std < config.min_intensity_std or stats.textured < config.min_textured_fraction:
        return (FailureReason.LOW_TEXTURE, f"too little texture: grey-level std {stats.std:.1f}, "
                f"{100 * stats.textured:.1f} % textured pixels (need {config.min_intensity_std:g} and "
                f"{100 * config.min_textured_fraction:g} %)")
    return None


def check_camera(size_wh: tuple[int, int], K: np.ndarray, config: RelocalizerConfig,
                 model_size_wh: tuple[int, int] | None) -> Problem | None:
    """Is K plausible for an image of this size, and is the image shaped like the model's input?

    K is already known to be finite 3x3 with positive focal lengths. Catches an image cropped or scaled
    without its K (the principal point then leaves the image centre region or the field of view is absurd)
    and strips or tiles far from the model's aspect (the network would see them stretched).
    """
    w, h = size_wh
    if min(w, h) < config.min_image_side_px:
        return FailureReason.BAD_IMAGE, f"image of {w}x{h} pixels is too small (need {config.min_image_side_px} px)"
    if model_size_wh is not None and config.max_aspect_mismatch > 0:
        mismatch = (w / h) / (model_size_wh[0] / model_size_wh[1])
        if max(mismatch, 1 / mismatch) > config.max_aspect_mismatch:
            return (FailureReason.BAD_IMAGE, f"image aspect {w}x{h} is {max(mismatch, 1 / mismatch):.2f}x away from "
                    f"the model's {model_size_wh[0]}x{model_size_wh[1]} (limit {config.max_aspect_mismatch:g})")
    off_x, off_y = abs((K[0, 2] + 0.5) / w - 0.5), abs((K[1, 2] + 0.5) / h - 0.5)
    if max(off_x, off_y) > config.max_principal_offset:
        return (FailureReason.BAD_INTRINSICS, f"principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) is not near the centre "
                f"of the {w}x{h} image (K belongs to another image size or crop?)")
    fov_x, fov_y = (math.degrees(2 * math.atan(s / (2 * f))) for s, f in ((w, K[0, 0]), (h, K[1, 1])))
    if not config.min_fov_deg <= min(fov_x, fov_y) <= max(fov_x, fov_y) <= config.max_fov_deg:
        return (FailureReason.BAD_INTRINSICS, f"field of view {fov_x:.1f} x {fov_y:.1f} deg from K and the {w}x{h} "
                f"image is outside {config.min_fov_deg:g}-{config.max_fov_deg:g} deg")
    if not 0.5 <= K[0, 0] / K[1, 1] <= 2.0 or abs(K[0, 1]) > 0.1 * K[0, 0] or not np.allclose(K[2], (0, 0, 1)):
        return FailureReason.BAD_INTRINSICS, f"K is not a pinhole camera matrix: {np.round(K, 3).tolist()}"
    return None


def inlier_stats(uv_N2: np.ndarray, conf_N: np.ndarray, correspondences: int, size_wh: tuple[int, int],
                 covariance_6x6: np.ndarray | None) -> InlierStats:
    """Ratio, coverage, median confidence and position uncertainty of the inliers (uv_N2, conf_N)."""
    gw, gh = COVERAGE_GRID
    w, h = size_wh
    col = np.clip((np.asarray(uv_N2[:, 0], np.float64) + 0.5) * gw / w, 0, gw - 1).astype(np.int64)
    row = np.clip((np.asarray(uv_N2[:, 1], np.float64) + 0.5) * gh / h, 0, gh - 1).astype(np.int64)
    coverage = len(np.unique(row * gw + col)) / (gw * gh) if len(uv_N2) else 0.0
    confidence = float(np.median(conf_N)) if len(conf_N) else 0.0
    std = math.inf
    if covariance_6x6 is not None and np.all(np.isfinite(covariance_6x6)):
        std = math.sqrt(max(float(np.linalg.eigvalsh(covariance_6x6[:3, :3])[-1]), 0.0))
    return InlierStats(len(uv_N2) / max(correspondences, 1), coverage, confidence, std)


def check_inliers(inliers: int, n: int, stats: InlierStats, config: RelocalizerConfig) -> Problem | None:
    """Do the inliers carry the pose? Count, ratio, spread over the image, confidence, position uncertainty."""
    if inliers < config.min_inliers:
        return FailureReason.TOO_FEW_INLIERS, f"{inliers} inliers of {n}, need {config.min_inliers}"
    if inliers < config.min_inlier_ratio * n:
        return (FailureReason.LOW_INLIER_RATIO,
                f"inlier ratio {inliers / n:.3f} below {config.min_inlier_ratio:.3f} ({inliers} of {n})")
    if stats.coverage < config.min_inlier_coverage:
        return (FailureReason.POOR_INLIER_COVERAGE, f"inliers cover {100 * stats.coverage:.0f} % of the image grid, "
                f"need {100 * config.min_inlier_coverage:.0f} %")
    if stats.confidence < config.min_inlier_confidence:
        return (FailureReason.LOW_CONFIDENCE, f"median inlier confidence {stats.confidence:.3f} below "
                f"{config.min_inlier_confidence:g}")
    if stats.position_std_m > config.max_position_std_m:
        return (FailureReason.UNCERTAIN_POSE, f"position uncertainty {stats.position_std_m:.3f} m (1 sigma) above "
                f"{config.max_position_std_m:g} m")
    return None
