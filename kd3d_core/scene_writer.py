"""Write scene folders in the 12Scenes layout, atomically (a failed run leaves no folder behind)."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from kd3d_core.errors import MessageError, SceneError
from kd3d_core.geometry import is_valid_pose
from kd3d_core.io_utils import atomic_dir
from kd3d_core.messages.images import check_image_size
from kd3d_core.scene import KD3D_META, TIMESTAMPS, Split


def _matrix_line(K: np.ndarray) -> str:
    M = np.eye(4)
    M[:3, :3] = K
    return " ".join(f"{v:.10g}" for v in M.ravel())


def format_pose(T: np.ndarray | None) -> str:
    """4x4 pose as text; unknown poses are rows of INF, as in 12Scenes."""
    if T is None:
        return "\n".join(" ".join(["INF"] * 4) for _ in range(4)) + "\n"
    return "\n".join(" ".join(f"{v:.17g}" for v in row) for row in T) + "\n"


class SceneWriter:
    """Accumulates frames into a scene folder. Use through `SceneWriter.create(...)` (a context manager)."""

    def __init__(self, root: Path, K: np.ndarray, color_size: tuple[int, int], depth_shift: float,
                 sensor: str, world_frame: str, color_ext: str) -> None:
        if color_ext not in ("png", "jpg"):
            raise SceneError(f"colour format must be png or jpg, not {color_ext!r}")
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise SceneError(f"scene K must be a finite pinhole matrix with positive focal lengths, got {K.tolist()}")
        if not (np.isfinite(depth_shift) and depth_shift > 0):
            raise SceneError(f"depth shift must be a finite number > 0, got {depth_shift}")
        try:
            check_image_size(int(color_size[0]), int(color_size[1]), "scene colour size")
        except MessageError as err:
            raise SceneError(str(err)) from None
        self.root = root
        self.K = np.asarray(K, dtype=np.float64)
        self.color_size = color_size
        self.depth_shift = depth_shift
        self.sensor = sensor
        self.world_frame = world_frame
        self.color_ext = color_ext
        self.names: list[str] = []
        self.splits: dict[Split, list[str]] = {Split.MAPPING: [], Split.QUERY: []}
        self.stamps: dict[str, int] = {}
        self.has_depth = False
        self.extra: dict = {}
        (root / "data").mkdir(parents=True, exist_ok=True)

    @classmethod
    @contextlib.contextmanager
    def create(cls, out: Path | str, K: np.ndarray, color_size: tuple[int, int], *, depth_shift: float = 1000.0,
               sensor: str = "kd3d", world_frame: str = "map", color_ext: str = "png",
               overwrite: bool = False) -> Iterator[SceneWriter]:
        """Open a writer on a temporary folder; the scene appears at `out` only if the block succeeds."""
        with atomic_dir(out, overwrite=overwrite) as tmp:
            writer = cls(tmp, K, color_size, depth_shift, sensor, world_frame, color_ext)
            yield writer
            writer.finish()

    def add(self, rgb: np.ndarray, *, depth: np.ndarray | None = None, world_T_cam: np.ndarray | None = None,
            stamp_ns: int | None = None, split: Split = Split.MAPPING) -> str:
        """Write one frame (RGB uint8, depth in metres) and return its name."""
        h, w = rgb.shape[:2]
        if (w, h) != self.color_size or rgb.dtype != np.uint8 or rgb.ndim != 3:
            raise SceneError(f"frame must be uint8 RGB {self.color_size[0]}x{self.color_size[1]}, got "
                             f"{rgb.dtype} {rgb.shape}")
        if world_T_cam is not None and not is_valid_pose(world_T_cam):
            raise SceneError(f"frame {len(self.names)} has an invalid pose (NaN/INF or not rigid)")
        name = f"frame-{len(self.names):06d}"
        data = self.root / "data"
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if self.color_ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        if not cv2.imwrite(str(data / f"{name}.color.{self.color_ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           params):
            raise SceneError(f"cannot write {data / name}.color.{self.color_ext}")
        if depth is not None:
            scaled = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0) * self.depth_shift)
            if depth.shape != rgb.shape[:2]:
                raise SceneError(f"frame {name}: depth is {depth.shape[1]}x{depth.shape[0]}, colour {w}x{h}")
            if not cv2.imwrite(str(data / f"{name}.depth.png"), np.clip(scaled, 0, 65535).astype(np.uint16),
                               [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise SceneError(f"cannot write {data / name}.depth.png (disk full or not writable?)")
            self.has_depth = True
        (data / f"{name}.pose.txt").write_text(format_pose(world_T_cam))
        self.names.append(name)
        self.splits[Split(split)].append(name)
        if stamp_ns is not None:
            self.stamps[name] = int(stamp_ns)
        return name

    def finish(self) -> None:
        """Write info.txt, split.txt (when the split is 12Scenes-expressible), timestamps and kd3d.json."""
        if not self.names:
            raise SceneError("no frames were written")
        w, h = self.color_size
        lines = [
            "m_versionNumber = 4", f"m_sensorName = {self.sensor}",
            f"m_colorWidth = {w}", f"m_colorHeight = {h}",
            f"m_depthWidth = {w if self.has_depth else 0}", f"m_depthHeight = {h if self.has_depth else 0}",
            f"m_depthShift = {self.depth_shift:g}",
            f"m_calibrationColorIntrinsic = {_matrix_line(self.K)}",
            f"m_calibrationColorExtrinsic = {_matrix_line(np.eye(3))}",
            f"m_calibrationDepthIntrinsic = {_matrix_line(self.K)}",
            f"m_calibrationDepthExtrinsic = {_matrix_line(np.eye(3))}",
            f"m_frames.size = {len(self.names)}",
        ]
        (self.root / "info.txt").write_text("\n".join(lines) + "\n")
        self._write_split_txt()
        if self.stamps:
            (self.root / TIMESTAMPS).write_text("".join(f"{n} {s}\n" for n, s in self.stamps.items()))
        meta = {"format": "kd3d-scene", "version": 1, "world_frame": self.world_frame,
                "splits": {k.value: v for k, v in self.splits.items()}, **self.extra}
        (self.root / KD3D_META).write_text(json.dumps(meta, indent=1) + "\n")

    def _write_split_txt(self) -> None:
        """12Scenes split.txt: query frames first (sequence0), then mapping frames (sequence1), if contiguous."""
        q, m = len(self.splits[Split.QUERY]), len(self.splits[Split.MAPPING])
        if self.names != self.splits[Split.QUERY] + self.splits[Split.MAPPING]:
            return
        parts = []
        if q:
            parts.append(f"sequence0 [frames={q}]  [start=0 ; end={q - 1}]")
        if m:
            parts.append(f"sequence1 [frames={m}]  [start={q} ; end={q + m - 1}]")
        (self.root / "split.txt").write_text("\n".join(parts) + "\n")
