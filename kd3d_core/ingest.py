"""Bag -> scene folder: camera images, intrinsics, optional depth and poses, as a 12Scenes-layout scene.

Pipeline (two passes over the bag, so memory stays bounded by a few frames whatever the bag size):
  1. Read CameraInfo (or take --K), the pose source (TF chain or pose topic), and the header stamps of the
     colour and depth topics (read from the serialised bytes, no image is decoded).
  2. Associate a pose with every colour stamp (interpolated TF / pose topic within max_dt). Frames without a
     pose are dropped with a warning; if no frame gets one, ingestion fails. NaN/INF poses are an error.
  3. Select keyframes (every Nth posed frame, or a minimum motion since the last kept frame).
  4. Decode the kept colour and depth messages, undistort to a pinhole image with the same K when CameraInfo
     has non-zero distortion, and write them through SceneWriter (atomic: any error leaves no folder).
Depth assumption: the depth topic is registered to the colour camera (same optical centre and field of view,
e.g. RealSense aligned_depth_to_color); when its size differs it is resized (nearest) to the colour size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd3d_core.bags import (
    CAMERA_INFO_TYPES,
    IMAGE_TYPES,
    BagReader,
    PoseSource,
    TfBuffer,
    TfPoseSource,
    associate_nearest,
    load_tf,
    open_bag,
    tf_pose_source,
    topic_pose_source,
)
from kd3d_core.errors import BagError, ConfigError, MessageError
from kd3d_core.geometry import pose_error
from kd3d_core.messages import (
    CameraModel,
    camera_info_to_model,
    decode_depth,
    decode_rgb,
    pinhole_model,
)
from kd3d_core.scene import Split
from kd3d_core.scene_writer import SceneWriter
from kd3d_core.undistort import Undistorter


@dataclass(frozen=True)
class IngestConfig:
    """What to read from a bag and how to turn it into a scene.

    Attributes:
        bag: rosbag2 folder or ROS 1 .bag file.
        out: scene folder to create.
        image_topic: sensor_msgs/Image or CompressedImage colour topic.
        camera_info_topic: CameraInfo topic; None tries <image topic namespace>/camera_info.
        depth_topic: optional depth Image/CompressedImage topic (registered to colour).
        intrinsics: (fx, fy, cx, cy) overriding CameraInfo (images are then taken as distortion-free).
        pose_tf: (parent, child) frames of a TF chain giving world_T_cam, e.g. ("map", "camera_optical").
        pose_topic: PoseStamped / PoseWithCovarianceStamped / Odometry / TransformStamped topic of the camera
            optical frame. Neither pose option: the discovery rule (`discover_pose_tf`, shared with replay)
            takes the TF chain map -> image frame when the bag's TF connects them, else poses are unknown (INF).
        max_dt_s: association tolerance in seconds (poses and depth).
        stride: keep every Nth posed frame.
        min_motion: (metres, degrees): keep a frame when it moved this much from the last kept frame.
        split: which split of the scene the frames go to.
        color_ext: "png" (lossless) or "jpg".
    """

    bag: Path
    out: Path
    image_topic: str
    camera_info_topic: str | None = None
    depth_topic: str | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    pose_tf: tuple[str, str] | None = None
    pose_topic: str | None = None
    max_dt_s: float = 0.05
    stride: int = 1
    min_motion: tuple[float, float] | None = None
    split: Split = Split.MAPPING
    color_ext: str = "png"
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise ConfigError on contradictory or impossible options."""
        if self.pose_tf is not None and self.pose_topic is not None:
            raise ConfigError("give one pose source: --pose-tf PARENT CHILD or --pose-topic TOPIC, not both")
        if not self.max_dt_s > 0:
            raise ConfigError(f"--max-dt must be positive, got {self.max_dt_s}")
        if self.stride < 1:
            raise ConfigError(f"--stride must be at least 1, got {self.stride}")
        if self.min_motion is not None:
            if self.stride != 1:
                raise ConfigError("give one keyframe rule: --stride N or --min-motion M DEG, not both")
            if self.pose_tf is None and self.pose_topic is None:
                raise ConfigError("--min-motion needs poses (--pose-tf or --pose-topic)")
            if min(self.min_motion) < 0 or not all(np.isfinite(self.min_motion)):
                raise ConfigError(f"--min-motion values must be finite and >= 0, got {self.min_motion}")
        if self.color_ext not in ("png", "jpg"):
            raise ConfigError(f"colour format must be png or jpg, not {self.color_ext!r}")


@dataclass(frozen=True)
class IngestResult:
    """What ingestion wrote and what it skipped."""

    path: Path
    frames: int
    images_in_bag: int
    dropped_without_pose: int
    dropped_by_keyframing: int
    depth_frames: int
    K: np.ndarray
    size: tuple[int, int]
    undistorted: str | None
    world_frame: str
    warnings: tuple[str, ...] = field(default_factory=tuple)
    pose_source: str | None = None


@dataclass
class _Plan:
    """Which messages (by index within their topic) make which scene frame."""

    color_index: list[int]
    stamps: list[int]
    poses: list[np.ndarray | None]
    depth_index: list[int]


def ingest_bag(config: IngestConfig) -> IngestResult:
    """Read a bag and write a scene folder (see module docstring).

    Raises:
        BagError, MessageError, ConfigError: with one clear line; the output folder is then not created.
    """
    config.validate()
    if Path(config.out).exists() and not config.overwrite:
        raise ConfigError(f"output {config.out} already exists (pass --overwrite to replace it)")
    warnings: list[str] = []
    with open_bag(config.bag) as bag:
        bag.require_topic(config.image_topic, IMAGE_TYPES, "image")
        if config.depth_topic is not None:
            bag.require_topic(config.depth_topic, IMAGE_TYPES, "depth")
        model = _camera_model(bag, config)
        source = _pose_source(bag, config)
        color_stamps = [s.stamp_ns for s in bag.header_stamps(config.image_topic)]
        if not color_stamps:
            raise BagError(f"image topic {config.image_topic} has no messages")
        warnings.extend(_frame_warnings(bag, config, source))
        plan, dropped_pose, dropped_kf = _plan_frames(color_stamps, source, config, warnings)
        if config.depth_topic is not None:
            _plan_depth(bag, config, plan, warnings)
        undistorter = Undistorter.for_model(model) if config.intrinsics is None else None
        world = source.world_frame if source is not None else "map"
        with SceneWriter.create(config.out, model.K, model.size, sensor=f"rosbag:{Path(config.bag).name}",
                                world_frame=world, color_ext=config.color_ext, overwrite=config.overwrite) as writer:
            writer.extra["source"] = _provenance(config, bag, model, source, undistorter is not None)
            depth_frames = _write_frames(bag, config, plan, model, undistorter, writer)
    return IngestResult(path=Path(config.out), frames=len(plan.color_index), images_in_bag=len(color_stamps),
                        dropped_without_pose=dropped_pose, dropped_by_keyframing=dropped_kf,
                        depth_frames=depth_frames, K=model.K, size=model.size,
                        undistorted=model.distortion_model if undistorter else None, world_frame=world,
                        warnings=tuple(warnings), pose_source=_describe_source(source, config))


def default_camera_info_topic(image_topic: str) -> str:
    """image_transport convention: /ns/image_raw[/compressed] -> /ns/camera_info."""
    parts = image_topic.rstrip("/").split("/")
    if parts[-1] in ("compressed", "compressedDepth", "theora"):
        parts = parts[:-1]
    return "/".join(parts[:-1]) + "/camera_info"


def _camera_model(bag: BagReader, config: IngestConfig) -> CameraModel:
    """Intrinsics from --K (size from the first image) or from the first CameraInfo message."""
    if config.intrinsics is not None:
        first = next(bag.messages([config.image_topic]), None)
        if first is None:
            raise BagError(f"image topic {config.image_topic} has no messages")
        h, w = decode_rgb(first.msg).shape[:2]
        return pinhole_model(*config.intrinsics, size=(w, h))
    topic = config.camera_info_topic
    if topic is None:
        guess = default_camera_info_topic(config.image_topic)
        topic = guess if guess in bag.topics else None
    if topic is None:
        have = ", ".join(bag.topics_of_type(CAMERA_INFO_TYPES)) or "none"
        raise BagError(f"no CameraInfo for {config.image_topic}: pass --camera-info-topic (available: {have}) "
                       "or --K fx fy cx cy")
    bag.require_topic(topic, CAMERA_INFO_TYPES, "camera info")
    first = next(bag.messages([topic]), None)
    if first is None:
        raise BagError(f"camera info topic {topic} has no messages; pass --K fx fy cx cy")
    try:
        return camera_info_to_model(first.msg)
    except MessageError as err:
        raise MessageError(f"{topic}: {err}") from err


DISCOVERY_RULE = "the TF chain {world} -> the image's frame_id, when the bag's /tf and /tf_static connect them"


def discover_pose_tf(tf: TfBuffer, camera_frame: str, world_frame: str = "map") -> tuple[str, str] | None:
    """The pose-discovery rule shared by `kd3d ingest` and `kd3d replay` (see DISCOVERY_RULE).

    Without --pose-tf or --pose-topic, camera poses come from the TF chain world_frame -> camera_frame (the
    image header's frame_id) when the bag's TF connects the two; otherwise there are none.
    """
    world, camera = world_frame.lstrip("/"), camera_frame.lstrip("/")
    if world and camera and world != camera and tf.connected(world, camera):
        return world, camera
    return None


def _pose_source(bag: BagReader, config: IngestConfig) -> PoseSource | None:
    if config.pose_tf is not None:
        return tf_pose_source(bag, config.pose_tf[0], config.pose_tf[1], config.max_dt_s)
    if config.pose_topic is not None:
        return topic_pose_source(bag, config.pose_topic, config.max_dt_s)
    tf = load_tf(bag)
    chain = discover_pose_tf(tf, _first_frame_id(bag, config.image_topic))
    return TfPoseSource(tf, chain[0], chain[1], round(config.max_dt_s * 1e9)) if chain else None


def _describe_source(source: PoseSource | None, config: IngestConfig) -> str:
    """Where the poses came from, for the command's summary line."""
    if source is None:
        return ("none (no --pose-tf/--pose-topic, and no TF chain map -> image frame in the bag): poses are "
                "unknown")
    given = config.pose_tf is not None or config.pose_topic is not None
    return source.description + ("" if given else " (found by the rule: " + DISCOVERY_RULE.format(world="map")
                                 + "; choose another with --pose-tf or --pose-topic)")


def _first_frame_id(bag: BagReader, topic: str) -> str:
    first = next(bag.messages([topic]), None)
    return str(first.msg.header.frame_id).lstrip("/") if first is not None else ""


def _frame_warnings(bag: BagReader, config: IngestConfig, source: PoseSource | None) -> list[str]:
    """Frame-id mismatches that the user should know about (they are not errors: frame ids are often sloppy)."""
    image_frame = _first_frame_id(bag, config.image_topic)
    out = []
    if config.depth_topic is not None:
        depth_frame = _first_frame_id(bag, config.depth_topic)
        if depth_frame and image_frame and depth_frame != image_frame:
            out.append(f"depth frame {depth_frame!r} differs from colour frame {image_frame!r}; assuming the depth "
                       "is registered to the colour camera")
    child = getattr(getattr(source, "trajectory", None), "child_frame_id", "").lstrip("/")
    if child and image_frame and child != image_frame:
        out.append(f"{source.description} gives poses of {child!r}, not of the image frame {image_frame!r}; "
                   "using them as camera poses (use --pose-tf to compose a TF chain instead)")
    return out


def _plan_frames(stamps: list[int], source: PoseSource | None, config: IngestConfig,
                 warnings: list[str]) -> tuple[_Plan, int, int]:
    """Poses for every colour stamp, then keyframes. Returns (plan, dropped without pose, dropped by keyframing)."""
    poses = [source.pose_at(s) if source is not None else None for s in stamps]
    candidates = [i for i in range(len(stamps)) if source is None or poses[i] is not None]
    dropped = len(stamps) - len(candidates)
    if source is not None and not candidates:
        raise BagError(f"none of the {len(stamps)} images on {config.image_topic} could be associated with a pose "
                       f"from {source.description} within {config.max_dt_s:g} s")
    if dropped:
        warnings.append(f"dropped {dropped} of {len(stamps)} images without a pose from {source.description} "
                        f"within {config.max_dt_s:g} s")
    kept = _keyframes(candidates, poses, config)
    plan = _Plan(color_index=kept, stamps=[stamps[i] for i in kept], poses=[poses[i] for i in kept],
                 depth_index=[-1] * len(kept))
    return plan, dropped, len(candidates) - len(kept)


def _keyframes(candidates: list[int], poses: list[np.ndarray | None], config: IngestConfig) -> list[int]:
    if config.min_motion is None:
        return candidates[::config.stride]
    min_t, min_deg = config.min_motion
    kept = [candidates[0]]
    for i in candidates[1:]:
        err = pose_error(poses[i], poses[kept[-1]])  # type: ignore[arg-type]
        if err.translation_m >= min_t or err.rotation_deg >= min_deg:
            kept.append(i)
    return kept


def _plan_depth(bag: BagReader, config: IngestConfig, plan: _Plan, warnings: list[str]) -> None:
    """Nearest depth message (by header stamp, within max_dt) for every kept colour frame."""
    depth = [s.stamp_ns for s in bag.header_stamps(config.depth_topic)]  # type: ignore[arg-type]
    order = np.argsort(np.asarray(depth, dtype=np.int64), kind="stable")
    sorted_stamps = np.asarray(depth, dtype=np.int64)[order]
    nearest = associate_nearest(plan.stamps, sorted_stamps, round(config.max_dt_s * 1e9))
    plan.depth_index = [int(order[j]) if j >= 0 else -1 for j in nearest]
    missing = sum(1 for j in plan.depth_index if j < 0)
    if missing == len(plan.depth_index):
        raise BagError(f"no depth image on {config.depth_topic} lies within {config.max_dt_s:g} s of any kept "
                       f"colour image ({len(depth)} depth messages)")
    if missing:
        warnings.append(f"{missing} of {len(plan.depth_index)} frames have no depth within {config.max_dt_s:g} s "
                        "and are stored without depth")


def _provenance(config: IngestConfig, bag: BagReader, model: CameraModel, source: PoseSource | None,
                undistorted: bool) -> dict:
    """What kd3d.json records about where the scene came from."""
    return {"bag": str(Path(config.bag).resolve()), "storage": bag.storage.value, "image_topic": config.image_topic,
            "depth_topic": config.depth_topic, "pose_source": source.description if source else None,
            "max_dt_s": config.max_dt_s, "camera_model": model.distortion_model,
            "distortion": [float(v) for v in model.D], "undistorted": undistorted,
            "depth_assumption": "registered to colour; resized (nearest) when sizes differ"}


def _write_frames(bag: BagReader, config: IngestConfig, plan: _Plan, model: CameraModel,
                  undistorter: Undistorter | None, writer: SceneWriter) -> int:
    """Second pass: decode the planned messages in bag order and add frames in plan order."""
    from tqdm import tqdm

    color_slot = {c: k for k, c in enumerate(plan.color_index)}
    depth_users: dict[int, int] = {}
    for d in plan.depth_index:
        if d >= 0:
            depth_users[d] = depth_users.get(d, 0) + 1
    colors: dict[int, np.ndarray] = {}
    depths: dict[int, np.ndarray] = {}
    counters = {config.image_topic: 0, config.depth_topic: 0}
    state = {"next": 0, "depth_frames": 0}
    topics = [config.image_topic] + ([config.depth_topic] if config.depth_topic else [])
    bar = tqdm(total=len(plan.color_index), desc="ingest", unit="frame", disable=not config.progress)
    for topic, msgtype, _, raw in bag.raw_messages(topics):
        index = counters[topic]
        counters[topic] += 1
        if topic == config.image_topic and index in color_slot:
            rgb = _decode(decode_rgb, bag.deserialize(raw, msgtype, topic), topic, index)
            colors[color_slot[index]] = _fit_color(rgb, model, undistorter, topic)
        elif topic == config.depth_topic and index in depth_users:
            depth = _decode(decode_depth, bag.deserialize(raw, msgtype, topic), topic, index)
            depths[index] = _fit_depth(depth, model, undistorter)
        _flush(plan, colors, depths, depth_users, writer, config.split, state, bar.update)
    bar.close()
    if state["next"] != len(plan.color_index):
        raise BagError(f"bag {bag.path} ended before all planned frames were read "
                       f"({state['next']} of {len(plan.color_index)})")
    return state["depth_frames"]


def _flush(plan: _Plan, colors: dict[int, np.ndarray], depths: dict[int, np.ndarray], depth_users: dict[int, int],
           writer: SceneWriter, split: Split, state: dict[str, int], tick: Callable[[int], object]) -> None:
    """Write every frame at the head of the plan whose colour (and depth, if planned) is decoded."""
    while state["next"] < len(plan.color_index):
        k = state["next"]
        d = plan.depth_index[k]
        if k not in colors or (d >= 0 and d not in depths):
            return
        depth = depths.get(d) if d >= 0 else None
        writer.add(colors.pop(k), depth=depth, world_T_cam=plan.poses[k], stamp_ns=plan.stamps[k], split=split)
        if d >= 0:
            state["depth_frames"] += 1
            depth_users[d] -= 1
            if depth_users[d] == 0:
                depths.pop(d)
        state["next"] += 1
        tick(1)


def _decode(fn: Callable[[object], np.ndarray], msg: object, topic: str, index: int) -> np.ndarray:
    try:
        return fn(msg)
    except MessageError as err:
        raise MessageError(f"{topic} message {index}: {err}") from err


def _fit_color(rgb: np.ndarray, model: CameraModel, undistorter: Undistorter | None, topic: str) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) != tuple(model.size):
        raise MessageError(f"{topic} images are {rgb.shape[1]}x{rgb.shape[0]} but the camera calibration is for "
                           f"{model.size[0]}x{model.size[1]}")
    return undistorter.rgb(rgb) if undistorter is not None else rgb


def _fit_depth(depth: np.ndarray, model: CameraModel, undistorter: Undistorter | None) -> np.ndarray:
    import cv2

    if (depth.shape[1], depth.shape[0]) != tuple(model.size):
        depth = cv2.resize(depth, tuple(model.size), interpolation=cv2.INTER_NEAREST)
    return undistorter.depth(depth) if undistorter is not None else depth
