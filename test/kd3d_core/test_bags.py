"""kd3d_core.bags: real rosbag2 (sqlite3, mcap) and ROS 1 files written and read with rosbags; TF chains with
interpolation; pose topics; association; corrupt and truncated bags."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from kd3d_core import messages as m
from kd3d_core.bags import (
    BagStorage,
    BagWriter,
    TfBuffer,
    TfLookupError,
    Trajectory,
    associate_nearest,
    load_tf,
    open_bag,
    read_pose_topic,
    slerp,
    tf_pose_source,
)
from kd3d_core.errors import BagError
from kd3d_core.geometry import invert_pose, make_pose

T0 = 1_700_000_000 * 10**9
RGB = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
STORAGES = [("sqlite3", "bag2"), ("mcap", "bag2"), ("ros1", "bag.bag")]


def rot(axis: str, deg: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    return make_pose(Rotation.from_euler(axis, deg, degrees=True).as_matrix(), np.array(t, dtype=float))


def write_small_bag(path: Path, storage: str) -> None:
    """Images, CameraInfo, TF (dynamic map->odom, odom->base, static base->cam) and a PoseStamped topic."""
    with BagWriter.create(path, storage) as w:
        f = w.factory
        static = m.build_transform_stamped(rot("z", 90, (0.1, 0, 0.2)), T0, "base", "cam", f)
        w.write("/tf_static", m.build_tf_message([static], f), T0)
        for i in range(5):
            stamp = T0 + i * 100_000_000
            tfs = [m.build_transform_stamped(rot("z", 10 * i, (i, 0, 0)), stamp, "map", "odom", f),
                   m.build_transform_stamped(rot("x", 5 * i, (0, 0.5 * i, 0)), stamp, "odom", "base", f)]
            w.write("/tf", m.build_tf_message(tfs, f), stamp)
            w.write("/cam/image_raw", m.build_image(m.rgb_to_image_fields(RGB), stamp + 7, "cam", f), stamp + 50)
            w.write("/cam/camera_info", m.build_camera_info(m.pinhole_model(10, 10, 4, 3, (8, 6)), stamp, "cam", f),
                    stamp)
            w.write("/pose", m.build_pose_stamped(rot("y", i, (0, 0, i)), stamp, "map", f), stamp)


@pytest.fixture(scope="module", params=STORAGES, ids=[s for s, _ in STORAGES])
def small_bag(request, tmp_path_factory) -> tuple[Path, str]:
    storage, name = request.param
    path = tmp_path_factory.mktemp(storage) / name
    write_small_bag(path, storage)
    return path, storage


def test_read_topics_counts_and_messages(small_bag):
    path, storage = small_bag
    with open_bag(path) as bag:
        assert bag.storage is BagStorage(storage)
        topics = bag.topics
        assert {n: (t.msgtype, t.count) for n, t in topics.items()} == {
            "/cam/camera_info": ("sensor_msgs/msg/CameraInfo", 5), "/cam/image_raw": ("sensor_msgs/msg/Image", 5),
            "/pose": ("geometry_msgs/msg/PoseStamped", 5), "/tf": ("tf2_msgs/msg/TFMessage", 5),
            "/tf_static": ("tf2_msgs/msg/TFMessage", 1)}
        assert bag.start_ns == T0 and bag.end_ns == T0 + 400_000_050 and bag.message_count == 21
        images = list(bag.messages(["/cam/image_raw"]))
        assert [x.log_ns for x in images] == [T0 + i * 100_000_000 + 50 for i in range(5)]
        np.testing.assert_array_equal(m.decode_rgb(images[2].msg), RGB)
        # header stamps read from the raw bytes equal the deserialised ones
        assert [s.stamp_ns for s in bag.header_stamps("/cam/image_raw")] == [m.header_stamp_ns(x.msg) for x in images]
        assert m.camera_info_to_model(next(bag.messages(["/cam/camera_info"])).msg).size == (8, 6)


def test_rosbag2_metadata_is_version_8_with_latched_tf_static(tmp_path):
    write_small_bag(tmp_path / "b", "mcap")
    meta = (tmp_path / "b" / "metadata.yaml").read_text()
    assert "version: 8" in meta and "storage_identifier: mcap" in meta and "writer: kd3d" in meta
    block = meta[meta.index("name: /tf_static"):]
    assert "durability: 1" in block[:block.index("type:")]  # TRANSIENT_LOCAL, what tf2 static listeners need


def test_writer_is_atomic_and_refuses_existing(tmp_path):
    out = tmp_path / "b"
    with pytest.raises(RuntimeError, match="boom"), BagWriter.create(out, "sqlite3") as w:
        w.write("/x", m.build_pose_stamped(np.eye(4), 1, "map", w.factory), 1)
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    write_small_bag(out, "sqlite3")
    with pytest.raises(BagError, match="already exists"):
        write_small_bag(out, "sqlite3")


def test_require_topic_lists_available(small_bag):
    with open_bag(small_bag[0]) as bag:
        with pytest.raises(BagError, match=r"image topic /nope is not in the bag; available image topics: "
                                           r"/cam/image_raw"):
            bag.require_topic("/nope", ("sensor_msgs/msg/Image",), "image")
        with pytest.raises(BagError, match="of type geometry_msgs/msg/PoseStamped"):
            bag.require_topic("/pose", ("sensor_msgs/msg/Image",), "image")


def test_tf_chain_composition_with_interpolation(small_bag):
    with open_bag(small_bag[0]) as bag:
        buffer = load_tf(bag)
        src = tf_pose_source(bag, "map", "cam", max_dt_s=0.06)
    static = rot("z", 90, (0.1, 0, 0.2))
    # exactly at a sample: map_T_odom @ odom_T_base @ base_T_cam
    t2 = T0 + 200_000_000
    expect = rot("z", 20, (2, 0, 0)) @ rot("x", 10, (0, 1.0, 0)) @ static
    np.testing.assert_allclose(buffer.lookup("map", "cam", t2), expect, atol=1e-12)
    # halfway between samples 2 and 3: lerp + slerp on each dynamic edge, then compose
    mid = T0 + 250_000_000
    expect = rot("z", 25, (2.5, 0, 0)) @ rot("x", 12.5, (0, 1.25, 0)) @ static
    np.testing.assert_allclose(buffer.lookup("map", "cam", mid, max_dt_ns=60_000_000), expect, atol=1e-12)
    np.testing.assert_allclose(src.pose_at(mid), expect, atol=1e-12)
    # the inverse direction and a sibling lookup through the common ancestor
    np.testing.assert_allclose(buffer.lookup("cam", "map", t2), invert_pose(buffer.lookup("map", "cam", t2)),
                               atol=1e-12)
    np.testing.assert_allclose(buffer.lookup("odom", "cam", t2), rot("x", 10, (0, 1.0, 0)) @ static, atol=1e-12)
    # too far from any sample (midpoint is 50 ms from both neighbours) or outside the recording
    with pytest.raises(TfLookupError, match="no TF map -> odom within 0.04 s"):
        buffer.lookup("map", "cam", mid, max_dt_ns=40_000_000)
    assert src.pose_at(T0 + 10**9) is None
    with pytest.raises(TfLookupError, match="'nowhere' is not in the bag"):
        buffer.lookup("map", "nowhere", t2)


def test_tf_buffer_errors():
    buf = TfBuffer()
    buf.add("map", "a", 0, np.eye(4))
    buf.add("other", "b", 0, np.eye(4), static=True)
    with pytest.raises(TfLookupError, match="not connected"):
        buf.lookup("map", "b", 0)
    with pytest.raises(BagError, match="two parents"):
        buf.add("x", "a", 1, np.eye(4))
    buf.add("a", "c", 0, None)
    with pytest.raises(BagError, match=r"TF a -> c has 1 non-finite \(NaN/INF\) transforms"):
        buf.lookup("map", "c", 0)


def test_slerp_matches_scipy():
    r = Rotation.from_euler("xyz", [[10, -20, 30], [-140, 60, 170]], degrees=True)
    for alpha in (0.0, 0.3, 0.77, 1.0):
        q = slerp(r[0].as_quat(), r[1].as_quat(), alpha)
        ref = Slerp([0, 1], r)([alpha]).as_matrix()[0]
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), ref, atol=1e-12)


def test_association_rules():
    assert associate_nearest([3, 14, 16, 100], [0, 10, 20], 4).tolist() == [0, 1, 2, -1]
    assert associate_nearest([1], [], 10).tolist() == [-1]
    poses = [make_pose(np.eye(3), [0, 0, 0]), make_pose(np.eye(3), [1, 0, 0])]
    traj = Trajectory([100, 200], poses)
    np.testing.assert_allclose(traj.at(125, 30)[:3, 3], [0.25, 0, 0])  # interpolated, nearer neighbour 25 away
    assert traj.at(150, 30) is None  # both neighbours 50 away
    np.testing.assert_allclose(traj.at(220, 30)[:3, 3], [1, 0, 0])  # after the end, nearest within tolerance
    assert traj.at(260, 30) is None


def test_read_pose_topic_types_and_nan(tmp_path):
    path = tmp_path / "p"
    T = rot("z", 30, (1, 2, 3))
    with BagWriter.create(path, "sqlite3") as w:
        f = w.factory
        w.write("/ps", m.build_pose_stamped(T, 10, "map", f), 10)
        w.write("/pwc", m.build_pose_with_covariance_stamped(T, np.eye(6), 10, "map", f), 10)
        w.write("/odom", m.build_odometry(T, 10, "map", "cam", typestore=f), 10)
        w.write("/ts", m.build_transform_stamped(T, 10, "map", "cam", f), 10)
        bad = m.build_pose_stamped(T, 20, "map", f)
        bad.pose.orientation.w = float("inf")
        w.write("/bad", bad, 20)
        w.write("/img", m.build_image(m.rgb_to_image_fields(RGB), 1, "cam", f), 1)
    with open_bag(path) as bag:
        for topic in ("/ps", "/pwc", "/odom", "/ts"):
            traj = read_pose_topic(bag, topic)
            assert traj.frame_id == "map" and traj.stamps_ns.tolist() == [10]
            np.testing.assert_allclose(traj.poses[0], T, atol=1e-12)
        with pytest.raises(BagError, match="pose topic /bad at log time 20 ns: pose has non-finite values"):
            read_pose_topic(bag, "/bad")
        with pytest.raises(BagError, match="available pose topics: /bad, /odom, /ps, /pwc, /ts"):
            read_pose_topic(bag, "/img")


def _truncate(path: Path, fraction: float = 0.5) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(int(os.path.getsize(path) * fraction))


@pytest.mark.parametrize("storage,name,victim", [("sqlite3", "b", "b/b.db3"), ("mcap", "b", "b/b.mcap"),
                                                  ("ros1", "b.bag", "b.bag")])
def test_truncated_bags_give_one_clear_error(tmp_path, storage, name, victim):
    write_small_bag(tmp_path / name, storage)
    _truncate(tmp_path / victim)
    with pytest.raises(BagError, match=rf"bag {tmp_path / name}.* (corrupt|truncated|cannot open)|cannot open bag"), \
            open_bag(tmp_path / name) as bag:
        list(bag.messages(list(bag.topics)))


def test_bad_paths_and_garbled_metadata(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        open_bag(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        open_bag(tmp_path / "empty")
    write_small_bag(tmp_path / "b", "sqlite3")
    (tmp_path / "b" / "metadata.yaml").write_text("rosbag2_bagfile_information: [garbage\n")
    with pytest.raises(BagError, match=r"^cannot open bag .*Could not load YAML") as info:
        open_bag(tmp_path / "b")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_rosbag2_folder_named_like_a_ros1_bag(tmp_path, storage):
    """rosbags takes any *.bag path for ROS 1; a rosbag2 folder called x.bag must still open as rosbag2."""
    path = tmp_path / "walk.bag"
    write_small_bag(path, storage)
    with open_bag(path) as bag:
        assert bag.storage is BagStorage(storage)
        assert bag.topics["/cam/image_raw"].count == 5
