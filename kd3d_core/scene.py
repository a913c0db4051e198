"""Scene folders: the 12Scenes layout (read and written) and 7Scenes folders (read).

A `Scene` holds metadata only; images and depth maps are read when a `Frame` is asked for them, so a scene
of thousands of frames costs a few kilobytes per frame in memory.

12Scenes layout (the contract other tools rely on; kd3d only adds files next to it):
    info.txt                       key = value lines (mcolorWidth, mcalibrationColorIntrinsic, m_depthShift, ...)
    split.txt                      "sequenceK [frames=n]  [start=a ; end=b]"; sequence0 is the test (query) part
    data/frame-NNNNNN.color.jpg|png
    data/frame-NNNNNN.depth.png    uint16, metres * m_depthShift, 0 = invalid
    data/frame-NNNNNN.pose.txt     4x4 world_T_cam; rows of INF when unknown
kd3d additions: kd3d.json (world frame id, explicit split lists, source), timestamps.txt ("name stamp_ns").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from kd3d_core.errors import MessageError, SceneError
from kd3d_core.geometry import is_valid_pose
from kd3d_core.messages.images import check_image_size, encoded_image_size
from kd3d_core.scene_files import (  # noqa: F401 - KD3D_META, TIMESTAMPS are part of this module's API
    FRAME_RE,
    KD3D_META,
    TIMESTAMPS,
    info_number,
    info_size,
    matrix_from_info,
    parse_info_txt,
    read_kd3d_meta,
    read_text,
    read_timestamps,
    splits_from_meta,
    splits_from_split_txt,
)

SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])


class Split(str, Enum):
    """Which frames of a scene: mapping (train), query (test) or all."""

    ALL = "all"
    MAPPING = "mapping"
    QUERY = "query"


@dataclass(frozen=True)
class Frame:
    """One frame of a scene; pixels are read on demand.

    Attributes:
        name: frame name, unique in the scene (e.g. "frame-000012", "seq-01/frame-000012").
        color_path: colour image file.
        K: 3x3 intrinsics of the colour image.
        depth_path: depth image file (uint16 PNG) or None.
        K_depth: intrinsics of the depth image (may differ in resolution from the colour image).
        depth_shift: PNG value per metre.
        world_T_cam: 4x4 pose or None when unknown.
        stamp_ns: acquisition time in nanoseconds, when known.
        invalid_depth: PNG value meaning "no depth" besides 0 (7Scenes uses 65535).
        color_size: (w, h) the scene says colour images have; checked against each file's header before decoding.
        depth_size: (w, h) the scene says depth images have (None: the colour size).
    """

    name: str
    color_path: Path
    K: np.ndarray
    depth_path: Path | None = None
    K_depth: np.ndarray | None = None
    depth_shift: float = 1000.0
    world_T_cam: np.ndarray | None = None
    stamp_ns: int | None = None
    invalid_depth: int | None = None
    color_size: tuple[int, int] | None = None
    depth_size: tuple[int, int] | None = None

    def load_rgb(self) -> np.ndarray:
        """Colour image as RGB uint8 (h, w, 3); SceneError for an unreadable file or one of the wrong size."""
        _check_header(self.color_path, self.color_size, "colour image")
        bgr = _imread(self.color_path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SceneError(f"cannot read colour image {self.color_path}")
        if self.color_size is not None and bgr.shape[1::-1] != tuple(self.color_size):
            raise SceneError(f"colour image {self.color_path} is {bgr.shape[1]}x{bgr.shape[0]}, the scene's info "
                             f"says {self.color_size[0]}x{self.color_size[1]}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def load_depth(self) -> np.ndarray | None:
        """Depth in metres, float32 (h, w) at the depth image's own resolution; 0 = invalid; None if absent.

        Only 16-bit single-channel PNGs are depth (an 8-bit PNG would be read as 0..255 "millimetres").
        """
        if self.depth_path is None:
            return None
        _check_header(self.depth_path, None, "depth image")
        raw = _imread(self.depth_path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise SceneError(f"cannot read depth image {self.depth_path}")
        if raw.ndim != 2 or raw.dtype != np.uint16:
            raise SceneError(f"depth image {self.depth_path} is {raw.dtype} with {1 if raw.ndim == 2 else raw.shape[2]}"
                             " channel(s); depth must be a 16-bit single-channel PNG (value = metres x depth shift)")
        depth = raw.astype(np.float32) / np.float32(self.depth_shift)
        if self.invalid_depth is not None:
            depth[raw == self.invalid_depth] = 0.0
        return depth

    def load_depth_for_color(self, color_size_wh: tuple[int, int]) -> np.ndarray | None:
        """Depth resampled (nearest) onto the colour image grid; assumes registered depth (identity extrinsic).

        Only a depth image of the colour size, or of the scene's declared depth size with the colour image's
        aspect ratio, is resampled; any other size is refused rather than stretched.
        """
        depth = self.load_depth()
        if depth is None or depth.shape[::-1] == tuple(color_size_wh):
            return depth
        h, w = depth.shape
        cw, ch = color_size_wh
        declared = self.depth_size is not None and (w, h) == tuple(self.depth_size)
        if not declared or abs(w * ch - h * cw) > 0.01 * w * ch:
            raise SceneError(f"depth image {self.depth_path} is {w}x{h}, which is neither the colour size {cw}x{ch} "
                             "nor the scene's depth size with the same aspect ratio; refusing to stretch it")
        return cv2.resize(depth, color_size_wh, interpolation=cv2.INTER_NEAREST)

    @property
    def has_pose(self) -> bool:
        """True when the frame has a known, finite pose."""
        return self.world_T_cam is not None


def _check_header(path: Path, expected_wh: tuple[int, int] | None, what: str) -> None:
    """Refuse an image whose header claims a size that is absurd or not the scene's, before decoding it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 18)
    except OSError as err:
        raise SceneError(f"cannot read {what} {path}: {err.strerror}") from err
    size = encoded_image_size(head)
    if size is None:
        return
    try:
        check_image_size(*size, what=f"{what} {path}")
    except MessageError as err:
        raise SceneError(str(err)) from None
    if expected_wh is not None and tuple(size) != tuple(expected_wh):
        raise SceneError(f"{what} {path} is {size[0]}x{size[1]}, the scene's info says "
                         f"{expected_wh[0]}x{expected_wh[1]}")


def _imread(path: Path, flags: int) -> np.ndarray | None:
    try:
        return cv2.imread(str(path), flags)
    except cv2.error as err:
        raise SceneError(f"cannot decode image {path}: {' '.join(str(err).split())[:160]}") from err


@dataclass(frozen=True)
class SceneInfo:
    """Scene-wide metadata (info.txt plus kd3d.json)."""

    color_size: tuple[int, int]
    K: np.ndarray
    depth_size: tuple[int, int] | None = None
    K_depth: np.ndarray | None = None
    depth_shift: float = 1000.0
    sensor: str = "unknown"
    world_frame: str = "map"
    layout: str = "12scenes"
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scene:
    """A scene folder: metadata and frames (lazy), with its mapping/query split."""

    root: Path
    info: SceneInfo
    frames: tuple[Frame, ...]
    splits: dict[Split, tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.frames)

    def split(self, which: Split | str = Split.ALL) -> list[Frame]:
        """Frames of a split in scene order; Split.ALL gives every frame."""
        which = Split(which)
        if which is Split.ALL:
            return list(self.frames)
        names = set(self.splits.get(which, ()))
        return [f for f in self.frames if f.name in names]

    def frame(self, name: str) -> Frame:
        """The frame with this name."""
        for f in self.frames:
            if f.name == name:
                return f
        raise SceneError(f"scene {self.root} has no frame {name!r}")


def open_scene(path: Path | str) -> Scene:
    """Open a 12Scenes-layout or 7Scenes-layout folder (detected from its content)."""
    root = Path(path)
    if not root.is_dir():
        raise SceneError(f"scene folder {root} does not exist")
    if (root / "info.txt").is_file():
        return _open_12scenes(root)
    if any(root.glob("seq-*")):
        return _open_7scenes(root)
    raise SceneError(f"{root} is not a scene folder (no info.txt and no seq-XX folders)")


def read_pose_file(path: Path) -> np.ndarray | None:
    """A 4x4 pose text file; None when it holds INF/NaN (unknown pose); SceneError when it is not rigid."""
    try:
        if path.stat().st_size > 1 << 16:
            raise SceneError(f"pose file {path} is {path.stat().st_size} bytes; a 4x4 pose is a few hundred")
        values = np.array(path.read_text().split(), dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise SceneError(f"cannot read pose file {path}: {err}") from err
    if values.size != 16:
        raise SceneError(f"pose file {path} has {values.size} numbers, expected 16")
    T = values.reshape(4, 4)
    if not np.all(np.isfinite(T)):
        return None
    if not is_valid_pose(T):
        raise SceneError(f"pose file {path} is not a rigid transform (rotation not orthonormal with det 1, or last "
                         "row not 0 0 0 1)")
    return T


def _frames_12scenes(root: Path, K: np.ndarray, K_depth: np.ndarray | None, depth_shift: float,
                     color_size: tuple[int, int], depth_size: tuple[int, int] | None) -> list[Frame]:
    data = root / "data"
    if not data.is_dir():
        raise SceneError(f"scene {root} has no data/ folder")
    stamps = read_timestamps(root)
    frames = []
    for color in sorted(list(data.glob("frame-*.color.jpg")) + list(data.glob("frame-*.color.png"))):
        name = color.name.split(".")[0]
        if not FRAME_RE.match(name):
            raise SceneError(f"{color}: frame files must be named frame-NUMBER.color.(jpg|png)")
        pose_path = data / f"{name}.pose.txt"
        depth_path = data / f"{name}.depth.png"
        frames.append(Frame(
            name=name, color_path=color, K=K,
            depth_path=depth_path if depth_path.is_file() else None,
            K_depth=K_depth if K_depth is not None else K, depth_shift=depth_shift,
            world_T_cam=read_pose_file(pose_path) if pose_path.is_file() else None,
            stamp_ns=stamps.get(name), color_size=color_size, depth_size=depth_size))
    frames.sort(key=lambda f: f.name)
    names = [f.name for f in frames]
    if len(set(names)) != len(names):
        raise SceneError(f"scene {root} holds a frame as both .color.jpg and .color.png")
    return frames


def _open_12scenes(root: Path) -> Scene:
    info = parse_info_txt(root / "info.txt")
    color_size = info_size(info, "color", required=True)
    depth_size = info_size(info, "depth", required=False)
    K = matrix_from_info(info, "m_calibrationColorIntrinsic")
    if K is None:
        raise SceneError(f"{root / 'info.txt'} has no m_calibrationColorIntrinsic")
    K_depth = matrix_from_info(info, "m_calibrationDepthIntrinsic")
    depth_shift = info_number(info, "m_depthShift", float, default=1000.0)
    if depth_shift <= 0:
        raise SceneError(f"info.txt m_depthShift = {info['m_depthShift']!r} must be > 0 (depth PNG value per metre)")
    meta = read_kd3d_meta(root)
    frames = _frames_12scenes(root, K, K_depth, depth_shift, color_size, depth_size)
    names = [f.name for f in frames]
    if "splits" in meta:
        splits = {Split(k): v for k, v in splits_from_meta(meta, names, root / KD3D_META).items()}
    elif (root / "split.txt").is_file():
        splits = {Split(k): v for k, v in splits_from_split_txt(root / "split.txt", names).items()}
    else:
        splits = {Split.MAPPING: tuple(names), Split.QUERY: ()}
    world_frame = meta.get("world_frame", "map")
    if not isinstance(world_frame, str) or not world_frame:
        raise SceneError(f"{root / KD3D_META}: world_frame must be a non-empty string")
    scene_info = SceneInfo(color_size=color_size, K=K, depth_size=depth_size, K_depth=K_depth,
                           depth_shift=depth_shift, sensor=info.get("m_sensorName", "unknown"),
                           world_frame=world_frame, layout="12scenes",
                           extra={k: v for k, v in meta.items() if k not in ("splits", "world_frame")})
    return Scene(root=root, info=scene_info, frames=tuple(frames), splits=splits)


def _read_7scenes_split(root: Path, filename: str) -> list[str]:
    path = root / filename
    if not path.is_file():
        return []
    seqs = []
    for line in read_text(path).split():
        m = re.search(r"(\d+)", line)
        if m:
            seqs.append(f"seq-{int(m.group(1)):02d}")
    return seqs


def _open_7scenes(root: Path) -> Scene:
    """7Scenes: seq-XX/frame-NNNNNN.{color.png,depth.png,pose.txt}; fixed intrinsics (585, 320, 240)."""
    frames = []
    seq_of: dict[str, str] = {}
    for seq in sorted(p for p in root.glob("seq-*") if p.is_dir()):
        for color in sorted(seq.glob("frame-*.color.png")):
            stem = color.name.split(".")[0]
            name = f"{seq.name}/{stem}"
            depth = seq / f"{stem}.depth.png"
            pose = seq / f"{stem}.pose.txt"
            frames.append(Frame(name=name, color_path=color, K=SEVEN_SCENES_K,
                                depth_path=depth if depth.is_file() else None, K_depth=SEVEN_SCENES_K,
                                depth_shift=1000.0, invalid_depth=65535, color_size=(640, 480),
                                depth_size=(640, 480),
                                world_T_cam=read_pose_file(pose) if pose.is_file() else None))
            seq_of[name] = seq.name
    if not frames:
        raise SceneError(f"7Scenes folder {root} has no seq-XX/frame-*.color.png files")
    train = set(_read_7scenes_split(root, "TrainSplit.txt"))
    test = set(_read_7scenes_split(root, "TestSplit.txt"))
    names = [f.name for f in frames]
    if not train and not test:
        train = set(seq_of.values())
    splits = {Split.MAPPING: tuple(n for n in names if seq_of[n] in train),
              Split.QUERY: tuple(n for n in names if seq_of[n] in test)}
    info = SceneInfo(color_size=(640, 480), K=SEVEN_SCENES_K, depth_size=(640, 480), K_depth=SEVEN_SCENES_K,
                     depth_shift=1000.0, sensor="Kinect", layout="7scenes")
    return Scene(root=root, info=info, frames=tuple(frames), splits=splits)
