"""Configuration of `kd3d bench`: which benchmark families run, on which rooms, with which budgets."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from kd3d_core.errors import ConfigError

# Query variants of the robustness family (kd3d_core.synth.conditions), in report order.
ROBUST_VARIANTS: tuple[str, ...] = (
    "clean", "gain-0.5", "gain-1.6", "gamma-0.6", "gamma-1.6", "white-balance", "noise", "motion-blur", "jpeg-25",
    "lights-moved", "lights-dimmed", "object-moved", "roll-20", "lower-0.4")

# Benchmark families, in report order (`--only NAME ...` picks a subset).
FAMILIES: tuple[str, ...] = ("accuracy", "covariance", "robustness", "speed", "size", "scaling", "teacher_quality")
# Families a plain `kd3d bench` skips (long; run with --only NAME): teacher_quality simulates DUSt3R at three error
# levels, realigns and trains a student per teacher and room (about 15 minutes per room on 2 CPU cores).
OPT_IN_FAMILIES: tuple[str, ...] = ("teacher_quality",)


@dataclass(frozen=True)
class BenchConfig:
    """Everything one `kd3d bench` run does.

    Attributes:
        families: benchmark families to run (subset of FAMILIES, report order kept).
        rooms: synthetic presets of the accuracy suite (kd3d_core.synth.PRESETS); one room per preset.
        seed: room seed (fixed, so every run sees the same rooms).
        mapping_frames / query_frames: frames per room (mapping walk for distillation and the classical map,
            query walk for evaluation).
        image_wh: rendered image size of the accuracy rooms (and the students' network input size).
        sensor_noise: Gaussian noise (grey levels) on every rendered image of every room, mapping and query walks
            alike (kd3d_core.synth.SynthConfig.sensor_noise): a quiet camera's noise floor, because the
            renderer's noise-free pixels let a memory of appearance match texture no camera records (the
            low-texture room went from 30 to 0 of 30 queries within 5 cm / 5 deg with sigma 2 on its mapping
            images). 0 renders noise-free rooms, as runs before 2026-12-01 did.
        students: student architectures to distil and evaluate (empty: every registered one).
        train_minutes: wall-clock budget per end-to-end student and room (the trainer's max_minutes).
        train_epochs: epoch cap for end-to-end students (whichever of epochs / minutes comes first).
        fast_iterations / fast_buffer: head training steps and feature-buffer rows of the fast student.
        baselines: classical baselines ("orb", "sift"), built from the same mapping frames.
        speed_wh: query image size of the speed benchmark (rendered as JPEG, so decoding is measured).
        speed_frames: query frames timed per method in the speed benchmark.
        repeats: repetitions of each network timing (median, min and max are reported).
        scaling_sizes: network input sizes (w, h) of the resolution-scaling benchmark.
        alignment_frames: frame counts of the alignment-scaling benchmark.
        alignment_repeats: alignment runs per frame count (different seeds; median, min, max reported).
        dust3r_wh: image size (w, h) at which the DUSt3R 512-DPT pair forward is timed; None skips the timing
            (its parameter count is always measured, on torch's meta device, which allocates nothing).
        dust3r_repeats: timed DUSt3R forwards (after one warm-up).
        device: "auto" (CUDA when present), "cpu" or "cuda".
        workdir: rendered rooms, labels, models and maps (reused by later runs with the same settings).
        robust_rooms: presets of the robustness family (a low-texture room among them).
        robust_variants: query variants of the robustness family ("clean", kd3d_core.synth.conditions names).
        robust_students: students (and fast-student ablations, kd3d_core.bench.robustness.FAST_ABLATIONS) compared
            in the robustness family next to the classical baselines.
        teacher_rooms: presets of the teacher-quality family (depth teacher vs simulated DUSt3R).
        teacher_scales: error levels of the simulated DUSt3R (x the published figures).
        teacher_net_size: simulated DUSt3R input size (512 or 224; students assume labels cover the whole image,
            which 224's centre square does not, so keep 512 for relocalization figures).
        teacher_filters: also measure the label filters one by one (first teacher room, x1).
        quick: this is the CI smoke configuration (recorded in the report).
        progress: progress bars on stderr.
    """

    families: tuple[str, ...] = tuple(f for f in FAMILIES if f not in OPT_IN_FAMILIES)
    rooms: tuple[str, ...] = ("tiny", "bedroom", "kitchen", "office", "living", "lab")
    seed: int = 0
    mapping_frames: int = 200
    query_frames: int = 50
    image_wh: tuple[int, int] = (320, 240)
    sensor_noise: float = 2.0
    students: tuple[str, ...] = ()
    train_minutes: float = 4.0
    train_epochs: int = 200
    fast_iterations: int = 3000
    fast_buffer: int = 1_000_000
    baselines: tuple[str, ...] = ("orb", "sift")
    speed_wh: tuple[int, int] = (640, 480)
    speed_frames: int = 20
    repeats: int = 5
    scaling_sizes: tuple[tuple[int, int], ...] = ((160, 120), (320, 240), (640, 480), (1280, 960))
    alignment_frames: tuple[int, ...] = (50, 100, 200, 400)
    alignment_repeats: int = 1
    dust3r_wh: tuple[int, int] | None = (512, 384)
    dust3r_repeats: int = 3
    device: str = "auto"
    workdir: Path = field(default_factory=lambda: Path("bench_work"))
    robust_rooms: tuple[str, ...] = ("office", "living", "lowtex")
    robust_variants: tuple[str, ...] = ROBUST_VARIANTS
    robust_students: tuple[str, ...] = ("fast", "fast-no-lcn")
    teacher_rooms: tuple[str, ...] = ("bedroom", "office")
    teacher_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    teacher_net_size: int = 512
    teacher_filters: bool = True
    quick: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ConfigError(f"unknown benchmark(s) {', '.join(unknown) or '(none)'}; choose from "
                              f"{', '.join(FAMILIES)}")
        object.__setattr__(self, "families", tuple(f for f in FAMILIES if f in self.families))
        bad_baselines = sorted(set(self.baselines) - {"orb", "sift"})
        from kd3d_core.synth import MAX_SENSOR_NOISE

        checks = [
            (bool(self.rooms), "need at least one room"),
            (self.mapping_frames >= 4 and self.query_frames >= 1, "need >= 4 mapping and >= 1 query frames"),
            (0.0 <= self.sensor_noise <= MAX_SENSOR_NOISE,
             f"sensor_noise must be 0-{MAX_SENSOR_NOISE:g} grey levels, got {self.sensor_noise}"),
            (self.train_minutes > 0 and self.train_epochs >= 1, "training budget must be positive"),
            (self.fast_iterations >= 1 and self.fast_buffer >= 1, "fast budget must be positive"),
            (not bad_baselines, f"unknown baseline(s) {bad_baselines}; choose orb, sift"),
            (min(self.speed_frames, self.repeats, self.dust3r_repeats, self.alignment_repeats) >= 1,
             "frame counts and repeats must be >= 1"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
            # The synthetic alignment loop needs room for outlier pairs beyond its 5-frame window.
            (bool(self.alignment_frames) and min(self.alignment_frames) >= 20, "alignment_frames must be >= 20"),
            (self.dust3r_wh is None or (self.dust3r_wh[0] % 16 == 0 and self.dust3r_wh[1] % 16 == 0),
             "dust3r_wh must be multiples of the 16-pixel patch"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"bench config: {message}")
        from kd3d_core.synth import PRESETS

        missing = [r for r in self.rooms + self.teacher_rooms + self.robust_rooms if r not in PRESETS]
        if missing:
            raise ConfigError(f"unknown room preset(s) {', '.join(missing)}; choose from {', '.join(PRESETS)}")
        if "robustness" in self.families:
            self._check_robustness()

    def _check_robustness(self) -> None:
        """Variants and students of the robustness family, checked before any room is rendered."""
        from kd3d_core.bench.robustness import FAST_ABLATIONS, variant_names
        from kd3d_core.students import list_architectures

        variant_names(self.robust_variants)
        known = list(list_architectures()) + list(FAST_ABLATIONS)
        unknown = sorted(set(self.robust_students) - set(known))
        if unknown:
            raise ConfigError(f"unknown robustness student(s) {', '.join(unknown)}; choose from {', '.join(known)}")


def quick_config(**overrides: object) -> BenchConfig:
    """The CI smoke configuration: one tiny room, few frames, tiny budgets, DUSt3R timed at 64x48 (labelled)."""
    base = BenchConfig(rooms=("tiny",), mapping_frames=40, query_frames=10, image_wh=(160, 120), train_minutes=0.5,
                       train_epochs=3, fast_iterations=150, fast_buffer=60_000, speed_frames=5, repeats=3,
                       scaling_sizes=((160, 120), (320, 240), (640, 480)), alignment_frames=(20, 40),
                       dust3r_wh=(64, 48), dust3r_repeats=1, robust_rooms=("tiny",),
                       robust_variants=("clean", "gain-0.5", "lights-dimmed", "roll-20"), robust_students=("fast",),
                       teacher_rooms=("tiny",), teacher_scales=(1.0,), teacher_net_size=512,
                       teacher_filters=False, quick=True)
    return replace(base, **overrides)
