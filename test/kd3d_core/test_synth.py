import numpy as np
import pytest

from kd3d_core.cli import main
from kd3d_core.errors import ConfigError
from kd3d_core.geometry import backproject_depth, invert_pose, project_points, transform_points
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import PRESETS, SynthConfig, make_room, render_view, synth_intrinsics, synth_poses


def test_scene_has_splits_depth_and_poses(tiny_scene_path):
    scene = open_scene(tiny_scene_path)
    assert len(scene.split(Split.MAPPING)) == 24 and len(scene.split(Split.QUERY)) == 8
    f = scene.split(Split.MAPPING)[0]
    assert f.load_rgb().shape == (72, 96, 3)
    depth = f.load_depth()
    assert depth.min() > 0.3 and depth.max() < 5.0
    assert all(fr.world_T_cam is not None for fr in scene.frames)
    assert scene.info.world_frame == "map"


def test_depth_and_poses_are_geometrically_exact():
    """A point seen in one view reprojects, through the exact depth and poses, onto the same texture in another."""
    cfg = SynthConfig(preset="office", seed=1, mapping_frames=300, query_frames=0, size_wh=(160, 120))
    room = make_room(cfg)
    poses, _ = synth_poses(cfg)
    K = synth_intrinsics(cfg.size_wh)
    a, b = render_view(room, K, poses[10], cfg.size_wh), render_view(room, K, poses[12], cfg.size_wh)
    world = transform_points(poses[10], backproject_depth(a.depth, K).reshape(-1, 3))
    uv, z = project_points(K, invert_pose(poses[12]), world)
    ui, vi = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (ui >= 0) & (ui < 160) & (vi >= 0) & (vi < 120) & (z > 0)
    visible = inside.copy()
    visible[inside] = np.abs(b.depth[vi[inside], ui[inside]] - z[inside]) < 0.02 * z[inside]
    assert visible.mean() > 0.7
    diff = np.abs(a.rgb.reshape(-1, 3)[visible].astype(int) - b.rgb[vi[visible], ui[visible]].astype(int))
    assert np.median(diff) < 12  # same surface, same shading: colours agree up to resampling


def test_deterministic_by_seed_and_different_across_seeds():
    cfg = SynthConfig(preset="tiny", seed=5, mapping_frames=4, query_frames=2, size_wh=(64, 48))
    K = synth_intrinsics(cfg.size_wh)
    r1 = render_view(make_room(cfg), K, synth_poses(cfg)[0][1], cfg.size_wh)
    r2 = render_view(make_room(cfg), K, synth_poses(cfg)[0][1], cfg.size_wh)
    np.testing.assert_array_equal(r1.rgb, r2.rgb)
    other = SynthConfig(preset="tiny", seed=6, mapping_frames=4, query_frames=2, size_wh=(64, 48))
    r3 = render_view(make_room(other), K, synth_poses(other)[0][1], cfg.size_wh)
    assert np.abs(r1.rgb.astype(int) - r3.rgb.astype(int)).mean() > 5


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_keep_cameras_in_free_space(preset):
    cfg = SynthConfig(preset=preset, seed=0, mapping_frames=24, query_frames=8, size_wh=(32, 24))
    room = make_room(cfg)
    mapping, query = synth_poses(cfg)
    K = synth_intrinsics(cfg.size_wh)
    for pose in mapping[::3] + query[::2]:
        assert render_view(room, K, pose, cfg.size_wh).depth.min() > 0.3
    # the query path is not a replay of the mapping path
    dists = [min(np.linalg.norm(q[:3, 3] - m[:3, 3]) for m in mapping) for q in query]
    assert np.median(dists) > 0.1


def test_invalid_config():
    with pytest.raises(ConfigError, match="unknown preset"):
        SynthConfig(preset="castle").validate()
    with pytest.raises(ConfigError, match="image size"):
        SynthConfig(size_wh=(8, 8)).validate()


def test_cli_synth_writes_scene_and_refuses_existing(tmp_path, capsys):
    out = tmp_path / "room"
    assert main(["synth", str(out), "--preset", "tiny", "--frames", "6", "--size", "48x36"]) == 0
    assert len(open_scene(out)) == 8
    assert main(["synth", str(out), "--preset", "tiny", "--frames", "6"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_query_only_scene_matches_full_scene_poses(tmp_path):
    from kd3d_core.synth import render_scene

    full = SynthConfig(preset="tiny", seed=2, mapping_frames=9, query_frames=3, size_wh=(40, 30))
    render_scene(full, tmp_path / "full", progress=False)
    hd = SynthConfig(preset="tiny", seed=2, mapping_frames=9, query_frames=3, size_wh=(80, 60), include_mapping=False)
    render_scene(hd, tmp_path / "hd", progress=False)
    a, b = open_scene(tmp_path / "full").split(Split.QUERY), open_scene(tmp_path / "hd").split(Split.QUERY)
    assert len(open_scene(tmp_path / "hd")) == 3
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.world_T_cam, fb.world_T_cam, atol=1e-12)
        assert fa.stamp_ns == fb.stamp_ns
