"""kd3d_core.messages: decoding every supported encoding (padded rows, big endian), and every builder
round-tripped through CDR (rosbags' ROS 2 Humble types) and ROS 1 serialisation."""
from __future__ import annotations

import array
import struct
import sys
import types

import cv2
import numpy as np
import pytest

from kd3d_core import messages as m
from kd3d_core.errors import MessageError
from kd3d_core.geometry import look_at

TS2 = m.ros2_typestore()
TS1 = m.ros1_typestore()
RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
DEPTH_M = RNG.uniform(0.3, 5.0, (5, 7)).astype(np.float32)
DEPTH_M[0, 0] = 0.0


def cdr(msg):
    """Serialise with the ROS 2 typestore and read back."""
    return TS2.deserialize_cdr(TS2.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def ros1(msg):
    return TS1.deserialize_ros1(TS1.serialize_ros1(msg, msg.__msgtype__), msg.__msgtype__)


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 3, bigendian: bool = False):
    """A ROS 2 Image with `pad` junk bytes at the end of every row."""
    h, w = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = np.ascontiguousarray(pixels.astype(dtype)).view(np.uint8).reshape(h, -1)
    junk = np.full((h, pad), 0xAB, np.uint8)
    data = np.concatenate([rows, junk], axis=1).reshape(-1)
    fields = m.ImageFields(h, w, encoding, int(bigendian), rows.shape[1] + pad, data)
    return cdr(m.build_image(fields, 5, "cam"))


@pytest.mark.parametrize("encoding,pixels,expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("8UC3", RGB[..., ::-1], RGB),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
    ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
    ("mono16", RGB[..., 0].astype(np.uint16) * 257, np.repeat(RGB[..., :1], 3, axis=2)),
])
@pytest.mark.parametrize("bigendian", [False, True])
def test_colour_encodings_with_padded_rows(encoding, pixels, expected, bigendian):
    msg = raw_image(pixels, encoding, pad=5, bigendian=bigendian)
    assert msg.step > msg.width * (pixels.shape[2] if pixels.ndim == 3 else 1) * pixels.dtype.itemsize
    rgb = m.decode_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_depth_16bit_millimetres(encoding, bigendian):
    mm = np.round(DEPTH_M * 1000).astype(np.uint16)
    depth = m.decode_depth(raw_image(mm, encoding, pad=2, bigendian=bigendian))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, mm / 1000.0, atol=1e-6)
    assert depth[0, 0] == 0


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_32fc1_metres_invalid_to_zero(bigendian):
    d = DEPTH_M.copy()
    d[1, 1], d[2, 2], d[3, 3] = np.nan, np.inf, -1.0
    depth = m.decode_depth(raw_image(d, "32FC1", pad=4, bigendian=bigendian))
    assert depth[1, 1] == depth[2, 2] == depth[3, 3] == 0
    np.testing.assert_array_equal(depth[4], DEPTH_M[4])


def test_image_errors():
    msg = raw_image(RGB, "rgb8", pad=0)
    msg.encoding = "yuv422"
    with pytest.raises(MessageError, match="image encoding 'yuv422' is unsupported"):
        m.decode_rgb(msg)
    msg = raw_image(RGB, "rgb8", pad=0)
    msg.data = msg.data[:-10]
    with pytest.raises(MessageError, match=r"image data has 95 bytes, expected 105"):
        m.decode_rgb(msg)
    msg = raw_image(RGB, "rgb8", pad=0)
    msg.step = 20
    with pytest.raises(MessageError, match="step 20 is smaller than width x pixel size = 21"):
        m.decode_rgb(msg)
    with pytest.raises(MessageError, match="not a depth encoding"):
        m.decode_depth(raw_image(RGB, "rgb8"))
    with pytest.raises(MessageError, match="not a colour encoding"):
        m.decode_rgb(raw_image(DEPTH_M, "32FC1"))


def test_decoders_accept_bytes_and_array_data():
    """rclpy gives data as array.array or bytes, rosbags as numpy: all decode the same."""
    msg = raw_image(RGB, "rgb8", pad=2)
    ref = m.decode_rgb(msg)
    for data in (bytes(msg.data), array.array("B", bytes(msg.data)), list(msg.data)):
        fake = types.SimpleNamespace(height=msg.height, width=msg.width, encoding="rgb8", is_bigendian=0,
                                     step=msg.step, data=data)
        np.testing.assert_array_equal(m.decode_rgb(fake), ref)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_rgb_image_builder_round_trip(encoding):
    msg = cdr(m.build_image(m.rgb_to_image_fields(RGB, encoding), 1_700_000_000_123_456_789, "cam_optical"))
    assert msg.encoding == encoding and msg.header.frame_id == "cam_optical"
    assert m.header_stamp_ns(msg) == 1_700_000_000_123_456_789
    np.testing.assert_array_equal(m.decode_rgb(msg), RGB)


@pytest.mark.parametrize("encoding,atol", [("32FC1", 0.0), ("16UC1", 0.0005)])
def test_depth_image_builder_round_trip(encoding, atol):
    msg = cdr(m.build_image(m.depth_to_image_fields(DEPTH_M, encoding), 3, "cam"))
    out = m.decode_depth(msg)
    np.testing.assert_allclose(out, DEPTH_M, atol=atol + 1e-7)
    assert out[0, 0] == 0
    if encoding == "32FC1":  # REP 118: invalid is NaN on the wire
        assert np.isnan(msg.data[:4].view("<f4")[0])


def test_compressed_png_exact_and_jpeg_close():
    fmt, data = m.encode_compressed_rgb(RGB, "png")
    assert fmt == "rgb8; png compressed bgr8"
    msg = cdr(m.build_compressed_image(fmt, data, 11, "cam"))
    np.testing.assert_array_equal(m.decode_rgb(msg), RGB)
    smooth = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_LINEAR)
    fmt, data = m.encode_compressed_rgb(smooth, "jpeg", jpeg_quality=98)
    out = m.decode_rgb(cdr(m.build_compressed_image("jpeg", data, 11, "cam")))
    assert np.abs(out.astype(int) - smooth).mean() < 3.0


def test_compressed_formats_channel_order_and_mono():
    _, buf = cv2.imencode(".png", RGB)  # RGB bytes written as if BGR: what "compressed rgb8" means
    msg = m.build_compressed_image("rgb8; png compressed rgb8", buf.reshape(-1), 1, "cam")
    np.testing.assert_array_equal(m.decode_rgb(msg), RGB)
    _, buf = cv2.imencode(".png", RGB[..., 0])
    msg = m.build_compressed_image("mono8; png compressed mono8", buf.reshape(-1), 1, "cam")
    np.testing.assert_array_equal(m.decode_rgb(msg), np.repeat(RGB[..., :1], 3, axis=2))
    with pytest.raises(MessageError, match="cannot decode compressed image"):
        m.decode_rgb(m.build_compressed_image("jpeg", np.arange(50, dtype=np.uint8), 1, "cam"))


def test_compressed_depth_16uc1_and_32fc1():
    fmt, data = m.encode_compressed_depth(DEPTH_M)
    out = m.decode_depth(cdr(m.build_compressed_image(fmt, data, 1, "cam")))
    np.testing.assert_allclose(out, np.round(DEPTH_M * 1000) / 1000, atol=1e-6)
    # image_transport's 32FC1 compressedDepth: PNG of quantised inverse depth, value = a / d + b.
    quant_a, quant_b = 100.0, 10.0
    inv = np.where(DEPTH_M > 0, quant_a / np.where(DEPTH_M > 0, DEPTH_M, 1) + quant_b, 0)
    _, png = cv2.imencode(".png", np.round(inv).astype(np.uint16))
    payload = np.concatenate([np.frombuffer(struct.pack("<iff", 1, quant_a, quant_b), np.uint8), png.reshape(-1)])
    out = m.decode_depth(m.build_compressed_image("32FC1; compressedDepth", payload, 1, "cam"))
    valid = DEPTH_M > 0
    np.testing.assert_allclose(out[valid], DEPTH_M[valid], rtol=0.03)
    assert out[0, 0] == 0
    with pytest.raises(MessageError, match="is depth, not colour"):
        m.decode_rgb(m.build_compressed_image(fmt, data, 1, "cam"))


K = np.array([[500.0, 0, 319.5], [0, 501.0, 239.5], [0, 0, 1]])


@pytest.mark.parametrize("serialise,store", [(cdr, TS2), (ros1, TS1)])
def test_camera_info_round_trip_ros1_and_ros2(serialise, store):
    model = m.CameraModel(K=K, size=(640, 480), distortion_model="plumb_bob", D=np.array([0.1, -0.2, 0.001, 0, 0.03]))
    msg = serialise(m.build_camera_info(model, 42, "cam", store))
    back = m.camera_info_to_model(msg)
    np.testing.assert_array_equal(back.K, K)
    np.testing.assert_array_equal(back.D, model.D)
    assert back.size == (640, 480) and back.has_distortion and back.distortion_model == "plumb_bob"
    P = np.asarray(msg.p if hasattr(msg, "p") else msg.P).reshape(3, 4)
    np.testing.assert_array_equal(P[:, :3], K)


def test_camera_info_errors():
    msg = m.build_camera_info(m.CameraModel(K=np.zeros((3, 3)), size=(4, 3)), 0, "cam")
    with pytest.raises(MessageError, match="uncalibrated"):
        m.camera_info_to_model(msg)
    msg = m.build_camera_info(m.CameraModel(K=K, size=(640, 480), distortion_model="kannala", D=np.ones(4)), 0, "c")
    with pytest.raises(MessageError, match="unsupported distortion model 'kannala'"):
        m.camera_info_to_model(msg)


def _pose() -> np.ndarray:
    return look_at(np.array([1.0, -2.0, 1.5]), np.array([0.3, 0.4, 0.8]))


def test_transform_and_tf_message_round_trip():
    T = _pose()
    ts = m.build_transform_stamped(T, 1_700_000_000_000_000_001, "map", "camera_link")
    tf = cdr(m.build_tf_message([ts]))
    back = m.stamped_pose_from_msg(tf.transforms[0])
    assert (back.stamp_ns, back.frame_id, back.child_frame_id) == (1_700_000_000_000_000_001, "map", "camera_link")
    np.testing.assert_allclose(back.T, T, atol=1e-12)
    tf1 = ros1(m.build_tf_message([m.build_transform_stamped(T, 5, "map", "b", TS1)], TS1))
    np.testing.assert_allclose(m.transform_to_matrix(tf1.transforms[0].transform), T, atol=1e-12)


def test_pose_messages_round_trip_and_covariance_order():
    T = _pose()
    ps = cdr(m.build_pose_stamped(T, 9, "map"))
    np.testing.assert_allclose(m.stamped_pose_from_msg(ps).T, T, atol=1e-12)
    cov = np.diag([0.01, 0.02, 0.03, 0.001, 0.002, 0.003])
    cov[0, 5] = cov[5, 0] = 1e-4  # x / yaw coupling: row 0, column 5 in REP 103 order
    pwc = cdr(m.build_pose_with_covariance_stamped(T, cov, 9, "map"))
    assert pwc.pose.covariance[5] == 1e-4 and pwc.pose.covariance[35] == 0.003
    np.testing.assert_array_equal(m.covariance_to_matrix(pwc), cov)
    np.testing.assert_allclose(m.stamped_pose_from_msg(pwc).T, T, atol=1e-12)
    odom = cdr(m.build_odometry(T, 9, "map", "camera", cov))
    got = m.stamped_pose_from_msg(odom)
    assert got.child_frame_id == "camera"
    np.testing.assert_allclose(got.T, T, atol=1e-12)
    with pytest.raises(MessageError, match="6x6"):
        m.build_pose_with_covariance_stamped(T, np.eye(3), 0, "map")


def test_nan_pose_is_an_error():
    msg = m.build_pose_stamped(np.eye(4), 1, "map")
    msg.pose.position.x = float("nan")
    with pytest.raises(MessageError, match="non-finite"):
        m.stamped_pose_from_msg(msg)
    with pytest.raises(MessageError, match="finite 4x4"):
        m.build_pose_stamped(np.full((4, 4), np.inf), 1, "map")


def test_pointcloud2_layout_rviz_expects():
    pts = RNG.normal(size=(50, 3)).astype(np.float32)
    cols = RNG.integers(0, 256, (50, 3), dtype=np.uint8)
    msg = cdr(m.build_pointcloud2(m.points_to_cloud_fields(pts, cols), 1_000_000_007, "map"))
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 50, 16, 800)
    assert msg.header.frame_id == "map" and m.header_stamp_ns(msg) == 1_000_000_007 and not msg.is_bigendian
    # the rgb float's bits are 0x00RRGGBB (PCL / RViz convention)
    word = int(np.frombuffer(msg.data[12:16].tobytes(), "<u4")[0])
    assert word == (int(cols[0, 0]) << 16) | (int(cols[0, 1]) << 8) | int(cols[0, 2])
    back_pts, back_cols = m.decode_pointcloud2(msg)
    np.testing.assert_array_equal(back_pts, pts)
    np.testing.assert_array_equal(back_cols, cols)
    empty = cdr(m.build_pointcloud2(m.points_to_cloud_fields(np.zeros((0, 3))), 1, "map"))
    assert m.decode_pointcloud2(empty)[0].shape == (0, 3)


def test_stamps():
    assert m.split_stamp(1_700_000_000_999_999_999) == (1_700_000_000, 999_999_999)
    with pytest.raises(MessageError, match="negative"):
        m.split_stamp(-1)
    assert m.stamp_to_ns(types.SimpleNamespace(secs=2, nsecs=5)) == 2_000_000_005


def test_module_factory_builds_rclpy_style_classes(monkeypatch):
    """The factory the ROS node uses: converts numpy to array.array for sequences, numpy for fixed arrays."""

    def generated(name: str, field_types: dict[str, str]):
        def init(self, **kw):
            for k in field_types:
                setattr(self, k, kw.get(k))
        return type(name, (), {"__init__": init, "get_fields_and_field_types": classmethod(lambda c: field_types)})

    sensor = types.ModuleType("sensor_msgs.msg")
    sensor.CompressedImage = generated("CompressedImage", {"header": "std_msgs/Header", "format": "string",
                                                           "data": "sequence<uint8>"})
    sensor.CameraInfo = generated("CameraInfo", {"header": "std_msgs/Header", "d": "sequence<double>",
                                                 "k": "double[9]", "width": "uint32"})
    std = types.ModuleType("std_msgs.msg")
    std.Header = generated("Header", {"stamp": "builtin_interfaces/Time", "frame_id": "string"})
    builtin = types.ModuleType("builtin_interfaces.msg")
    builtin.Time = generated("Time", {"sec": "int32", "nanosec": "uint32"})
    for name, mod in [("sensor_msgs.msg", sensor), ("std_msgs.msg", std), ("builtin_interfaces.msg", builtin)]:
        monkeypatch.setitem(sys.modules, name, mod)
    m.ModuleFactory._cls.cache_clear()
    factory = m.ModuleFactory()
    msg = m.build_compressed_image("png", np.arange(4, dtype=np.uint8), 3_000_000_001, "cam", factory)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B" and list(msg.data) == [0, 1, 2, 3]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (3, 1, "cam")
    info = factory.make("sensor_msgs/msg/CameraInfo", d=np.zeros(5), k=K.ravel(), width=640)
    assert isinstance(info.d, array.array) and info.d.typecode == "d"
    assert isinstance(info.k, np.ndarray) and info.k.dtype == np.float64
    assert factory.has_field("sensor_msgs/msg/CameraInfo", "k") and not factory.has_field(
        "sensor_msgs/msg/CameraInfo", "K")
    m.ModuleFactory._cls.cache_clear()


def test_module_factory_gives_byte_fields_as_bytes(monkeypatch):
    """rclpy's generated setters take a ROS `byte` as bytes of length 1 (Humble asserts it)."""
    diag = types.ModuleType("diagnostic_msgs.msg")

    def init(self, **kw):
        self.level = kw["level"]
        self.name = kw["name"]
    diag.DiagnosticStatus = type("DiagnosticStatus", (), {
        "__init__": init, "get_fields_and_field_types": classmethod(lambda c: {"level": "octet", "name": "string"})})
    monkeypatch.setitem(sys.modules, "diagnostic_msgs.msg", diag)
    m.ModuleFactory._cls.cache_clear()
    status = m.ModuleFactory().make("diagnostic_msgs/msg/DiagnosticStatus", level=2, name="x")
    assert status.level == b"\x02" and status.name == "x"
    m.ModuleFactory._cls.cache_clear()
