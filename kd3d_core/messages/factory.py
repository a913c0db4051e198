"""Message construction behind one small interface, so the same builders serve bags and the ROS node.

Builders in this package never name a concrete message class. They ask a `MessageFactory` to make
"sensor_msgs/msg/Image" from keyword fields. Two factories exist:

- `TypestoreFactory` wraps a rosbags typestore (ROS 2 Humble by default, ROS 1 Noetic for .bag files); the
  messages it makes serialise with `typestore.serialize_cdr` / `serialize_ros1`.
- `ModuleFactory` imports ROS Python message packages (`sensor_msgs.msg.Image`, ...) by name, for the rclpy
  node. It converts numpy fields to what generated rclpy classes accept (array.array for sequences, numpy
  for fixed arrays). kd3d_core still never imports rclpy: the imports happen only when the node asks.

Field-name differences between ROS 1 and ROS 2 (CameraInfo `K`/`k`, Header `seq`) are resolved with
`has_field`, so one builder writes either.
"""
from __future__ import annotations

import array
import functools
import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kd3d_core.errors import MessageError

TFMESSAGE_ROS1_DEF = "geometry_msgs/TransformStamped[] transforms\n"


@runtime_checkable
class MessageFactory(Protocol):
    """Makes messages of a type given by its ROS name ("pkg/msg/Name") from keyword fields."""

    def make(self, msgtype: str, **fields: Any) -> Any:
        """A new message of `msgtype` with `fields` set."""

    def has_field(self, msgtype: str, field: str) -> bool:
        """True when `msgtype` has a field called `field`."""


class TypestoreFactory:
    """A `MessageFactory` over a rosbags typestore (messages are rosbags dataclasses)."""

    def __init__(self, typestore: Any) -> None:
        self.typestore = typestore

    def _cls(self, msgtype: str) -> Any:
        try:
            return self.typestore.types[msgtype]
        except KeyError as err:
            raise MessageError(f"message type {msgtype} is not known to the typestore") from err

    def make(self, msgtype: str, **fields: Any) -> Any:
        """A rosbags dataclass instance."""
        try:
            return self._cls(msgtype)(**fields)
        except TypeError as err:
            raise MessageError(f"cannot build {msgtype}: {err}") from err

    def has_field(self, msgtype: str, field: str) -> bool:
        """True when the dataclass has the field."""
        return field in self._cls(msgtype).__dataclass_fields__


_SEQUENCE_TYPECODES = {"uint8": "B", "octet": "B", "int8": "b", "float": "f", "double": "d", "int32": "i",
                       "uint32": "I", "int16": "h", "uint16": "H"}
_NUMPY_DTYPES = {"uint8": np.uint8, "octet": np.uint8, "float": np.float32, "double": np.float64}


class ModuleFactory:
    """A `MessageFactory` over generated ROS Python message modules (rclpy style), imported on demand."""

    @staticmethod
    @functools.cache
    def _cls(msgtype: str) -> Any:
        pkg, kind, name = msgtype.split("/")
        try:
            return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
        except (ImportError, AttributeError) as err:
            raise MessageError(f"message type {msgtype} cannot be imported: {err}") from err

    def make(self, msgtype: str, **fields: Any) -> Any:
        """An instance of the generated class, numpy fields converted to what its setters accept."""
        cls = self._cls(msgtype)
        types = cls.get_fields_and_field_types()
        return cls(**{k: _convert_for_rclpy(v, types.get(k, "")) for k, v in fields.items()})

    def has_field(self, msgtype: str, field: str) -> bool:
        """True when the generated class declares the field."""
        return field in self._cls(msgtype).get_fields_and_field_types()


def _convert_for_rclpy(value: Any, field_type: str) -> Any:
    """numpy arrays -> array.array for `sequence<T>` fields, numpy of the declared dtype for `T[n]` fields;
    ints -> bytes of length 1 for `byte`/`octet` fields (rclpy's setters reject ints there; rosbags wants ints)."""
    if field_type in ("byte", "octet") and isinstance(value, (int, np.integer)):
        return bytes([int(value)])
    if not isinstance(value, np.ndarray):
        return value
    if field_type.startswith("sequence<"):
        base = field_type[len("sequence<"):].split(",")[0].rstrip(">")
        code = _SEQUENCE_TYPECODES.get(base)
        if code is None:
            return value.tolist()
        return array.array(code, np.ascontiguousarray(value, dtype=np.dtype(code)).tobytes())
    if field_type.endswith("]"):
        base = field_type.split("[")[0]
        return np.ascontiguousarray(value, dtype=_NUMPY_DTYPES.get(base, value.dtype))
    return value.tolist()


@functools.cache
def ros2_typestore() -> Any:
    """The rosbags ROS 2 Humble typestore (cached: it is immutable in use and costly to build)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


@functools.cache
def ros1_typestore() -> Any:
    """The rosbags ROS 1 Noetic typestore, plus tf2_msgs/TFMessage (missing from rosbags' Noetic store)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    if "tf2_msgs/msg/TFMessage" not in store.types:
        store.register(get_types_from_msg(TFMESSAGE_ROS1_DEF, "tf2_msgs/msg/TFMessage"))
    return store


def as_factory(typestore: Any = None) -> MessageFactory:
    """A factory from a rosbags typestore, an existing factory, or None (ROS 2 Humble)."""
    if typestore is None:
        return TypestoreFactory(ros2_typestore())
    if isinstance(typestore, (TypestoreFactory, ModuleFactory)) or (
            hasattr(typestore, "make") and hasattr(typestore, "has_field")):
        return typestore
    if hasattr(typestore, "types"):
        return TypestoreFactory(typestore)
    raise MessageError(f"expected a rosbags typestore or a MessageFactory, got {type(typestore).__name__}")


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a stamp in int nanoseconds (negative stamps are refused, as ROS does)."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise MessageError(f"stamp {stamp_ns} ns is negative")
    return stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time (sec, nanosec), a rospy Time (secs, nsecs) or an int."""
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    if hasattr(stamp, "nsecs"):
        return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)
    raise MessageError(f"cannot read a time stamp from {type(stamp).__name__}")


def header_stamp_ns(msg: Any) -> int:
    """Stamp (ns) of a message's header."""
    try:
        return stamp_to_ns(msg.header.stamp)
    except AttributeError as err:
        raise MessageError(f"{type(msg).__name__} has no header.stamp") from err


def build_time(factory: MessageFactory, stamp_ns: int) -> Any:
    """builtin_interfaces/msg/Time."""
    sec, nanosec = split_stamp(stamp_ns)
    return factory.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def build_header(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/msg/Header (with seq = 0 in ROS 1)."""
    fields: dict[str, Any] = {"stamp": build_time(factory, stamp_ns), "frame_id": str(frame_id)}
    if factory.has_field("std_msgs/msg/Header", "seq"):
        fields["seq"] = 0
    return factory.make("std_msgs/msg/Header", **fields)
