"""sensor_msgs/PointCloud2 with x, y, z float32 and a packed `rgb` float32, the layout RViz and Foxglove colour.

The rgb field holds the bytes 0x00RRGGBB of a little-endian uint32 reinterpreted as float32 (PCL's
convention), so in memory each point is: x y z (float32) then b g r 0 (uint8).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from kd3d_core.errors import MessageError
from kd3d_core.messages.factory import as_factory, build_header

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                        "offsets": [0, 4, 8, 12], "itemsize": 16})


class CloudFields(NamedTuple):
    """The payload of a PointCloud2 (unorganised: height 1)."""

    width: int
    point_step: int
    data: np.ndarray
    field_names: tuple[str, ...]


def pack_rgb(rgb_N3: np.ndarray) -> np.ndarray:
    """RGB uint8 (N, 3) -> uint32 0x00RRGGBB (N,)."""
    rgb = np.asarray(rgb_N3, dtype=np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def unpack_rgb(packed_N: np.ndarray) -> np.ndarray:
    """uint32 0x00RRGGBB (N,) -> RGB uint8 (N, 3)."""
    packed = np.asarray(packed_N, dtype=np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)


def points_to_cloud_fields(points_N3: np.ndarray, rgb_N3: np.ndarray | None = None) -> CloudFields:
    """Points (N, 3) in metres and optional RGB uint8 (N, 3) -> PointCloud2 payload (16 bytes a point).

    Without colours the rgb field is still written (white), so every cloud has the same layout.
    """
    points = np.asarray(points_N3)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MessageError(f"points must be (N, 3), got shape {points.shape}")
    if rgb_N3 is not None and np.asarray(rgb_N3).shape != points.shape:
        raise MessageError(f"colours must be (N, 3) like the points, got {np.asarray(rgb_N3).shape}")
    cloud = np.empty(points.shape[0], dtype=POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    cloud["rgb"] = 0x00FFFFFF if rgb_N3 is None else pack_rgb(rgb_N3)
    return CloudFields(width=points.shape[0], point_step=POINT_DTYPE.itemsize,
                       data=np.frombuffer(cloud.tobytes(), dtype=np.uint8), field_names=("x", "y", "z", "rgb"))


def build_pointcloud2(fields: CloudFields, stamp_ns: int, frame_id: str, typestore: Any = None) -> Any:
    """sensor_msgs/msg/PointCloud2 (height 1, little endian, dense) from a payload."""
    factory = as_factory(typestore)
    point_fields = [factory.make("sensor_msgs/msg/PointField", name=name, offset=4 * i, datatype=FLOAT32, count=1)
                    for i, name in enumerate(fields.field_names)]
    return factory.make("sensor_msgs/msg/PointCloud2", header=build_header(factory, stamp_ns, frame_id),
                        height=1, width=fields.width, fields=point_fields, is_bigendian=False,
                        point_step=fields.point_step, row_step=fields.point_step * fields.width,
                        data=fields.data, is_dense=True)


def decode_pointcloud2(msg: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 with float32 x, y, z (and optional packed rgb) -> points (N, 3) float32, RGB (N, 3) or None."""
    offsets = {str(f.name): (int(f.offset), int(f.datatype)) for f in msg.fields}
    if any(offsets.get(k, (0, 0))[1] != FLOAT32 for k in ("x", "y", "z")):
        raise MessageError(f"PointCloud2 needs float32 x, y, z fields, has {sorted(offsets)}")
    order = ">" if msg.is_bigendian else "<"
    names = ["x", "y", "z"] + (["rgb"] if "rgb" in offsets else [])
    dtype = np.dtype({"names": names, "formats": [order + "f4"] * 3 + ([order + "u4"] if "rgb" in offsets else []),
                      "offsets": [offsets[n][0] for n in names], "itemsize": int(msg.point_step)})
    n = int(msg.width) * int(msg.height)
    raw = np.frombuffer(bytes(memoryview(np.asarray(msg.data, dtype=np.uint8))), dtype=np.uint8)
    rows = raw.reshape(int(msg.height), int(msg.row_step))[:, :int(msg.width) * int(msg.point_step)]
    cloud = np.ascontiguousarray(rows).view(dtype).reshape(n)
    points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float32)
    return points, (unpack_rgb(cloud["rgb"]) if "rgb" in offsets else None)
