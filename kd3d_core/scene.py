"""Scene folders: the 12Scenes layout (read and written) and 7Scenes folders (read).

A `Scene` holds metadata only; images and depth maps are read when a `Frame` is asked for them, so a scene
of thousands of frames costs a few kilobytes per frame in memory.

12Scenes layout (the contract other tools rely on; kd3d only adds files next to it):
    info.txt                       key = value lines (m_colorWidth, m_calibrationColorIntrinsic, m_depthShift, ...)
    split.txt                      "sequenceK [frames=n]  [start=a ; end=b]"; sequence0 is the test (query) part
    data/frame-NNNNNN.color.jpg|png
    data/frame-NNNNNN.depth.png    uint16, metres * m_depthShift, 0 = invalid
    data/frame-NNNNNN.pose.txt     4x4 world_T_cam; rows of INF when unknown
kd3d additions: kd3d.json (world frame id, explicit split lists, source), timestamps.txt ("name stamp_ns").
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from kd3d_core.errors import SceneError

KD3D_META = "kd3d.json"
TIMESTAMPS = "timestamps.txt"
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

    def load_rgb(self) -> np.ndarray:
        """Colour image as RGB uint8 (h, w, 3)."""
        bgr = cv2.imread(str(self.color_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SceneError(f"cannot read colour image {self.color_path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def load_depth(self) -> np.ndarray | None:
        """Depth in metres, float32 (h, w) at the depth image's own resolution; 0 = invalid; None if absent."""
        if self.depth_path is None:
            return None
        raw = cv2.imread(str(self.depth_path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise SceneError(f"cannot read depth image {self.depth_path}")
        depth = raw.astype(np.float32) / np.float32(self.depth_shift)
        if self.invalid_depth is not None:
            depth[raw == self.invalid_depth] = 0.0
        return depth

    def load_depth_for_color(self, color_size_wh: tuple[int, int]) -> np.ndarray | None:
        """Depth resampled (nearest) onto the colour image grid; assumes registered depth (identity extrinsic)."""
        depth = self.load_depth()
        if depth is None or depth.shape[::-1] == tuple(color_size_wh):
            return depth
        return cv2.resize(depth, color_size_wh, interpolation=cv2.INTER_NEAREST)

    @property
    def has_pose(self) -> bool:
        """True when the frame has a known, finite pose."""
        return self.world_T_cam is not None


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
    """A 4x4 pose text file; None when it holds INF/NaN (unknown pose)."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except (OSError, ValueError) as err:
        raise SceneError(f"cannot read pose file {path}: {err}") from err
    if values.size != 16:
        raise SceneError(f"pose file {path} has {values.size} numbers, expected 16")
    T = values.reshape(4, 4)
    return T if np.all(np.isfinite(T)) else None


def parse_info_txt(path: Path) -> dict[str, str]:
    """info.txt as a key -> raw value dictionary."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _matrix_from_info(info: dict[str, str], key: str) -> np.ndarray | None:
    if key not in info:
        return None
    vals = np.array(info[key].split(), dtype=np.float64)
    if vals.size == 16:
        return vals.reshape(4, 4)[:3, :3]
    if vals.size == 9:
        return vals.reshape(3, 3)
    raise SceneError(f"info.txt key {key} has {vals.size} numbers, expected 16")


def _read_kd3d_meta(root: Path) -> dict:
    path = root / KD3D_META
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SceneError(f"{path} is not valid JSON: {err}") from err


def _read_timestamps(root: Path) -> dict[str, int]:
    path = root / TIMESTAMPS
    if not path.is_file():
        return {}
    stamps = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            stamps[parts[0]] = int(parts[1])
    return stamps


_SPLIT_RE = re.compile(r"sequence(\d+)\s*\[frames=(\d+)\]\s*\[start=(\d+)\s*;\s*end=(\d+)\]")


def _splits_from_split_txt(path: Path, names: list[str]) -> dict[Split, tuple[str, ...]]:
    """12Scenes split.txt: sequence0 is the test (query) range, the other sequences are training (mapping)."""
    index = {int(n.split("-")[-1]): n for n in names}
    mapping, query = [], []
    for m in _SPLIT_RE.finditer(path.read_text()):
        seq, start, end = int(m.group(1)), int(m.group(3)), int(m.group(4))
        chosen = [index[i] for i in range(start, end + 1) if i in index]
        (query if seq == 0 else mapping).extend(chosen)
    return {Split.MAPPING: tuple(mapping), Split.QUERY: tuple(query)}


def _open_12scenes(root: Path) -> Scene:
    try:
        info = parse_info_txt(root / "info.txt")
        color_size = (int(info["m_colorWidth"]), int(info["m_colorHeight"]))
        K = _matrix_from_info(info, "m_calibrationColorIntrinsic")
    except (KeyError, ValueError) as err:
        raise SceneError(f"{root / 'info.txt'} is missing or has a bad key: {err}") from err
    if K is None:
        raise SceneError(f"{root / 'info.txt'} has no m_calibrationColorIntrinsic")
    K_depth = _matrix_from_info(info, "m_calibrationDepthIntrinsic")
    depth_size = (int(info["m_depthWidth"]), int(info["m_depthHeight"])) if "m_depthWidth" in info else None
    depth_shift = float(info.get("m_depthShift", 1000))
    meta = _read_kd3d_meta(root)
    stamps = _read_timestamps(root)
    data = root / "data"
    if not data.is_dir():
        raise SceneError(f"scene {root} has no data/ folder")
    frames = []
    for color in sorted(list(data.glob("frame-*.color.jpg")) + list(data.glob("frame-*.color.png"))):
        name = color.name.split(".")[0]
        pose_path = data / f"{name}.pose.txt"
        depth_path = data / f"{name}.depth.png"
        frames.append(Frame(
            name=name, color_path=color, K=K,
            depth_path=depth_path if depth_path.is_file() else None,
            K_depth=K_depth if K_depth is not None else K, depth_shift=depth_shift,
            world_T_cam=read_pose_file(pose_path) if pose_path.is_file() else None,
            stamp_ns=stamps.get(name)))
    frames.sort(key=lambda f: f.name)
    names = [f.name for f in frames]
    if "splits" in meta:
        splits = {Split(k): tuple(v) for k, v in meta["splits"].items()}
    elif (root / "split.txt").is_file():
        splits = _splits_from_split_txt(root / "split.txt", names)
    else:
        splits = {Split.MAPPING: tuple(names), Split.QUERY: ()}
    scene_info = SceneInfo(color_size=color_size, K=K, depth_size=depth_size, K_depth=K_depth,
                           depth_shift=depth_shift, sensor=info.get("m_sensorName", "unknown"),
                           world_frame=meta.get("world_frame", "map"), layout="12scenes",
                           extra={k: v for k, v in meta.items() if k not in ("splits", "world_frame")})
    return Scene(root=root, info=scene_info, frames=tuple(frames), splits=splits)


def _read_7scenes_split(root: Path, filename: str) -> list[str]:
    path = root / filename
    if not path.is_file():
        return []
    seqs = []
    for line in path.read_text().split():
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
                                depth_shift=1000.0, invalid_depth=65535,
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
