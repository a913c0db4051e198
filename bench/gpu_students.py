#!/usr/bin/env python3
"""The paper's end-to-end students (cnn, mobilenetv3, vit) on one GPU, in about 8 minutes all told.

    python bench/gpu_students.py --device cuda --json bench/results-DATE-h200-students.json \\
        --markdown bench/results-DATE-h200-students.md

Renders a synthetic office room (320x240, 300 mapping / 60 query frames), labels its mapping frames with the depth
teacher, trains each student end to end for a wall-clock budget (--minutes-per-student; AMP on CUDA, batch 32),
then reports per student:
- held-out L2 error, mean and median (every 10th mapping frame; the paper's metric, its best ViT ~1.3 cm), and the
  query frames' L2 error against exact geometry;
- relocalization of the query walk with kd3d_core.localization.Relocalizer: recall at 2cm/2deg, 5cm/5deg,
  10cm/10deg and median errors, as rendered and under photometric variants (default gain-0.5 and gamma-1.6,
  kd3d_core.synth.conditions; mapping unchanged);
- relocalization speed at 640x480 input (query frames of the same room rendered at 640x480, stored as JPEG):
  median wall time of Relocalizer.localize, frames/s, and with JPEG decoding included;
- parameters and model file size.
Runs on CPU too (slowly); --quick is a tiny smoke configuration for tests. Exit 1 when a student failed (its row
says why), 2 on bad input.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd3d_core.bench.accuracy import evaluate_localizer  # noqa: E402
from kd3d_core.bench.machine import machine_info  # noqa: E402
from kd3d_core.bench.robustness import VariantFrame  # noqa: E402
from kd3d_core.bench.stats import Spread  # noqa: E402
from kd3d_core.errors import ConfigError, Kd3dError  # noqa: E402
from kd3d_core.geometry import pose_error  # noqa: E402
from kd3d_core.io_utils import atomic_write_text  # noqa: E402
from kd3d_core.scene import Scene, Split, open_scene  # noqa: E402
from kd3d_core.synth.conditions import Photometric  # noqa: E402

SPEED_WH = (640, 480)
SUMMARY_KEYS = ("frames", "localized", "recall_2cm_2deg", "recall_5cm_5deg", "recall_10cm_10deg",
                "median_translation_m", "median_rotation_deg")


def _sibling(name: str):
    """bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"kd3d_bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


students_bench = _sibling("students")  # query_error_m and train_config are shared with bench/students.py


@dataclass(frozen=True)
class GpuBenchConfig:
    """What one run does (built once in main from the flags)."""

    device: str = "cuda"
    students: tuple[str, ...] = ("cnn", "mobilenetv3", "vit")
    minutes_per_student: float = 1.25
    preset: str = "office"
    mapping_frames: int = 300
    query_frames: int = 60
    size_wh: tuple[int, int] = (320, 240)
    batch_size: int = 32
    variants: tuple[str, ...] = ("gain-0.5", "gamma-1.6")
    speed_frames: int = 10
    repeats: int = 3
    seed: int = 0
    sensor_noise: float = 2.0  # grey levels on every rendered image, as kd3d bench (SynthConfig.sensor_noise)
    workdir: Path = Path("/tmp/kd3d_gpu_students")
    quick: bool = False
    progress: bool = True


QUICK = dict(preset="tiny", mapping_frames=20, query_frames=4, size_wh=(128, 96), minutes_per_student=0.02,
             batch_size=8, speed_frames=2, repeats=1)


def prepare_room(cfg: GpuBenchConfig) -> tuple[Path, dict]:
    """The rendered, depth-labelled room (reused from the work folder when a previous run made it)."""
    from kd3d_core.labels import default_labels_dir
    from kd3d_core.synth import SynthConfig, render_scene
    from kd3d_core.teachers import TeachConfig, TeacherKind, teach_scene

    w, h = cfg.size_wh
    root = (cfg.workdir /
            f"{cfg.preset}-s{cfg.seed}-{w}x{h}-m{cfg.mapping_frames}-q{cfg.query_frames}-n{cfg.sensor_noise:g}")
    timing: dict = {"render_s": None, "label_s": None, "cached": True}
    if not (root / "info.txt").is_file():
        t0 = time.perf_counter()
        render_scene(SynthConfig(preset=cfg.preset, seed=cfg.seed, mapping_frames=cfg.mapping_frames,
                                 query_frames=cfg.query_frames, size_wh=cfg.size_wh, sensor_noise=cfg.sensor_noise),
                     root, overwrite=True, progress=cfg.progress)
        timing.update(render_s=round(time.perf_counter() - t0, 1), cached=False)
    if not (default_labels_dir(root, "depth") / "labels.json").is_file():
        t0 = time.perf_counter()
        teach_scene(root, TeachConfig(teacher=TeacherKind.DEPTH, label_size=cfg.size_wh, progress=cfg.progress))
        timing.update(label_s=round(time.perf_counter() - t0, 1), cached=False)
    return root, timing


def speed_frames(cfg: GpuBenchConfig) -> list:
    """Query frames of the same room (same seed and walk) rendered at 640x480 and stored as JPEG."""
    from kd3d_core.synth import SynthConfig, render_scene

    root = (cfg.workdir /
            f"{cfg.preset}-s{cfg.seed}-640x480-m{cfg.mapping_frames}-q{cfg.speed_frames}-jpg-n{cfg.sensor_noise:g}")
    if not (root / "info.txt").is_file():
        render_scene(SynthConfig(preset=cfg.preset, seed=cfg.seed, mapping_frames=cfg.mapping_frames,
                                 query_frames=cfg.speed_frames, size_wh=SPEED_WH, color_ext="jpg",
                                 include_mapping=False, sensor_noise=cfg.sensor_noise), root, overwrite=True,
                     progress=cfg.progress)
    return open_scene(root).split(Split.QUERY)


def time_relocalization(relocalizer, frames: list, repeats: int) -> dict:
    """Median wall time of Relocalizer.localize per 640x480 frame (and with JPEG decoding), after a warm-up.

    `localized` and `recall_5cm_5deg` are over the first pass (they show that the timed runs did real work).
    """
    encoded = [np.frombuffer(f.color_path.read_bytes(), np.uint8) for f in frames]
    decode = lambda data: cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # noqa: E731
    for _ in range(2):  # warm-up: lazy allocations, CUDA kernels and cuDNN autotuning
        relocalizer.localize(decode(encoded[0]), frames[0].K)
    decode_ms, localize_ms, network_ms, hits, localized = [], [], [], [], []
    for rep in range(repeats):
        for frame, data in zip(frames, encoded):
            t0 = time.perf_counter()
            rgb = decode(data)
            t1 = time.perf_counter()
            est = relocalizer.localize(rgb, frame.K)  # returns numpy: CUDA work has finished
            t2 = time.perf_counter()
            decode_ms.append(1000 * (t1 - t0))
            localize_ms.append(1000 * (t2 - t1))
            network_ms.append(est.timings.predict_ms)
            if rep == 0:
                err = pose_error(est.world_T_cam, frame.world_T_cam) if est.success else None
                localized.append(est.success)
                hits.append(err is not None and err.translation_m <= 0.05 and err.rotation_deg <= 5.0)
    loc, total = Spread.of(localize_ms), Spread.of(np.add(decode_ms, localize_ms))
    return {"input": f"{SPEED_WH[0]}x{SPEED_WH[1]}", "frames": len(frames), "repeats": repeats,
            "localize_ms": loc.to_dict(), "decode_ms": Spread.of(decode_ms).to_dict(),
            "network_ms": Spread.of(network_ms).to_dict(), "hz": round(1000 / loc.median, 2),
            "hz_with_decode": round(1000 / total.median, 2), "localized": round(float(np.mean(localized)), 3),
            "recall_5cm_5deg": round(float(np.mean(hits)), 3)}


def localization(relocalizer, queries: list, variants: tuple[str, ...], seed: int) -> dict:
    """Evaluation summary of the query walk as rendered ('clean') and under each photometric variant."""
    out = {}
    for variant in ("clean", *variants):
        change = None if variant == "clean" else Photometric(variant)
        frames = [VariantFrame(f, change, seed * 100_003 + i) for i, f in enumerate(queries)]
        summary = evaluate_localizer(relocalizer, frames)
        out[variant] = {k: summary.get(k) for k in SUMMARY_KEYS}
        out[variant]["ms_per_frame"] = summary.get("ms_per_frame")
    return out


def bench_student(cfg: GpuBenchConfig, name: str, scene: Scene, store, frames640: list) -> dict:
    """Train one student, then its L2 errors, relocalization recall (clean and variants), speed and size."""
    from kd3d_core.localization import Relocalizer
    from kd3d_core.students.scene_model import load_scene_model
    from kd3d_core.training import train_student

    t_start = time.perf_counter()
    out = cfg.workdir / "models" / f"{name}.kd3d"
    tcfg = students_bench.train_config(name, cfg.minutes_per_student, cfg.workdir / "logs", cfg.size_wh,
                                       cfg.device, cfg.batch_size, cfg.progress)
    if cfg.quick:  # no loss curves or TensorBoard events: their imports alone take seconds on a loaded CPU
        tcfg = replace(tcfg, log_dir=None)
    t0 = time.perf_counter()
    result = train_student(scene, store, tcfg, out)
    train_wall = time.perf_counter() - t0
    model = load_scene_model(out, device=cfg.device)
    q_mean, q_median = students_bench.query_error_m(model, scene)
    relocalizer = Relocalizer(model)
    t = result.meta.training
    row = {"student": name, "error": None,
           "params_m": round(sum(p.numel() for p in model.module.parameters()) / 1e6, 3),
           "size_mb": round(out.stat().st_size / 1e6, 3),
           "train": {k: t.get(k) for k in ("seconds", "epochs", "steps", "stop_reason", "best_epoch", "batch_size",
                                           "frames_train", "frames_val", "device")}
           | {"wall_s": round(train_wall, 1), "amp": tcfg.amp and model.device.type == "cuda"},
           "heldout_mean_m": t.get("val_mean_m"), "heldout_median_m": t.get("val_median_m"),
           "query_l2_mean_m": q_mean, "query_l2_median_m": q_median,
           "localization": localization(relocalizer, scene.split(Split.QUERY), cfg.variants, cfg.seed),
           "speed": time_relocalization(relocalizer, frames640, cfg.repeats)}
    row["seconds"] = round(time.perf_counter() - t_start, 1)
    return row


def run(cfg: GpuBenchConfig, command: str = "") -> dict:
    """The whole benchmark; one failing student is recorded in its row and the others still run."""
    from kd3d_core.labels import LabelStore, default_labels_dir

    t_start = time.perf_counter()
    root, room_timing = prepare_room(cfg)
    scene = open_scene(root)
    store = LabelStore(default_labels_dir(root, "depth"))
    frames640 = speed_frames(cfg)
    rows = []
    for name in cfg.students:
        try:
            rows.append(bench_student(cfg, name, scene, store, frames640))
        except Exception as err:  # noqa: BLE001 - e.g. CUDA out of memory for one student: keep the others
            traceback.print_exc(file=sys.stderr)
            rows.append({"student": name, "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"})
        if cfg.device.startswith("cuda"):  # the next student starts from a clean allocator
            import torch

            torch.cuda.empty_cache()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    return _finite({"format": "kd3d-gpu-students", "version": 1,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
                    "quick": cfg.quick, "seconds": round(time.perf_counter() - t_start, 1),
                    "machine": machine_info(cfg.device), "config": config,
                    "room": {"preset": cfg.preset, "size": list(cfg.size_wh), "path": str(root),
                             "mapping_frames": len(scene.split(Split.MAPPING)),
                             "query_frames": len(scene.split(Split.QUERY)), **room_timing},
                    "students": rows})


def _finite(value):
    """The document with NaN/inf floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _room_time(room: dict) -> str:
    if room["cached"]:
        return "room and labels reused from the work folder"
    parts = [f"{k} {room[k + '_s']:.0f} s" for k in ("render", "label") if room[k + "_s"] is not None]
    return ", ".join(parts)


def _cm(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def markdown(doc: dict) -> str:
    """The report as Markdown: one summary row per student, then the per-variant relocalization rows."""
    m, room, cfg = doc["machine"], doc["room"], doc["config"]
    variants = cfg["variants"]
    quick = " (quick smoke configuration)" if doc["quick"] else ""
    lines = [f"# The paper's students on {m['gpu'] or 'CPU'}{quick}",
             "", f"`{doc['command']}` — {doc['created']}, {doc['seconds']:.0f} s in all; {m['cpu']} "
             f"({m['cpu_count']} cores), torch {m['torch']}, device {m['device']}.", "",
             f"Room `{room['preset']}` {room['size'][0]}x{room['size'][1]}, {room['mapping_frames']} mapping / "
             f"{room['query_frames']} query frames, depth-teacher labels; {cfg['minutes_per_student']:g} min of "
             f"training per student, batch {cfg['batch_size']}; " + _room_time(room) + ".", "",
             "| student | params M | file MB | train s (epochs) | held-out L2 mean / median cm | query L2 mean / "
             "median cm | 5cm/5° | 2cm/2° | median t cm / R ° | " + " | ".join(f"{v} 5cm/5°" for v in variants)
             + " | Hz at 640x480 (with decode) |", "|---" * (10 + len(variants)) + "|"]
    for r in doc["students"]:
        if r["error"]:
            lines.append(f"| {r['student']} | error: {r['error']} |")
            continue
        c, s, t = r["localization"]["clean"], r["speed"], r["train"]
        rot = "-" if c["median_rotation_deg"] is None else f"{c['median_rotation_deg']:.2f}"
        lines.append(f"| {r['student']} | {r['params_m']:.2f} | {r['size_mb']:.1f} | {t['seconds']:.0f} "
                     f"({t['epochs']}) | {_cm(r['heldout_mean_m'])} / {_cm(r['heldout_median_m'])} | "
                     f"{_cm(r['query_l2_mean_m'])} / {_cm(r['query_l2_median_m'])} | {_pct(c['recall_5cm_5deg'])} | "
                     f"{_pct(c['recall_2cm_2deg'])} | {_cm(c['median_translation_m'])} / {rot} | "
                     + " | ".join(_pct(r["localization"][v]["recall_5cm_5deg"]) for v in variants)
                     + f" | {s['hz']:.1f} ({s['hz_with_decode']:.1f}) |")
    lines += ["", "| student | query variant | localized | 2cm/2° | 5cm/5° | 10cm/10° | median t cm |",
              "|---|---|---|---|---|---|---|"]
    for r in doc["students"]:
        for variant, v in (r.get("localization") or {}).items():
            lines.append(f"| {r['student']} | {variant} | {v['localized']}/{v['frames']} | "
                         f"{_pct(v['recall_2cm_2deg'])} | {_pct(v['recall_5cm_5deg'])} | "
                         f"{_pct(v['recall_10cm_10deg'])} | {_cm(v['median_translation_m'])} |")
    lines += ["", "Held-out L2: every 10th mapping frame, best epoch. Hz: 1000 / median wall time of "
              "Relocalizer.localize on query frames of the same room rendered at 640x480 (the network resizes to "
              "its input), after two warm-up calls; with decode: JPEG decoding included.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[GpuBenchConfig, argparse.Namespace]:
    """Flags -> the run's config (--quick fills every value not given on the command line)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:1, cpu")
    p.add_argument("--minutes-per-student", type=float, help="training budget per student (default 1.25)")
    p.add_argument("--frames", type=int, nargs=2, metavar=("MAPPING", "QUERY"), help="default 300 60")
    p.add_argument("--size", help="WxH of the rendered room and the network input (default 320x240)")
    p.add_argument("--students", nargs="+", help="default cnn mobilenetv3 vit")
    p.add_argument("--preset", help="synthetic room preset (default office)")
    p.add_argument("--batch-size", type=int, help="default 32")
    p.add_argument("--variants", nargs="*", help="photometric query variants (default gain-0.5 gamma-1.6)")
    p.add_argument("--speed-frames", type=int, help="640x480 frames timed (default 10)")
    p.add_argument("--repeats", type=int, help="passes over the speed frames (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: kd3d's policy)")
    p.add_argument("--workdir", type=Path, help="rendered room, labels and models (reused by later runs)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--quick", action="store_true", help="tiny room and budgets (CPU smoke test)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    given = {k: v for k, v in {
        "minutes_per_student": args.minutes_per_student, "preset": args.preset, "batch_size": args.batch_size,
        "students": tuple(args.students) if args.students else None, "speed_frames": args.speed_frames,
        "variants": tuple(args.variants) if args.variants is not None else None, "repeats": args.repeats,
        "workdir": args.workdir}.items() if v is not None}
    if args.frames:
        given.update(mapping_frames=args.frames[0], query_frames=args.frames[1])
    if args.size:
        given["size_wh"] = _size(args.size)
    cfg = replace(GpuBenchConfig(), **{**(QUICK if args.quick else {}), **given}, quick=args.quick,
                  progress=not args.quiet)
    return _checked(cfg, args.device), args


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must be WxH, e.g. 320x240, got {text!r}") from None
    return w, h


def _checked(cfg: GpuBenchConfig, device: str) -> GpuBenchConfig:
    """Validate values (ConfigError) and resolve the device."""
    from kd3d_core.config_utils import check_device
    from kd3d_core.students import get_architecture
    from kd3d_core.synth import PRESETS

    for name in cfg.students:
        get_architecture(name)  # ConfigError for an unknown student
    known = {p.value for p in Photometric}
    if bad := sorted(set(cfg.variants) - known):
        raise ConfigError(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.minutes_per_student <= 0 or min(cfg.batch_size, cfg.speed_frames, cfg.repeats, cfg.query_frames) < 1:
        raise ConfigError("minutes, batch size, speed frames, repeats and query frames must be positive")
    if min(cfg.size_wh) < 32 or cfg.mapping_frames < 10:
        raise ConfigError("need at least 10 mapping frames and a size of at least 32x32")
    return replace(cfg, device=check_device(device))


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the Markdown report and write the files; 0 ok, 1 a student failed, 2 bad input."""
    import torch

    from kd3d_core.threads import apply_threads

    try:
        cfg, args = parse_args(argv)
        apply_threads(args.threads)
        if cfg.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        for path in (args.json, args.markdown):
            if path is not None:
                from kd3d_core.io_utils import check_output

                check_output(path)
        doc = run(cfg, " ".join(["python bench/gpu_students.py", *(argv if argv is not None else sys.argv[1:])]))
    except Kd3dError as err:
        print(f"gpu_students: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    text = markdown(doc)
    print(text)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    if args.markdown is not None:
        atomic_write_text(args.markdown, text)
    return 1 if any(r["error"] for r in doc["students"]) else 0


if __name__ == "__main__":
    sys.exit(main())
