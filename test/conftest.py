"""Shared fixtures: small synthetic scenes rendered once per session."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_scene_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic room: 24 mapping + 8 query frames at 96x72, with depth and poses. Treat as read-only."""
    from kd3d_core.synth import SynthConfig, render_scene

    out = tmp_path_factory.mktemp("scenes") / "tiny"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=24, query_frames=8, size_wh=(96, 72)), out,
                 progress=False)
    return out


@pytest.fixture(scope="session")
def one_torch_thread():
    """Run torch on one thread for a test folder that asks for it (its conftest uses this fixture with autouse):
    the dev/CI CPU is shared, and two OpenMP threads on a loaded 2-core machine can run ~100x slower than one."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# The room of the real-model tests: small enough to render, label and map in seconds, large enough (20 x 15
# output cells) that the fast student localizes its query frames.
FAST_ROOM_WH = (160, 120)


class FastRoom(NamedTuple):
    """A tiny synthetic room with a fast-student model distilled from its mapping frames."""

    root: Path
    model_path: Path


@pytest.fixture(scope="session")
def fast_room(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> FastRoom:
    """Render (seed 3, 24 mapping + 6 query frames), label with the depth teacher and map with the fast student
    (shipped frozen encoder, kNN head with 16 lists instead of 512 for this small buffer). Treat as read-only."""
    from kd3d_core.students.fast import FastConfig
    from kd3d_core.synth import SynthConfig, render_scene
    from kd3d_core.teachers import TeachConfig, TeacherKind, teach_scene
    from kd3d_core.training.fast import FastTrainConfig, train_fast

    root = tmp_path_factory.mktemp("fast_room") / "room"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=24, query_frames=6, size_wh=FAST_ROOM_WH), root,
                 progress=False)
    labels = teach_scene(root, TeachConfig(teacher=TeacherKind.DEPTH, progress=False)).labels_dir
    model_path = root / "fast.kd3d"
    config = FastTrainConfig(student=replace(FastConfig(), knn_lists=16), input_height=FAST_ROOM_WH[1], threads=1,
                             device="cpu")
    train_fast(root, labels, model_path, config, progress=False)
    return FastRoom(root, model_path)
