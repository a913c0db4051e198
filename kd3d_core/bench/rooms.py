"""The benchmark's pipeline stages: render a room, label it, distil a student, build a classical map.

Rooms and labels are cached under the work directory (keyed by preset, seed, frame counts and size), so a rerun
does not re-render; models and maps are rebuilt on every run because their build time is a measurement.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from kd3d_core.bench.config import BenchConfig
from kd3d_core.labels import default_labels_dir
from kd3d_core.scene import Scene, open_scene

TIMING_FILE = "bench_room.json"


@dataclass(frozen=True)
class Room:
    """A rendered, labelled synthetic room.

    Attributes:
        preset: synth preset name.
        path: scene folder.
        labels_dir: depth-teacher labels of the mapping frames.
        label_s: time the depth teacher took to label the mapping frames (measured when they were made).
    """

    preset: str
    path: Path
    labels_dir: Path
    label_s: float

    def scene(self) -> Scene:
        """The opened scene."""
        return open_scene(self.path)


@dataclass(frozen=True)
class Distilled:
    """A student distilled on a room.

    Attributes:
        student: architecture name.
        model_path: the `.kd3d` file.
        train_s: training wall time (end-to-end trainer, or fast buffer fill + head training).
        budget: what stopped training, e.g. "12 epochs (time_budget)" or "3000 head steps".
        params: parameters of the network.
    """

    student: str
    model_path: Path
    train_s: float
    budget: str
    params: int


def room_key(config: BenchConfig, preset: str, size_wh: tuple[int, int], query_only: bool = False) -> str:
    """Folder name of a room rendering (every setting that changes the pixels is in it)."""
    kind = "q" if query_only else "mq"
    noise = f"-n{config.sensor_noise:g}" if config.sensor_noise > 0 else ""
    return (f"{preset}-s{config.seed}-{kind}-m{config.mapping_frames}-q{config.query_frames}-"
            f"{size_wh[0]}x{size_wh[1]}{noise}")


def prepare_room(config: BenchConfig, preset: str) -> Room:
    """Render (once) and label (once, depth teacher) a room of the accuracy suite."""
    from kd3d_core.synth import SynthConfig, render_scene
    from kd3d_core.teachers import TeachConfig, TeacherKind, teach_scene

    path = config.workdir / "rooms" / room_key(config, preset, config.image_wh)
    if not (path / "info.txt").is_file():
        render_scene(SynthConfig(preset=preset, seed=config.seed, mapping_frames=config.mapping_frames,
                                 query_frames=config.query_frames, size_wh=config.image_wh,
                                 sensor_noise=config.sensor_noise), path,
                     overwrite=True, progress=config.progress)
    timing_path = path / TIMING_FILE
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    labels_dir = default_labels_dir(path, "depth")
    if "label_s" not in timing:
        result = teach_scene(path, TeachConfig(teacher=TeacherKind.DEPTH, progress=config.progress))
        timing["label_s"] = round(result.seconds, 3)
        timing_path.write_text(json.dumps(timing))
    return Room(preset, path, labels_dir, float(timing["label_s"]))


def render_queries(config: BenchConfig, preset: str, size_wh: tuple[int, int], frames: int) -> Scene:
    """A query-only rendering of a room at another size, colour as JPEG so that decoding is realistic."""
    from dataclasses import replace

    from kd3d_core.synth import SynthConfig, render_scene

    cfg = replace(config, query_frames=frames)
    path = config.workdir / "queries" / room_key(cfg, preset, size_wh, query_only=True)
    if not (path / "info.txt").is_file():
        render_scene(SynthConfig(preset=preset, seed=config.seed, mapping_frames=config.mapping_frames,
                                 query_frames=frames, size_wh=size_wh, color_ext="jpg", include_mapping=False,
                                 sensor_noise=config.sensor_noise),
                     path, overwrite=True, progress=config.progress)
    return open_scene(path)


def distil(config: BenchConfig, room: Room, student: str) -> Distilled:
    """Train one student on a room's labels and write its model file (rebuilt on every run: it is timed)."""
    from kd3d_core.students import get_architecture

    out = config.workdir / "models" / room.path.name / f"{student}.kd3d"
    if get_architecture(student).trainer == "fast":
        return _distil_fast(config, room, student, out)
    from kd3d_core.labels import LabelStore
    from kd3d_core.training import TrainConfig, train_student

    cfg = TrainConfig(student=student, input_size=config.image_wh, epochs=config.train_epochs,
                      max_minutes=config.train_minutes, seed=config.seed, device=config.device,
                      progress=config.progress)
    t0 = time.perf_counter()
    result = train_student(room.scene(), LabelStore(room.labels_dir), cfg, out)
    seconds = time.perf_counter() - t0
    t = result.meta.training
    return Distilled(student, out, seconds, f"{t['epochs']} epochs ({t['stop_reason']})", model_params(out))


def _distil_fast(config: BenchConfig, room: Room, student: str, out: Path) -> Distilled:
    from kd3d_core.training.fast import FastTrainConfig, train_fast

    cfg = FastTrainConfig(input_height=config.image_wh[1], iterations=config.fast_iterations,
                          buffer_size=config.fast_buffer, batch_size=min(4096, config.fast_buffer),
                          seed=config.seed, device=config.device, threads=None)  # keep the caller's threads
    t0 = time.perf_counter()
    result = train_fast(room.scene(), room.labels_dir, out, cfg, progress=config.progress)
    seconds = time.perf_counter() - t0
    t = result.meta.training
    budget = f"{t.get('head', 'mlp')} head, {t.get('buffer_rows', '?')} buffer rows, {t.get('iterations', '?')} steps"
    return Distilled(student, out, seconds, budget, model_params(out))


def model_params(model_path: Path) -> int:
    """Trainable parameters of the network in a model file."""
    from kd3d_core.students import load_network

    net, _ = load_network(model_path, "cpu")
    return int(sum(p.numel() for p in net.parameters()))
