"""Benchmark of the paper's students on a synthetic room (not a test; takes ~minutes per student).

    python bench/students.py [--minutes 3] [--students cnn mobilenetv3 vit] [--json OUT.json]

Renders an office room (320x240, 300 mapping / 100 query frames), labels the mapping frames with the depth
teacher, trains each student end-to-end for a fixed wall-clock budget at 320x240 input, and reports:
held-out (every 10th mapping frame) mean/median L2 error in metres, query-frame L2 error against exact
geometry, training time, model file size, and forward time per 640x480 image (SceneModel.predict, which
resizes to the 320x240 network input; and the raw network run at 640x480).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from kd3d_core.geometry import backproject_depth, transform_points
from kd3d_core.labels import LabelStore
from kd3d_core.scene import Split, open_scene
from kd3d_core.students import get_architecture
from kd3d_core.students.scene_model import load_scene_model
from kd3d_core.synth import SynthConfig, render_scene
from kd3d_core.teachers import TeachConfig, TeacherKind, teach_scene
from kd3d_core.training import TrainConfig, train_student


def query_error_m(model, scene) -> tuple[float, float]:
    """Mean/median L2 error (m) of predicted vs exact world points at the output cells of query frames."""
    errs = []
    for frame in scene.split(Split.QUERY):
        rgb = frame.load_rgb()
        pred = model.predict(rgb)
        depth = frame.load_depth_for_color(rgb.shape[1::-1])
        pts = transform_points(frame.world_T_cam, backproject_depth(depth, frame.K))
        u = np.clip(np.round(pred.uv_hw2[..., 0]).astype(int), 0, rgb.shape[1] - 1)
        v = np.clip(np.round(pred.uv_hw2[..., 1]).astype(int), 0, rgb.shape[0] - 1)
        valid = depth[v, u] > 0
        errs.append(np.linalg.norm(pred.points_hw3 - pts[v, u], axis=-1)[valid])
    e = np.concatenate(errs)
    return float(e.mean()), float(np.median(e))


def forward_ms(model, arch_name: str, arch_config, repeats: int = 10) -> tuple[float, float]:
    """Median ms per 640x480 image: predict() (resize to the model input) and the raw network at 640x480."""
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    model.predict(rgb)
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(rgb)
        t.append(time.perf_counter() - t0)
    net = get_architecture(arch_name).build(arch_config, (640, 480)).eval()
    x = torch.randn(1, 3, 480, 640)
    raw = []
    with torch.inference_mode():
        net(x)
        for _ in range(max(3, repeats // 2)):
            t0 = time.perf_counter()
            net(x)
            raw.append(time.perf_counter() - t0)
    return 1000 * float(np.median(t)), 1000 * float(np.median(raw))


def train_config(name: str, minutes: float, workdir: Path, input_size: tuple[int, int] = (320, 240),
                 device: str = "cpu", batch_size: int = 8, progress: bool = True) -> TrainConfig:
    """The benchmark's training settings for one student: a wall-clock budget, no early stopping.

    Shared with bench/gpu_students.py so that both benchmarks train the paper's students the same way
    (AMP is TrainConfig's default and only acts on CUDA).
    """
    return TrainConfig(student=name, input_size=input_size, epochs=10_000, batch_size=batch_size,
                       lr=1e-3 if name != "vit" else 5e-4, max_minutes=minutes, patience=0, seed=0, device=device,
                       progress=progress, log_dir=workdir / f"{name}_logs")


def run_student(name: str, scene, store: LabelStore, minutes: float, workdir: Path) -> dict:
    cfg = train_config(name, minutes, workdir)
    out = workdir / f"{name}.kd3d"
    t0 = time.perf_counter()
    result = train_student(scene, store, cfg, out)
    wall = time.perf_counter() - t0
    model = load_scene_model(out, device="cpu")
    q_mean, q_median = query_error_m(model, scene)
    predict_ms, raw_ms = forward_ms(model, name, model.meta.arch_config())
    t = result.meta.training
    return {"student": name, "params_M": sum(p.numel() for p in model.module.parameters()) / 1e6,
            "size_MB": out.stat().st_size / 1e6, "train_s": t["seconds"], "wall_s": round(wall, 1),
            "epochs": t["epochs"], "steps": t["steps"], "heldout_mean_m": t["val_mean_m"],
            "heldout_median_m": t["val_median_m"], "query_mean_m": q_mean, "query_median_m": q_median,
            "predict_640x480_ms": predict_ms, "raw_forward_640x480_ms": raw_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per student")
    parser.add_argument("--students", nargs="+", default=["cnn", "mobilenetv3", "vit"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the dev CPU is shared)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kd3d_bench_students_"))
    root = workdir / "office"
    if not root.exists():
        render_scene(SynthConfig(preset="office", seed=0, mapping_frames=300, query_frames=100, size_wh=(320, 240)),
                     root)
        teach_scene(root, TeachConfig(teacher=TeacherKind.DEPTH, label_size=(320, 240)))
    scene = open_scene(root)
    store = LabelStore(root / "labels" / "depth")
    rows = [run_student(name, scene, store, args.minutes, workdir) for name in args.students]
    print(f"\nStudents on a synthetic office (320x240, depth labels, {args.minutes:g} min each, "
          f"{args.threads} torch thread(s), {platform.processor() or platform.machine()}, {date.today()})")
    print("| student | params M | file MB | train s | epochs | held-out mean / median m | query mean / median m "
          "| predict 640x480 ms | raw net 640x480 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['student']} | {r['params_M']:.2f} | {r['size_MB']:.1f} | {r['train_s']:.0f} | {r['epochs']} | "
              f"{r['heldout_mean_m']:.3f} / {r['heldout_median_m']:.3f} | {r['query_mean_m']:.3f} / "
              f"{r['query_median_m']:.3f} | {r['predict_640x480_ms']:.0f} | {r['raw_forward_640x480_ms']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"date": str(date.today()), "minutes": args.minutes, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
