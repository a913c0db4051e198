"""The end-to-end demo on an embedded synthetic room: synth -> teach -> distil -> localize -> evaluate -> replay.

Everything it writes goes under one folder (default ./kd3d_demo in the directory it is run from, about 270 MB);
the summary says where the model, reports, plots and bags are. An existing demo folder is replaced only with
`overwrite` (the one overwrite rule of every kd3d output); a folder the demo did not make is never touched.
Mapping runs at 320x240 (what the teacher labels and the student learns from); the query walk is rendered at
640x480 and relocalized at that input size, as a robot's camera would deliver it.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd3d_core.errors import ConfigError, Kd3dError
from kd3d_core.io_utils import atomic_write_text
from kd3d_core.threads import usable_cores

MARKER = "demo.json"
IMAGE_TOPIC = "/camera/color/image_raw"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo does (defaults: the README's demo)."""

    out: Path = Path("kd3d_demo")
    preset: str = "office"
    seed: int = 0
    mapping_frames: int = 300
    query_frames: int = 100
    map_size_wh: tuple[int, int] = (320, 240)
    query_size_wh: tuple[int, int] = (640, 480)
    sensor_noise: float = 2.0  # grey levels on every rendered image (SynthConfig.sensor_noise), as kd3d bench
    checkpoint: str | None = None
    device: str = "auto"
    threads: int | None = None
    overwrite: bool = False
    progress: bool = True


@dataclass
class DemoSummary:
    """Figures of one demo run (written to OUT/demo.json)."""

    out: Path
    teacher: str
    steps_s: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    threads: int = 0
    load_average: tuple[float, float, float] | None = None
    model_mb: float = 0.0
    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"out": str(self.out), "teacher": self.teacher, "steps_s": self.steps_s, "accuracy": self.accuracy,
                "timings_ms": self.timings_ms, "threads": self.threads,
                "load_average": self.load_average, "model_mb": self.model_mb, "paths": self.paths, "notes": self.notes}


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Replace OUT only with `overwrite` and only if an earlier demo made it; never delete another folder."""
    if out.exists():
        if not out.is_dir() or (not (out / MARKER).is_file() and any(out.iterdir())):
            raise ConfigError(f"{out} exists and is not a kd3d demo folder; choose another --out")
        if not overwrite:
            raise ConfigError(f"output {out} already exists (an earlier demo); pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    atomic_write_text(out / MARKER, json.dumps({"status": "running"}) + "\n")


def _timed(summary: DemoSummary, name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = fn()
    summary.steps_s[name] = round(time.perf_counter() - start, 1)
    return result


def _synth_configs(config: DemoConfig) -> tuple[Any, Any]:
    """The mapping scene's and the 640x480 query scene's SynthConfig, validated (ConfigError on a bad value)."""
    from kd3d_core.synth import SynthConfig

    base = SynthConfig(preset=config.preset, seed=config.seed, mapping_frames=config.mapping_frames,
                       query_frames=config.query_frames, size_wh=config.map_size_wh, sensor_noise=config.sensor_noise)
    hd = SynthConfig(preset=config.preset, seed=config.seed, mapping_frames=config.mapping_frames,
                     query_frames=config.query_frames, size_wh=config.query_size_wh, include_mapping=False,
                     sensor_noise=config.sensor_noise)
    base.validate()
    hd.validate()
    return base, hd


def _synthesize(config: DemoConfig, summary: DemoSummary) -> tuple[Path, Path, Path]:
    from kd3d_core.bags import write_scene_bag
    from kd3d_core.scene import Split, open_scene
    from kd3d_core.synth import render_scene

    scene_dir, query_dir, bag = config.out / "scene", config.out / "query_640x480", config.out / "query_bag"
    base, hd = _synth_configs(config)
    _timed(summary, "synth_mapping", lambda: render_scene(base, scene_dir, progress=config.progress))
    summary.notes.append(f"images: synthetic '{config.preset}' room rendered with sensor noise sigma "
                         f"{config.sensor_noise:g} grey levels (--sensor-noise)")
    _timed(summary, "synth_query", lambda: render_scene(hd, query_dir, progress=config.progress))
    _timed(summary, "write_bag", lambda: write_scene_bag(open_scene(query_dir), bag, split=Split.QUERY,
                                                         image_topic=IMAGE_TOPIC, progress=config.progress))
    summary.paths.update(scene=str(scene_dir), query_scene=str(query_dir), query_bag=str(bag))
    return scene_dir, query_dir, bag


def _teach(config: DemoConfig, scene_dir: Path, summary: DemoSummary) -> Path:
    from kd3d_core.teachers.config import Dust3rConfig, TeachConfig, TeacherKind
    from kd3d_core.teachers.teach import teach_scene

    if config.checkpoint:
        teach = TeachConfig(teacher=TeacherKind.DUST3R, dust3r=Dust3rConfig(checkpoint=config.checkpoint),
                            progress=config.progress)
    else:
        summary.notes.append("teacher: depth (no DUSt3R checkpoint given; pass --checkpoint to use DUSt3R)")
        teach = TeachConfig(teacher=TeacherKind.DEPTH, progress=config.progress)
    result = _timed(summary, "teach", lambda: teach_scene(scene_dir, teach))
    summary.paths["labels"] = str(result.labels_dir)
    return result.labels_dir


def _train(config: DemoConfig, scene_dir: Path, labels_dir: Path, summary: DemoSummary) -> Path:
    from kd3d_core.training.fast import FastTrainConfig, train_fast

    model = config.out / "model.kd3d"
    fast = FastTrainConfig(device=config.device)  # threads: set once by the command
    _timed(summary, "train", lambda: train_fast(scene_dir, labels_dir, model, fast, progress=config.progress))
    summary.model_mb = round(model.stat().st_size / 2**20, 2)
    summary.paths["model"] = str(model)
    return model


def _localize_and_evaluate(config: DemoConfig, relocalizer: Any, query_dir: Path, summary: DemoSummary) -> None:
    from kd3d_core.evaluation import evaluate_trajectories, write_poses, write_report
    from kd3d_core.localization.scene_run import localize_frames, reference_trajectory
    from kd3d_core.scene import Split, open_scene

    frames = open_scene(query_dir).split(Split.QUERY)
    run = _timed(summary, "localize", lambda: localize_frames(relocalizer, frames, progress=config.progress))
    eval_dir = config.out / "evaluation"
    write_poses(eval_dir / "query_estimates.txt", run.trajectory(), "tum")
    result = evaluate_trajectories(run.trajectory(), reference_trajectory(frames))
    summary.timings_ms = {k: round(v, 2) for k, v in run.median_timings_ms().items()}
    summary.accuracy = write_report(result, eval_dir / "report.json", eval_dir / "report.md", eval_dir,
                                    extra={f"timing_{k}_ms": v for k, v in summary.timings_ms.items()})
    summary.paths.update(report=str(eval_dir / "report.json"), plots=str(eval_dir))


def _replay(config: DemoConfig, relocalizer: Any, bag: Path, summary: DemoSummary) -> None:
    from kd3d_core.replay import ReplayConfig, replay_bag

    out_bag = config.out / "result_bag"
    cfg = ReplayConfig(in_bag=bag, out_bag=out_bag, image_topic=IMAGE_TOPIC, progress=config.progress)
    result = _timed(summary, "replay", lambda: replay_bag(relocalizer, cfg))
    summary.paths["result_bag"] = str(out_bag)
    summary.notes.append(f"replay: {result.localized} of {result.frames} bag frames localized")
    problem = replay_shortfall(int(summary.accuracy.get("localized", 0)), result.localized, result.frames)
    if problem:
        raise Kd3dError(f"{problem} (result bag: {out_bag})")


def replay_shortfall(direct: int, replayed: int, frames: int) -> str | None:
    """A one-line problem when the bag replay localized clearly fewer query frames than localizing the same
    frames directly (more than max(2, 5 %) fewer): the bag path (decoding, camera info, the node's code) is then
    broken, and a demo must not pass on the direct path alone. None when they agree."""
    if direct - replayed > max(2, 0.05 * frames):
        return (f"the query bag's replay localized {replayed} of {frames} frames where localizing the same frames "
                f"directly gave {direct}: the bag path is broken")
    return None


def run_demo(config: DemoConfig) -> DemoSummary:
    """Run every stage; returns the summary (also written to OUT/demo.json)."""
    from kd3d_core.localization import Relocalizer
    from kd3d_core.students.scene_model import load_scene_model

    from kd3d_core.bench.contention import load_average
    from kd3d_core.threads import apply_threads

    _synth_configs(config)  # a bad room setting fails here, before OUT is touched
    _prepare_out(config.out, config.overwrite)
    summary = DemoSummary(out=config.out, teacher="dust3r" if config.checkpoint else "depth",
                          threads=apply_threads(config.threads))
    start = time.perf_counter()
    scene_dir, query_dir, bag = _synthesize(config, summary)
    labels_dir = _teach(config, scene_dir, summary)
    model = _train(config, scene_dir, labels_dir, summary)
    relocalizer = Relocalizer(load_scene_model(model, config.device))
    _localize_and_evaluate(config, relocalizer, query_dir, summary)
    _replay(config, relocalizer, bag, summary)
    summary.load_average = load_average()
    summary.steps_s["total"] = round(time.perf_counter() - start, 1)
    atomic_write_text(config.out / MARKER, json.dumps(summary.as_dict(), indent=1) + "\n")
    return summary


def format_summary(s: DemoSummary) -> str:
    """The few lines a user reads after the demo."""
    a = s.accuracy
    med_t = a.get("median_translation_m")
    med_r = a.get("median_rotation_deg")
    t = s.timings_ms
    load = ("n/a" if s.load_average is None else
            f"{s.load_average[0]:.2f} (1 min) on {usable_cores()} cores")
    lines = [
        f"kd3d demo: {a.get('localized', 0)} of {a.get('frames', 0)} query frames localized (640x480 input)",
        f"  accuracy: {a.get('recall_2cm_2deg', 0):.1%} within 2 cm/2 deg, {a.get('recall_5cm_5deg', 0):.1%} within "
        f"5 cm/5 deg, {a.get('recall_10cm_10deg', 0):.1%} within 10 cm/10 deg; median error "
        + (f"{med_t * 100:.1f} cm, {med_r:.2f} deg" if med_t is not None else "n/a"),
        f"  speed: {t.get('total', float('nan')):.1f} ms/frame median ({1000 / max(t.get('total', 1e9), 1e-9):.1f} Hz;"
        f" network {t.get('predict', float('nan')):.1f} ms, PnP {t.get('pnp', float('nan')):.1f} ms;"
        f" {s.threads} torch thread{'s' if s.threads != 1 else ''}, load average {load})",
        f"  model: {s.model_mb:.2f} MB (DUSt3R 512-DPT: 2.28 GB); teacher: {s.teacher}",
        "  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in s.steps_s.items()),
    ]
    lines += [f"  note: {n}" for n in s.notes]
    lines += [f"  {k}: {v}" for k, v in s.paths.items()]
    return "\n".join(lines)
