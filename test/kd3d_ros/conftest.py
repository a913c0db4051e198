"""Fixtures for the node tests: query frames of the shared tiny room and an oracle relocalizer that knows them."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from kd3d_core.localization import OracleScenePredictor, Relocalizer, RelocalizerConfig, predictor_for_frame
from kd3d_core.messages import CameraModel
from kd3d_core.scene import Split, open_scene

START_NS = 1_700_000_000_000_000_000


class QueryFrame(NamedTuple):
    """One query image with its ground truth."""

    rgb: np.ndarray
    camera: CameraModel
    world_T_cam: np.ndarray
    stamp_ns: int


@pytest.fixture(scope="session")
def query_frames(tiny_scene_path: Path) -> list[QueryFrame]:
    """The tiny room's query frames, 100 ms apart."""
    frames = open_scene(tiny_scene_path).split(Split.QUERY)
    out = []
    for i, frame in enumerate(frames):
        rgb = frame.load_rgb()
        camera = CameraModel(K=frame.K, size=(rgb.shape[1], rgb.shape[0]), distortion_model="plumb_bob",
                             D=np.zeros(5))
        out.append(QueryFrame(rgb, camera, frame.world_T_cam, START_NS + i * 100_000_000))
    return out


@pytest.fixture(scope="session")
def oracle_relocalizer(tiny_scene_path: Path) -> Relocalizer:
    """Exact scene coordinates for every query image (recognised by pixel hash, so transport must be lossless)."""
    frames = open_scene(tiny_scene_path).split(Split.QUERY)
    predictor = OracleScenePredictor([(f.load_rgb(), predictor_for_frame(f, stride=4)) for f in frames])
    return Relocalizer(predictor, RelocalizerConfig(min_inliers=30))
