import numpy as np
import pytest

from kd3d_core.errors import Kd3dError, SceneError
from kd3d_core.geometry import look_at
from kd3d_core.scene import Split, open_scene
from kd3d_core.scene_writer import SceneWriter

K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])


def _write(out, n_query=2, n_map=3, **kw):
    rng = np.random.default_rng(0)
    poses = []
    with SceneWriter.create(out, K, (32, 24), **kw) as w:
        for i in range(n_query + n_map):
            rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            depth = rng.uniform(0.5, 4, (24, 32)).astype(np.float32)
            pose = look_at(np.array([i * 0.1, 0, 1]), np.array([i * 0.1, 2, 1])) if i != 1 else None
            poses.append((rgb, depth, pose))
            w.add(rgb, depth=depth, world_T_cam=pose, stamp_ns=1000 + i,
                  split=Split.QUERY if i < n_query else Split.MAPPING)
    return poses


def test_twelve_scenes_round_trip(tmp_path):
    written = _write(tmp_path / "s")
    scene = open_scene(tmp_path / "s")
    assert len(scene) == 5
    assert [f.name for f in scene.split(Split.QUERY)] == ["frame-000000", "frame-000001"]
    assert len(scene.split(Split.MAPPING)) == 3
    for frame, (rgb, depth, pose) in zip(scene.frames, written):
        np.testing.assert_array_equal(frame.load_rgb(), rgb)
        np.testing.assert_allclose(frame.load_depth(), depth, atol=0.0005 + 1e-6)
        if pose is None:
            assert frame.world_T_cam is None
        else:
            np.testing.assert_allclose(frame.world_T_cam, pose, atol=1e-15)
        np.testing.assert_allclose(frame.K, K)
    assert scene.frames[3].stamp_ns == 1003
    assert "INF" in (tmp_path / "s/data/frame-000001.pose.txt").read_text()


def test_split_txt_alone_follows_12scenes(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s/kd3d.json").unlink()  # a real 12Scenes folder has no kd3d.json
    scene = open_scene(tmp_path / "s")
    assert [f.name for f in scene.split("query")] == ["frame-000000", "frame-000001"]
    assert len(scene.split("mapping")) == 3


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with SceneWriter.create(tmp_path / "s", K, (32, 24)) as w:
            w.add(np.zeros((24, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_pose_and_size_are_refused(tmp_path):
    with pytest.raises(SceneError, match="invalid pose"):
        with SceneWriter.create(tmp_path / "s", K, (32, 24)) as w:
            w.add(np.zeros((24, 32, 3), np.uint8), world_T_cam=np.full((4, 4), np.nan))
    with pytest.raises(SceneError, match="uint8 RGB 32x24"):
        with SceneWriter.create(tmp_path / "s", K, (32, 24)) as w:
            w.add(np.zeros((10, 10, 3), np.uint8))
    assert not (tmp_path / "s").exists()


def test_existing_output_needs_overwrite(tmp_path):
    _write(tmp_path / "s")
    with pytest.raises(Kd3dError, match="already exists"):
        _write(tmp_path / "s")
    _write(tmp_path / "s", n_query=0, n_map=2, overwrite=True)
    assert len(open_scene(tmp_path / "s")) == 2


def test_open_scene_errors(tmp_path):
    with pytest.raises(SceneError, match="does not exist"):
        open_scene(tmp_path / "nope")
    with pytest.raises(SceneError, match="not a scene folder"):
        open_scene(tmp_path)
    (tmp_path / "info.txt").write_text("m_colorWidth = 32\n")
    with pytest.raises(SceneError, match="no m_colorHeight"):
        open_scene(tmp_path)


def test_seven_scenes_layout(tmp_path):
    import cv2

    for seq in (1, 2):
        d = tmp_path / f"seq-{seq:02d}"
        d.mkdir()
        for i in range(2):
            cv2.imwrite(str(d / f"frame-{i:06d}.color.png"), np.zeros((480, 640, 3), np.uint8))
            depth = np.full((480, 640), 1500, np.uint16)
            depth[0, 0] = 65535
            cv2.imwrite(str(d / f"frame-{i:06d}.depth.png"), depth)
            (d / f"frame-{i:06d}.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    (tmp_path / "TrainSplit.txt").write_text("sequence1\n")
    (tmp_path / "TestSplit.txt").write_text("sequence2\n")
    scene = open_scene(tmp_path)
    assert scene.info.layout == "7scenes"
    assert [f.name for f in scene.split("mapping")] == ["seq-01/frame-000000", "seq-01/frame-000001"]
    assert len(scene.split("query")) == 2
    depth = scene.frames[0].load_depth()
    assert depth[0, 0] == 0 and depth[1, 1] == pytest.approx(1.5)
    assert scene.frames[0].K[0, 0] == 585


def test_depth_for_color_resamples_lower_resolution_depth(tmp_path):
    _write(tmp_path / "s")
    frame = open_scene(tmp_path / "s").frames[0]
    up = frame.load_depth_for_color((64, 48))
    assert up.shape == (48, 64)
    np.testing.assert_array_equal(up[::2, ::2], frame.load_depth())
