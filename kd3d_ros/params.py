"""The relocalizer node's parameters: one table, one frozen config, no rclpy.

The node declares exactly the parameters of `PARAMETERS` (with descriptors made from each `ParamSpec`), reads
their values back and builds a `NodeConfig` with `NodeConfig.from_values`, which validates everything in one
place. Keeping the table free of rclpy lets CI (which has no ROS) check that config/relocalizer.yaml, the launch
files and the README agree with what the node really declares.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from kd3d_core.errors import ConfigError
from kd3d_core.messages import image_input_topic

ParamValue = bool | int | float | str


class Device(str, Enum):
    """Where the scene model runs: CUDA when present (auto), or forced."""

    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: name, default (its type is the parameter's type), description and limits.

    Attributes:
        name: parameter name (no namespace).
        default: default value; bool, int, float or str, which is also the declared ROS parameter type.
        description: one line shown by `ros2 param describe`.
        min_value: inclusive lower bound for numbers (None = unbounded).
        max_value: inclusive upper bound for numbers (None = unbounded).
        choices: allowed values for strings (empty = any).
    """

    name: str
    default: ParamValue
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        """'bool', 'int', 'float' or 'string' (bool is checked first: it is a subclass of int)."""
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        return "string"

    @property
    def constraints(self) -> str:
        """Human-readable limits, for the descriptor's additional_constraints."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.min_value is not None:
            parts.append(f">= {self.min_value}")
        if self.max_value is not None:
            parts.append(f"<= {self.max_value}")
        return "; ".join(parts)


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Scene model file (.kd3d) written by `kd3d train` or `kd3d distill` (required)."),
    ParamSpec("device", Device.AUTO.value, "Where the model runs: auto (CUDA when available), cuda or cpu.",
              choices=tuple(d.value for d in Device)),
    ParamSpec("image_topic", "/camera/color/image_raw", "Camera image topic (sensor_msgs/Image)."),
    ParamSpec("compressed", False,
              "Subscribe to sensor_msgs/CompressedImage on image_topic + '/compressed' (image_transport's name; "
              "kept as is when image_topic already ends in /compressed), as `kd3d replay --compressed` does."),
    ParamSpec("camera_info_topic", "",
              "sensor_msgs/CameraInfo topic; empty = next to the image topic (/ns/image_raw -> /ns/camera_info)."),
    ParamSpec("map_frame", "map", "Frame of the scene model's world: frame of the cloud and the poses."),
    ParamSpec("odom_frame", "odom", "Odometry frame (REP 105); the node publishes map -> odom."),
    ParamSpec("base_frame", "base_link", "Robot base frame; /initialpose carries the pose of this frame."),
    ParamSpec("camera_frame", "", "Camera optical frame for TF look-ups; empty = the image's header.frame_id."),
    ParamSpec("publish_tf", True, "Publish map -> odom computed from the pose and odom -> camera at the image stamp."),
    ParamSpec("transform_tolerance", 0.5,
              "Seconds the map -> odom transform is post-dated (as AMCL does) so that look-ups at the current time "
              "do not extrapolate between two localizations.", min_value=0.0, max_value=10.0),
    ParamSpec("tf_timeout", 0.1, "Seconds to wait for odom -> camera at the image stamp.", min_value=0.0,
              max_value=5.0),
    ParamSpec("publish_cloud", True, "Publish the frame's predicted point cloud on ~/points (map frame)."),
    ParamSpec("cloud_stride", 2, "Keep every n-th predicted cell in each direction for ~/points.", min_value=1,
              max_value=64),
    ParamSpec("cloud_max_points", 20000, "At most this many points on ~/points (0 = no limit).", min_value=0),
    ParamSpec("min_inliers", 30, "PnP-RANSAC inliers needed to accept a pose.", min_value=4),
    ParamSpec("max_rate", 10.0, "Localize at most this many frames per second (image stamps; 0 = no limit).",
              min_value=0.0, max_value=1000.0),
    ParamSpec("publish_initialpose", False,
              "Also publish the base pose on /initialpose (geometry_msgs/PoseWithCovarianceStamped) for nav2 AMCL."),
    ParamSpec("initialpose_min_error_m", 0.0,
              "Publish /initialpose only when the robot's current estimate (map -> base_frame in TF, e.g. AMCL's) is "
              "further than this from the fix (0 = every fix; either threshold exceeded is enough).",
              min_value=0.0, max_value=1000.0),
    ParamSpec("initialpose_min_error_deg", 0.0,
              "Publish /initialpose only when the current estimate's heading differs by more than this "
              "(0 = every fix; see initialpose_min_error_m).", min_value=0.0, max_value=180.0),
    ParamSpec("relocalize_timeout", 5.0,
              "Seconds the ~/relocalize service (std_srvs/Trigger) waits for a localized frame to publish on "
              "/initialpose.", min_value=0.1, max_value=120.0),
    ParamSpec("covariance_inflation", 0.0,
              "Factor on the pose covariance (dense predictions are correlated, the textbook value is optimistic); "
              "0 = kd3d's calibrated default (RelocalizerConfig.covariance_inflation).", min_value=0.0,
              max_value=1e6),
    ParamSpec("roll_retry_deg", 20.0,
              "A frame lost upright is retried on the image turned back by +/- this angle about the optical axis "
              "(cameras that roll); costs one network pass per try on lost frames only (0 = off).",
              min_value=0.0, max_value=90.0),
    ParamSpec("zoom_retry", 0.7,
              "A frame still lost after the roll retries is retried on the image zoomed out by this factor about "
              "the principal point (close-ups, faint texture); one more network pass on lost frames only (0 = off).",
              min_value=0.0, max_value=4.0),
    ParamSpec("roll_upright_deg", 8.0,
              "A frame localized with the camera rolled by at least this angle from the mapping cameras' up is "
              "localized once more on the image turned upright, keeping the pose with more inliers (more precise "
              "for rolled cameras; one more network pass on such frames, none while the camera stays rolled: the "
              "next frame is looked at upright first; 0 = off).", min_value=0.0, max_value=90.0),
    ParamSpec("guided_candidates", 8,
              "A frame whose pose fails the inlier checks gets a guided second chance: each cell's match is "
              "re-chosen among this many most similar memory cells under the failed pose, and PnP runs again "
              "(fast student only; on such frames only). A pose with under 12 % inliers must also be confirmed "
              "by the guided search from it. 0 = off (both).", min_value=0, max_value=64),
    ParamSpec("threads", 1,
              "Torch CPU threads for the model, set once at start-up (0 = kd3d's policy: OMP_NUM_THREADS, else half "
              "the cores). One thread is fastest on a busy robot CPU: parallel regions wait for threads other "
              "processes preempt (README 'Threads').", min_value=0, max_value=256),
    ParamSpec("encoder_backend", "auto",
              "What runs the fast student's encoder convolutions: auto (ONNX Runtime on a CPU at one torch thread, "
              "when installed; else PyTorch), torch, or onnxruntime (kd3d_core.students.ort_trunk).",
              choices=("auto", "torch", "onnxruntime")),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", min_value=0.05,
              max_value=60.0),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class NodeConfig:
    """Validated configuration of the relocalizer node (one field per entry of `PARAMETERS`)."""

    model_path: str
    device: Device
    image_topic: str
    compressed: bool
    camera_info_topic: str
    map_frame: str
    odom_frame: str
    base_frame: str
    camera_frame: str
    publish_tf: bool
    transform_tolerance: float
    tf_timeout: float
    publish_cloud: bool
    cloud_stride: int
    cloud_max_points: int
    min_inliers: int
    max_rate: float
    publish_initialpose: bool
    initialpose_min_error_m: float
    initialpose_min_error_deg: float
    relocalize_timeout: float
    covariance_inflation: float
    roll_retry_deg: float
    zoom_retry: float
    roll_upright_deg: float
    guided_candidates: int
    threads: int
    encoder_backend: str
    diagnostics_period: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeConfig:
        """Validate parameter values (missing ones take their defaults) and build the config.

        Raises:
            ConfigError: unknown name, wrong type, value out of range or not among the choices, empty
                model path or topic, or an image/camera-info topic pair that cannot be right.
        """
        unknown = sorted(set(values) - set(PARAMETERS_BY_NAME))
        if unknown:
            raise ConfigError(f"unknown relocalizer parameter(s): {', '.join(unknown)} "
                              f"(known: {', '.join(PARAMETERS_BY_NAME)})")
        checked = {spec.name: check_value(spec, values.get(spec.name, spec.default)) for spec in PARAMETERS}
        checked["device"] = Device(checked["device"])
        config = cls(**checked)
        config._check_consistency()
        return config

    def _check_consistency(self) -> None:
        if not self.model_path.strip():
            raise ConfigError("parameter model_path is empty: give the .kd3d scene model "
                              "(ros2 launch kd3d_ros relocalize.launch.py model:=/path/to/room.kd3d)")
        for name in ("image_topic", "map_frame", "odom_frame", "base_frame"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"parameter {name} must not be empty")
        if self.input_topic == self.info_topic:
            raise ConfigError(f"image and camera info would both be read from {self.input_topic}")
        if len({self.map_frame, self.odom_frame, self.base_frame}) < 3:
            raise ConfigError(f"map_frame, odom_frame and base_frame must differ (got {self.map_frame}, "
                              f"{self.odom_frame}, {self.base_frame})")

    @property
    def input_topic(self) -> str:
        """The image topic subscribed: image_topic, plus "/compressed" for compressed images (as replay does)."""
        return image_input_topic(self.image_topic, self.compressed)

    @property
    def info_topic(self) -> str:
        """The CameraInfo topic subscribed: camera_info_topic, else the one next to the image topic."""
        if self.camera_info_topic.strip():
            return self.camera_info_topic
        from kd3d_core.ingest import default_camera_info_topic

        return default_camera_info_topic(self.image_topic)

    def as_values(self) -> dict[str, ParamValue]:
        """Plain parameter values (enums as strings), e.g. for logging or a YAML dump."""
        return {f.name: (getattr(self, f.name).value if isinstance(getattr(self, f.name), Enum)
                         else getattr(self, f.name)) for f in fields(self)}


def check_value(spec: ParamSpec, value: Any) -> ParamValue:
    """`value` checked against `spec`: type (ints are accepted for floats), range and choices.

    Raises:
        ConfigError: naming the parameter, the expected type or limits and the value given.
    """
    kind = spec.type_name
    ok_type = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
    }[kind]
    if not ok_type:
        raise ConfigError(f"parameter {spec.name} must be a {kind}, got {type(value).__name__} {value!r}")
    if kind == "float":
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"parameter {spec.name} must be a number, got NaN")
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"parameter {spec.name} must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.min_value is not None and value < spec.min_value:
        raise ConfigError(f"parameter {spec.name} must be >= {spec.min_value}, got {value!r}")
    if spec.max_value is not None and value > spec.max_value:
        raise ConfigError(f"parameter {spec.name} must be <= {spec.max_value}, got {value!r}")
    return value


def load_params_yaml(path: Path | str, node_name: str = "relocalizer") -> dict[str, Any]:
    """The `ros__parameters` of a ROS 2 parameter file that apply to `node_name`.

    Reads the sections `/**`, `node_name` and `/node_name` (wildcard first, so the node's own section wins),
    as the ROS parameter loader does for a node without a namespace.

    Raises:
        ConfigError: unreadable file, not a mapping, or no matching section with ros__parameters.
    """
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read parameter file {path}: {err}") from err
    if not isinstance(document, dict):
        raise ConfigError(f"parameter file {path} is not a mapping of node names")
    values: dict[str, Any] = {}
    found = False
    for key in ("/**", node_name, f"/{node_name}"):
        section = document.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            values.update(section["ros__parameters"])
            found = True
    if not found:
        raise ConfigError(f"parameter file {path} has no ros__parameters for /** or {node_name}")
    return values
