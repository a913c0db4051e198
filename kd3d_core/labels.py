"""Labels: what any teacher produces per mapping frame, and what students train on.

Per frame (one .npz each, written atomically, loaded with allow_pickle=False):
    points_HW3  float32 world coordinates at label resolution (anything where conf == 0)
    conf_HW     float32 confidence, 0 = no label
    world_T_cam float64 4x4
    K           float64 3x3 intrinsics at label resolution
One metadata file, labels.json: teacher, checkpoint digest, world frame id, scale source, label size,
per-frame alignment residuals and the frames that could not be aligned. A killed run resumes: frames already
on disk are kept.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import is_valid_pose
from kd3d_core.io_utils import atomic_file, atomic_write_text

META_FILE = "labels.json"
LABELS_VERSION = 1


class ScaleSource(str, Enum):
    """Where the metric scale of the labels comes from."""

    DEPTH = "metric_depth"
    POSES = "metric_poses"
    ARBITRARY = "arbitrary"


@dataclass(frozen=True)
class FrameLabel:
    """Teacher output for one frame."""

    name: str
    points_HW3: np.ndarray
    conf_HW: np.ndarray
    world_T_cam: np.ndarray
    K: np.ndarray


@dataclass(frozen=True)
class LabelsMeta:
    """Metadata shared by all labels of a scene."""

    teacher: str
    world_frame: str
    scale_source: ScaleSource
    label_size: tuple[int, int]
    checkpoint_digest: str | None = None
    residuals: dict[str, float] = field(default_factory=dict)
    failed_frames: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


def default_labels_dir(scene_root: Path | str, teacher: str) -> Path:
    """Where `kd3d teach` puts labels unless told otherwise: SCENE/labels/TEACHER."""
    return Path(scene_root) / "labels" / teacher


class LabelStore:
    """A folder of per-frame label files plus labels.json.

    `read_meta` refuses a folder whose teach run never finished (labels.json says complete = false: the run was
    killed or failed) unless `allow_incomplete`: training on it would silently use a part of the frames.
    """

    def __init__(self, root: Path | str | LabelStore, allow_incomplete: bool = False) -> None:
        if isinstance(root, LabelStore):
            allow_incomplete = allow_incomplete or root.allow_incomplete
            root = root.root
        self.root = Path(root)
        self.allow_incomplete = allow_incomplete

    def _path(self, name: str) -> Path:
        return self.root / f"{name.replace('/', '__')}.npz"

    def has(self, name: str) -> bool:
        """True when a complete label file for this frame exists."""
        return self._path(name).is_file()

    def write(self, label: FrameLabel) -> None:
        """Write one frame's label atomically."""
        if label.points_HW3.shape[:2] != label.conf_HW.shape or label.points_HW3.shape[-1] != 3:
            raise Kd3dError(f"label {label.name}: points {label.points_HW3.shape} and conf {label.conf_HW.shape} "
                            "do not match")
        if not is_valid_pose(np.asarray(label.world_T_cam, np.float64)):
            raise Kd3dError(f"label {label.name}: world_T_cam is not a finite rigid transform")
        K = np.asarray(label.K, np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise Kd3dError(f"label {label.name}: K is not a finite pinhole matrix with positive focal lengths")
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_file(self._path(label.name), suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, points_HW3=label.points_HW3.astype(np.float32), conf_HW=label.conf_HW.astype(np.float32),
                         world_T_cam=label.world_T_cam.astype(np.float64), K=label.K.astype(np.float64))

    def read(self, name: str) -> FrameLabel:
        """Read one frame's label."""
        path = self._path(name)
        try:
            with np.load(path, allow_pickle=False) as z:
                return FrameLabel(name, z["points_HW3"], z["conf_HW"], z["world_T_cam"], z["K"])
        except (OSError, KeyError, ValueError) as err:
            raise Kd3dError(f"cannot read label {path}: {err}") from err

    def write_meta(self, meta: LabelsMeta) -> None:
        """Write labels.json atomically."""
        d = asdict(meta)
        d["scale_source"] = meta.scale_source.value
        d["version"] = LABELS_VERSION
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / META_FILE, json.dumps(d, indent=1) + "\n")

    def read_meta(self, allow_incomplete: bool | None = None) -> LabelsMeta:
        """Read labels.json; Kd3dError for a folder marked incomplete unless allowed (argument or store flag)."""
        meta = self._read_meta()
        allowed = self.allow_incomplete if allow_incomplete is None else allow_incomplete
        if not allowed and meta.extra.get("complete", True) is False:
            on_disk = len(self.names())
            raise Kd3dError(f"labels in {self.root} are incomplete: the `kd3d teach` run that wrote them was "
                            f"interrupted or failed ({on_disk} frame(s) labelled so far); rerun `kd3d teach` to "
                            "finish them (it resumes)")
        return meta

    def _read_meta(self) -> LabelsMeta:
        path = self.root / META_FILE
        if not path.is_file():
            raise Kd3dError(f"{self.root} holds no labels (no {META_FILE}); run `kd3d teach` first")
        try:
            d = json.loads(path.read_text())
            if d.pop("version", None) != LABELS_VERSION:
                raise Kd3dError(f"{path}: unsupported labels version")
            d["scale_source"] = ScaleSource(d["scale_source"])
            d["label_size"] = tuple(d["label_size"])
            d["failed_frames"] = tuple(d.get("failed_frames", ()))
            return LabelsMeta(**d)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError, AttributeError) as err:
            raise Kd3dError(f"{path} is not a valid labels file: {err}") from err

    def names(self) -> list[str]:
        """Frame names with a label on disk, sorted."""
        return sorted(p.stem.replace("__", "/") for p in self.root.glob("*.npz"))
