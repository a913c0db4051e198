"""One frame through FramePipeline (what the node does per image), with rosbags message types and no ROS.

Messages are built with the ROS 2 Humble typestore and round-tripped through CDR, as a subscriber would see them.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kd3d_core.geometry import invert_pose, make_pose, pose_error
from kd3d_core.localization import Relocalizer, RelocalizerConfig
from kd3d_core.messages import (
    as_factory,
    CameraModel,
    build_camera_info,
    build_compressed_image,
    build_image,
    covariance_to_matrix,
    decode_pointcloud2,
    encode_compressed_rgb,
    pose_to_matrix,
    rgb_to_image_fields,
    ros2_typestore,
    stamped_pose_from_msg,
)
from kd3d_core.prediction import ScenePrediction
from kd3d_core.undistort import Undistorter
from kd3d_ros.params import NodeConfig
from kd3d_ros.pipeline import FramePipeline, Output, TfUnavailable

CAMERA_FRAME = "camera_color_optical_frame"
STORE = ros2_typestore()
MAP_T_ODOM = make_pose(Rotation.from_rotvec([0, 0, 0.3]).as_matrix(), [1.0, 2.0, 0.0])
BASE_T_CAM = make_pose(Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_matrix(), [0.2, 0.0, 0.5])
MSG_TYPES = {Output.CLOUD: "sensor_msgs/msg/PointCloud2", Output.POSE: "geometry_msgs/msg/PoseStamped",
             Output.POSE_WITH_COVARIANCE: "geometry_msgs/msg/PoseWithCovarianceStamped",
             Output.INITIAL_POSE: "geometry_msgs/msg/PoseWithCovarianceStamped", Output.TF: "tf2_msgs/msg/TFMessage"}


def _config(**changes) -> NodeConfig:
    return NodeConfig.from_values({"model_path": "oracle", "publish_tf": False, "cloud_stride": 1, **changes})


def _image_msg(frame, frame_id: str = CAMERA_FRAME):
    return build_image(rgb_to_image_fields(frame.rgb), frame.stamp_ns, frame_id, STORE)


def _info_msg(camera: CameraModel, stamp_ns: int = 0):
    return build_camera_info(camera, stamp_ns, CAMERA_FRAME, STORE)


def _cdr(output: Output, msg):
    """What a subscriber receives: the message serialised and read back."""
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, MSG_TYPES[output]), MSG_TYPES[output])


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class FakeTf:
    """TF look-ups of a robot whose odometry drifted by MAP_T_ODOM, with a camera mounted at BASE_T_CAM."""

    def __init__(self, truth: dict[int, np.ndarray]) -> None:
        self.truth = truth
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        self.calls.append((target, source, stamp_ns))
        if source != CAMERA_FRAME or stamp_ns not in self.truth:
            raise TfUnavailable(f"no {target} -> {source}")
        if target == "odom":
            return invert_pose(MAP_T_ODOM) @ self.truth[stamp_ns]
        if target == "base_link":
            return BASE_T_CAM
        raise TfUnavailable(f"unknown frame {target}")


@pytest.fixture
def pipeline_factory(oracle_relocalizer, query_frames):
    def make(tf=None, **changes) -> FramePipeline:
        pipeline = FramePipeline(oracle_relocalizer, _config(**changes), STORE, tf)
        pipeline.set_camera_info(_info_msg(query_frames[0].camera))
        return pipeline
    return make


def test_localizes_and_builds_pose_covariance_and_cloud(pipeline_factory, query_frames):
    pipeline = pipeline_factory(cloud_max_points=150)
    for frame in query_frames[:3]:
        result = pipeline.process(_image_msg(frame))
        assert result.localized and result.problems == () and result.stamp_ns == frame.stamp_ns
        assert set(result.messages) == {Output.POSE, Output.POSE_WITH_COVARIANCE, Output.CLOUD}
        assert result.inliers >= 30
        assert {"decode", "predict", "select", "pnp", "refine", "build"} <= set(result.stages_ms)
        pose = _cdr(Output.POSE, result.messages[Output.POSE])
        assert pose.header.frame_id == "map" and _stamp(pose) == frame.stamp_ns
        err = pose_error(stamped_pose_from_msg(pose).T, frame.world_T_cam)
        assert err.translation_m < 1e-4 and err.rotation_deg < 1e-3
        cov_msg = _cdr(Output.POSE_WITH_COVARIANCE, result.messages[Output.POSE_WITH_COVARIANCE])
        np.testing.assert_allclose(pose_to_matrix(cov_msg.pose.pose), frame.world_T_cam, atol=1e-4)
        assert np.all(np.linalg.eigvalsh(covariance_to_matrix(cov_msg)) > 0)
        cloud = _cdr(Output.CLOUD, result.messages[Output.CLOUD])
        points, colors = decode_pointcloud2(cloud)
        assert cloud.header.frame_id == "map" and _stamp(cloud) == frame.stamp_ns
        assert len(points) == 150 and colors is not None  # max points honoured


@pytest.mark.parametrize("changes, recovered_by", [({}, ""), ({"guided": True}, "guided"),
                                                     ({"roll_retry_deg": -20.0}, "roll_retry"),
                                                     ({"zoom_retry": 0.7}, "zoom_retry"),
                                                     ({"upright_turn_deg": 14.0}, "")])
def test_frames_recovered_by_a_second_chance_say_so(oracle_relocalizer, query_frames, changes, recovered_by):
    """What the node's diagnostics count (frames_localized_by_guided / _roll_retry / _zoom_retry,
    frames_turned_upright) comes from the estimate."""
    import dataclasses

    class Marking(Relocalizer):
        def localize_with_prediction(self, *args, **kwargs):
            estimate, prediction = oracle_relocalizer.localize_with_prediction(*args, **kwargs)
            return dataclasses.replace(estimate, **changes), prediction

    pipeline = FramePipeline(Marking(oracle_relocalizer.predictor), _config(), STORE)
    pipeline.set_camera_info(_info_msg(query_frames[0].camera))
    result = pipeline.process(_image_msg(query_frames[0]))
    assert result.localized and result.recovered_by == recovered_by
    assert result.turned_upright == ("upright_turn_deg" in changes)


def test_the_stream_passes_each_frame_the_last_fixs_roll(oracle_relocalizer, query_frames):
    """The pipeline hands the relocalizer the roll of the previous localized frame (RollTracker): none for the
    first frame and after a lost one, the camera's roll from the model's mapping up otherwise."""
    from kd3d_core.localization.roll import camera_roll_deg

    up = np.array([0.0, 0.0, 1.0])
    hints = []

    class Recording(Relocalizer):
        mapping_up = up

        def localize_with_prediction(self, rgb, K, dist=None, stamp=None, roll_hint_deg=None):
            hints.append(roll_hint_deg)
            return oracle_relocalizer.localize_with_prediction(rgb, K, dist, stamp)

    pipeline = FramePipeline(Recording(oracle_relocalizer.predictor), _config(), STORE)
    pipeline.set_camera_info(_info_msg(query_frames[0].camera))
    assert pipeline.process(_image_msg(query_frames[0])).localized
    assert pipeline.process(_image_msg(query_frames[1])).localized
    blank = query_frames[2]._replace(rgb=np.full_like(query_frames[2].rgb, 128))
    assert not pipeline.process(_image_msg(blank)).localized
    assert pipeline.process(_image_msg(query_frames[3])).localized
    assert hints[0] is None and hints[2] is not None and hints[3] is None
    assert hints[1] == pytest.approx(camera_roll_deg(query_frames[0].world_T_cam, up), abs=0.5)


def test_cloud_stride_and_on_demand(pipeline_factory, query_frames):
    full = pipeline_factory(cloud_max_points=0).process(_image_msg(query_frames[0])).messages[Output.CLOUD]
    strided = pipeline_factory(cloud_max_points=0, cloud_stride=2).process(_image_msg(query_frames[0]))
    n_full, n_strided = full.width, strided.messages[Output.CLOUD].width
    assert n_full > 300 and n_full / 5 < n_strided < n_full / 3  # about a quarter of the cells
    nobody_listens = pipeline_factory().process(_image_msg(query_frames[0]), want_cloud=False)
    assert nobody_listens.localized and Output.CLOUD not in nobody_listens.messages
    disabled = pipeline_factory(publish_cloud=False).process(_image_msg(query_frames[0]))
    assert Output.CLOUD not in disabled.messages


def test_map_to_odom_is_published_and_republished(pipeline_factory, query_frames, oracle_relocalizer):
    tf = FakeTf({f.stamp_ns: f.world_T_cam for f in query_frames})
    pipeline = pipeline_factory(tf, publish_tf=True, transform_tolerance=0.25)
    frame = query_frames[0]
    result = pipeline.process(_image_msg(frame))
    assert result.localized and result.problems == ()
    assert tf.calls == [("odom", CAMERA_FRAME, frame.stamp_ns)]  # looked up at the image stamp
    tf_msg = _cdr(Output.TF, result.messages[Output.TF])
    (transform,) = tf_msg.transforms
    assert (transform.header.frame_id, transform.child_frame_id) == ("map", "odom")
    assert _stamp(transform) == frame.stamp_ns + 250_000_000  # post-dated by transform_tolerance, like AMCL
    np.testing.assert_allclose(stamped_pose_from_msg(transform).T, MAP_T_ODOM, atol=1e-4)
    # An image the model does not know: no pose, but the last map -> odom goes out again with the new stamp.
    unknown = query_frames[1]._replace(rgb=np.ascontiguousarray(query_frames[1].rgb[::-1]))
    failed = pipeline.process(_image_msg(unknown))
    assert not failed.localized and failed.problems[0].cause == "prediction_failed"
    assert set(failed.messages) == {Output.TF}
    again = _cdr(Output.TF, failed.messages[Output.TF]).transforms[0]
    assert _stamp(again) == unknown.stamp_ns + 250_000_000
    np.testing.assert_allclose(stamped_pose_from_msg(again).T, MAP_T_ODOM, atol=1e-4)


def test_missing_odom_tf_still_publishes_the_pose(pipeline_factory, query_frames):
    pipeline = pipeline_factory(FakeTf({}), publish_tf=True)
    result = pipeline.process(_image_msg(query_frames[0]))
    assert result.localized and Output.POSE in result.messages and Output.TF not in result.messages
    assert [p.cause for p in result.problems] == ["no_odom_tf"]
    no_frame = pipeline.process(_image_msg(query_frames[1], frame_id=""))
    assert no_frame.localized and [p.cause for p in no_frame.problems] == ["no_camera_frame"]
    named = pipeline_factory(FakeTf({query_frames[1].stamp_ns: query_frames[1].world_T_cam}), publish_tf=True,
                             camera_frame=CAMERA_FRAME)
    assert Output.TF in named.process(_image_msg(query_frames[1], frame_id="")).messages


def test_initial_pose_is_the_base_pose_with_moved_covariance(pipeline_factory, query_frames):
    tf = FakeTf({f.stamp_ns: f.world_T_cam for f in query_frames})
    pipeline = pipeline_factory(tf, publish_initialpose=True)
    frame = query_frames[2]
    result = pipeline.process(_image_msg(frame))
    initial = _cdr(Output.INITIAL_POSE, result.messages[Output.INITIAL_POSE])
    camera = _cdr(Output.POSE_WITH_COVARIANCE, result.messages[Output.POSE_WITH_COVARIANCE])
    assert initial.header.frame_id == "map" and _stamp(initial) == frame.stamp_ns
    expected = frame.world_T_cam @ invert_pose(BASE_T_CAM)
    np.testing.assert_allclose(pose_to_matrix(initial.pose.pose), expected, atol=1e-4)
    cov_base, cov_cam = covariance_to_matrix(initial), covariance_to_matrix(camera)
    np.testing.assert_allclose(cov_base[3:, 3:], cov_cam[3:, 3:], atol=1e-15)
    assert np.trace(cov_base[:3, :3]) > np.trace(cov_cam[:3, :3])  # the lever arm adds position uncertainty
    no_base = pipeline_factory(FakeTf({}), publish_initialpose=True).process(_image_msg(frame))
    assert Output.INITIAL_POSE not in no_base.messages and [p.cause for p in no_base.problems] == ["no_base_tf"]


def test_compressed_png_is_localized(pipeline_factory, query_frames):
    frame = query_frames[3]
    fmt, data = encode_compressed_rgb(frame.rgb, "png")  # lossless: the oracle recognises the pixels
    msg = build_compressed_image(fmt, data, frame.stamp_ns, CAMERA_FRAME, STORE)
    result = pipeline_factory(compressed=True).process(msg)
    assert result.localized
    err = pose_error(stamped_pose_from_msg(result.messages[Output.POSE]).T, frame.world_T_cam)
    assert err.translation_m < 1e-4


def test_bad_inputs_become_problems_not_exceptions(oracle_relocalizer, query_frames):
    frame = query_frames[0]
    pipeline = FramePipeline(oracle_relocalizer, _config(), STORE)
    assert [p.cause for p in pipeline.process(_image_msg(frame)).problems] == ["no_camera_info"]
    uncalibrated = _info_msg(frame.camera)
    uncalibrated.k[:] = 0.0
    pipeline.set_camera_info(uncalibrated)
    result = pipeline.process(_image_msg(frame))
    assert not result.localized and result.problems[0].cause == "bad_camera_info"
    assert "not a calibrated pinhole" in result.problems[0].detail
    pipeline.set_camera_info(_info_msg(CameraModel(frame.camera.K, (320, 240), "plumb_bob", np.zeros(5))))
    assert pipeline.process(_image_msg(frame)).problems[0].cause == "camera_info_mismatch"
    pipeline.set_camera_info(_info_msg(frame.camera))
    wrong_encoding = _image_msg(frame)
    wrong_encoding.encoding = "yuv422_yuy2"
    empty = build_image(rgb_to_image_fields(frame.rgb), frame.stamp_ns, CAMERA_FRAME, STORE)
    empty.height, empty.width, empty.data = 0, 0, np.zeros(0, np.uint8)
    truncated = _image_msg(frame)
    truncated.data = truncated.data[:100]
    for msg, detail in ((wrong_encoding, "yuv422_yuy2"), (empty, "empty size"),
                        (truncated, "image data has 100 bytes")):
        result = pipeline.process(msg)
        assert not result.localized and result.problems[0].cause == "bad_image"
        assert detail in result.problems[0].detail
    garbage = pipeline.process(object())  # not a message at all: still no exception
    assert [p.cause for p in garbage.problems] == ["bad_image"] and "header" in garbage.problems[0].detail
    assert pipeline.process(_image_msg(frame)).localized  # and the next good frame works


class ExplodingRelocalizer(Relocalizer):
    """An engine with a bug: raises instead of returning a failed estimate."""

    def localize_with_prediction(self, *args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_an_engine_bug_is_an_internal_error_not_a_crash(query_frames):
    pipeline = FramePipeline(ExplodingRelocalizer(RecordingPredictor()), _config(), STORE)
    pipeline.set_camera_info(_info_msg(query_frames[0].camera))
    result = pipeline.process(_image_msg(query_frames[0]))
    assert not result.localized and result.messages == {}
    assert [p.cause for p in result.problems] == ["internal_error"] and "illegal memory" in result.problems[0].detail


class RecordingPredictor:
    """Remembers the image it was given; predicts nothing usable."""

    world_frame = "map"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def predict(self, rgb: np.ndarray) -> ScenePrediction:
        self.seen.append(rgb)
        return ScenePrediction(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.float32),
                               np.zeros((2, 2, 2), np.float32))


def test_distortion_is_handled_like_replay(query_frames):
    """Fisheye images are remapped to pinhole before the model sees them; OpenCV-model ones are not."""
    frame = query_frames[0]
    predictor = RecordingPredictor()
    # no roll or zoom retry: the recorded images are then exactly one per frame
    pipeline = FramePipeline(Relocalizer(predictor, RelocalizerConfig(roll_retry_deg=(), zoom_retry=())), _config(),
                             STORE)
    fisheye = CameraModel(frame.camera.K, frame.camera.size, "equidistant", np.array([0.1, -0.05, 0.01, 0.0]))
    pipeline.set_camera_info(_info_msg(fisheye))
    pipeline.process(_image_msg(frame))
    pipeline.set_camera_info(_info_msg(fisheye))  # the same calibration again: the remap tables are kept
    pipeline.process(_image_msg(frame))
    np.testing.assert_array_equal(predictor.seen[0], Undistorter(fisheye).rgb(frame.rgb))
    assert pipeline._input._undistorter is not None and pipeline._input._undistorter.model is pipeline._camera_state[0]
    plumb = CameraModel(frame.camera.K, frame.camera.size, "plumb_bob", np.array([0.1, -0.05, 0.0, 0.0, 0.0]))
    pipeline.set_camera_info(_info_msg(plumb))
    pipeline.process(_image_msg(frame))
    np.testing.assert_array_equal(predictor.seen[-1], frame.rgb)


class NoTf2MsgsFactory:
    """The message factory of a machine without tf2_msgs: building a TFMessage fails."""

    def make(self, msgtype: str, **fields):
        if msgtype.startswith("tf2_msgs/"):
            raise AssertionError(f"{msgtype} built although publish_tf is false")
        return as_factory(STORE).make(msgtype, **fields)

    def has_field(self, msgtype: str, field: str) -> bool:
        return as_factory(STORE).has_field(msgtype, field)


def test_publish_tf_false_builds_no_tf_message(oracle_relocalizer, query_frames):
    pipeline = FramePipeline(oracle_relocalizer, _config(publish_tf=False), NoTf2MsgsFactory())
    pipeline.set_camera_info(_info_msg(query_frames[0].camera))
    result = pipeline.process(_image_msg(query_frames[0]))
    assert result.localized and Output.TF not in result.messages and result.problems == ()


def test_an_image_stamped_zero_is_refused(pipeline_factory, query_frames):
    pipeline = pipeline_factory()
    result = pipeline.process(_image_msg(query_frames[0]._replace(stamp_ns=0)))
    assert not result.localized and result.messages == {}
    assert [p.cause for p in result.problems] == ["zero_stamp"] and "stamp is 0" in result.problems[0].detail


class CurrentEstimateTf(FakeTf):
    """FakeTf plus the robot's current map -> base_link estimate (what AMCL publishes)."""

    def __init__(self, truth, map_T_base) -> None:
        super().__init__(truth)
        self.map_T_base = map_T_base

    def __call__(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        if (target, source) == ("map", "base_link"):
            self.calls.append((target, source, stamp_ns))
            if self.map_T_base is None:
                raise TfUnavailable("map does not exist")
            return self.map_T_base
        return super().__call__(target, source, stamp_ns)


def test_initial_pose_only_when_the_current_estimate_disagrees(pipeline_factory, query_frames):
    frame = query_frames[2]
    truth_base = frame.world_T_cam @ invert_pose(BASE_T_CAM)
    tf = CurrentEstimateTf({f.stamp_ns: f.world_T_cam for f in query_frames}, truth_base)
    pipeline = pipeline_factory(tf, publish_initialpose=True, initialpose_min_error_m=0.25,
                                initialpose_min_error_deg=10.0)
    agreeing = pipeline.process(_image_msg(frame))
    assert agreeing.localized and Output.INITIAL_POSE not in agreeing.messages and pipeline.initialpose_skipped == 1
    tf.map_T_base = make_pose(np.eye(3), [0.3, 0.0, 0.0]) @ truth_base  # 30 cm off: AMCL is lost
    assert Output.INITIAL_POSE in pipeline.process(_image_msg(frame)).messages
    tf.map_T_base = truth_base @ make_pose(Rotation.from_rotvec([0, 0, np.radians(15)]).as_matrix(), [0, 0, 0])
    assert Output.INITIAL_POSE in pipeline.process(_image_msg(frame)).messages  # heading 15 deg off
    tf.map_T_base = None  # no estimate at all yet
    assert Output.INITIAL_POSE in pipeline.process(_image_msg(frame)).messages
    always = pipeline_factory(CurrentEstimateTf(tf.truth, truth_base), publish_initialpose=True)
    assert Output.INITIAL_POSE in always.process(_image_msg(frame)).messages  # thresholds 0: every fix


def test_relocalize_request_is_answered_by_the_next_localized_frame(pipeline_factory, query_frames):
    tf = CurrentEstimateTf({f.stamp_ns: f.world_T_cam for f in query_frames}, None)
    pipeline = pipeline_factory(tf)  # publish_initialpose off: only on request
    assert Output.INITIAL_POSE not in pipeline.process(_image_msg(query_frames[0])).messages
    request = pipeline.request_initial_pose()
    unknown = query_frames[1]._replace(rgb=np.ascontiguousarray(query_frames[1].rgb[::-1]))
    assert not pipeline.process(_image_msg(unknown)).localized and not request.wait(0)  # still waiting
    frame = query_frames[3]
    result = pipeline.process(_image_msg(frame))
    assert request.wait(0) and request.problem is None and request.stamp_ns == frame.stamp_ns
    np.testing.assert_allclose(request.map_T_base, frame.world_T_cam @ invert_pose(BASE_T_CAM), atol=1e-4)
    initial = _cdr(Output.INITIAL_POSE, result.messages[Output.INITIAL_POSE])
    np.testing.assert_allclose(pose_to_matrix(initial.pose.pose), request.map_T_base, atol=1e-6)
    assert Output.INITIAL_POSE not in pipeline.process(_image_msg(frame)).messages  # one-shot
    no_tf = pipeline_factory(None)
    failing = no_tf.request_initial_pose()
    no_tf.process(_image_msg(frame))
    assert failing.wait(0) and failing.problem.cause == "no_base_tf" and "tf2_ros" in failing.problem.detail
    cancelled = no_tf.request_initial_pose()
    no_tf.cancel(cancelled)
    no_tf.process(_image_msg(frame))
    assert not cancelled.wait(0)
