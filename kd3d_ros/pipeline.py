"""One camera frame through the relocalizer to the messages the node publishes, without rclpy.

The node hands every image it decides to process to `FramePipeline.process` and publishes what comes back;
all decisions in between (decoding, CameraInfo checks, cloud thinning, which TF to send, the nav2
/initialpose pose) live here so they are tested without ROS. Decoding and message building are kd3d_core's:
kd3d_core.messages for decoding and builders, kd3d_core.localization.outputs for the frame's cloud / pose /
pose-with-covariance / map -> odom messages, exactly as bag replay builds them. Messages are made by the
`MessageFactory` the caller passes: `ModuleFactory()` (rclpy classes) in the node, a rosbags typestore in tests.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import pose_error
from kd3d_core.localization import PoseEstimate, Relocalizer, predicted_cloud
from kd3d_core.localization.outputs import OutputFrames, build_localization_messages
from kd3d_core.localization.roll import RollTracker
from kd3d_core.messages import (
    CameraModel,
    MessageFactory,
    build_pose_with_covariance_stamped,
    build_tf_message,
    build_transform_stamped,
    camera_info_to_model,
    decode_rgb,
    header_stamp_ns,
)
from kd3d_core.messages import topics
from kd3d_core.prediction import ScenePrediction
from kd3d_core.tf_math import frame_pose_in_map, move_pose_covariance
from kd3d_core.undistort import RelocalizerInput, same_camera
from kd3d_ros.params import NodeConfig
from kd3d_ros.runtime import NodeFailure

# (target_frame, source_frame, stamp_ns) -> target_T_source; raises TfUnavailable when it cannot.
TfLookup = Callable[[str, str, int], np.ndarray]


class TfUnavailable(Kd3dError):
    """A transform could not be looked up (unknown frame, not connected, or not yet at that stamp)."""


class Output(str, Enum):
    """What the node publishes, and where (relative names resolve in the node's namespace)."""

    CLOUD = topics.CLOUD  # the names are shared with `kd3d replay` (kd3d_core.messages.topics)
    POSE = topics.POSE
    POSE_WITH_COVARIANCE = topics.POSE_WITH_COVARIANCE
    INITIAL_POSE = topics.INITIAL_POSE
    TF = topics.TF


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong with a frame: a stable cause string (diagnostics key) and a detail line."""

    cause: str
    detail: str


@dataclass(frozen=True)
class FrameResult:
    """The outcome of one frame.

    Attributes:
        stamp_ns: the image stamp (0 when the header was unreadable).
        localized: True when the relocalizer returned a pose.
        messages: what to publish, by output.
        problems: the failure that stopped localization (first) and secondary ones (e.g. no odom TF).
        stages_ms: wall time per stage in milliseconds (decode, predict, select, pnp, refine, publish_build).
        inliers: PnP inliers (0 on early failures).
        recovered_by: for a localized frame that the upright pass lost: "guided" (the guided second chance),
            "roll_retry" (the image turned back about the optical axis) or "zoom_retry" (the image zoomed out); ""
            otherwise.
        turned_upright: the pose came from a second look at the image turned upright (a rolled camera;
            RelocalizerConfig.roll_upright_deg), which cost a second network pass.
    """

    stamp_ns: int
    localized: bool
    messages: dict[Output, Any] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    stages_ms: dict[str, float] = field(default_factory=dict)
    inliers: int = 0
    recovered_by: str = ""
    turned_upright: bool = False


class InitialPoseRequest:
    """One ~/relocalize call: waits for the next localized frame's /initialpose (or the reason there is none)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.map_T_base: np.ndarray | None = None
        self.stamp_ns = 0
        self.problem: Problem | None = None

    def finish(self, map_T_base: np.ndarray | None, stamp_ns: int, problem: Problem | None) -> None:
        """Record the outcome and wake the waiter."""
        self.map_T_base, self.stamp_ns, self.problem = map_T_base, stamp_ns, problem
        self._done.set()

    def wait(self, timeout: float) -> bool:
        """True when a frame answered within `timeout` seconds."""
        return self._done.wait(timeout)


class FramePipeline:
    """Decode -> localize -> build messages, with the node's configuration and a TF look-up function.

    Args:
        relocalizer: the engine (model loaded once by the caller).
        config: the node's validated configuration.
        factory: message factory for the published messages.
        tf_lookup: TF look-ups for map -> odom and /initialpose; None when neither is enabled.
    """

    def __init__(self, relocalizer: Relocalizer, config: NodeConfig, factory: MessageFactory,
                 tf_lookup: TfLookup | None = None) -> None:
        self.relocalizer = relocalizer
        self.config = config
        self.factory = factory
        self.tf_lookup = tf_lookup
        self._camera_state: tuple[CameraModel | None, Problem | None] = (
            None, Problem(NodeFailure.NO_CAMERA_INFO.value, f"no CameraInfo received on {config.info_topic} yet"))
        self._map_T_odom: np.ndarray | None = None
        self._input = RelocalizerInput()
        self._roll = RollTracker()  # the stream's camera roll: a camera that stays rolled costs one pass a frame
        self._requests_lock = threading.Lock()
        self._requests: list[InitialPoseRequest] = []
        self.initialpose_skipped = 0

    def request_initial_pose(self) -> InitialPoseRequest:
        """Publish /initialpose from the next localized frame, whatever publish_initialpose and its thresholds
        say (the ~/relocalize service); the request is answered by that frame."""
        request = InitialPoseRequest()
        with self._requests_lock:
            self._requests.append(request)
        return request

    def cancel(self, request: InitialPoseRequest) -> None:
        """Forget a request whose caller stopped waiting."""
        with self._requests_lock:
            if request in self._requests:
                self._requests.remove(request)

    def set_camera_info(self, msg: Any) -> None:
        """Cache the camera model of a CameraInfo (a bad one is remembered and reported with the next frame).

        Called from the subscription thread while a frame may be in flight: the (model, problem) pair is
        replaced in one assignment and `process` reads it once.
        """
        try:
            camera = camera_info_to_model(msg)
        except Kd3dError as err:
            self._camera_state = (None, Problem(NodeFailure.BAD_CAMERA_INFO.value, str(err)))
            return
        current = self._camera_state[0]
        if current is None or not same_camera(current, camera):
            self._camera_state = (camera, None)

    def process(self, image_msg: Any, want_cloud: bool = True) -> FrameResult:
        """Localize one Image/CompressedImage; never raises (every problem is in the result)."""
        try:
            return self._process(image_msg, want_cloud)
        except Exception as err:  # noqa: BLE001 - a bad frame must never take the node down
            return FrameResult(stamp_ns=0, localized=False,
                               problems=(Problem(NodeFailure.INTERNAL_ERROR.value, f"{type(err).__name__}: {err}"),))

    def _process(self, image_msg: Any, want_cloud: bool) -> FrameResult:
        t0 = time.perf_counter()
        try:
            stamp_ns = header_stamp_ns(image_msg)
            rgb = decode_rgb(image_msg)
        except Kd3dError as err:
            return FrameResult(0, False, problems=(Problem(NodeFailure.BAD_IMAGE.value, str(err)),))
        if stamp_ns <= 0:
            # Outputs carry the input's stamp: a 0 stamp would put map -> odom at 1970 + transform_tolerance.
            return FrameResult(0, False, problems=(Problem(NodeFailure.ZERO_STAMP.value,
                                                           "image header stamp is 0 (is the driver stamping?)"),))
        camera, camera_problem = self._camera_state
        camera_problem = camera_problem or _size_problem(camera, rgb)
        if camera_problem is not None:
            return FrameResult(stamp_ns, False, self._republished_tf(stamp_ns), (camera_problem,))
        rgb, dist = self._input.prepare(camera, rgb)
        decode_ms = (time.perf_counter() - t0) * 1000.0
        estimate, prediction = self._roll.localize(self.relocalizer, rgb, camera.K, dist, stamp_ns)
        stages = {"decode": decode_ms, **_timings_ms(estimate)}
        if not estimate.success:
            problem = Problem(estimate.failure.value if estimate.failure else "unknown", estimate.detail)
            return FrameResult(stamp_ns, False, self._republished_tf(stamp_ns), (problem,), stages, estimate.inliers)
        t1 = time.perf_counter()
        messages, problems = self._messages(estimate, prediction if want_cloud else None, rgb, image_msg, stamp_ns)
        stages["build"] = (time.perf_counter() - t1) * 1000.0
        return FrameResult(stamp_ns, True, messages, problems, stages, estimate.inliers, estimate.recovered_by,
                           bool(estimate.upright_turn_deg))

    def camera_frame(self, image_msg: Any) -> str:
        """The camera optical frame for TF: the camera_frame parameter, else the image's header.frame_id."""
        return self.config.camera_frame or str(image_msg.header.frame_id)

    def _messages(self, estimate: PoseEstimate, prediction: ScenePrediction | None, rgb: np.ndarray,
                  image_msg: Any, stamp_ns: int) -> tuple[dict[Output, Any], tuple[Problem, ...]]:
        cfg, problems = self.config, []
        camera_frame = self.camera_frame(image_msg)
        odom_T_cam = None
        if cfg.publish_tf:
            odom_T_cam, problem = self._lookup(cfg.odom_frame, camera_frame, stamp_ns, NodeFailure.NO_ODOM_TF)
            problems += [problem] if problem else []
        cloud = None
        if prediction is not None and cfg.publish_cloud:
            cloud = predicted_cloud(_strided(prediction, cfg.cloud_stride), rgb,
                                    min_conf=self.relocalizer.config.min_confidence,
                                    max_points=cfg.cloud_max_points or None)
        frames = OutputFrames(map_frame=cfg.map_frame, camera_frame=camera_frame or "camera", odom_frame=cfg.odom_frame)
        built = build_localization_messages(estimate, stamp_ns, frames, cloud, odom_T_cam, self.factory,
                                            with_tf=cfg.publish_tf)
        messages: dict[Output, Any] = {Output.POSE: built.pose, Output.POSE_WITH_COVARIANCE: built.pose_with_covariance}
        if built.cloud is not None:
            messages[Output.CLOUD] = built.cloud
        if odom_T_cam is not None:
            self._map_T_odom = built.tf_parent_T_child
        messages.update(self._republished_tf(stamp_ns))
        with self._requests_lock:
            requests, self._requests = self._requests, []
        if cfg.publish_initialpose or requests:
            initial, problem, map_T_base = self._initial_pose(estimate, camera_frame, stamp_ns, gate=not requests)
            messages.update(initial)
            problems += [problem] if problem else []
            for request in requests:
                request.finish(map_T_base, stamp_ns, problem)
        return messages, tuple(problems)

    def _lookup(self, target: str, source: str, stamp_ns: int,
                failure: NodeFailure) -> tuple[np.ndarray | None, Problem | None]:
        if not source:
            return None, Problem(NodeFailure.NO_CAMERA_FRAME.value,
                                 "image header.frame_id is empty and the camera_frame parameter is not set")
        if self.tf_lookup is None:
            return None, Problem(failure.value, "no TF listener (tf2_ros is not installed)")
        try:
            return self.tf_lookup(target, source, stamp_ns), None
        except Kd3dError as err:
            return None, Problem(failure.value, f"{target} -> {source} at {stamp_ns} ns: {err}")

    def _republished_tf(self, stamp_ns: int) -> dict[Output, Any]:
        """The latest map -> odom, stamped image stamp + transform_tolerance (AMCL's post-dating), if known.

        Sent on every processed frame, localized or not, so the TF tree stays connected between fixes.
        """
        if not self.config.publish_tf or self._map_T_odom is None:
            return {}
        stamp = stamp_ns + round(self.config.transform_tolerance * 1e9)
        transform = build_transform_stamped(self._map_T_odom, stamp, self.config.map_frame, self.config.odom_frame,
                                            self.factory)
        return {Output.TF: build_tf_message([transform], self.factory)}

    def _initial_pose(self, estimate: PoseEstimate, camera_frame: str, stamp_ns: int,
                      gate: bool) -> tuple[dict[Output, Any], Problem | None, np.ndarray | None]:
        """nav2 AMCL's /initialpose: the base pose in the map, covariance moved from the camera to the base.

        With `gate`, nothing is published while the robot's current estimate (map -> base_frame in TF) agrees
        with the fix within the initialpose_min_error_* thresholds.
        """
        cfg = self.config
        base_T_cam, problem = self._lookup(cfg.base_frame, camera_frame, stamp_ns, NodeFailure.NO_BASE_TF)
        if base_T_cam is None:
            return {}, problem, None
        map_T_base = frame_pose_in_map(estimate.world_T_cam, base_T_cam)
        if gate and self._agrees_with_current_estimate(map_T_base, stamp_ns):
            self.initialpose_skipped += 1
            return {}, None, map_T_base
        covariance = move_pose_covariance(estimate.covariance_6x6, estimate.world_T_cam[:3, 3], map_T_base[:3, 3])
        msg = build_pose_with_covariance_stamped(map_T_base, covariance, stamp_ns, cfg.map_frame, self.factory)
        return {Output.INITIAL_POSE: msg}, None, map_T_base

    def _agrees_with_current_estimate(self, map_T_base: np.ndarray, stamp_ns: int) -> bool:
        """True when thresholds are set and TF's map -> base_frame is within both of them (no estimate yet, or
        no thresholds: False, so the fix is published)."""
        cfg = self.config
        if cfg.initialpose_min_error_m <= 0 and cfg.initialpose_min_error_deg <= 0:
            return False
        try:
            current = self.tf_lookup(cfg.map_frame, cfg.base_frame, stamp_ns) if self.tf_lookup else None
        except Kd3dError:
            current = None
        if current is None:
            return False
        err = pose_error(current, map_T_base)
        return err.translation_m <= cfg.initialpose_min_error_m and err.rotation_deg <= cfg.initialpose_min_error_deg


def _size_problem(camera: CameraModel, rgb: np.ndarray) -> Problem | None:
    width, height = camera.size
    if (rgb.shape[1], rgb.shape[0]) != (width, height):
        return Problem(NodeFailure.CAMERA_INFO_MISMATCH.value,
                       f"image is {rgb.shape[1]}x{rgb.shape[0]} but CameraInfo says {width}x{height}")
    return None


def _strided(prediction: ScenePrediction, stride: int) -> ScenePrediction:
    """Every `stride`-th output cell in each direction (views, no copy)."""
    if stride <= 1:
        return prediction
    return ScenePrediction(prediction.points_hw3[::stride, ::stride], prediction.conf_hw[::stride, ::stride],
                           prediction.uv_hw2[::stride, ::stride])


def _timings_ms(estimate: PoseEstimate) -> dict[str, float]:
    t = estimate.timings
    return {"predict": t.predict_ms, "select": t.select_ms, "pnp": t.pnp_ms, "refine": t.refine_ms}
