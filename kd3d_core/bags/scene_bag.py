"""Write a scene's frames as a bag, the way a ROS camera driver plus a ground-truth localizer would record it.

Topics (defaults): Image (rgb8) or CompressedImage on `image_topic`(/compressed), CameraInfo, optional depth
(32FC1 metres or 16UC1 millimetres), and ground truth as TF: a dynamic map -> camera_link on /tf and the
static camera_link -> camera_color_optical_frame (the REP 103 body-to-optical rotation) on /tf_static, so
readers must compose a chain to get map -> optical frame. Every message of a frame carries the frame's stamp.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kd3d_core.bags.reader import BagStorage
from kd3d_core.bags.writer import BagWriter
from kd3d_core.errors import BagError, ConfigError
from kd3d_core.geometry import invert_pose
from kd3d_core.messages import (
    CameraModel,
    build_camera_info,
    build_compressed_image,
    build_image,
    build_tf_message,
    build_transform_stamped,
    depth_to_image_fields,
    encode_compressed_rgb,
    rgb_to_image_fields,
)
from kd3d_core.scene import Frame, Scene, Split

# camera_link (x forward, y left, z up) -> optical frame (x right, y down, z forward), REP 103.
LINK_T_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
DEFAULT_START_NS = 1_700_000_000 * 10**9


@dataclass(frozen=True)
class SceneBagResult:
    """What write_scene_bag wrote."""

    path: Path
    storage: BagStorage
    frames: int
    counts: dict[str, int]


def _frame_stamps(frames: list[Frame], rate_hz: float | None, start_ns: int) -> list[int]:
    """Frame stamps when every frame has one (and no rate is forced), else start + i / rate."""
    if rate_hz is None and frames and all(f.stamp_ns is not None for f in frames):
        return [int(f.stamp_ns) for f in frames]  # type: ignore[arg-type]
    rate = 10.0 if rate_hz is None else float(rate_hz)
    if not rate > 0:
        raise ConfigError(f"rate_hz must be positive, got {rate_hz}")
    return [start_ns + round(i * 1e9 / rate) for i in range(len(frames))]


def write_scene_bag(scene: Scene, path: Path | str, *, storage: BagStorage | str = "sqlite3",
                    split: Split | str = Split.ALL, image_topic: str = "/camera/color/image_raw",
                    camera_info_topic: str = "/camera/color/camera_info", depth_topic: str | None = None,
                    depth_encoding: str = "32FC1", compressed: bool | str = False, tf: bool = True,
                    map_frame: str = "map", camera_frame: str = "camera_color_optical_frame",
                    body_frame: str = "camera_link", rate_hz: float | None = None,
                    start_ns: int = DEFAULT_START_NS, overwrite: bool = False,
                    progress: bool = True) -> SceneBagResult:
    """Write the frames of one split of a scene (in stamp order) as a bag.

    Args:
        scene: an open scene (frames are read lazily).
        path: rosbag2 folder, or a .bag file for storage "ros1".
        storage: "sqlite3" or "mcap" (rosbag2 version 8) or "ros1".
        split: which frames (default all, sorted by stamp).
        compressed: False for sensor_msgs/Image rgb8; "jpeg", "png" or True (= jpeg) for CompressedImage on
            `image_topic + "/compressed"`.
        depth_topic: also write depth (from the scene's depth files, on the colour grid) when given.
        depth_encoding: "32FC1" (metres, NaN invalid) or "16UC1" (millimetres, 0 invalid).
        tf: write ground truth as /tf map -> body_frame and /tf_static body_frame -> camera_frame; frames with
            unknown poses get no TF.
        rate_hz: force this frame rate (stamps start_ns + i / rate); None uses the scene's timestamps when
            every frame has one, else 10 Hz.
        overwrite: replace an existing bag.
    """
    fmt = "jpeg" if compressed is True else (compressed or None)
    if fmt not in (None, "jpeg", "png"):
        raise ConfigError(f"compressed must be False, True, 'jpeg' or 'png', not {compressed!r}")
    frames = scene.split(split)
    if not frames:
        raise BagError(f"scene {scene.root} has no frames in split {Split(split).value}")
    stamps = _frame_stamps(frames, rate_hz, start_ns)
    order = sorted(range(len(frames)), key=lambda i: stamps[i])
    model = CameraModel(K=scene.info.K, size=scene.info.color_size, distortion_model="plumb_bob", D=np.zeros(5))
    with BagWriter.create(path, storage, overwrite=overwrite) as bag:
        if tf:
            static = build_transform_stamped(LINK_T_OPTICAL, stamps[order[0]], body_frame, camera_frame, bag.factory)
            bag.write("/tf_static", build_tf_message([static], bag.factory), stamps[order[0]])
        for i in tqdm(order, desc="write bag", unit="frame", disable=not progress):
            _write_frame(bag, frames[i], stamps[i], model, fmt, image_topic, camera_info_topic, depth_topic,
                         depth_encoding, (map_frame, body_frame, camera_frame) if tf else None)
        counts = dict(bag.counts)
    return SceneBagResult(Path(path), BagStorage(storage), len(frames), counts)


def _write_frame(bag: BagWriter, frame: Frame, stamp: int, model: CameraModel, fmt: str | None,
                 image_topic: str, camera_info_topic: str, depth_topic: str | None, depth_encoding: str,
                 tf_frames: tuple[str, str, str] | None) -> None:
    map_frame, body_frame, camera_frame = tf_frames or ("", "", "")
    optical = camera_frame or "camera_color_optical_frame"
    rgb = frame.load_rgb()
    if (rgb.shape[1], rgb.shape[0]) != model.size:
        raise BagError(f"frame {frame.name} is {rgb.shape[1]}x{rgb.shape[0]}, scene says {model.size}")
    if tf_frames and frame.world_T_cam is not None:
        map_T_link = frame.world_T_cam @ invert_pose(LINK_T_OPTICAL)
        ts = build_transform_stamped(map_T_link, stamp, map_frame, body_frame, bag.factory)
        bag.write("/tf", build_tf_message([ts], bag.factory), stamp)
    if fmt is None:
        bag.write(image_topic, build_image(rgb_to_image_fields(rgb), stamp, optical, bag.factory), stamp)
    else:
        name, data = encode_compressed_rgb(rgb, fmt)
        bag.write(f"{image_topic}/compressed", build_compressed_image(name, data, stamp, optical, bag.factory),
                  stamp)
    bag.write(camera_info_topic, build_camera_info(model, stamp, optical, bag.factory), stamp)
    if depth_topic is not None:
        depth = frame.load_depth_for_color(model.size)
        if depth is None:
            raise BagError(f"frame {frame.name} has no depth but a depth topic was asked for")
        fields = depth_to_image_fields(depth, depth_encoding)
        bag.write(depth_topic, build_image(fields, stamp, optical, bag.factory), stamp)
