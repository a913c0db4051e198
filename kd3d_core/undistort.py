"""Undistortion to a pinhole image with the same K, so the K stored or used next to the image is exact.

Supported CameraInfo models: plumb_bob and rational_polynomial (OpenCV's standard model) and equidistant
(OpenCV's fisheye model). The remap tables are built once per camera; colour is resampled bilinearly, depth
with nearest neighbour so no depth values are invented across object edges.
"""
from __future__ import annotations

import cv2
import numpy as np

from kd3d_core.errors import MessageError
from kd3d_core.messages.camera import (
    EQUIDISTANT,
    PLUMB_BOB,
    RATIONAL_POLYNOMIAL,
    CameraModel,
)


class Undistorter:
    """Maps images of a distorted camera onto the distortion-free camera with the same K and size."""

    def __init__(self, model: CameraModel) -> None:
        self.model = model
        K, D, size = np.asarray(model.K, np.float64), np.asarray(model.D, np.float64), tuple(model.size)
        if model.distortion_model == EQUIDISTANT:
            if D.size < 4:
                raise MessageError(f"equidistant distortion needs 4 coefficients, got {D.size}")
            self.map_x, self.map_y = cv2.fisheye.initUndistortRectifyMap(K, D[:4], np.eye(3), K, size, cv2.CV_32FC1)
        elif model.distortion_model in (PLUMB_BOB, RATIONAL_POLYNOMIAL):
            if D.size not in (4, 5, 8, 12, 14):
                raise MessageError(f"{model.distortion_model} distortion with {D.size} coefficients is not supported "
                                   "(expected 4, 5, 8, 12 or 14)")
            self.map_x, self.map_y = cv2.initUndistortRectifyMap(K, D, None, K, size, cv2.CV_32FC1)
        else:
            raise MessageError(f"unsupported distortion model {model.distortion_model!r}")

    @classmethod
    def for_model(cls, model: CameraModel) -> Undistorter | None:
        """An undistorter, or None when the camera has no distortion (images are already pinhole)."""
        return cls(model) if model.has_distortion else None

    def _check(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != tuple(self.model.size):
            raise MessageError(f"image is {image.shape[1]}x{image.shape[0]} but the camera calibration is for "
                               f"{self.model.size[0]}x{self.model.size[1]}")

    def rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Undistorted colour image (bilinear; pixels from outside the image are black)."""
        self._check(rgb)
        return cv2.remap(rgb, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """Undistorted depth map on the colour grid (nearest neighbour; outside = 0, invalid)."""
        self._check(depth)
        return cv2.remap(depth, self.map_x, self.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)


class RelocalizerInput:
    """Prepares decoded camera images for the Relocalizer, the same way in replay and in the ROS node.

    OpenCV-model cameras (plumb_bob, rational_polynomial) keep their image: the relocalizer undistorts the 2D
    points it uses, which costs far less than remapping every pixel. Fisheye (equidistant) images are remapped to
    the pinhole camera with the same K first, since the point undistortion handles the OpenCV models only. The
    remap tables of the last camera model are kept (CameraInfo rarely changes).
    """

    def __init__(self) -> None:
        self._undistorter: Undistorter | None = None

    def prepare(self, model: CameraModel, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(image, distortion coefficients for the relocalizer or None)."""
        if not model.has_distortion:
            return rgb, None
        if model.distortion_model != EQUIDISTANT:
            return rgb, np.asarray(model.D, np.float64)
        if self._undistorter is None or not same_camera(self._undistorter.model, model):
            self._undistorter = Undistorter(model)
        return self._undistorter.rgb(rgb), None


def same_camera(a: CameraModel, b: CameraModel) -> bool:
    """Equal calibration (a CameraInfo decoded again per frame is a new object with the same numbers)."""
    return a is b or (tuple(a.size) == tuple(b.size) and a.distortion_model == b.distortion_model
                      and np.array_equal(a.K, b.K) and np.array_equal(a.D, b.D))
