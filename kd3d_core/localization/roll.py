"""Rolled cameras: retry a lost frame on images turned back about the optical axis (or zoomed out).

A camera rolled about its optical axis sees exactly what an upright camera sees, rotated in the image: the
homography H = K Rz(a) K^-1 maps one to the other (a pure rotation of the camera, no parallax). A student whose
features were stored from upright mapping views (the fast student's memory) loses matches beyond ~10 deg of
roll; turning the query image back by the roll restores them. The roll is unknown, so a frame that fails upright
is retried at a few fixed angles (RelocalizerConfig.roll_retry_deg); the network sees the warped image and its
cells' pixel positions are mapped back through H^-1, so PnP solves for the real camera directly, with the real K.

A frame that localizes while rolled has fewer good matches than it would upright, so its pose is less precise.
Once a pose is known, so is the roll: the angle between the image's "up" and the direction the mapping cameras'
image "up" pointed on average (`mapping_up`, stored in the model file). The relocalizer then looks once more
at the image turned upright by exactly that angle (RelocalizerConfig.roll_upright_deg). In a stream the last
fix's roll (RollTracker) lets the next frame be looked at upright first, so a camera that stays rolled costs
one network pass a frame.

A frame still lost after the turned looks is looked at once more zoomed out about the principal point
(RelocalizerConfig.zoom_retry): the image the same camera with shorter focal lengths would see, H = K S K^-1 with
S = diag(s, s, 1). It is also an exact warp (no parallax), so the same mapping back applies. Each cell of the
zoomed-out view covers more of the scene: a close-up's texture is back at the scale the memory stored it, and a
faint texture is averaged over more pixels.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from kd3d_core.geometry import rotation_z
from kd3d_core.prediction import ScenePrediction


# Below this length the mapping cameras' mean image-up direction is not a direction (they were rolled all round).
MIN_UP_AGREEMENT = 0.5
# A camera whose optical axis is within ~17 deg of "up" (or "down") has no meaningful roll.
MIN_UP_IN_IMAGE = 0.3


def mapping_up(cam_T_world_seq: Iterable[np.ndarray]) -> tuple[float, float, float] | None:
    """Unit vector (world frame, as the model file stores it) that the mapping cameras' image "up" (-y of the
    camera) pointed along on average; None without poses, or when the cameras disagree (their mean up is
    shorter than MIN_UP_AGREEMENT)."""
    ups = [-np.asarray(T, np.float64)[1, :3] for T in cam_T_world_seq]  # row 1 of cam_R_world = camera y in world
    ups = [u for u in ups if np.all(np.isfinite(u))]
    if not ups:
        return None
    mean = np.mean(ups, axis=0)
    length = float(np.linalg.norm(mean))
    if length < MIN_UP_AGREEMENT:
        return None
    return tuple(float(v) for v in mean / length)


def camera_roll_deg(world_T_cam: np.ndarray, up_world: np.ndarray) -> float | None:
    """The camera's roll about its optical axis in degrees, measured from `up_world`: the angle from the image's
    up (-y) to where `up_world` points in the image, positive towards +x (the scene looks turned clockwise), so
    that rolled_view(image, K, -roll) shows it upright. None when the camera looks (nearly) along up or down."""
    up_cam = np.asarray(world_T_cam, np.float64)[:3, :3].T @ np.asarray(up_world, np.float64)
    if math.hypot(up_cam[0], up_cam[1]) < MIN_UP_IN_IMAGE:
        return None
    return math.degrees(math.atan2(up_cam[0], -up_cam[1]))


class RollTracker:
    """A stream's camera roll: that of its last localized frame, the hint for the next one
    (Relocalizer.localize_with_prediction's roll_hint_deg); a lost frame or a model without mapping_up gives no
    hint. One per image stream (the ROS node's pipeline, a bag replay)."""

    def __init__(self) -> None:
        self.hint_deg: float | None = None

    def update(self, estimate: object, up_world: np.ndarray | None) -> None:
        """Remember the roll of `estimate` (a PoseEstimate), or forget it when the frame was lost."""
        pose = getattr(estimate, "world_T_cam", None)
        ok = bool(getattr(estimate, "success", False)) and pose is not None and up_world is not None
        self.hint_deg = camera_roll_deg(pose, up_world) if ok else None

    def localize(self, relocalizer: Any, rgb_HW3: np.ndarray, K: np.ndarray, dist_coeffs: np.ndarray | None,
                 stamp_ns: int | None) -> tuple[Any, Any]:
        """The stream's next frame: relocalizer.localize_with_prediction with this stream's roll hint, then the
        hint updated from the result. Returns (estimate, prediction)."""
        estimate, prediction = relocalizer.localize_with_prediction(rgb_HW3, K, dist_coeffs, stamp_ns, self.hint_deg)
        self.update(estimate, getattr(relocalizer, "mapping_up", None))
        return estimate, prediction


def roll_homography(K: np.ndarray, angle_deg: float) -> np.ndarray:
    """H (3x3) taking pixels of the real camera to pixels of the same camera rolled by angle_deg about its
    optical axis (positive: the image content turns clockwise on screen, x right and y down)."""
    K = np.asarray(K, np.float64)
    return K @ rotation_z(math.radians(angle_deg)) @ np.linalg.inv(K)


def zoom_homography(K: np.ndarray, scale: float) -> np.ndarray:
    """H (3x3) taking pixels of the real camera to pixels of the same camera with its focal lengths times `scale`
    (same principal point; scale < 1 zooms out)."""
    K = np.asarray(K, np.float64)
    return K @ np.diag([scale, scale, 1.0]) @ np.linalg.inv(K)


def warped_view(rgb_HW3: np.ndarray, H: np.ndarray) -> np.ndarray:
    """The image warped by the homography H (real pixels -> view pixels), same size, black where the real image
    has no pixels."""
    h, w = rgb_HW3.shape[:2]
    return cv2.warpPerspective(rgb_HW3, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(0, 0, 0))


def rolled_view(rgb_HW3: np.ndarray, K: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The image as the camera rolled by angle_deg would see it (black where the real image has no pixels),
    and the homography used (real pixels -> rolled pixels)."""
    H = roll_homography(K, angle_deg)
    return warped_view(rgb_HW3, H), H


def zoomed_view(rgb_HW3: np.ndarray, K: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The image as the same camera with focal lengths times `scale` would see it (black beyond the real image's
    edges when zooming out), and the homography used (real pixels -> zoomed pixels)."""
    H = zoom_homography(K, scale)
    return warped_view(rgb_HW3, H), H


def unroll_prediction(prediction: ScenePrediction, H: np.ndarray, size_wh: tuple[int, int],
                      margin_px: float = 8.0) -> ScenePrediction:
    """A prediction made on a rolled (or zoomed: any warped) view, with its cells' pixels mapped back to the real
    image.

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
