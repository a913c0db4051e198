"""kd3d ingest: synth scene -> bag -> scene round trips (all storages), undistortion, depth, keyframes, pose
topics, and every bad-input path (one stderr line, exit 1, no output folder left behind)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from kd3d_core import messages as m
from kd3d_core.bags import BagWriter, write_scene_bag
from kd3d_core.cli import main
from kd3d_core.errors import BagError, ConfigError, MessageError
from kd3d_core.ingest import IngestConfig, default_camera_info_topic, ingest_bag
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene

IMAGE = "/camera/color/image_raw"
DEPTH = "/camera/depth/image_raw"
OPTICAL = "camera_color_optical_frame"
T0 = 1_700_000_000 * 10**9
K = np.array([[60.0, 0, 31.5], [0, 61.0, 23.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "room"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=8, query_frames=4, size_wh=(64, 48)), out,
                 progress=False)
    return out


def frames_by_stamp(scene_path: Path) -> dict:
    return {f.stamp_ns: f for f in open_scene(scene_path).frames}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary folder left"


@pytest.mark.parametrize("storage,name,depth_encoding", [("sqlite3", "bag", "32FC1"), ("mcap", "bag", "16UC1"),
                                                          ("ros1", "bag.bag", "32FC1")])
def test_round_trip_synth_bag_ingest_is_exact(synth, tmp_path, storage, name, depth_encoding):
    bag = tmp_path / name
    write_scene_bag(open_scene(synth), bag, storage=storage, depth_topic=DEPTH, depth_encoding=depth_encoding,
                    progress=False)
    out = tmp_path / "scene"
    result = ingest_bag(IngestConfig(bag=bag, out=out, image_topic=IMAGE, depth_topic=DEPTH,
                                     pose_tf=("map", OPTICAL), progress=False))
    assert result.frames == 12 and result.depth_frames == 12 and result.dropped_without_pose == 0
    src, dst = frames_by_stamp(synth), frames_by_stamp(out)
    assert sorted(src) == sorted(dst)
    scene = open_scene(out)
    np.testing.assert_array_equal(scene.info.K, open_scene(synth).info.K)
    for stamp, f in src.items():
        g = dst[stamp]
        np.testing.assert_array_equal(g.load_rgb(), f.load_rgb())
        np.testing.assert_allclose(g.world_T_cam, f.world_T_cam, atol=1e-9, rtol=0)
        raw_src = cv2.imread(str(f.depth_path), cv2.IMREAD_UNCHANGED)
        raw_dst = cv2.imread(str(g.depth_path), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(raw_dst, raw_src)  # millimetre PNGs identical


def test_compressed_png_via_cli_into_query_split(synth, tmp_path, capsys):
    bag = tmp_path / "bag"
    write_scene_bag(open_scene(synth), bag, storage="mcap", split=Split.QUERY, compressed="png", progress=False)
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(bag), str(out), "--image-topic", IMAGE + "/compressed", "--pose-tf", "map",
                       OPTICAL, "--split", "query", "--quiet"], capsys)
    assert rc == 0, err
    assert "wrote" in err and "4 frames of 4 images" in err
    scene = open_scene(out)
    assert len(scene.split(Split.QUERY)) == 4 and not scene.split(Split.MAPPING)
    src = frames_by_stamp(synth)
    for g in scene.frames:
        np.testing.assert_array_equal(g.load_rgb(), src[g.stamp_ns].load_rgb())
        np.testing.assert_allclose(g.world_T_cam, src[g.stamp_ns].world_T_cam, atol=1e-9, rtol=0)


def test_jpeg_compressed_is_close(synth, tmp_path):
    bag = tmp_path / "bag"
    write_scene_bag(open_scene(synth), bag, compressed="jpeg", progress=False)
    out = tmp_path / "scene"
    ingest_bag(IngestConfig(bag=bag, out=out, image_topic=IMAGE + "/compressed", pose_tf=("map", OPTICAL),
                            progress=False))
    src = frames_by_stamp(synth)
    for g in open_scene(out).frames:
        assert np.abs(g.load_rgb().astype(int) - src[g.stamp_ns].load_rgb()).mean() < 8.0  # JPEG q95 with 4:2:0 chroma on tiny textured images


def make_bag(path: Path, images: list[np.ndarray], *, encoding: str = "rgb8", pad: int = 0,
             model: m.CameraModel | None = None, poses: list[np.ndarray | None] | None = None,
             pose_stamp_offset: int = 0, depth: list[np.ndarray] | None = None, storage: str = "sqlite3",
             odom_child: str = OPTICAL, depth_frame: str = OPTICAL) -> None:
    """Hand-made bag: raw images (optionally padded rows), CameraInfo, Odometry poses, 16UC1 depth."""
    with BagWriter.create(path, storage) as w:
        f = w.factory
        for i, rgb in enumerate(images):
            stamp = T0 + i * 100_000_000
            fields = m.rgb_to_image_fields(rgb, encoding) if encoding in ("rgb8", "bgr8") else \
                m.ImageFields(rgb.shape[0], rgb.shape[1], encoding, 0, rgb.shape[1] * 2, np.zeros(
                    rgb.shape[0] * rgb.shape[1] * 2, np.uint8))
            if pad:
                rows = fields.data.reshape(fields.height, fields.step)
                data = np.concatenate([rows, np.full((fields.height, pad), 77, np.uint8)], axis=1).reshape(-1)
                fields = fields._replace(step=fields.step + pad, data=data)
            w.write(IMAGE, m.build_image(fields, stamp, OPTICAL, f), stamp)
            if model is not None:
                w.write("/camera/color/camera_info", m.build_camera_info(model, stamp, OPTICAL, f), stamp)
            if poses is not None and poses[i] is not None:
                w.write("/odom", m.build_odometry(poses[i], stamp + pose_stamp_offset, "world", odom_child,
                                                  typestore=f), stamp)
            if depth is not None:
                w.write(DEPTH, m.build_image(m.depth_to_image_fields(depth[i], "16UC1"), stamp + 3_000_000,
                                             depth_frame, f), stamp)


def synth_images(synth: Path, n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    frames = open_scene(synth).split(Split.MAPPING)[:n]
    return [f.load_rgb() for f in frames], [f.world_T_cam for f in frames], [f.load_depth() for f in frames]


@pytest.mark.parametrize("model_name,D", [("plumb_bob", [-0.25, 0.08, 0.001, -0.002, 0.0]),
                                          ("rational_polynomial", [-0.2, 0.05, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0]),
                                          ("equidistant", [0.05, -0.01, 0.002, 0.0])])
def test_distorted_padded_bgr8_is_undistorted_with_same_k(synth, tmp_path, model_name, D):
    images, poses, _ = synth_images(synth, 2)
    model = m.CameraModel(K=K, size=(64, 48), distortion_model=model_name, D=np.array(D))
    make_bag(tmp_path / "bag", images, encoding="bgr8", pad=5, model=model, poses=poses)
    out = tmp_path / "scene"
    result = ingest_bag(IngestConfig(bag=tmp_path / "bag", out=out, image_topic=IMAGE, pose_topic="/odom",
                                     progress=False))
    assert result.undistorted == model_name
    scene = open_scene(out)
    np.testing.assert_array_equal(scene.info.K, K)
    Dv = np.array(D)
    for frame, rgb in zip(scene.frames, images):
        if model_name == "equidistant":
            expected = cv2.fisheye.undistortImage(rgb, K, Dv, Knew=K)
        else:
            expected = cv2.undistort(rgb, K, Dv, newCameraMatrix=K)
        diff = np.abs(frame.load_rgb().astype(int) - expected)
        assert diff.mean() < 0.5 and np.abs(frame.load_rgb().astype(int) - rgb).mean() > 2.0


def test_pose_topic_drops_unassociated_frames_and_depth_is_resized(synth, tmp_path, capsys):
    images, poses, depths = synth_images(synth, 4)
    poses[1] = None  # no pose near frame 1
    half = [cv2.resize(d, (32, 24), interpolation=cv2.INTER_NEAREST) for d in depths]
    make_bag(tmp_path / "bag", images, model=m.pinhole_model(51.2, 51.2, 31.5, 23.5, (64, 48)), poses=poses,
             depth=half, odom_child="base_link", depth_frame="camera_depth_optical_frame")
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(tmp_path / "bag"), str(out), "--image-topic", IMAGE, "--pose-topic", "/odom",
                       "--depth-topic", DEPTH, "--quiet"], capsys)
    assert rc == 0, err
    assert "warning: dropped 1 of 4 images without a pose from pose topic /odom within 0.05 s" in err
    assert "depth frame 'camera_depth_optical_frame' differs from colour frame" in err
    assert "pose topic /odom gives poses of 'base_link', not of the image frame" in err
    scene = open_scene(out)
    assert len(scene) == 3 and scene.info.world_frame == "world"
    for frame, i in zip(scene.frames, (0, 2, 3)):
        np.testing.assert_allclose(frame.world_T_cam, poses[i], atol=1e-9, rtol=0)
        expected = cv2.resize(half[i], (64, 48), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_allclose(frame.load_depth(), expected, atol=6e-4)


def test_keyframes_stride_and_min_motion(synth, tmp_path):
    bag = tmp_path / "bag"
    write_scene_bag(open_scene(synth), bag, split=Split.MAPPING, progress=False)
    base = {"bag": bag, "image_topic": IMAGE, "pose_tf": ("map", OPTICAL), "progress": False}
    r = ingest_bag(IngestConfig(out=tmp_path / "s2", stride=3, **base))
    assert (r.frames, r.dropped_by_keyframing) == (3, 5)
    r = ingest_bag(IngestConfig(out=tmp_path / "mm", min_motion=(1e6, 1e6), **base))
    assert r.frames == 1  # nothing ever moves a million metres
    r = ingest_bag(IngestConfig(out=tmp_path / "m0", min_motion=(0.0, 0.0), **base))
    assert r.frames == 8
    with pytest.raises(ConfigError, match="needs poses"):
        ingest_bag(IngestConfig(bag=bag, out=tmp_path / "x", image_topic=IMAGE, min_motion=(0.1, 5)))


def test_default_camera_info_topic():
    assert default_camera_info_topic("/cam/color/image_raw/compressed") == "/cam/color/camera_info"
    assert default_camera_info_topic("/cam/image_rect") == "/cam/camera_info"


# ------------------------------------------------------------------------------------------ bad inputs (CLI)
@pytest.fixture(scope="module")
def plain_bag(synth, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plain") / "bag"
    write_scene_bag(open_scene(synth), path, split=Split.QUERY, progress=False)
    return path


def test_unknown_topic_lists_image_topics(plain_bag, tmp_path, capsys):
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(plain_bag), str(out), "--image-topic", "/rgb", "--pose-tf", "map", OPTICAL],
                      capsys)
    assert rc == 1
    assert err.strip() == ("kd3d ingest: error: image topic /rgb is not in the bag; available image topics: "
                           "/camera/color/image_raw")
    assert_no_output(out)


def test_missing_camera_info_needs_k(synth, tmp_path, capsys):
    images, poses, _ = synth_images(synth, 2)
    make_bag(tmp_path / "bag", images, poses=poses)
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(tmp_path / "bag"), str(out), "--image-topic", IMAGE, "--pose-topic", "/odom"],
                      capsys)
    assert rc == 1 and "no CameraInfo for /camera/color/image_raw" in err and "--K fx fy cx cy" in err
    assert len(err.strip().splitlines()) == 1
    assert_no_output(out)
    rc, err = run_cli(["ingest", str(tmp_path / "bag"), str(out), "--image-topic", IMAGE, "--pose-topic", "/odom",
                       "--K", "51.2", "51.2", "31.5", "23.5", "--quiet"], capsys)
    assert rc == 0, err
    np.testing.assert_array_equal(open_scene(out).info.K, [[51.2, 0, 31.5], [0, 51.2, 23.5], [0, 0, 1]])


def test_unsupported_encoding_leaves_no_folder(synth, tmp_path, capsys):
    images, poses, _ = synth_images(synth, 2)
    make_bag(tmp_path / "bag", images, encoding="yuv422", model=m.pinhole_model(50, 50, 32, 24, (64, 48)),
             poses=poses)
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(tmp_path / "bag"), str(out), "--image-topic", IMAGE, "--pose-topic", "/odom"],
                      capsys)
    assert rc == 1 and "image encoding 'yuv422' is unsupported" in err
    assert_no_output(out)


def test_nan_pose_is_an_error(synth, tmp_path, capsys):
    images, poses, _ = synth_images(synth, 2)
    poses[1] = poses[1].copy()
    poses[1][0, 3] = np.nan
    with pytest.raises(MessageError, match="finite 4x4"):  # the builder refuses to write NaN poses
        make_bag(tmp_path / "bag", images, model=m.pinhole_model(50, 50, 32, 24, (64, 48)), poses=poses)
    # write the NaN through the raw message instead of the (refusing) builder
    with BagWriter.create(tmp_path / "nan", "sqlite3") as w:
        for i, rgb in enumerate(images):
            stamp = T0 + i * 100_000_000
            w.write(IMAGE, m.build_image(m.rgb_to_image_fields(rgb), stamp, OPTICAL, w.factory), stamp)
            odom = m.build_odometry(np.eye(4), stamp, "world", OPTICAL, typestore=w.factory)
            odom.pose.pose.position.y = float("nan") if i == 1 else 0.0
            w.write("/odom", odom, stamp)
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(tmp_path / "nan"), str(out), "--image-topic", IMAGE, "--pose-topic", "/odom",
                       "--K", "50", "50", "32", "24"], capsys)
    assert rc == 1 and "pose topic /odom" in err and "non-finite" in err
    assert_no_output(out)


def test_no_frame_associates_is_an_error(synth, tmp_path, capsys):
    images, poses, _ = synth_images(synth, 3)
    make_bag(tmp_path / "bag", images, model=m.pinhole_model(50, 50, 32, 24, (64, 48)), poses=poses,
             pose_stamp_offset=500_000_000)
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(tmp_path / "bag"), str(out), "--image-topic", IMAGE, "--pose-topic", "/odom",
                       "--max-dt", "0.02"], capsys)
    assert rc == 1
    assert ("none of the 3 images on /camera/color/image_raw could be associated with a pose from pose topic /odom "
            "within 0.02 s") in err
    assert_no_output(out)


@pytest.mark.parametrize("storage,name,victim", [("sqlite3", "bag", "bag/bag.db3"), ("mcap", "bag", "bag/bag.mcap"),
                                                  ("ros1", "bag.bag", "bag.bag")])
def test_truncated_bag(synth, tmp_path, capsys, storage, name, victim):
    write_scene_bag(open_scene(synth), tmp_path / name, storage=storage, split=Split.QUERY, progress=False)
    with open(tmp_path / victim, "r+b") as fh:
        fh.truncate(os.path.getsize(tmp_path / victim) * 2 // 3)
    out = tmp_path / "scene"
    rc, err = run_cli(["ingest", str(tmp_path / name), str(out), "--image-topic", IMAGE, "--pose-tf", "map",
                       OPTICAL], capsys)
    assert rc == 1 and "kd3d ingest: error:" in err and ("corrupt" in err or "cannot open bag" in err)
    assert len(err.strip().splitlines()) == 1
    assert_no_output(out)


def test_missing_bag_and_existing_output(plain_bag, tmp_path, capsys):
    rc, err = run_cli(["ingest", str(tmp_path / "nope"), str(tmp_path / "o"), "--image-topic", IMAGE], capsys)
    assert rc == 1 and f"bag {tmp_path / 'nope'} does not exist" in err
    (tmp_path / "o").mkdir()
    rc, err = run_cli(["ingest", str(plain_bag), str(tmp_path / "o"), "--image-topic", IMAGE], capsys)
    assert rc == 1 and "already exists (pass --overwrite" in err
    rc, err = run_cli(["ingest", str(plain_bag), str(tmp_path / "o"), "--image-topic", IMAGE, "--overwrite",
                       "--quiet"], capsys)
    assert rc == 0, err
    # no pose flags: the shared discovery rule finds the bag's TF chain map -> image frame (as replay does)
    assert all(f.world_T_cam is not None for f in open_scene(tmp_path / "o").frames)
    assert "TF map -> camera_color_optical_frame (found by the rule" in err


def test_unknown_tf_frame(plain_bag, tmp_path):
    with pytest.raises(BagError, match=r"TF frame 'base' is not in bag .* \(frames: camera_color_optical_frame, "
                                       r"camera_link, map\)"):
        ingest_bag(IngestConfig(bag=plain_bag, out=tmp_path / "s", image_topic=IMAGE, pose_tf=("map", "base")))
