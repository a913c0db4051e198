"""Shared fixtures: small synthetic scenes rendered once per session."""
from __future__ import annotations

import os
from pathlib import Path

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
