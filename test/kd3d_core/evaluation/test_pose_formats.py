"""Pose file formats: round trips, COLMAP world->camera inversion, detection, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from kd3d_core.errors import Kd3dError
from kd3d_core.evaluation.poses import PoseFormat, Trajectory, canonical_name, detect_format, read_poses, write_poses
from kd3d_core.geometry import invert_pose, make_pose, matrix_to_quat_xyzw, pose_from_tq
from kd3d_core.scene_writer import SceneWriter


def _random_trajectory(rng: np.random.Generator, n: int = 5, names: list[str] | None = None) -> Trajectory:
    poses = [make_pose(Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix(),
                       rng.uniform(-5, 5, 3)) for _ in range(n)]
    names = names or [f"seq-01/frame-{i:06d}" for i in range(n)]
    return Trajectory.from_lists(names, poses, [1.7e9 + 0.1 * i for i in range(n)])


@pytest.mark.parametrize("fmt", list(PoseFormat))
def test_round_trip(tmp_path, fmt):
    traj = _random_trajectory(np.random.default_rng(0))
    path = tmp_path / ("poses" if fmt is PoseFormat.POSEFOLDER else "poses.txt")
    write_poses(path, traj, fmt)
    assert detect_format(path) is fmt
    back = read_poses(path)
    assert len(back) == len(traj)
    np.testing.assert_allclose(back.poses, traj.poses, atol=1e-7)
    if fmt is PoseFormat.TUM:
        np.testing.assert_allclose(back.stamps_s, traj.stamps_s, atol=1e-9)
        assert back.keyed_by_stamp
    else:
        assert [canonical_name(n) for n in back.names] == list(traj.names)


def test_colmap_is_world_to_camera(tmp_path):
    """A camera at (1, 2, 3) looking along world +x: the file holds R^T and -R^T c, quaternion scalar first."""
    R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical z along world x
    world_T_cam = make_pose(R, [1.0, 2.0, 3.0])
    write_poses(tmp_path / "c.txt", Trajectory.from_lists(["img.png"], [world_T_cam]), PoseFormat.COLMAP)
    fields = next(line for line in (tmp_path / "c.txt").read_text().splitlines() if not line.startswith("#")).split()
    qw, qx, qy, qz = map(float, fields[1:5])
    t = np.array(fields[5:8], dtype=float)
    cam_T_world = invert_pose(world_T_cam)
    np.testing.assert_allclose(t, cam_T_world[:3, 3], atol=1e-9)
    np.testing.assert_allclose(pose_from_tq(t, np.array([qx, qy, qz, qw])), cam_T_world, atol=1e-9)
    # A hand-written benchmark line with an extra focal field reads back as camera-to-world.
    (tmp_path / "b.txt").write_text(f"query/img.jpg {qw} {qx} {qy} {qz} {t[0]} {t[1]} {t[2]} 525.0\n")
    back = read_poses(tmp_path / "b.txt")
    np.testing.assert_allclose(back.poses[0], world_T_cam, atol=1e-9)
    assert canonical_name(back.names[0]) == "query/img"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 1e-3), st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=3))
def test_pose_quaternion_round_trip(q, t):
    pose = pose_from_tq(np.array(t), np.array(q))
    q2 = matrix_to_quat_xyzw(pose[:3, :3])
    np.testing.assert_allclose(pose_from_tq(pose[:3, 3], q2), pose, atol=1e-9)
    assert q2[3] >= 0


def test_scene_folder_reads_as_pose_folder(tmp_path):
    traj = _random_trajectory(np.random.default_rng(1), n=3, names=["frame-000000", "frame-000001", "frame-000002"])
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    with SceneWriter.create(tmp_path / "scene", K, (32, 24)) as writer:
        for i, pose in enumerate(traj.poses):
            writer.add(np.zeros((24, 32, 3), np.uint8), world_T_cam=pose if i != 1 else None,
                       stamp_ns=int(traj.stamps_s[i] * 1e9))
    back = read_poses(tmp_path / "scene")
    assert back.names == ("frame-000000", "frame-000002")  # the unknown pose is skipped
    np.testing.assert_allclose(back.poses, traj.poses[[0, 2]], atol=1e-6)
    np.testing.assert_allclose(back.stamps_s, traj.stamps_s[[0, 2]], atol=1e-6)


def test_bad_files(tmp_path):
    (tmp_path / "bad.txt").write_text("1.0 2 3\n")
    with pytest.raises(Kd3dError, match="COLMAP pose line"):
        read_poses(tmp_path / "bad.txt")
    (tmp_path / "tum.txt").write_text("1.0 0 0 0 0 0 0 0\n")
    with pytest.raises(Kd3dError, match="invalid quaternion"):
        read_poses(tmp_path / "tum.txt", PoseFormat.TUM)
    with pytest.raises(Kd3dError, match="does not exist"):
        read_poses(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Kd3dError, match="neither a scene folder"):
        read_poses(tmp_path / "empty")
    no_stamps = Trajectory.from_lists(["a"], [np.eye(4)])
    with pytest.raises(Kd3dError, match="need timestamps"):
        write_poses(tmp_path / "t.txt", no_stamps, PoseFormat.TUM)
    with pytest.raises(Kd3dError, match="not a finite rigid"):
        write_poses(tmp_path / "c.txt", Trajectory.from_lists(["a"], [np.full((4, 4), np.nan)]), "colmap")
