"""Oracle predictors: exact scene coordinates from ground-truth depth and pose.

They are real `ScenePredictor`s, not mocks: they run the same geometry a perfect student would learn, so PnP,
the relocalizer and replay can be tested against exact answers, and the benchmark gets an upper bound.
Optional noise and outliers (from a generator the caller passes) model an imperfect student.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import backproject_depth, transform_points
from kd3d_core.prediction import ScenePrediction
from kd3d_core.scene import Frame


@dataclass(frozen=True)
class OracleNoise:
    """How far from perfect the oracle is.

    Attributes:
        sigma_m: standard deviation of Gaussian noise added to every world point (metres).
        outlier_fraction: fraction of cells replaced by a random point within `outlier_range_m` of the truth.
        outlier_range_m: half-width of the box outliers are drawn in.
    """

    sigma_m: float = 0.0
    outlier_fraction: float = 0.0
    outlier_range_m: float = 2.0


class OracleDepthPredictor:
    """Predicts the exact world coordinates of one frame from its depth map and pose.

    Args:
        depth_HW: depth in metres on the colour image grid (0 = invalid).
        K: intrinsics of that grid.
        world_T_cam: the frame's pose.
        stride: output cell size in pixels (cells sample the pixel at their centre, like a strided network).
        noise: optional degradation; `rng` is required when it is not zero.
        rng: generator for the noise.
        world_frame: frame id of the world.
    """

    def __init__(self, depth_HW: np.ndarray, K: np.ndarray, world_T_cam: np.ndarray, stride: int = 8,
                 noise: OracleNoise | None = None, rng: np.random.Generator | None = None,
                 world_frame: str = "map") -> None:
        if stride < 1:
            raise Kd3dError(f"oracle stride must be >= 1, got {stride}")
        noise = noise or OracleNoise()
        if (noise.sigma_m > 0 or noise.outlier_fraction > 0) and rng is None:
            raise Kd3dError("an oracle with noise needs a random generator (rng)")
        self.world_frame = world_frame
        self.size_wh = (depth_HW.shape[1], depth_HW.shape[0])
        rows = np.arange(stride // 2, depth_HW.shape[0], stride)
        cols = np.arange(stride // 2, depth_HW.shape[1], stride)
        depth = depth_HW[np.ix_(rows, cols)]
        cam = backproject_depth(depth_HW, K)[np.ix_(rows, cols)]
        points = transform_points(world_T_cam, cam)
        valid = np.isfinite(depth) & (depth > 0)
        if rng is not None:
            points = points + rng.normal(scale=noise.sigma_m, size=points.shape) if noise.sigma_m > 0 else points
            outliers = rng.random(valid.shape) < noise.outlier_fraction
            points[outliers] += rng.uniform(-noise.outlier_range_m, noise.outlier_range_m, (outliers.sum(), 3))
        uu, vv = np.meshgrid(cols, rows)
        self._prediction = ScenePrediction(
            points_hw3=np.where(valid[..., None], points, 0.0).astype(np.float32),
            conf_hw=valid.astype(np.float32),
            uv_hw2=np.stack([uu, vv], axis=-1).astype(np.float32))

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        """The frame's exact prediction; the image must have the size of the depth map it was built from."""
        if rgb_HW3.shape[1::-1] != self.size_wh:
            raise Kd3dError(f"oracle built for {self.size_wh[0]}x{self.size_wh[1]} images, "
                            f"got {rgb_HW3.shape[1]}x{rgb_HW3.shape[0]}")
        return self._prediction


def predictor_for_frame(frame: Frame, stride: int = 8, noise: OracleNoise | None = None,
                        rng: np.random.Generator | None = None, world_frame: str = "map") -> OracleDepthPredictor:
    """The oracle of one scene frame (needs its depth and pose)."""
    if frame.world_T_cam is None:
        raise Kd3dError(f"frame {frame.name} has no pose; the oracle needs one")
    rgb = frame.load_rgb()
    depth = frame.load_depth_for_color((rgb.shape[1], rgb.shape[0]))
    if depth is None:
        raise Kd3dError(f"frame {frame.name} has no depth; the oracle needs it")
    return OracleDepthPredictor(depth, frame.K, frame.world_T_cam, stride, noise, rng, world_frame)


def image_digest(rgb_HW3: np.ndarray) -> str:
    """Content hash of an image (shape and pixels)."""
    h = hashlib.blake2b(str(rgb_HW3.shape).encode(), digest_size=16)
    h.update(np.ascontiguousarray(rgb_HW3).data)
    return h.hexdigest()


class OracleScenePredictor:
    """Oracle for a whole sequence: recognises each image by its pixel hash (lossless transport needed).

    Used where only the image reaches the predictor (bag replay); an image it has not seen raises, which the
    relocalizer reports as a failed prediction.
    """

    def __init__(self, frames: Iterable[tuple[np.ndarray, OracleDepthPredictor]], world_frame: str = "map") -> None:
        self.world_frame = world_frame
        self._by_digest = {image_digest(rgb): oracle for rgb, oracle in frames}

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        """The exact prediction of a known image."""
        oracle = self._by_digest.get(image_digest(rgb_HW3))
        if oracle is None:
            raise Kd3dError("oracle has no ground truth for this image")
        return oracle.predict(rgb_HW3)
