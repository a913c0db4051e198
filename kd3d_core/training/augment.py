"""Augmentation that keeps labels consistent with pixels, K and poses (see AugmentConfig)."""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from kd3d_core.training.config import AugmentConfig


class LabelledView(NamedTuple):
    """An image with its dense labels at the same resolution, its intrinsics and pose."""

    rgb_HW3: np.ndarray        # uint8
    points_HW3: np.ndarray     # float32 world coordinates
    conf_HW: np.ndarray        # float32, 0 = no label
    K: np.ndarray              # 3x3 for this image
    world_T_cam: np.ndarray    # 4x4


def warp_matrix(K: np.ndarray, scale: float, angle_rad: float, shift_uv: tuple[float, float]) -> np.ndarray:
    """2x3 affine map p' = s R (p - c) + c + d, c = principal point (pixel-centre coordinates)."""
    c = np.array([K[0, 2], K[1, 2]])
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    A = scale * np.array([[cos, -sin], [sin, cos]])
    return np.hstack([A, (c + np.asarray(shift_uv) - A @ c)[:, None]])


def warp_view(view: LabelledView, scale: float, angle_rad: float, shift_uv: tuple[float, float]) -> LabelledView:
    """Apply one zoom/roll/shift to image and labels; return the view with the matching K and pose.

    Zoom by s about the principal point is a focal-length change (fx, fy *= s); a shift moves the principal
    point; rotating the image by angle about the principal point is the camera rolling about its optical axis
    (exact when fx == fy): cam'_T_cam = Rz(angle), so world_T_cam' = world_T_cam @ Rz(angle)^T.
    Label maps are resampled by nearest neighbour (interpolating would invent points across depth edges), so a
    warped label lies within scale * sqrt(0.5) px of the pixel it labels.
    """
    h, w = view.conf_HW.shape
    M = warp_matrix(view.K, scale, angle_rad, shift_uv)
    rgb = cv2.warpAffine(view.rgb_HW3, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    pts = cv2.warpAffine(view.points_HW3, M, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    conf = cv2.warpAffine(view.conf_HW, M, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0)
    K = np.array(view.K, dtype=np.float64)
    K[0, 0] *= scale
    K[1, 1] *= scale
    K[0, 2] += shift_uv[0]
    K[1, 2] += shift_uv[1]
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    roll = np.eye(4)
    roll[:2, :2] = [[cos, -sin], [sin, cos]]
    return LabelledView(rgb, pts, conf, K, view.world_T_cam @ roll.T)


def random_warp(view: LabelledView, cfg: AugmentConfig, rng: np.random.Generator) -> LabelledView:
    """Draw a zoom/roll/shift from the config and apply it (the identity when augmentation is off)."""
    if not cfg.enabled or (cfg.scale_min == cfg.scale_max == 1.0 and cfg.rotation_deg == 0 and cfg.shift_frac == 0):
        return view
    scale = float(np.exp(rng.uniform(np.log(cfg.scale_min), np.log(cfg.scale_max))))
    square = abs(view.K[0, 0] - view.K[1, 1]) <= 1e-3 * view.K[0, 0] and view.K[0, 1] == 0
    angle = float(np.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))) if square else 0.0
    h, w = view.conf_HW.shape
    shift = (float(rng.uniform(-1, 1) * cfg.shift_frac * w), float(rng.uniform(-1, 1) * cfg.shift_frac * h))
    return warp_view(view, scale, angle, shift)


def colour_jitter_(images_B3HW: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """In place: per-image brightness, contrast and saturation jitter of float RGB in [0, 1]."""
    if not cfg.enabled:
        return images_B3HW
    b = images_B3HW.shape[0]

    def factors(amount: float) -> torch.Tensor:
        f = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * amount
        return f.to(images_B3HW.device, images_B3HW.dtype)

    images_B3HW.mul_(factors(cfg.brightness))
    mean = images_B3HW.mean(dim=(1, 2, 3), keepdim=True)
    images_B3HW.sub_(mean).mul_(factors(cfg.contrast)).add_(mean)
    grey = images_B3HW.mean(dim=1, keepdim=True)
    images_B3HW.sub_(grey).mul_(factors(cfg.saturation)).add_(grey)
    return images_B3HW.clamp_(0.0, 1.0)
