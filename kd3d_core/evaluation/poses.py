"""Pose files: TUM trajectories, 7Scenes/12Scenes pose.txt folders and COLMAP-convention image lists.

All three are read into one `Trajectory` of world_T_cam poses (camera-to-world, OpenCV optical camera frame):
- TUM (`t tx ty tz qx qy qz qw`, as evo reads it): camera-to-world; the key of a pose is its timestamp.
- pose folders: a 12Scenes/7Scenes scene folder (via kd3d_core.scene.open_scene) or any folder of
  `NAME.pose.txt` 4x4 camera-to-world matrices; the key is the frame name.
- COLMAP-convention lists (`name qw qx qy qz tx ty tz [f]`, as the public visual-localization benchmarks use):
  world-to-camera (cam_T_world) with a scalar-first quaternion, so they are inverted on the way in and out.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from kd3d_core.errors import Kd3dError, SceneError
from kd3d_core.geometry import invert_pose, is_valid_pose, matrix_to_quat_xyzw, pose_from_tq
from kd3d_core.io_utils import atomic_dir, atomic_write_text
from kd3d_core.scene import open_scene, read_pose_file

# A line whose numbers are not all finite is kept as an unknown pose (the frame counts as a failure), not dropped.
_UNKNOWN = np.full((4, 4), np.nan)
_NAME_SUFFIXES = (".color.png", ".color.jpg", ".color.jpeg", ".pose.txt", ".png", ".jpg", ".jpeg")


class PoseFormat(str, Enum):
    """Pose file formats kd3d reads and writes."""

    TUM = "tum"
    COLMAP = "colmap"
    POSEFOLDER = "posefolder"


@dataclass(frozen=True)
class Trajectory:
    """Named camera poses, optionally timestamped.

    Attributes:
        names: one key per pose (frame name, or the timestamp text for TUM files).
        poses: (N, 4, 4) world_T_cam.
        stamps_s: (N,) timestamps in seconds, or None when the source has none.
        keyed_by_stamp: True when the names are just timestamps (TUM): match such files by time.
    """

    names: tuple[str, ...]
    poses: np.ndarray
    stamps_s: np.ndarray | None = None
    keyed_by_stamp: bool = False

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.poses.shape != (n, 4, 4):
            raise Kd3dError(f"trajectory has {n} names but poses of shape {self.poses.shape}")
        if self.stamps_s is not None and self.stamps_s.shape != (n,):
            raise Kd3dError(f"trajectory has {n} names but {self.stamps_s.shape} stamps")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_lists(cls, names: list[str], poses: list[np.ndarray], stamps_s: list[float] | None = None,
                   keyed_by_stamp: bool = False) -> Trajectory:
        """Build from Python lists (empty lists give an empty trajectory)."""
        arr = np.array(poses, dtype=np.float64).reshape(len(poses), 4, 4)
        stamps = None if stamps_s is None else np.array(stamps_s, dtype=np.float64).reshape(len(names))
        return cls(tuple(names), arr, stamps, keyed_by_stamp)


def canonical_name(name: str) -> str:
    """Frame key used for matching: no leading './', no image/pose file suffix, forward slashes."""
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    lower = name.lower()
    for suffix in _NAME_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise Kd3dError(f"cannot read pose file {path}: {err}") from err
    return [(i + 1, line.split()) for i, line in enumerate(text.splitlines())
            if line.strip() and not line.lstrip().startswith("#")]


def _refuse_duplicates(names: list[str], path: Path, what: str) -> None:
    """Kd3dError when two lines carry the same key: which one counts would be a silent guess."""
    seen: set[str] = set()
    for name in names:
        key = canonical_name(name)
        if key in seen:
            raise Kd3dError(f"{path}: {what} {name!r} appears more than once; each frame needs exactly one pose")
        seen.add(key)


def check_reference(reference: Trajectory, source: str = "reference") -> None:
    """Kd3dError unless a reference can score estimates: it has poses and every finite one is rigid.

    Non-finite reference poses are allowed here (those frames count as failures when scoring); a finite but
    non-rigid one (e.g. a scaled rotation) would make wrong estimates look right, so it is refused.
    """
    if len(reference) == 0:
        raise Kd3dError(f"{source} holds no poses; nothing to evaluate against")
    for name, pose in zip(reference.names, reference.poses):
        if np.all(np.isfinite(pose)) and not is_valid_pose(pose):
            raise Kd3dError(f"{source}: the pose of {name!r} is not a rigid transform (rotation not orthonormal or "
                            "last row not 0 0 0 1)")


def read_tum(path: Path | str) -> Trajectory:
    """A TUM trajectory file: `timestamp tx ty tz qx qy qz qw` per line (camera-to-world)."""
    path = Path(path)
    names, poses, stamps = [], [], []
    for lineno, parts in _data_lines(path):
        if len(parts) != 8:
            raise Kd3dError(f"{path}:{lineno}: a TUM line has 8 numbers, found {len(parts)}")
        try:
            values = np.array(parts, dtype=np.float64)
            pose = pose_from_tq(values[1:4], values[4:8]) if np.all(np.isfinite(values[1:8])) else _UNKNOWN
        except (ValueError, Kd3dError) as err:
            raise Kd3dError(f"{path}:{lineno}: bad TUM line: {err}") from err
        names.append(parts[0])
        stamps.append(float(values[0]))
        poses.append(pose)
    _refuse_duplicates(names, path, "timestamp")
    return Trajectory.from_lists(names, poses, stamps, keyed_by_stamp=True)


def write_tum(path: Path | str, trajectory: Trajectory) -> None:
    """Write a TUM trajectory (needs timestamps), atomically."""
    if trajectory.stamps_s is None:
        raise Kd3dError("TUM files need timestamps and these poses have none; use the colmap or posefolder format")
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV optical camera frame)"]
    for stamp, pose in zip(trajectory.stamps_s, trajectory.poses):
        q = matrix_to_quat_xyzw(pose[:3, :3])
        # float64 seconds near 1.7e9 resolve ~0.2 us: nine decimals would print noise (1700000035.099999905)
        lines.append(f"{stamp:.6f} " + " ".join(f"{v:.9g}" for v in (*pose[:3, 3], *q)))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_colmap(path: Path | str) -> Trajectory:
    """A COLMAP-convention image list: `name qw qx qy qz tx ty tz [f]` (world-to-camera), inverted here."""
    path = Path(path)
    names, poses = [], []
    for lineno, parts in _data_lines(path):
        if len(parts) not in (8, 9):
            raise Kd3dError(f"{path}:{lineno}: a COLMAP pose line is `name qw qx qy qz tx ty tz [f]`, "
                            f"found {len(parts)} fields")
        try:
            qw, qx, qy, qz, tx, ty, tz = (float(v) for v in parts[1:8])
            finite = np.all(np.isfinite([qw, qx, qy, qz, tx, ty, tz]))
            cam_T_world = pose_from_tq(np.array([tx, ty, tz]), np.array([qx, qy, qz, qw])) if finite else _UNKNOWN
        except (ValueError, Kd3dError) as err:
            raise Kd3dError(f"{path}:{lineno}: bad COLMAP pose line: {err}") from err
        names.append(parts[0])
        poses.append(invert_pose(cam_T_world))
    _refuse_duplicates(names, path, "frame")
    return Trajectory.from_lists(names, poses)


def write_colmap(path: Path | str, trajectory: Trajectory) -> None:
    """Write a COLMAP-convention image list (world-to-camera, scalar-first quaternion), atomically."""
    lines = ["# name qw qx qy qz tx ty tz (world-to-camera, COLMAP convention)"]
    for name, pose in zip(trajectory.names, trajectory.poses):
        if any(c.isspace() for c in name):
            raise Kd3dError(f"frame name {name!r} contains white space; COLMAP lists cannot hold it")
        cam_T_world = invert_pose(pose)
        x, y, z, w = matrix_to_quat_xyzw(cam_T_world[:3, :3])
        lines.append(name + " " + " ".join(f"{v:.9g}" for v in (w, x, y, z, *cam_T_world[:3, 3])))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_pose_folder(path: Path | str) -> Trajectory:
    """A scene folder (12Scenes/7Scenes; unknown poses skipped) or a folder tree of NAME.pose.txt files."""
    root = Path(path)
    if not root.is_dir():
        raise Kd3dError(f"pose folder {root} does not exist")
    try:
        scene = open_scene(root)
    except SceneError:
        scene = None
    if scene is not None:
        frames = [f for f in scene.frames if f.world_T_cam is not None]
        stamps = [f.stamp_ns for f in frames]
        has_stamps = bool(frames) and all(s is not None for s in stamps)
        return Trajectory.from_lists([f.name for f in frames], [f.world_T_cam for f in frames],
                                     [s / 1e9 for s in stamps] if has_stamps else None)
    names, poses = [], []
    for file in sorted(root.rglob("*.pose.txt")):
        try:
            pose = read_pose_file(file)
        except SceneError as err:
            raise Kd3dError(str(err)) from None
        if pose is not None:
            names.append(canonical_name(file.relative_to(root).as_posix()))
            poses.append(pose)
    if not names and not any(root.rglob("*.pose.txt")):
        raise Kd3dError(f"{root} is neither a scene folder nor a folder of *.pose.txt files")
    return Trajectory.from_lists(names, poses)


def write_pose_folder(path: Path | str, trajectory: Trajectory, overwrite: bool = False) -> None:
    """Write NAME.pose.txt files (4x4 camera-to-world, as 7Scenes/12Scenes), atomically as one folder."""
    with atomic_dir(path, overwrite=overwrite) as tmp:
        for name, pose in zip(trajectory.names, trajectory.poses):
            target = tmp / f"{canonical_name(name)}.pose.txt"
            if tmp.resolve() not in target.resolve().parents:
                raise Kd3dError(f"frame name {name!r} would escape the output folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(" ".join(f"{v:.9g}" for v in row) for row in pose) + "\n")


def detect_format(path: Path | str) -> PoseFormat:
    """Guess a pose file's format: folders are pose folders; a numeric first field means TUM, else COLMAP.

    "Numeric" includes nan/inf (a TUM line with a NaN stamp is still a TUM line), and the vote runs over the first
    lines, so one odd line cannot flip the format.
    """
    path = Path(path)
    if path.is_dir():
        return PoseFormat.POSEFOLDER
    if not path.is_file():
        raise Kd3dError(f"pose file {path} does not exist")
    lines = _data_lines(path)
    if not lines:
        raise Kd3dError(f"pose file {path} holds no poses")
    votes = [_looks_like_tum(parts) for _, parts in lines[:20]]
    return PoseFormat.TUM if sum(votes) * 2 > len(votes) else PoseFormat.COLMAP


def _looks_like_tum(parts: list[str]) -> bool:
    try:
        float(parts[0])
    except ValueError:
        return False
    return len(parts) == 8


def read_poses(path: Path | str, fmt: PoseFormat | str | None = None) -> Trajectory:
    """Read any supported pose file or folder (format detected when not given)."""
    fmt = detect_format(path) if fmt is None else PoseFormat(fmt)
    reader = {PoseFormat.TUM: read_tum, PoseFormat.COLMAP: read_colmap, PoseFormat.POSEFOLDER: read_pose_folder}
    return reader[fmt](path)


def write_poses(path: Path | str, trajectory: Trajectory, fmt: PoseFormat | str, overwrite: bool = True) -> None:
    """Write poses in the given format; invalid (non-rigid or non-finite) poses are refused."""
    fmt = PoseFormat(fmt)
    for name, pose in zip(trajectory.names, trajectory.poses):
        if not is_valid_pose(pose):
            raise Kd3dError(f"pose of {name!r} is not a finite rigid transform")
    if fmt is PoseFormat.TUM:
        write_tum(path, trajectory)
    elif fmt is PoseFormat.COLMAP:
        write_colmap(path, trajectory)
    else:
        write_pose_folder(path, trajectory, overwrite=overwrite)
