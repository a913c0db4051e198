"""The pairwise teacher's depth correction from triangulated anchors, through the production teach path."""
from __future__ import annotations

from pathlib import Path

import pytest

from kd3d_core.alignment import AlignConfig
from kd3d_core.bench.teacher_quality import label_error
from kd3d_core.labels import LabelStore
from kd3d_core.scene import open_scene
from kd3d_core.synth import SynthConfig, render_scene
from kd3d_core.teachers import Dust3rConfig, TeachConfig, TeacherKind, teach_scene
from kd3d_core.teachers.config import SimulatedDust3rConfig


@pytest.fixture(scope="module")
def textured_room(tmp_path_factory) -> Path:
    """16 mapping frames at 160x120 (enough pixels for keypoints), exact depth and poses."""
    out = tmp_path_factory.mktemp("corr") / "room"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=16, query_frames=1, size_wh=(160, 120)), out,
                 progress=False)
    return out


def _teach(root: Path, labels: Path, correction: bool, use_reference: bool = True):
    align = AlignConfig() if correction else AlignConfig(depth_correction=None)
    return teach_scene(root, TeachConfig(teacher=TeacherKind.SIMULATED_DUST3R, labels_dir=labels, progress=False,
                                         dust3r=Dust3rConfig(size=224, align=align),
                                         simulated=SimulatedDust3rConfig(error_scale=1.0, cache_dir=root.parent / "p",
                                                                         use_reference=use_reference)))


def test_anchors_from_the_images_reduce_label_error_at_dust3r_level(textured_room, tmp_path):
    on = _teach(textured_room, tmp_path / "on", True)
    off = _teach(textured_room, tmp_path / "off", False)
    scene = open_scene(textured_room)
    err_on = label_error(LabelStore(tmp_path / "on"), scene)["label_median_cm"]
    err_off = label_error(LabelStore(tmp_path / "off"), scene)["label_median_cm"]
    assert on.meta.extra["depth_correction"]["frames_corrected"] >= on.frames // 2
    assert off.meta.extra["depth_correction"] == {}
    assert err_on < 0.85 * err_off, (err_on, err_off)


def test_no_correction_without_reference_poses(textured_room, tmp_path):
    mono = _teach(textured_room, tmp_path / "mono", True, use_reference=False)
    assert mono.meta.extra["depth_correction"] == {}
