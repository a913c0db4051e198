"""Reading any bag (rosbag2 sqlite3 or mcap folders, ROS 1 .bag files) through rosbags' AnyReader.

Every rosbags/sqlite/mcap failure is turned into one `BagError` naming the bag, so a missing, truncated or
garbled bag gives one clear line instead of a traceback.
"""
from __future__ import annotations

import contextlib
import re
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from kd3d_core.errors import BagError, Kd3dError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPES = ("sensor_msgs/msg/CameraInfo",)
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry", "geometry_msgs/msg/TransformStamped")
TF_TYPE = "tf2_msgs/msg/TFMessage"


class BagStorage(str, Enum):
    """On-disk bag format."""

    SQLITE3 = "sqlite3"
    MCAP = "mcap"
    ROS1 = "ros1"


@dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: name, ROS message type and message count."""

    name: str
    msgtype: str
    count: int


class BagMessage(NamedTuple):
    """A deserialised message with its topic and the bag's receive (log) time in ns."""

    topic: str
    log_ns: int
    msg: Any


class RawStamp(NamedTuple):
    """Times of one message read without deserialising it: log time and header stamp (ns)."""

    log_ns: int
    stamp_ns: int


def resolve_bag_path(path: Path | str) -> Path:
    """The path rosbags opens: a rosbag2 folder (also when given its .db3/.mcap/metadata.yaml) or a .bag file.

    Raises:
        BagError: the path does not exist or is not a bag.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_file() and path.suffix == ".bag":
        return path
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        return path.parent
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
        return path
    raise BagError(f"{path} is not a bag (expected a rosbag2 folder or a ROS 1 .bag file)")


class BagReader:
    """An open bag. Use `open_bag(path)` as a context manager.

    Attributes:
        path: the bag path as opened.
        storage: sqlite3, mcap or ros1.
    """

    def __init__(self, path: Path) -> None:
        from rosbags.highlevel import AnyReader

        from kd3d_core.messages import ros2_typestore

        self.path = resolve_bag_path(path)
        self._alias_dir: tempfile.TemporaryDirectory | None = None
        try:
            self._reader = AnyReader([self._reader_path()], default_typestore=ros2_typestore())
            self._reader.open()
        except Kd3dError:
            raise
        except Exception as err:  # rosbags, sqlite3, mcap and YAML errors all mean "unreadable bag"
            raise BagError(f"cannot open bag {self.path}: {_describe(err)}") from err
        self.storage = self._detect_storage()
        self.is_ros2 = self.storage is not BagStorage.ROS1

    def _reader_path(self) -> Path:
        """The path to hand rosbags: it takes any path ending in .bag for a ROS 1 bag, so a rosbag2 folder named
        `x.bag` is opened through a symlink without that suffix."""
        if not (self.path.is_dir() and self.path.suffix == ".bag"):
            return self.path
        self._alias_dir = tempfile.TemporaryDirectory(prefix="kd3d-bag-")
        alias = Path(self._alias_dir.name) / self.path.stem
        alias.symlink_to(self.path.resolve(), target_is_directory=True)
        return alias

    def _detect_storage(self) -> BagStorage:
        if self.path.suffix == ".bag" and self.path.is_file():
            return BagStorage.ROS1
        text = (self.path / "metadata.yaml").read_text(errors="replace")
        match = re.search(r"storage_identifier:\s*['\"]?(\w+)", text)
        return BagStorage.MCAP if match and match.group(1) == "mcap" else BagStorage.SQLITE3

    def __enter__(self) -> BagReader:  # noqa: PYI034 (typing.Self needs Python 3.11; Humble has 3.10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the bag files."""
        with contextlib.suppress(Exception):  # closing a half-broken bag must not hide the error that got us here
            self._reader.close()
        if self._alias_dir is not None:
            self._alias_dir.cleanup()

    @property
    def topics(self) -> dict[str, TopicSummary]:
        """Topic name -> summary, sorted by name."""
        return {name: TopicSummary(name, info.msgtype or "?", int(info.msgcount))
                for name, info in sorted(self._reader.topics.items())}

    @property
    def start_ns(self) -> int:
        """Log time of the first message."""
        return int(self._reader.start_time) if self.message_count else 0

    @property
    def end_ns(self) -> int:
        """Log time of the last message."""
        return int(self._reader.end_time) - 1 if self.message_count else 0

    @property
    def message_count(self) -> int:
        """Number of messages in the bag."""
        return int(self._reader.message_count)

    def topics_of_type(self, msgtypes: Sequence[str]) -> list[str]:
        """Names of the topics whose type is one of `msgtypes`."""
        return [t.name for t in self.topics.values() if t.msgtype in msgtypes]

    def require_topic(self, name: str, msgtypes: Sequence[str], role: str) -> TopicSummary:
        """The topic `name`, checked to exist with one of `msgtypes`.

        Raises:
            BagError: naming the available topics of the wanted types.
        """
        topic = self.topics.get(name)
        if topic is None or topic.msgtype not in msgtypes:
            have = ", ".join(self.topics_of_type(msgtypes)) or "none"
            what = "not in the bag" if topic is None else f"of type {topic.msgtype}"
            raise BagError(f"{role} topic {name} is {what}; available {role} topics: {have}")
        return topic

    def _connections(self, topics: Sequence[str]) -> list[Any]:
        wanted = set(topics)
        return [c for c in self._reader.connections if c.topic in wanted]

    def raw_messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log_ns, raw bytes) of the given topics in log-time order, without deserialising."""
        connections = self._connections(topics)
        if not connections:
            return
        try:
            for conn, log_ns, raw in self._reader.messages(connections=connections):
                yield conn.topic, conn.msgtype, int(log_ns), raw
        except Kd3dError:
            raise
        except Exception as err:  # a truncated or corrupt storage file fails here, mid-iteration
            raise BagError(f"bag {self.path} is corrupt or truncated: {_describe(err)}") from err

    def messages(self, topics: Sequence[str]) -> Iterator[BagMessage]:
        """Deserialised messages of the given topics in log-time order."""
        for topic, msgtype, log_ns, raw in self.raw_messages(topics):
            yield BagMessage(topic, log_ns, self.deserialize(raw, msgtype, topic))

    def deserialize(self, raw: bytes, msgtype: str, topic: str = "?") -> Any:
        """One raw message -> a rosbags message object."""
        try:
            return self._reader.deserialize(raw, msgtype)
        except Exception as err:
            raise BagError(f"bag {self.path}: cannot deserialise a {msgtype} message on {topic}: "
                           f"{_describe(err)}") from err

    def header_stamps(self, topic: str) -> list[RawStamp]:
        """(log time, header stamp) of every message of a topic whose type starts with a std_msgs/Header.

        Reads the stamp from the serialised bytes (no image is deserialised), so scanning an image topic is
        cheap. A zero header stamp is replaced by the log time (some drivers leave stamps empty).
        """
        out = []
        for _, _, log_ns, raw in self.raw_messages([topic]):
            stamp = raw_header_stamp(raw, self.is_ros2)
            out.append(RawStamp(log_ns, stamp if stamp > 0 else log_ns))
        return out


def raw_header_stamp(raw: bytes, is_ros2: bool) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header.

    CDR (ROS 2): 4-byte encapsulation header (byte 1 odd = little endian), then int32 sec, uint32 nanosec.
    ROS 1: uint32 seq, then uint32 secs, uint32 nsecs, little endian.
    """
    try:
        if is_ros2:
            order = "<" if raw[1] & 1 else ">"
            sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
        else:
            sec, nanosec = struct.unpack_from("<II", raw, 4)
    except (struct.error, IndexError) as err:
        raise BagError(f"message of {len(raw)} bytes is too short to hold a header") from err
    return int(sec) * 1_000_000_000 + int(nanosec)


def _describe(err: BaseException) -> str:
    """One line (at most ~300 characters) describing a low-level error."""
    text = " ".join(" ".join(str(a) for a in err.args).split()) if err.args else ""
    name = type(err).__name__
    text = text if name in ("AnyReaderError", "ReaderError") else f"{name}: {text}" if text else name
    return text if len(text) <= 300 else text[:297] + "..."


def open_bag(path: Path | str) -> BagReader:
    """Open a bag for reading; use as `with open_bag(p) as bag:`.

    Raises:
        BagError: missing path, not a bag, or unreadable (corrupt/truncated) storage or metadata.
    """
    return BagReader(Path(path))

