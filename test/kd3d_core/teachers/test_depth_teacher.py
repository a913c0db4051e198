"""Depth teacher: exact world points on a synthetic room, edge/range confidence, resume, missing inputs."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.cli import main as cli_main
from kd3d_core.errors import ConfigError
from kd3d_core.geometry import invert_pose, project_points
from kd3d_core.labels import LabelStore, ScaleSource
from kd3d_core.scene import open_scene
from kd3d_core.teachers import DepthTeacherConfig, TeachConfig, TeacherKind, depth_confidence, teach_scene


def test_depth_labels_reproject_onto_their_pixels(synth_scene, tmp_path):
    labels = tmp_path / "depth"
    assert cli_main(["teach", str(synth_scene), "--teacher", "depth", "--labels-dir", str(labels),
                     "--label-size", "32x24", "--no-progress"]) == 0
    store = LabelStore(labels)
    meta = store.read_meta()
    assert meta.scale_source is ScaleSource.DEPTH and meta.label_size == (32, 24) and not meta.failed_frames
    scene = open_scene(synth_scene)
    for name in store.names():
        label, frame = store.read(name), scene.frame(name)
        ok = label.conf_HW > 0
        assert ok.mean() > 0.7 and np.allclose(label.world_T_cam, frame.world_T_cam)
        uv, z = project_points(label.K, invert_pose(label.world_T_cam), label.points_HW3[ok].astype(np.float64))
        v, u = np.nonzero(ok)
        assert np.max(np.abs(uv - np.stack([u, v], 1))) < 0.05 and (z > 0).all()


def test_confidence_drops_at_edges_invalid_and_far():
    d = np.full((20, 20), 2.0, np.float32)
    d[:, 10:] = 4.0
    d[0, 0] = 0.0
    d[19, 19] = 20.0
    c = depth_confidence(d, DepthTeacherConfig())
    assert c[0, 0] == 0 and c[19, 19] == 0 and (c[:, 9:11] == 0).all()
    assert c[5, 3] > c[5, 15] > 0


def test_resume_keeps_existing_and_refuses_other_sizes(synth_scene, tmp_path):
    labels = tmp_path / "depth"
    cfg = TeachConfig(teacher=TeacherKind.DEPTH, labels_dir=labels, label_size=(32, 24), progress=False)
    teach_scene(synth_scene, cfg)
    first = LabelStore(labels).names()[0]
    path = next(labels.glob(f"{first}.npz"))
    stamp = path.stat().st_mtime_ns
    teach_scene(synth_scene, cfg)
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="another --labels-dir"):
        teach_scene(synth_scene, TeachConfig(teacher=TeacherKind.DEPTH, labels_dir=labels, label_size=(16, 12)))
