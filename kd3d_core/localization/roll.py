"""Rolled cameras: retry a lost frame on images turned back about the optical axis.

A camera rolled about its optical axis sees exactly what an upright camera sees, rotated in the image: the
homography H = K Rz(a) K^-1 maps one to the other (a pure rotation of the camera, no parallax). A student whose
features were stored from upright mapping views (the fast student's memory) loses matches beyond ~10 deg of
roll; turning the query image back by the roll restores them. The roll is unknown, so a frame that fails upright
is retried at a few fixed angles (RelocalizerConfig.roll_retry_deg); the network sees the warped image and its
cells' pixel positions are mapped back through H^-1, so PnP solves for the real camera directly, with the real K.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from kd3d_core.geometry import rotation_z
from kd3d_core.prediction import ScenePrediction


def roll_homography(K: np.ndarray, angle_deg: float) -> np.ndarray:
    """H (3x3) taking pixels of the real camera to pixels of the same camera rolled by angle_deg about its
    optical axis (positive: the image content turns clockwise on screen, x right and y down)."""
    K = np.asarray(K, np.float64)
    return K @ rotation_z(math.radians(angle_deg)) @ np.linalg.inv(K)


def rolled_view(rgb_HW3: np.ndarray, K: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The image as the camera rolled by angle_deg would see it (black where the real image has no pixels),
    and the homography used (real pixels -> rolled pixels)."""
    H = roll_homography(K, angle_deg)
    h, w = rgb_HW3.shape[:2]
    warped = cv2.warpPerspective(rgb_HW3, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=(0, 0, 0))
    return warped, H


def unroll_prediction(prediction: ScenePrediction, H: np.ndarray, size_wh: tuple[int, int],
                      margin_px: float = 8.0) -> ScenePrediction:
    """A prediction made on a rolled view, with its cells' pixels mapped back to the real image.

    Cells whose pixel falls outside the real image (less `margin_px`, where the view's black border starts to
    enter the receptive field) get confidence 0 and are never used.
    """
    uv = prediction.uv_hw2.reshape(-1, 2).astype(np.float64)
    back = np.linalg.inv(H) @ np.vstack([uv.T, np.ones(len(uv))])
    with np.errstate(divide="ignore", invalid="ignore"):
        uv_real = (back[:2] / back[2]).T
    w, h = size_wh
    inside = ((uv_real[:, 0] >= margin_px) & (uv_real[:, 0] <= w - 1 - margin_px)
              & (uv_real[:, 1] >= margin_px) & (uv_real[:, 1] <= h - 1 - margin_px))
    conf = np.where(inside, prediction.conf_hw.reshape(-1), 0.0).astype(prediction.conf_hw.dtype)
    return dataclasses.replace(prediction, uv_hw2=uv_real.astype(np.float32).reshape(prediction.uv_hw2.shape),
                               conf_hw=conf.reshape(prediction.conf_hw.shape))
