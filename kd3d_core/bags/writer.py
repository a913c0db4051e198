"""Writing bags: rosbag2 (version 8 metadata, sqlite3 or mcap storage) and ROS 1 .bag files, atomically.

Version 8 is the newest metadata version whose fields Humble's `ros2 bag play` reads without complaint
(it ignores what it does not know). /tf_static is offered as transient-local (latched in ROS 1), which tf2
listeners require to receive static transforms from a player.
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kd3d_core.bags.reader import BagStorage
from kd3d_core.errors import BagError, Kd3dError
from kd3d_core.io_utils import replace_output, staging_dir
from kd3d_core.messages.factory import TypestoreFactory, ros1_typestore, ros2_typestore

ROSBAG2_VERSION = 8
LATCHED_TOPICS = ("/tf_static",)


def _latched_qos() -> Any:
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


class BagWriter:
    """Writes messages built with `self.typestore` (ROS 2 Humble, or ROS 1 Noetic for .bag files).

    Use through `BagWriter.create(path, storage)`; topics are registered on their first message.
    """

    def __init__(self, writer: Any, storage: BagStorage) -> None:
        self._writer = writer
        self.storage = storage
        self.typestore = ros1_typestore() if storage is BagStorage.ROS1 else ros2_typestore()
        self.factory = TypestoreFactory(self.typestore)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    @classmethod
    @contextlib.contextmanager
    def create(cls, path: Path | str, storage: BagStorage | str = BagStorage.SQLITE3,
               overwrite: bool = False) -> Iterator[BagWriter]:
        """Open a writer; the bag appears at `path` only when the block succeeds.

        Args:
            path: rosbag2 folder to create, or a .bag file for storage "ros1".
            storage: sqlite3, mcap or ros1.
            overwrite: replace an existing bag at `path`.
        """
        storage = BagStorage(storage)
        path = Path(path)
        if path.exists() and not overwrite:
            raise BagError(f"output bag {path} already exists (pass --overwrite to replace it)")
        # staging_dir: permissions follow the umask, leftovers of killed runs are swept, concurrent writers refused.
        with staging_dir(path) as tmp_dir:
            tmp = tmp_dir / path.name
            rosbags_writer = _open_rosbags_writer(tmp, storage)
            if storage is not BagStorage.ROS1:
                # A non-empty custom_data map: readers that parse it (metadata version >= 6) get a map, not null.
                rosbags_writer.set_custom_data("writer", "kd3d")
            with rosbags_writer:
                yield cls(rosbags_writer, storage)
            if path.exists() and not path.is_symlink() and path.is_dir() != tmp.is_dir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()  # --overwrite across storage kinds
            replace_output(tmp, path)

    def write(self, topic: str, msg: Any, log_ns: int) -> None:
        """Serialise and write one message (type from the message's __msgtype__) at log time `log_ns`."""
        msgtype = msg.__msgtype__
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._add_connection(topic, msgtype)
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already carries {conn.msgtype}, cannot write a {msgtype}")
        try:
            if self.storage is BagStorage.ROS1:
                raw = self.typestore.serialize_ros1(msg, msgtype)
            else:
                raw = self.typestore.serialize_cdr(msg, msgtype)
            self._writer.write(conn, int(log_ns), raw)
        except Kd3dError:
            raise
        except Exception as err:
            raise BagError(f"cannot write a {msgtype} message on {topic}: {err}") from err
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _add_connection(self, topic: str, msgtype: str) -> Any:
        latched = topic in LATCHED_TOPICS
        if self.storage is BagStorage.ROS1:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                               latching=1 if latched else None)
        else:
            qos = [_latched_qos()] if latched else []
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos)
        self._connections[topic] = conn
        return conn


def _open_rosbags_writer(path: Path, storage: BagStorage) -> Any:
    if storage is BagStorage.ROS1:
        from rosbags.rosbag1 import Writer as Writer1

        return Writer1(path)
    from rosbags.rosbag2 import StoragePlugin
    from rosbags.rosbag2 import Writer as Writer2

    plugin = StoragePlugin.MCAP if storage is BagStorage.MCAP else StoragePlugin.SQLITE3
    return Writer2(path, version=ROSBAG2_VERSION, storage_plugin=plugin)
