"""A tiny synthetic room with exact labels from its depth and poses (what the depth teacher produces)."""
from pathlib import Path

import numpy as np
import pytest

from kd3d_core.geometry import backproject_depth, transform_points
from kd3d_core.labels import FrameLabel, LabelsMeta, LabelStore, ScaleSource
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene


def write_depth_labels(scene_root: Path, labels_dir: Path) -> LabelStore:
    """Labels = depth back-projected with the ground-truth pose (confidence 1 where depth is valid)."""
    scene = open_scene(scene_root)
    store = LabelStore(labels_dir)
    for frame in scene.split(Split.ALL):
        depth = frame.load_depth()
        pts = transform_points(frame.world_T_cam, backproject_depth(depth, frame.K)).astype(np.float32)
        store.write(FrameLabel(frame.name, pts, (depth > 0).astype(np.float32), frame.world_T_cam, frame.K))
    h, w = depth.shape
    store.write_meta(LabelsMeta("depth", "map", ScaleSource.DEPTH, (w, h)))
    return store


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """(scene, store) of a 64x48 room with 16 mapping and 4 query frames."""
    root = tmp_path_factory.mktemp("scene") / "tiny"
    render_scene(SynthConfig(preset="tiny", seed=1, mapping_frames=16, query_frames=4, size_wh=(64, 48)), root,
                 progress=False)
    store = write_depth_labels(root, root / "labels" / "depth")
    return open_scene(root), store


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread(one_torch_thread):
    """Every test here runs torch on one thread (see test/conftest.py)."""
    yield
