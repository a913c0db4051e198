"""The teacher-quality benchmark's measurements (the family itself runs in `kd3d bench --only teacher_quality`)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kd3d_core.bench.config import BenchConfig
from kd3d_core.bench.teacher_quality import label_error
from kd3d_core.errors import ConfigError
from kd3d_core.labels import FrameLabel, LabelStore
from kd3d_core.scene import open_scene
from kd3d_core.teachers import TeachConfig, TeacherKind, teach_scene


def test_label_error_is_zero_for_exact_labels_and_measures_a_shift(tmp_path):
    from kd3d_core.synth import SynthConfig, render_scene

    root = tmp_path / "room"
    render_scene(SynthConfig(preset="tiny", seed=1, mapping_frames=3, query_frames=0, size_wh=(64, 48)), root,
                 progress=False)
    teach_scene(root, TeachConfig(teacher=TeacherKind.DEPTH, labels_dir=tmp_path / "d", progress=False))
    scene, store = open_scene(root), LabelStore(tmp_path / "d")
    exact = label_error(store, scene)
    assert exact["label_median_cm"] < 0.5 and exact["coverage"] > 0.9
    shifted = LabelStore(tmp_path / "s")
    for name in store.names():
        lab = store.read(name)
        shifted.write(FrameLabel(name, lab.points_HW3 + np.float32([0.03, 0.0, 0.04]), lab.conf_HW, lab.world_T_cam,
                                 lab.K))
    assert abs(label_error(shifted, scene)["label_median_cm"] - 5.0) < 0.5
    back = label_error(shifted, scene, transform=lambda p: p - np.array([0.03, 0.0, 0.04]))
    assert back["label_median_cm"] < 0.5


def test_teacher_quality_is_opt_in_and_checks_its_rooms(tmp_path):
    assert "teacher_quality" not in BenchConfig().families
    assert BenchConfig(families=("teacher_quality",)).families == ("teacher_quality",)
    with pytest.raises(ConfigError, match="unknown room preset"):
        replace(BenchConfig(), teacher_rooms=("castle",))
