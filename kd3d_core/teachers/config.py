"""Configuration of `kd3d teach` (one frozen dataclass per component, built once from CLI flags)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from kd3d_core.alignment.solve import AlignConfig
from kd3d_core.teachers.depth import DepthTeacherConfig
from kd3d_core.teachers.pairs import PairGraphConfig


class TeacherKind(str, Enum):
    """Which teacher labels the scene."""

    DUST3R = "dust3r"
    DEPTH = "depth"


class DeviceChoice(str, Enum):
    """Where the teacher runs; AUTO picks CUDA when present."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class Dust3rConfig:
    """DUSt3R teacher settings.

    Attributes:
        checkpoint: .pth file, Hugging Face folder or hub name.
        size: network input size, 512 (long side) or 224 (centre crop).
        batch: pairs per forward pass (each pair runs in both orders).
        device: where to run.
        amp: autocast on CUDA.
        use_known_K: use the scene's intrinsics (else estimate the focal from the pointmaps).
        pairs: the pair graph.
        align: global alignment settings.
    """

    checkpoint: str | None = None
    size: int = 512
    batch: int = 8
    device: DeviceChoice = DeviceChoice.AUTO
    amp: bool = True
    use_known_K: bool = True
    pairs: PairGraphConfig = field(default_factory=PairGraphConfig)
    align: AlignConfig = field(default_factory=AlignConfig)


@dataclass(frozen=True)
class TeachConfig:
    """What `kd3d teach` does.

    Attributes:
        teacher: DUSt3R or depth.
        labels_dir: output folder (default SCENE/labels/TEACHER).
        label_size: (w, h) of the labels; default 160 wide with the teacher's aspect ratio.
        dust3r: DUSt3R settings.
        depth: depth teacher settings.
        progress: show progress bars.
    """

    teacher: TeacherKind = TeacherKind.DEPTH
    labels_dir: Path | None = None
    label_size: tuple[int, int] | None = None
    dust3r: Dust3rConfig = field(default_factory=Dust3rConfig)
    depth: DepthTeacherConfig = field(default_factory=DepthTeacherConfig)
    progress: bool = True
