"""The relocalizer node in a real ROS 2 graph (skipped where rclpy is not installed).

A test node publishes the tiny room's query images and CameraInfo and listens to everything the relocalizer
publishes. The relocalizer uses the oracle predictor (exact scene coordinates), so poses must match the ground
truth; the frames are the real message classes, serialised through the middleware.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import numpy as np
import pytest

# Humble checks message field types always; Jazzy only with this set. Check here too (before messages import).
os.environ.setdefault("ROS_PYTHON_CHECK_FIELDS", "1")
# Keep the test's DDS traffic on this machine and away from any other graph.
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + uuid.uuid4().int % 100))

rclpy = pytest.importorskip("rclpy", reason="ROS 2 rclpy is not installed (scripts/setup_env.sh installs it)")
for _package in ("sensor_msgs.msg", "geometry_msgs.msg", "diagnostic_msgs.msg", "rcl_interfaces.msg"):
    pytest.importorskip(_package, reason=f"{_package} is not installed (scripts/setup_env.sh installs it)")

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from kd3d_core.errors import ConfigError, ModelError
from kd3d_core.geometry import invert_pose, make_pose, pose_error
from kd3d_core.localization import Relocalizer
from kd3d_core.messages import (
    ModuleFactory,
    build_camera_info,
    build_image,
    decode_pointcloud2,
    rgb_to_image_fields,
    stamped_pose_from_msg,
    transform_to_matrix,
)
from kd3d_ros.relocalizer_node import RelocalizerNode

CAMERA_FRAME = "camera_color_optical_frame"
IMAGE_TOPIC = "/camera/color/image_raw"
FACTORY = ModuleFactory()


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown() if hasattr(ctx, "try_shutdown") else ctx.shutdown()


class Graph:
    """The relocalizer plus a test node, spun by one executor in a background thread."""

    def __init__(self, context, relocalizer: Relocalizer, **params) -> None:
        overrides = [Parameter(k, value=v) for k, v in {"model_path": "oracle", "publish_tf": False,
                                                        "diagnostics_period": 0.2, **params}.items()]
        self.node = RelocalizerNode(relocalizer, context=context, parameter_overrides=overrides)
        self.probe = rclpy.create_node("kd3d_probe", context=context)
        self.received: dict[str, list] = {"pose": [], "cov": [], "cloud": [], "diag": [], "tf": []}
        self.lock = threading.RLock()
        for key, msg_type, topic in (("pose", PoseStamped, "/relocalizer/pose"),
                                     ("cov", PoseWithCovarianceStamped, "/relocalizer/pose_with_covariance"),
                                     ("cloud", PointCloud2, "/relocalizer/points"),
                                     ("diag", DiagnosticArray, "/diagnostics")):
            self.probe.create_subscription(msg_type, topic, self._store(key), 10)
        self.image_pub = self.probe.create_publisher(Image, IMAGE_TOPIC, 10)
        self.info_pub = self.probe.create_publisher(CameraInfo, "/camera/color/camera_info", 10)
        self.executor = MultiThreadedExecutor(num_threads=3, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.wait(lambda: self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0,
                  what="discovery")

    def _store(self, key):
        def callback(msg) -> None:
            with self.lock:
                self.received[key].append(msg)
        return callback

    def wait(self, condition, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def stamps(self, key: str) -> list[int]:
        with self.lock:
            return [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in self.received[key]]

    def send_until(self, make_msg, key: str, stamp_ns: int, timeout: float = 15.0) -> None:
        """Publish (again, in case discovery lost it) until an output with this stamp arrives."""
        deadline = time.monotonic() + timeout
        while stamp_ns not in self.stamps(key):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key} for stamp {stamp_ns}")
            self.image_pub.publish(make_msg())
            time.sleep(0.15)

    def send_camera_info(self, msg: CameraInfo) -> None:
        """Publish CameraInfo until the node has a camera model (a camera driver sends it with every image)."""
        deadline = time.monotonic() + 15.0
        while self.node.io.pipeline._camera_state[0] is None:
            if time.monotonic() > deadline:
                raise AssertionError("the node never got the CameraInfo")
            self.info_pub.publish(msg)
            time.sleep(0.05)

    def diagnostics(self) -> dict[str, str]:
        with self.lock:
            status = self.received["diag"][-1].status[0]
        return {kv.key: kv.value for kv in status.values} | {"_level": status.level, "_name": status.name}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()
        self.thread.join(timeout=5)


def _image(frame, frame_id: str = CAMERA_FRAME) -> Image:
    return build_image(rgb_to_image_fields(frame.rgb), frame.stamp_ns, frame_id, FACTORY)


def _info(frame) -> CameraInfo:
    return build_camera_info(frame.camera, frame.stamp_ns, CAMERA_FRAME, FACTORY)


@pytest.fixture
def graph_factory(context):
    graphs = []

    def make(relocalizer, **params) -> Graph:
        graphs.append(Graph(context, relocalizer, **params))
        return graphs[-1]
    yield make
    for graph in graphs:
        graph.close()


def test_node_publishes_pose_covariance_cloud_and_diagnostics(graph_factory, oracle_relocalizer, query_frames):
    graph = graph_factory(oracle_relocalizer, cloud_max_points=200, cloud_stride=1)
    graph.send_camera_info(_info(query_frames[0]))
    for frame in query_frames[:3]:
        graph.send_until(lambda f=frame: _image(f), "pose", frame.stamp_ns)
    graph.wait(lambda: len(graph.received["cloud"]) >= 3 and len(graph.received["cov"]) >= 3, what="clouds")
    with graph.lock:
        poses = {s: m for s, m in zip(graph.stamps("pose"), graph.received["pose"])}
        cloud = graph.received["cloud"][-1]
    for frame in query_frames[:3]:
        msg = poses[frame.stamp_ns]
        assert msg.header.frame_id == "map"
        err = pose_error(stamped_pose_from_msg(msg).T, frame.world_T_cam)
        assert err.translation_m < 1e-4 and err.rotation_deg < 1e-3
    points, colors = decode_pointcloud2(cloud)
    assert cloud.header.frame_id == "map" and len(points) == 200 and colors is not None
    assert set(graph.stamps("cloud")) <= {f.stamp_ns for f in query_frames}
    graph.wait(lambda: graph.received["diag"] and int(graph.diagnostics()["frames_localized"]) >= 3,
               what="diagnostics")
    diag = graph.diagnostics()
    assert diag["_name"] == "relocalizer: relocalization" and diag["_level"] == b"\x00"
    assert float(diag["latency_predict_ms_mean"]) >= 0 and float(diag["inliers_mean"]) >= 30


def test_node_survives_bad_messages(graph_factory, oracle_relocalizer, query_frames):
    graph = graph_factory(oracle_relocalizer)
    frame = query_frames[0]
    bad_encoding = _image(frame)
    bad_encoding.encoding = "yuv422_yuy2"
    graph.image_pub.publish(_image(frame))  # before any CameraInfo
    time.sleep(0.3)
    graph.send_camera_info(_info(frame))
    for i, msg in enumerate((bad_encoding, Image(), _image(query_frames[1]._replace(rgb=frame.rgb[:40])))):
        msg.header.stamp.sec = 10 + i  # distinct stamps so the rate limit does not hide them
        graph.image_pub.publish(msg)
        time.sleep(0.3)
    good = query_frames[2]
    graph.send_until(lambda: _image(good), "pose", good.stamp_ns)
    graph.wait(lambda: "problem_bad_image" in graph.diagnostics(), what="problem counts")
    diag = graph.diagnostics()
    assert int(diag["problem_no_camera_info"]) >= 1 and int(diag["problem_bad_image"]) >= 2
    assert int(diag["problem_camera_info_mismatch"]) >= 1
    assert graph.node.context.ok() and graph.node.io.worker_alive


class SlowRelocalizer(Relocalizer):
    """The oracle with a 300 ms model: slower than the 20 Hz camera in the test."""

    def localize_with_prediction(self, *args, **kwargs):
        time.sleep(0.3)
        return super().localize_with_prediction(*args, **kwargs)


def test_slow_model_drops_frames_instead_of_queueing(graph_factory, oracle_relocalizer, query_frames):
    slow = SlowRelocalizer(oracle_relocalizer.predictor, oracle_relocalizer.config)
    graph = graph_factory(slow, max_rate=0.0)
    graph.send_camera_info(_info(query_frames[0]))
    sent = []
    for i, frame in enumerate(query_frames * 2):  # distinct stamps: the first pass's last frame is not the newest
        graph.image_pub.publish(_image(frame._replace(stamp_ns=frame.stamp_ns + i * 10**9)))
        sent.append(frame.stamp_ns + i * 10**9)
        time.sleep(0.05)
    last = sent[-1]
    graph.wait(lambda: last in graph.stamps("pose"), what="the newest frame")
    processed = graph.node.io.stats.processed
    assert processed < len(sent) / 2  # most frames were replaced while the model was busy, none queued
    assert graph.node.io.stats.dropped > 0
    time.sleep(0.8)
    assert graph.node.io.stats.processed == processed  # nothing left over in a queue


def test_parameters_are_declared_read_only_with_descriptions(graph_factory, oracle_relocalizer):
    graph = graph_factory(oracle_relocalizer, max_rate=5)  # an int for a double parameter is accepted
    node = graph.node
    assert node.get_parameter("max_rate").value == 5 and node.config.max_rate == 5.0
    (desc,) = node.describe_parameters(["cloud_stride"])
    assert desc.read_only and "every n-th" in desc.description and desc.integer_range[0].from_value == 1
    result = node.set_parameters([Parameter("min_inliers", value=100)])[0]
    assert not result.successful and node.config.min_inliers == 30


@pytest.mark.parametrize("params, match", [
    ({"device": "tpu"}, "device must be one of"),
    ({"cloud_stride": 0}, "cloud_stride"),
    ({"model_path": ""}, "model_path is empty"),
    ({"publish_cloud": "yes"}, "publish_cloud"),
])
def test_invalid_parameters_stop_the_node_with_a_clear_error(context, oracle_relocalizer, params, match):
    overrides = [Parameter(k, value=v) for k, v in {"model_path": "oracle", "publish_tf": False, **params}.items()]
    with pytest.raises(ConfigError, match=match):
        RelocalizerNode(oracle_relocalizer, context=context, parameter_overrides=overrides)


def test_missing_model_file_is_a_clear_error(context, tmp_path):
    overrides = [Parameter("model_path", value=str(tmp_path / "none.kd3d")), Parameter("publish_tf", value=False)]
    with pytest.raises(ModelError, match="none.kd3d does not exist"):
        RelocalizerNode(context=context, parameter_overrides=overrides)


def test_map_to_odom_from_odometry_tf(graph_factory, oracle_relocalizer, query_frames):
    """With tf2: odom -> camera from a TF publisher gives map -> odom on /tf (skipped without tf2_ros)."""
    pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (a ROS install has it; PyPI's ROS wheels do not)")
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs was not generated (see scripts/build_tf2_msgs.sh)")
    from tf2_msgs.msg import TFMessage

    from kd3d_core.messages import build_tf_message, build_transform_stamped

    map_T_odom = make_pose(np.eye(3), [1.0, -2.0, 0.0])
    graph = graph_factory(oracle_relocalizer, publish_tf=True, transform_tolerance=0.0, tf_timeout=1.0)
    tf_pub = graph.probe.create_publisher(TFMessage, "/tf", 100)
    graph.probe.create_subscription(TFMessage, "/tf", graph._store("tf"), 100)
    frame = query_frames[0]
    odom_T_cam = invert_pose(map_T_odom) @ frame.world_T_cam
    graph.send_camera_info(_info(frame))

    def publish_both() -> Image:
        tf_pub.publish(build_tf_message([build_transform_stamped(odom_T_cam, frame.stamp_ns, "odom", CAMERA_FRAME,
                                                                 FACTORY)], FACTORY))
        return _image(frame)
    graph.send_until(publish_both, "pose", frame.stamp_ns)

    def map_to_odom():
        with graph.lock:
            return [t for m in graph.received["tf"] for t in m.transforms if t.child_frame_id == "odom"]
    graph.wait(lambda: map_to_odom(), what="map -> odom")
    (transform, *_) = map_to_odom()
    assert transform.header.frame_id == "map"
    np.testing.assert_allclose(transform_to_matrix(transform.transform), map_T_odom, atol=1e-4)


def test_main_exits_non_zero_on_a_bad_model(tmp_path, capfd):
    from kd3d_ros.relocalizer_node import main

    code = main(["--ros-args", "-p", f"model_path:={tmp_path / 'none.kd3d'}", "-p", "publish_tf:=false"])
    assert code == 1
    assert "none.kd3d does not exist" in capfd.readouterr().err


def test_node_loads_a_real_model_file(graph_factory, tmp_path, query_frames):
    """The default path: model_path loaded once on the CPU (a tiny untrained student: frames fail, the node runs)."""
    torch = pytest.importorskip("torch")
    from kd3d_core.students import get_architecture
    from kd3d_core.students.model_file import ModelMeta, save_scene_model
    from kd3d_core.students.registry import config_to_dict
    from kd3d_core.students.vit import ViTConfig

    cfg = ViTConfig(patch=16, blocks=1, decoder_blocks=1, heads=2, latent=16, head_channels=8)
    torch.manual_seed(0)
    net = get_architecture("vit").build(cfg, (64, 48))
    path = tmp_path / "room.kd3d"
    save_scene_model(path, net, ModelMeta("vit", config_to_dict(cfg), (64, 48), 8, (0.0, 0.0, 1.0), 1.0, "map"))
    before = torch.get_num_threads()
    try:
        graph = graph_factory(None, model_path=str(path), device="cpu", threads=2)
        assert torch.get_num_threads() == 2  # the `threads` parameter, applied once at start-up
    finally:
        torch.set_num_threads(before)
    assert graph.node.relocalizer.world_frame == "map"
    graph.send_camera_info(_info(query_frames[0]))
    deadline = time.monotonic() + 15
    while graph.node.io.stats.processed == 0 and time.monotonic() < deadline:
        graph.image_pub.publish(_image(query_frames[0]))
        time.sleep(0.2)
    assert graph.node.io.stats.processed >= 1 and graph.node.io.worker_alive
    graph.wait(lambda: graph.received["diag"] and int(graph.diagnostics()["frames_processed"]) >= 1,
               what="diagnostics")
    assert float(graph.diagnostics()["latency_predict_ms_mean"]) > 0  # the network really ran


def test_lifecycle_node_loads_on_configure_and_subscribes_on_activate(context, oracle_relocalizer, query_frames):
    from rclpy.lifecycle import TransitionCallbackReturn

    from kd3d_ros.lifecycle_node import RelocalizerLifecycleNode

    overrides = [Parameter(k, value=v) for k, v in {"model_path": "oracle", "publish_tf": False}.items()]
    node = RelocalizerLifecycleNode(oracle_relocalizer, context=context, parameter_overrides=overrides)
    probe = rclpy.create_node("kd3d_lifecycle_probe", context=context)
    poses = []
    probe.create_subscription(PoseStamped, "/relocalizer/pose", poses.append, 10)
    image_pub = probe.create_publisher(Image, IMAGE_TOPIC, 10)
    info_pub = probe.create_publisher(CameraInfo, "/camera/color/camera_info", 10)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    executor.add_node(node)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert node.io is None and node._state_machine.current_state[1] == "unconfigured"
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.io is not None
        assert probe.count_subscribers(IMAGE_TOPIC) == 0 and not node.io.worker_alive  # inactive: not listening
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        frame = query_frames[0]
        deadline = time.monotonic() + 30
        while image_pub.get_subscription_count() == 0 or info_pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline, "the activated lifecycle node does not subscribe"
            time.sleep(0.05)
        while not poses:
            assert time.monotonic() < deadline, f"no pose from the activated node: {node.io.stats.report()}"
            frame = frame._replace(stamp_ns=frame.stamp_ns + 200_000_000)  # a camera never repeats a stamp
            info_pub.publish(_info(frame))
            image_pub.publish(_image(frame))
            time.sleep(0.2)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS and not node.io.worker_alive
        deadline = time.monotonic() + 5
        while probe.count_subscribers(IMAGE_TOPIC) > 0:
            assert time.monotonic() < deadline, "the deactivated node still subscribes"
            time.sleep(0.05)
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and node.io is None
        assert node._state_machine.current_state[1] == "unconfigured"
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        thread.join(timeout=5)


def test_lifecycle_configure_fails_cleanly_on_a_bad_model(context, tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    from kd3d_ros.lifecycle_node import RelocalizerLifecycleNode

    overrides = [Parameter("model_path", value=str(tmp_path / "none.kd3d")), Parameter("publish_tf", value=False)]
    node = RelocalizerLifecycleNode(context=context, parameter_overrides=overrides)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.io is None and node._state_machine.current_state[1] == "unconfigured"
    finally:
        node.destroy_node()


def test_covariance_inflation_is_passed_to_the_library():
    from kd3d_core.localization import RelocalizerConfig
    from kd3d_ros.params import NodeConfig
    from kd3d_ros.relocalizer_node import relocalizer_config

    default = relocalizer_config(NodeConfig.from_values({"model_path": "m", "min_inliers": 40}))
    assert default.covariance_inflation == RelocalizerConfig().covariance_inflation and default.min_inliers == 40
    given = relocalizer_config(NodeConfig.from_values({"model_path": "m", "covariance_inflation": 2.5}))
    assert given.covariance_inflation == 2.5


def test_roll_retry_is_passed_to_the_library():
    from kd3d_ros.params import NodeConfig
    from kd3d_ros.relocalizer_node import relocalizer_config

    assert relocalizer_config(NodeConfig.from_values({"model_path": "m"})).roll_retry_deg == (20.0, -20.0)
    assert relocalizer_config(NodeConfig.from_values({"model_path": "m", "roll_retry_deg": 15.0})).roll_retry_deg \
        == (15.0, -15.0)
    assert relocalizer_config(NodeConfig.from_values({"model_path": "m", "roll_retry_deg": 0.0})).roll_retry_deg == ()


def test_zoom_retry_is_passed_to_the_library():
    from kd3d_ros.params import NodeConfig
    from kd3d_ros.relocalizer_node import relocalizer_config

    assert relocalizer_config(NodeConfig.from_values({"model_path": "m"})).zoom_retry == (0.7,)
    assert relocalizer_config(NodeConfig.from_values({"model_path": "m", "zoom_retry": 0.6})).zoom_retry == (0.6,)
    assert relocalizer_config(NodeConfig.from_values({"model_path": "m", "zoom_retry": 0.0})).zoom_retry == ()


def test_guided_candidates_are_passed_to_the_library():
    from kd3d_ros.params import NodeConfig
    from kd3d_ros.relocalizer_node import relocalizer_config

    assert relocalizer_config(NodeConfig.from_values({"model_path": "m"})).guided_candidates == 8
    assert relocalizer_config(NodeConfig.from_values({"model_path": "m", "guided_candidates": 0})).guided_candidates == 0
    with pytest.raises(ConfigError, match="guided_candidates"):
        NodeConfig.from_values({"model_path": "m", "guided_candidates": 100})
