"""`ros2 run kd3d_ros relocalizer_node`: camera images in; cloud, poses, map -> odom and diagnostics out.

Thin glue: parameters come from kd3d_ros.params, frames go through kd3d_ros.pipeline (kd3d_core's decoding,
Relocalizer and message builders, the same ones `kd3d replay` uses), bookkeeping is kd3d_ros.runtime. This
module only declares, subscribes, spins and publishes. `RelocalizerIO` is what a configured node runs; the plain
node here and the managed one (kd3d_ros.lifecycle_node) both use it.

Threading: the image callback only drops the message into a one-frame mailbox (sensor-data QoS, depth 1), and a
dedicated worker thread localizes the newest frame. When the model is slower than the camera, older frames
are replaced, never queued, so latency stays at one inference. CameraInfo, TF, the ~/relocalize service and
diagnostics run on the executor's threads meanwhile.
"""
from __future__ import annotations

import dataclasses
import signal
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
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from kd3d_core.errors import ConfigError, Kd3dError
from kd3d_core.localization import Relocalizer, RelocalizerConfig
from kd3d_core.messages import ModuleFactory, topics, transform_to_matrix
from kd3d_ros.params import PARAMETERS, NodeConfig, ParamSpec
from kd3d_ros.pipeline import FramePipeline, FrameResult, Output, TfUnavailable
from kd3d_ros.runtime import Intake, NodeStats, build_diagnostic_array

if TYPE_CHECKING:
    import numpy as np

NODE_NAME = topics.NODE_NAME  # shared with `kd3d replay` (kd3d_core.messages.topics)
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


def declare_parameters(node: Node) -> None:
    """Declare every parameter of the table on `node` (values from overrides, --params-file and -p).

    Raises:
        ConfigError: a value of the wrong type or out of the declared range.
    """
    for spec in PARAMETERS:
        try:
            if not node.has_parameter(spec.name):
                node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            raise ConfigError(f"parameter {spec.name}: {err}") from err


def read_config(node: Node) -> NodeConfig:
    """The validated config from the declared parameters' values.

    Raises:
        ConfigError: an inconsistent set of values (e.g. an empty model_path).
    """
    return NodeConfig.from_values({spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS})


def declare_config(node: Node) -> NodeConfig:
    """Declare the parameters on `node` and build the validated config (see the two functions above)."""
    declare_parameters(node)
    return read_config(node)


def relocalizer_config(config: NodeConfig) -> RelocalizerConfig:
    """The engine's config from the node's: min_inliers, roll_retry_deg, zoom_retry, roll_upright_deg,
    guided_candidates, and covariance_inflation unless 0 (kd3d's default)."""
    changes: dict[str, Any] = {"min_inliers": config.min_inliers, "roll_retry_deg": config.roll_retry_deg,
                               "zoom_retry": config.zoom_retry, "roll_upright_deg": config.roll_upright_deg,
                               "guided_candidates": config.guided_candidates}
    if config.covariance_inflation > 0:
        changes["covariance_inflation"] = config.covariance_inflation
    return RelocalizerConfig(**changes)


def load_relocalizer(config: NodeConfig) -> Relocalizer:
    """Set torch's thread count (`threads`), load the model once (CUDA when asked or available), wrap it."""
    from kd3d_core.students.scene_model import load_scene_model
    from kd3d_core.threads import apply_threads

    apply_threads(config.threads or None)
    try:
        model = load_scene_model(config.model_path, config.device.value, config.encoder_backend)
    except (RuntimeError, AssertionError, OSError) as err:  # e.g. device "cuda" on a machine without CUDA
        raise ConfigError(f"cannot load {config.model_path} on device {config.device.value}: {err}") from err
    return Relocalizer(model, relocalizer_config(config))


def import_tf2_ros(config: NodeConfig) -> Any | None:
    """tf2_ros when installed; None without it, unless a feature that cannot work without it is on.

    Raises:
        ConfigError: publish_tf or publish_initialpose is true and tf2_ros cannot be imported (pip's ROS wheels
            do not carry it; a ROS install does).
    """
    try:
        import tf2_ros
    except ImportError as err:
        wanted = [name for name in ("publish_tf", "publish_initialpose") if getattr(config, name)]
        if wanted:
            raise ConfigError(f"{' and '.join(wanted)}:=true needs tf2_ros, which cannot be imported ({err}); "
                              "install ROS 2 (ros-<distro>-tf2-ros) or set it false") from err
        return None
    return tf2_ros


def import_trigger() -> Any | None:
    """std_srvs/Trigger for ~/relocalize, or None where std_srvs is not installed."""
    try:
        from std_srvs.srv import Trigger
    except ImportError:
        return None
    return Trigger


class RelocalizerIO:
    """A configured relocalizer on a node: publishers, TF, service, diagnostics, and (between `start` and
    `stop`) the image subscriptions and the worker thread.

    Args:
        node: the rclpy node (plain or lifecycle) to create everything on.
        config: its validated parameters.
        relocalizer: the engine.
        tf2_ros: the tf2_ros module, or None (no map -> odom, /initialpose reports no_base_tf).
    """

    def __init__(self, node: Node, config: NodeConfig, relocalizer: Relocalizer, tf2_ros: Any | None) -> None:
        self.node, self.config, self.relocalizer = node, config, relocalizer
        self.factory = ModuleFactory()
        self.stats = NodeStats()
        self.intake: Intake | None = None
        self._worker: threading.Thread | None = None
        self._subscriptions: list[Any] = []
        self._hardware_id = config.input_topic
        self._tf_buffer = self._tf_broadcaster = self._tf_listener = None
        if tf2_ros is not None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, node)
            if config.publish_tf:
                self._tf_broadcaster = tf2_ros.TransformBroadcaster(node)
        lookup = self._lookup_transform if self._tf_buffer is not None else None
        self.pipeline = FramePipeline(relocalizer, config, self.factory, lookup)
        self._outputs = {out: node.create_publisher(_MSG_TYPES[out], out.value, 1 if out is Output.CLOUD else 10)
                         for out in self._enabled_outputs()}
        self._diagnostics = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self._diag_timer = node.create_timer(config.diagnostics_period, self._publish_diagnostics,
                                             callback_group=MutuallyExclusiveCallbackGroup())
        trigger = import_trigger()
        self._service = None if trigger is None else node.create_service(
            trigger, "~/relocalize", self._relocalize, callback_group=MutuallyExclusiveCallbackGroup())
        if trigger is None:
            node.get_logger().warning("std_srvs is not installed: no ~/relocalize service")

    def _enabled_outputs(self) -> list[Output]:
        outputs = [Output.POSE, Output.POSE_WITH_COVARIANCE, Output.INITIAL_POSE]  # /initialpose: also on demand
        return outputs + ([Output.CLOUD] if self.config.publish_cloud else [])

    # ------------------------------------------------------------------------------------------- running
    def start(self) -> None:
        """Subscribe to the camera and start the worker."""
        self.intake = Intake(self.config.max_rate, self.stats)
        group = MutuallyExclusiveCallbackGroup()
        image_type = CompressedImage if self.config.compressed else Image
        self._subscriptions = [
            self.node.create_subscription(image_type, self.config.input_topic, self.intake.offer, SENSOR_QOS,
                                          callback_group=group),
            self.node.create_subscription(CameraInfo, self.config.info_topic, self._on_camera_info, SENSOR_QOS,
                                          callback_group=group)]
        self._worker = threading.Thread(target=self._work, args=(self.intake,), name="kd3d_relocalizer_worker",
                                        daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Unsubscribe and stop the worker (a frame in flight finishes first)."""
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions = []
        if self.intake is not None:
            self.intake.close()
        if self._worker is not None and self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=10.0)
        self._worker = None

    def destroy(self) -> None:
        """Stop, then remove publishers, timer, service and TF listener from the node."""
        self.stop()
        for pub in [*self._outputs.values(), self._diagnostics]:
            self.node.destroy_publisher(pub)
        self.node.destroy_timer(self._diag_timer)
        if self._service is not None:
            self.node.destroy_service(self._service)
        if self._tf_listener is not None:
            self._tf_listener.unregister()

    @property
    def worker_alive(self) -> bool:
        """True while the worker thread runs."""
        return self._worker is not None and self._worker.is_alive()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.stats.on_camera_info(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        self.pipeline.set_camera_info(msg)

    def _work(self, intake: Intake) -> None:
        while not intake.closed:
            msg = intake.take(timeout=0.5)
            if msg is None:
                continue
            try:
                self._localize_frame(msg)
            except Exception as err:  # noqa: BLE001 - publishing into a shutting-down context, ...
                line = self.stats.on_problem("internal_error", f"{type(err).__name__}: {err}")
                if line and rclpy.ok(context=self.node.context):
                    self.node.get_logger().error(line)

    def _localize_frame(self, msg: Any) -> None:
        cloud_pub = self._outputs.get(Output.CLOUD)
        want_cloud = cloud_pub is not None and cloud_pub.get_subscription_count() > 0
        result = self.pipeline.process(msg, want_cloud)
        t0 = time.perf_counter()
        self._send(result)
        stages = {**result.stages_ms, "publish": (time.perf_counter() - t0) * 1000.0}
        failure = None if result.localized else (result.problems[0].cause if result.problems else "unknown")
        self.stats.on_processed(stages, result.inliers, failure, result.recovered_by, result.turned_upright)
        if result.localized:
            self._hardware_id = self.pipeline.camera_frame(msg) or self.config.input_topic
        for problem in result.problems:
            line = self.stats.on_problem(problem.cause, problem.detail)
            if line:
                self.node.get_logger().warning(line)

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

    # ------------------------------------------------------------------------------------------- services
    def _relocalize(self, request: Any, response: Any) -> Any:
        """~/relocalize (std_srvs/Trigger): publish /initialpose from the next localized frame."""
        if self.intake is None or self.intake.closed:
            response.success, response.message = False, "the relocalizer is not active"
            return response
        pending = self.pipeline.request_initial_pose()
        timeout = self.config.relocalize_timeout
        if not pending.wait(timeout):
            self.pipeline.cancel(pending)
            response.success = False
            response.message = f"no frame localized within {timeout:g} s ({self.stats.report().message})"
        elif pending.problem is not None:
            response.success, response.message = False, f"{pending.problem.cause}: {pending.problem.detail}"
        else:
            x, y, z = (float(v) for v in pending.map_T_base[:3, 3])
            response.success = True
            response.message = (f"published /initialpose: {self.config.base_frame} at ({x:.3f}, {y:.3f}, {z:.3f}) "
                                f"in {self.config.map_frame}, stamp {pending.stamp_ns}")
        return response

    def _publish_diagnostics(self) -> None:
        report = self.stats.report()
        extra = (("model_path", self.config.model_path), ("device", self.config.device.value),
                 ("initialpose_skipped_agreeing", str(self.pipeline.initialpose_skipped)))
        report = dataclasses.replace(report, values=report.values + extra)
        msg = build_diagnostic_array(report, self.node.get_clock().now().nanoseconds,
                                     f"{self.node.get_name()}: relocalization", self._hardware_id, self.factory)
        self._diagnostics.publish(msg)


class RelocalizerNode(Node):
    """The online relocalizer (see module docstring), active from construction on.

    Args:
        relocalizer: an engine to use instead of loading `model_path` (tests pass one built on an oracle).
        **node_kwargs: forwarded to rclpy's Node (parameter_overrides, namespace, context, ...).

    Raises:
        ConfigError: invalid parameters, a model that cannot be loaded, or TF features without tf2_ros.
    """

    def __init__(self, relocalizer: Relocalizer | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.config = declare_config(self)
        tf2_ros = import_tf2_ros(self.config)
        self.relocalizer = relocalizer if relocalizer is not None else load_relocalizer(self.config)
        warn_on_world_frame(self, self.relocalizer, self.config)
        self.io = RelocalizerIO(self, self.config, self.relocalizer, tf2_ros)
        self.io.start()
        self.get_logger().info(f"localizing {self.config.input_topic} with {self.config.info_topic} against "
                               f"{self.config.model_path}; publishing in {self.config.map_frame}")

    def destroy_node(self) -> None:
        """Stop the worker, then the node."""
        self.io.stop()
        super().destroy_node()


def warn_on_world_frame(node: Node, relocalizer: Relocalizer, config: NodeConfig) -> None:
    """Warn when the model was built in another world frame than the one the node publishes in."""
    if relocalizer.world_frame != config.map_frame:
        node.get_logger().warning(f"the model's world frame is {relocalizer.world_frame!r}; publishing it as "
                                  f"map_frame {config.map_frame!r}")


def spin(node: Node) -> int:
    """Spin `node` on two threads until SIGINT / SIGTERM or an external shutdown, then clean up; returns 0.

    The order is ours, not rclpy's: its own signal handler shuts the context down (and finalises logging) at once,
    from another thread, while our worker may be publishing or logging a frame's results -- a race that crashed
    the process once (SIGSEGV at Ctrl-C). Here a signal only sets a flag; the main loop then stops the worker
    (a frame in flight finishes), destroys the node and only then shuts the context down.
    """
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    stop = threading.Event()
    previous = _catch_stop_signals(stop)
    try:
        while not stop.is_set() and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()  # stops the worker (a frame in flight finishes) while the context is still up
        rclpy.try_shutdown()
        _restore_signals(previous)
    return 0


_SPIN_PERIOD_S = 0.2  # how soon the main loop notices a stop signal


def _catch_stop_signals(stop: threading.Event) -> dict:
    """SIGINT and SIGTERM set `stop` (main thread only; elsewhere nothing changes); a second one gets the old
    handler (a second Ctrl-C interrupts a clean-up that hangs). Returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        del frame
        stop.set()
        signal.signal(signum, previous[signum])

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    return previous


def _restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def init_ros(args: list[str] | None) -> bool:
    """rclpy.init without rclpy's signal handlers (spin handles SIGINT / SIGTERM in order); False (after one
    FATAL line) when the command line's ROS arguments are wrong."""
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as err:  # e.g. UnknownROSArgsError: `-p name:=value` outside --ros-args, a typo
        get_logger(NODE_NAME).fatal(f"bad ROS arguments: {err}")
        return False
    return True


def run_node(make_node: Any, args: list[str] | None = None) -> int:
    """Initialise ROS, build a node (one FATAL line and exit 1 when it cannot start) and spin it."""
    if not init_ros(args):
        return 2
    try:
        node = make_node()
    except Kd3dError as err:
        get_logger(NODE_NAME).fatal(str(err))
        rclpy.try_shutdown()
        return 1
    return spin(node)


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run kd3d_ros relocalizer_node`."""
    return run_node(RelocalizerNode, args)


if __name__ == "__main__":
    sys.exit(main())
