"""Where camera poses come from in a bag: a TF chain between two frames, or a pose topic.

Both give `world_T_x` at an image stamp (or None when nothing is close enough in time), through the same
`PoseSource` interface, so ingestion and replay evaluation do not care which one the user chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kd3d_core.bags.reader import POSE_TYPES, BagReader
from kd3d_core.bags.tf import TfBuffer, TfLookupError, load_tf
from kd3d_core.bags.trajectory import Trajectory
from kd3d_core.errors import BagError, MessageError
from kd3d_core.messages import stamped_pose_from_msg


class PoseSource(Protocol):
    """Poses of one frame in a world frame, by stamp."""

    description: str
    world_frame: str

    def pose_at(self, stamp_ns: int) -> np.ndarray | None:
        """world_T_x at the stamp, or None when it cannot be associated."""


@dataclass
class TfPoseSource:
    """parent_T_child from a TF buffer (e.g. map -> camera_color_optical_frame)."""

    buffer: TfBuffer
    parent: str
    child: str
    max_dt_ns: int

    @property
    def description(self) -> str:
        """For messages: which chain this is."""
        return f"TF {self.parent} -> {self.child}"

    @property
    def world_frame(self) -> str:
        """The parent frame."""
        return self.parent

    def pose_at(self, stamp_ns: int) -> np.ndarray | None:
        """parent_T_child, or None when a dynamic edge has no sample near the stamp."""
        try:
            return self.buffer.lookup(self.parent, self.child, stamp_ns, self.max_dt_ns)
        except TfLookupError:
            return None


@dataclass
class TopicPoseSource:
    """Poses from a PoseStamped / PoseWithCovarianceStamped / Odometry / TransformStamped topic."""

    topic: str
    trajectory: Trajectory
    max_dt_ns: int

    @property
    def description(self) -> str:
        """For messages: the topic."""
        return f"pose topic {self.topic}"

    @property
    def world_frame(self) -> str:
        """The header frame of the pose messages."""
        return self.trajectory.frame_id or "map"

    def pose_at(self, stamp_ns: int) -> np.ndarray | None:
        """The pose at the stamp (see Trajectory.at)."""
        return self.trajectory.at(stamp_ns, self.max_dt_ns)


def read_pose_topic(bag: BagReader, topic: str) -> Trajectory:
    """Every pose of a pose topic as a Trajectory (header stamps).

    Raises:
        BagError: unknown topic (listing the pose topics), no messages, or a NaN/INF pose.
    """
    bag.require_topic(topic, POSE_TYPES, "pose")
    stamps, poses, frames, children = [], [], set(), set()
    for item in bag.messages([topic]):
        try:
            pose = stamped_pose_from_msg(item.msg)
        except MessageError as err:
            raise BagError(f"pose topic {topic} at log time {item.log_ns} ns: {err}") from err
        stamps.append(pose.stamp_ns)
        poses.append(pose.T)
        frames.add(pose.frame_id)
        children.add(pose.child_frame_id)
    if not stamps:
        raise BagError(f"pose topic {topic} has no messages")
    if len(frames) > 1:
        raise BagError(f"pose topic {topic} mixes frames {sorted(frames)}")
    return Trajectory(stamps, poses, frames.pop(), children.pop() if len(children) == 1 else "")


def tf_pose_source(bag: BagReader, parent: str, child: str, max_dt_s: float) -> TfPoseSource:
    """A pose source over the bag's /tf and /tf_static.

    Raises:
        BagError: the bag has no TF, or a frame is not in it (the message lists the frames).
    """
    buffer = load_tf(bag)
    if not buffer.frames:
        raise BagError(f"bag {bag.path} has no /tf or /tf_static transforms")
    for name in (parent, child):
        if name.lstrip("/") not in buffer.frames:
            raise BagError(f"TF frame {name!r} is not in bag {bag.path} (frames: {', '.join(sorted(buffer.frames))})")
    return TfPoseSource(buffer, parent.lstrip("/"), child.lstrip("/"), round(max_dt_s * 1e9))


def topic_pose_source(bag: BagReader, topic: str, max_dt_s: float) -> TopicPoseSource:
    """A pose source over a pose topic."""
    return TopicPoseSource(topic, read_pose_topic(bag, topic), round(max_dt_s * 1e9))
