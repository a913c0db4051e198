"""The contract between a scene model (a trained student) and the relocalizer.

A predictor maps one RGB image to world coordinates and confidences on a grid of output cells, and says which
input-image pixel each cell stands for, so the relocalizer pairs 2D and 3D without knowing the network's stride
or internal resolution (the input image's K stays valid).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ScenePrediction:
    """Dense scene-coordinate prediction for one image.

    Attributes:
        points_hw3: float32 world coordinates (metres, world frame of the model) per output cell.
        conf_hw: float32 confidence per cell (higher is better; 0 means "do not use").
        uv_hw2: float32 pixel coordinates (u, v) in the input image that each cell corresponds to.
    """

    points_hw3: np.ndarray
    conf_hw: np.ndarray
    uv_hw2: np.ndarray


@runtime_checkable
class ScenePredictor(Protocol):
    """Anything that predicts scene coordinates for an RGB image (a loaded .kd3d model, or a test oracle)."""

    world_frame: str

    def predict(self, rgb_HW3: np.ndarray) -> ScenePrediction:
        """Predict for one RGB uint8 image of any size."""
        ...
