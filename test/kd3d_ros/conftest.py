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


class LiveRoom(NamedTuple):
    """A tiny synthetic room with a fast-student model mapped from its depth labels, and its query frames."""

    model_path: Path
    frames: list[QueryFrame]


@pytest.fixture(scope="session")
def live_room(tmp_path_factory: pytest.TempPathFactory) -> LiveRoom:
    """128x96 room, 24 mapping views: rendered, labelled and mapped in ~5 s; ~100 ms per frame on one thread."""
    from kd3d_core.students.fast import FastConfig
    from kd3d_core.synth import SynthConfig, render_scene
    from kd3d_core.teachers.config import TeachConfig, TeacherKind
    from kd3d_core.teachers.teach import teach_scene
    from kd3d_core.training.fast import FastTrainConfig, train_fast

    root = tmp_path_factory.mktemp("live") / "room"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=24, query_frames=8, size_wh=(128, 96)), root,
                 progress=False)
    labels = teach_scene(root, TeachConfig(teacher=TeacherKind.DEPTH, progress=False)).labels_dir
    student = FastConfig(knn_lists=16, knn_probe=4)
    train_fast(root, labels, root / "room.kd3d", FastTrainConfig(student=student, input_height=96, threads=1),
               progress=False)
    frames = []
    for i, frame in enumerate(open_scene(root).split(Split.QUERY)):
        rgb = frame.load_rgb()
        camera = CameraModel(K=frame.K, size=(rgb.shape[1], rgb.shape[0]), distortion_model="plumb_bob",
                             D=np.zeros(5))
        frames.append(QueryFrame(rgb, camera, frame.world_T_cam, START_NS + i * 100_000_000))
    return LiveRoom(root / "room.kd3d", frames)
