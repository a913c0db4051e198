"""`ros2 run kd3d_ros relocalizer_node`: camera images in; cloud, poses, map -> odom and diagnostics out.

Thin glue: parameters come from kd3d_ros.params, frames go through kd3d_ros.pipeline (kd3d_core's decoding,
Relocalizer and message builders, the same ones `kd3d replay` uses), bookkeeping is kd3d_ros.runtime. This
module only declares, subscribes, spins and publishes.

Threading: the image callback only drops the message into a one-frame mailbox (sensor-data QoS, depth 1), and a
dedicated worker thread localizes the newest frame. When the model is slower than the camera, older frames
are replaced, never queued, so latency stays at one inference. CameraInfo, TF and diagnostics run on the
executor's threads meanwhile.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from kd3d_core.errors import ConfigError, Kd3dError
from kd3d_core.localization import Relocalizer, RelocalizerConfig
from kd3d_core.messages import ModuleFactory, transform_to_matrix
from kd3d_ros.params import PARAMETERS, NodeConfig, ParamSpec
from kd3d_ros.pipeline import FramePipeline, FrameResult, Output, TfUnavailable
from kd3d_ros.runtime import Intake, NodeStats, build_diagnostic_array

if TYPE_CHECKING:
    import numpy as np

NODE_NAME = "relocalizer"
# Best effort + keep last 1: a frame that arrives while the previous one is still being read replaces it.
SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
_TYPES = {"bool": ParameterType.PARAMETER_BOOL, "int": ParameterType.PARAMETER_INTEGER,
          "float": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING}
_MSG_TYPES = {Output.CLOUD: PointCloud2, Output.POSE: PoseStamped, Output.POSE_WITH_COVARIANCE:
              PoseWithCovarianceStamped, Output.INITIAL_POSE: PoseWithCovarianceStamped}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of a table entry: type, description, limits; read-only (the model loads once).

    Doubles accept integers too (dynamic typing), so `max_rate: 10` in a YAML file is not a type error.
    """
    desc = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type_name], description=spec.description,
                               additional_constraints=spec.constraints, read_only=True,
                               dynamic_typing=spec.type_name == "float")
    if spec.min_value is not None and spec.max_value is not None:
        if spec.type_name == "int":
            desc.integer_range = [IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
        elif spec.type_name == "float":
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                            to_value=float(spec.max_value), step=0.0)]
    return desc


def load_relocalizer(config: NodeConfig) -> Relocalizer:
    """Load the scene model once (CUDA when asked or available) and wrap it in the engine."""
    from kd3d_core.students.scene_model import load_scene_model

    try:
        model = load_scene_model(config.model_path, config.device.value)
    except (RuntimeError, AssertionError, OSError) as err:  # e.g. device "cuda" on a machine without CUDA
        raise ConfigError(f"cannot load {config.model_path} on device {config.device.value}: {err}") from err
    return Relocalizer(model, RelocalizerConfig(min_inliers=config.min_inliers))


class RelocalizerNode(Node):
    """The online relocalizer (see module docstring).

    Args:
        relocalizer: an engine to use instead of loading `model_path` (tests pass one built on an oracle).
        **node_kwargs: forwarded to rclpy's Node (parameter_overrides, namespace, context, ...).

    Raises:
        ConfigError: invalid parameters, or a model that cannot be loaded.
    """

    def __init__(self, relocalizer: Relocalizer | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config = self._read_parameters()
        self.relocalizer = relocalizer if relocalizer is not None else load_relocalizer(self.config)
        if self.relocalizer.world_frame != self.config.map_frame:
            self.get_logger().warning(f"the model's world frame is {self.relocalizer.world_frame!r}; publishing it "
                                      f"as map_frame {self.config.map_frame!r}")
        self._factory = ModuleFactory()
        self._stats = NodeStats()
        self._intake = Intake(self.config.max_rate, self._stats)
        self._tf_buffer = self._tf_broadcaster = None
        self._setup_tf()
        lookup = self._lookup_transform if self._tf_buffer is not None else None
        self._pipeline = FramePipeline(self.relocalizer, self.config, self._factory, lookup)
        self._outputs = {out: self.create_publisher(_MSG_TYPES[out], out.value, 1 if out is Output.CLOUD else 10)
                            for out in self._enabled_outputs()}
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subscribe()
        self._worker = threading.Thread(target=self._work, name="kd3d_relocalizer_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"localizing {self.config.input_topic} with {self.config.info_topic} against "
                               f"{self.config.model_path}; publishing in {self.config.map_frame}")

    # ------------------------------------------------------------------------------------------- setup
    def _read_parameters(self) -> NodeConfig:
        values = {}
        for spec in PARAMETERS:
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default, descriptor(spec)).value
            except (InvalidParameterTypeException, InvalidParameterValueException) as err:
                raise ConfigError(f"parameter {spec.name}: {err}") from err
        return NodeConfig.from_values(values)

    def _setup_tf(self) -> None:
        if not (self.config.publish_tf or self.config.publish_initialpose):
            return
        # tf2_ros is needed only for these two features.
        from tf2_ros import Buffer, TransformBroadcaster, TransformListener

        self._tf_buffer = Buffer()
        self._tf_listener = TransformListener(self._tf_buffer, self)
        if self.config.publish_tf:
            self._tf_broadcaster = TransformBroadcaster(self)

    def _enabled_outputs(self) -> list[Output]:
        outputs = [Output.POSE, Output.POSE_WITH_COVARIANCE]
        outputs += [Output.CLOUD] if self.config.publish_cloud else []
        outputs += [Output.INITIAL_POSE] if self.config.publish_initialpose else []
        return outputs

    def _subscribe(self) -> None:
        group = MutuallyExclusiveCallbackGroup()
        image_type = CompressedImage if self.config.compressed else Image
        self._image_sub = self.create_subscription(image_type, self.config.input_topic, self._intake.offer,
                                                   SENSOR_QOS, callback_group=group)
        self._info_sub = self.create_subscription(CameraInfo, self.config.info_topic,
                                                  self._pipeline.set_camera_info, SENSOR_QOS, callback_group=group)
        self._diag_timer = self.create_timer(self.config.diagnostics_period, self._publish_diagnostics,
                                             callback_group=MutuallyExclusiveCallbackGroup())

    # ------------------------------------------------------------------------------------------- work
    def _work(self) -> None:
        while not self._intake.closed:
            msg = self._intake.take(timeout=0.5)
            if msg is None:
                continue
            try:
                self._localize_frame(msg)
            except Exception as err:  # noqa: BLE001 - publishing into a shutting-down context, ...
                line = self._stats.on_problem("internal_error", f"{type(err).__name__}: {err}")
                if line and rclpy.ok():
                    self.get_logger().error(line)

    def _localize_frame(self, msg: Any) -> None:
        cloud_pub = self._outputs.get(Output.CLOUD)
        want_cloud = cloud_pub is not None and cloud_pub.get_subscription_count() > 0
        result = self._pipeline.process(msg, want_cloud)
        t0 = time.perf_counter()
        self._send(result)
        stages = {**result.stages_ms, "publish": (time.perf_counter() - t0) * 1000.0}
        failure = None if result.localized else (result.problems[0].cause if result.problems else "unknown")
        self._stats.on_processed(stages, result.inliers, failure)
        for problem in result.problems:
            line = self._stats.on_problem(problem.cause, problem.detail)
            if line:
                self.get_logger().warning(line)

    def _send(self, result: FrameResult) -> None:
        for output, message in result.messages.items():
            if output is Output.TF:
                if self._tf_broadcaster is not None:
                    self._tf_broadcaster.sendTransform(list(message.transforms))
            elif output in self._outputs:
                self._outputs[output].publish(message)

    def _lookup_transform(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        from tf2_ros import TransformException

        try:
            stamped = self._tf_buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns),
                                                       timeout=Duration(seconds=self.config.tf_timeout))
        except TransformException as err:
            raise TfUnavailable(str(err)) from err
        return transform_to_matrix(stamped.transform)

    def _publish_diagnostics(self) -> None:
        msg = build_diagnostic_array(self._stats.report(), self.get_clock().now().nanoseconds,
                                     f"{self.get_name()}: relocalization", self.config.model_path, self._factory)
        self._diagnostics.publish(msg)

    def destroy_node(self) -> None:
        """Stop the worker, then the node."""
        self._intake.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run kd3d_ros relocalizer_node`."""
    rclpy.init(args=args)
    try:
        node = RelocalizerNode()
    except Kd3dError as err:
        get_logger(NODE_NAME).fatal(str(err))
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
