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
    SIMULATED_DUST3R = "simulated-dust3r"


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
class SimulatedDust3rConfig:
    """The simulated DUSt3R teacher (benchmarks and tests only; see kd3d_core.teachers.simulated).

    Attributes:
        error_scale: multiplies every error of the published-figure model (x0.5, x1, x2 in the benchmark).
        seed: seeds the simulated errors.
        truth: scene folder holding the exact depth and poses of the same frames (matched by stamp, else by
            name), e.g. the synthetic scene an RGB-only bag was made from; None: the taught scene's own.
        use_reference: align onto the scene's poses (odometry/TF) for metric scale, as the real path does;
            False is the pure monocular case (no poses, no depth: arbitrary scale and frame).
        cache_dir: where the simulated pairs are cached (default LABELS/pairs); lets benchmarks realign the same
            pairs with other settings.
    """

    error_scale: float = 1.0
    seed: int = 0
    truth: Path | None = None
    use_reference: bool = True
    cache_dir: Path | None = None


@dataclass(frozen=True)
class TeachConfig:
    """What `kd3d teach` does.

    Attributes:
        teacher: DUSt3R, depth, or the simulated DUSt3R (benchmarks/tests; uses `dust3r` for size, pairs, align).
        labels_dir: output folder (default SCENE/labels/TEACHER).
        label_size: (w, h) of the labels; default 160 wide with the teacher's aspect ratio.
        dust3r: DUSt3R settings.
        depth: depth teacher settings.
        simulated: simulated DUSt3R settings.
        progress: show progress bars.
    """

    teacher: TeacherKind = TeacherKind.DEPTH
    labels_dir: Path | None = None
    label_size: tuple[int, int] | None = None
    dust3r: Dust3rConfig = field(default_factory=Dust3rConfig)
    depth: DepthTeacherConfig = field(default_factory=DepthTeacherConfig)
    simulated: SimulatedDust3rConfig = field(default_factory=SimulatedDust3rConfig)
    progress: bool = True
