"""Offline replay: run the relocalizer on every image of a bag and write what the ROS node would publish.

Reads Image/CompressedImage + CameraInfo (no ROS runtime), localizes each frame with the same `Relocalizer`
the node uses, and writes a rosbag2 (version 8, sqlite3 or mcap) with the node's topics and types
(kd3d_core.messages.topics): /relocalizer/points (PointCloud2, map frame, x y z + packed rgb),
/relocalizer/pose, /relocalizer/pose_with_covariance, /tf and /diagnostics, each stamped with its input
image's stamp. When the input bag has ground truth (a TF chain or a pose topic), the estimates are evaluated
and the report is written next to the output bag (OUT_BAG.eval/).
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kd3d_core.bags import (
    CAMERA_INFO_TYPES,
    IMAGE_TYPES,
    BagReader,
    BagStorage,
    BagWriter,
    PoseSource,
    TfBuffer,
    TfLookupError,
    TfPoseSource,
    load_tf,
    open_bag,
    topic_pose_source,
)
from kd3d_core.errors import BagError, ConfigError, Kd3dError, MessageError
from kd3d_core.evaluation import Trajectory, evaluate_trajectories, write_poses, write_report
from kd3d_core.evaluation.seen import seen_warning
from kd3d_core.geometry import is_valid_pose
from kd3d_core.localization import FailureReason, PoseEstimate, Relocalizer, predicted_cloud
from kd3d_core.localization.outputs import OutputFrames, build_localization_messages
from kd3d_core.localization.result import RECOVERED_BY
from kd3d_core.localization.roll import RollTracker
from kd3d_core.messages import (CameraModel, build_header, camera_info_to_model, decode_rgb, header_stamp_ns,
                                 image_input_topic)
from kd3d_core.messages import topics
from kd3d_core.undistort import RelocalizerInput


@dataclass(frozen=True)
class ReplayConfig:
    """What to read, what to write and where.

    Attributes:
        in_bag, out_bag: input bag (rosbag2 folder or ROS 1 .bag) and output rosbag2 folder.
        image_topic: colour topic; with `compressed`, "/compressed" is appended unless already there.
        camera_info_topic: CameraInfo topic; None tries <image topic namespace>/camera_info.
        storage: output storage plugin (sqlite3 or mcap).
        pose_tf: (parent, child) TF chain of ground-truth camera poses; pose_topic: a pose topic instead.
            Neither: the discovery rule shared with ingest (kd3d_core.ingest.discover_pose_tf): the chain
            map frame -> image frame when the bag's TF connects them.
        max_dt_s: tolerance for ground truth and odometry association.
        output_ns: namespace of the output topics (<ns>/points, <ns>/pose, <ns>/pose_with_covariance); the
            default is the node's (/relocalizer), so a replayed bag shows in the shipped RViz config.
        map_frame: world frame id (None: the model's).
        odom_frame: publish map -> odom when the input TF has odom -> camera at the image stamp.
        cloud_min_conf, cloud_voxel_m, cloud_max_points: point cloud thinning (see predicted_cloud).
        evaluate: write the evaluation report when ground truth exists.
    """

    in_bag: Path
    out_bag: Path
    image_topic: str
    camera_info_topic: str | None = None
    compressed: bool = False
    storage: BagStorage = BagStorage.SQLITE3
    pose_tf: tuple[str, str] | None = None
    pose_topic: str | None = None
    max_dt_s: float = 0.05
    output_ns: str = "/" + topics.NODE_NAME
    map_frame: str | None = None
    odom_frame: str = "odom"
    cloud_min_conf: float = 0.0
    cloud_voxel_m: float | None = None
    cloud_max_points: int | None = 20000
    evaluate: bool = True
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise ConfigError on contradictory options."""
        if self.pose_tf is not None and self.pose_topic is not None:
            raise ConfigError("give one ground-truth source: --pose-tf PARENT CHILD or --pose-topic TOPIC")
        if BagStorage(self.storage) is BagStorage.ROS1:
            raise ConfigError("replay writes rosbag2 (sqlite3 or mcap), not ROS 1 bags")
        if not self.max_dt_s > 0:
            raise ConfigError(f"--max-dt must be positive, got {self.max_dt_s}")

    @property
    def input_topic(self) -> str:
        """The image topic actually read."""
        return image_input_topic(self.image_topic, self.compressed)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did."""

    out_bag: Path
    frames: int
    localized: int
    failures: dict[str, int]
    median_timings_ms: dict[str, float]
    tf_child_frame: str | None
    ground_truth: str | None
    report: dict[str, Any] | None = None
    report_dir: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    recovered: dict[str, int] = field(default_factory=dict)  # localized frames by second chance (RECOVERED_BY)
    turned_upright: int = 0  # localized frames whose pose came from the look at the image turned upright


class _CameraInfos:
    """CameraInfo by stamp: the message with the image's stamp, else the latest before it, else the first."""

    def __init__(self, bag: BagReader, topic: str) -> None:
        self.stamps: list[int] = []
        # A CameraInfo that cannot be used (unsupported distortion, absurd size) is kept as its error: the frames
        # it applies to fail one by one (bad_intrinsics) instead of ending the replay.
        self.models: list[CameraModel | MessageError] = []
        for item in bag.messages([topic]):
            self.stamps.append(header_stamp_ns(item.msg) or item.log_ns)
            try:
                self.models.append(camera_info_to_model(item.msg))
            except MessageError as err:
                self.models.append(MessageError(f"camera info on {topic}: {err}"))
        if not self.models:
            raise BagError(f"camera info topic {topic} has no messages")
        if all(isinstance(m, MessageError) for m in self.models):
            raise BagError(str(self.models[0]))
        order = np.argsort(self.stamps, kind="stable")
        self.stamps = [self.stamps[i] for i in order]
        self.models = [self.models[i] for i in order]

    def at(self, stamp_ns: int) -> CameraModel:
        """The camera model valid at a stamp (MessageError when that CameraInfo was unusable)."""
        i = bisect.bisect_right(self.stamps, stamp_ns) - 1
        model = self.models[max(i, 0)]
        if isinstance(model, MessageError):
            raise model
        return model



def _camera_info_topic(bag: BagReader, config: ReplayConfig) -> str:
    from kd3d_core.ingest import default_camera_info_topic

    topic = config.camera_info_topic
    if topic is None:
        guess = default_camera_info_topic(config.image_topic)
        if guess not in bag.topics:
            have = ", ".join(bag.topics_of_type(CAMERA_INFO_TYPES)) or "none"
            raise BagError(f"no CameraInfo for {config.input_topic}: pass --camera-info-topic (available: {have})")
        topic = guess
    bag.require_topic(topic, CAMERA_INFO_TYPES, "camera info")
    return topic


def _first_image_frame(bag: BagReader, topic: str) -> str:
    for item in bag.messages([topic]):
        return str(item.msg.header.frame_id).lstrip("/") or "camera_optical_frame"
    raise BagError(f"image topic {topic} has no messages")


def _ground_truth(bag: BagReader, tf: TfBuffer, config: ReplayConfig, map_frame: str,
                  camera_frame: str) -> PoseSource | None:
    max_dt_ns = round(config.max_dt_s * 1e9)
    if config.pose_topic is not None:
        return topic_pose_source(bag, config.pose_topic, config.max_dt_s)
    if config.pose_tf is None:
        from kd3d_core.ingest import discover_pose_tf

        chain = discover_pose_tf(tf, camera_frame, map_frame)
        return TfPoseSource(tf, chain[0], chain[1], max_dt_ns) if chain else None
    parent, child = (f.lstrip("/") for f in config.pose_tf)
    if parent in tf.frames and child in tf.frames:
        return TfPoseSource(tf, parent, child, max_dt_ns)
    raise BagError(f"TF frames {parent!r} and {child!r} are not both in {bag.path} "
                   f"(frames: {', '.join(sorted(tf.frames)) or 'none'})")


class _Replayer:
    """State of one replay run (kept out of the config and the relocalizer)."""

    def __init__(self, relocalizer: Relocalizer, config: ReplayConfig, bag: BagReader, writer: BagWriter) -> None:
        self.relocalizer, self.config, self.bag, self.writer = relocalizer, config, bag, writer
        self.infos = _CameraInfos(bag, _camera_info_topic(bag, config))
        self.input = RelocalizerInput()
        self.roll = RollTracker()  # the stream's camera roll (Relocalizer.localize_with_prediction's roll hint)
        self.tf = load_tf(bag)
        camera_frame = _first_image_frame(bag, config.input_topic)
        map_frame = config.map_frame or relocalizer.world_frame
        # A camera frame already in the robot's TF tree (an optical frame is a leaf there) must not get a second
        # parent from us: without odometry the map -> camera TF then names a copy of it.
        tf_camera = camera_frame + "_kd3d" if camera_frame in self.tf.frames else camera_frame
        self.frames = OutputFrames(map_frame, tf_camera, config.odom_frame)
        self.camera_frame = camera_frame
        self.truth = _ground_truth(bag, self.tf, config, map_frame, camera_frame) if config.evaluate else None
        self.estimates: list[tuple[int, np.ndarray]] = []
        self.reference: list[tuple[int, np.ndarray]] = []
        self.failures: Counter[str] = Counter()
        self.recovered: Counter[str] = Counter(dict.fromkeys(RECOVERED_BY, 0))
        self.turned_upright = 0
        self.timings: list[tuple[float, float, float, float]] = []
        self.frames_seen = 0
        self.stamps: list[int] = []
        self.tf_child: str | None = None

    def run(self) -> None:
        topic = self.config.input_topic
        total = self.bag.topics[topic].count
        for item in tqdm(self.bag.messages([topic]), total=total, desc="replay", unit="frame",
                         disable=not self.config.progress):
            self.frames_seen += 1
            self._frame(item.msg, item.log_ns)

    def _frame(self, msg: Any, log_ns: int) -> None:
        stamp = header_stamp_ns(msg) or log_ns
        self.stamps.append(stamp)
        if self.truth is not None:
            try:
                ref = self.truth.pose_at(stamp)
            except (Kd3dError, ValueError):  # e.g. a NaN quaternion in the ground-truth TF
                ref = None
            if ref is not None and is_valid_pose(ref):  # a NaN / non-rigid ground-truth TF cannot score a frame
                self.reference.append((stamp, ref))
        estimate, prediction, rgb = self._localize(msg, stamp)
        self._diagnostics(estimate, stamp, log_ns)
        if not estimate.success:
            self.failures[estimate.failure.value if estimate.failure else "unknown"] += 1
            return
        t = estimate.timings
        self.timings.append((t.predict_ms, t.select_ms, t.pnp_ms, t.refine_ms))
        self.estimates.append((stamp, estimate.world_T_cam))
        if estimate.recovered_by:
            self.recovered[estimate.recovered_by] += 1
        self.turned_upright += bool(estimate.upright_turn_deg)
        cloud = predicted_cloud(prediction, rgb, self.config.cloud_min_conf, self.config.cloud_voxel_m,
                                self.config.cloud_max_points) if prediction is not None else None
        msgs = build_localization_messages(estimate, stamp, self.frames, cloud, self._odom_T_cam(stamp),
                                           self.writer.factory)
        if msgs.cloud is not None:
            self.writer.write(self._topic(topics.CLOUD), msgs.cloud, log_ns)
        self.writer.write(self._topic(topics.POSE), msgs.pose, log_ns)
        self.writer.write(self._topic(topics.POSE_WITH_COVARIANCE), msgs.pose_with_covariance, log_ns)
        self.writer.write(topics.TF, msgs.tf, log_ns)
        self.tf_child = msgs.tf_child_frame

    def _topic(self, declared: str) -> str:
        """A node-relative output name in the configured namespace (the node's own by default)."""
        return self.config.output_ns.rstrip("/") + declared[1:] if declared.startswith("~") else declared

    def _diagnostics(self, estimate: PoseEstimate, stamp: int, log_ns: int) -> None:
        """One DiagnosticArray per frame, with the node's status name (level OK when localized, else WARN)."""
        factory = self.writer.factory
        t = estimate.timings
        values = [factory.make("diagnostic_msgs/msg/KeyValue", key=k, value=v) for k, v in (
            ("inliers", str(estimate.inliers)), ("predict_ms", f"{t.predict_ms:.1f}"), ("pnp_ms", f"{t.pnp_ms:.1f}"))]
        ok = estimate.success
        message = "localized" if ok else f"not localized: {getattr(estimate.failure, 'value', '?')}"
        status = factory.make("diagnostic_msgs/msg/DiagnosticStatus", level=0 if ok else 1,
                              name=topics.DIAGNOSTIC_STATUS_NAME, message=message, hardware_id="kd3d replay",
                              values=values)
        msg = factory.make("diagnostic_msgs/msg/DiagnosticArray", header=build_header(factory, stamp, ""),
                           status=[status])
        self.writer.write(topics.DIAGNOSTICS, msg, log_ns)

    def _localize(self, msg: Any, stamp: int) -> tuple[PoseEstimate, Any, np.ndarray | None]:
        try:
            rgb = decode_rgb(msg)
        except (MessageError, Kd3dError, ValueError, MemoryError) as err:
            return PoseEstimate.failed(FailureReason.BAD_IMAGE, str(err), stamp_ns=stamp), None, None
        try:
            model = self.infos.at(stamp)
            if (rgb.shape[1], rgb.shape[0]) != tuple(model.size):
                raise MessageError(f"image {rgb.shape[1]}x{rgb.shape[0]} but CameraInfo is for "
                                   f"{model.size[0]}x{model.size[1]}")
            rgb, dist = self.input.prepare(model, rgb)
        except MessageError as err:
            return PoseEstimate.failed(FailureReason.BAD_INTRINSICS, str(err), stamp_ns=stamp), None, rgb
        estimate, prediction = self.roll.localize(self.relocalizer, rgb, model.K, dist, stamp)
        return estimate, prediction, rgb

    def _odom_T_cam(self, stamp: int) -> np.ndarray | None:
        odom = self.config.odom_frame
        if not odom or odom not in self.tf.frames or self.camera_frame not in self.tf.frames:
            return None
        try:
            return self.tf.lookup(odom, self.camera_frame, stamp, round(self.config.max_dt_s * 1e9))
        except TfLookupError:
            return None


def replay_bag(relocalizer: Relocalizer, config: ReplayConfig) -> ReplayResult:
    """Replay a bag through the relocalizer (see module docstring).

    Raises:
        BagError, ConfigError: unreadable input, unknown topics, no CameraInfo; the output bag is then not
        created. Bad individual frames are counted as failures, never raised.
    """
    config.validate()
    out = Path(config.out_bag)
    if out.exists() and not config.overwrite:
        raise ConfigError(f"output {out} already exists (pass --overwrite to replace it)")
    with open_bag(config.in_bag) as bag:
        bag.require_topic(config.input_topic, IMAGE_TYPES, "image")
        with BagWriter.create(out, config.storage, overwrite=config.overwrite) as writer:
            rep = _Replayer(relocalizer, config, bag, writer)
            rep.run()
            counts = dict(writer.counts)
    report, report_dir = _evaluate(rep, out) if rep.truth is not None else (None, None)
    meta = getattr(getattr(relocalizer, "predictor", None), "meta", None)
    seen = seen_warning(meta, rep.stamps, "replayed frames") if meta is not None else None
    med = np.median(np.array(rep.timings), axis=0) if rep.timings else np.zeros(4)
    return ReplayResult(
        out_bag=out, frames=rep.frames_seen, localized=len(rep.estimates), failures=dict(rep.failures),
        median_timings_ms=dict(zip(("predict", "select", "pnp", "refine"), map(float, med))),
        tf_child_frame=rep.tf_child, ground_truth=rep.truth.description if rep.truth is not None else None,
        report=report, report_dir=report_dir, counts=counts, warnings=(seen,) if seen else (),
        recovered=dict(rep.recovered), turned_upright=rep.turned_upright)


def _trajectory(items: list[tuple[int, np.ndarray]]) -> Trajectory:
    return Trajectory.from_lists([f"{s // 10**9}.{s % 10**9:09d}" for s, _ in items], [p for _, p in items],
                                 [s / 1e9 for s, _ in items], keyed_by_stamp=True)


def _evaluate(rep: _Replayer, out: Path) -> tuple[dict[str, Any] | None, Path | None]:
    if not rep.reference:
        return None, None
    report_dir = out.parent / f"{out.name}.eval"
    estimates, reference = _trajectory(rep.estimates), _trajectory(rep.reference)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_poses(report_dir / "estimates.tum", estimates, "tum")
    write_poses(report_dir / "reference.tum", reference, "tum")
    # Same stamps on both sides: a tolerance of a microsecond only absorbs float rounding.
    result = evaluate_trajectories(estimates, reference, max_dt_s=1e-6)
    report = write_report(result, report_dir / "report.json", report_dir / "report.md", report_dir / "plots",
                          extra={"ground_truth": rep.truth.description if rep.truth else None})
    return report, report_dir
