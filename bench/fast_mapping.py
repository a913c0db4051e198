#!/usr/bin/env python3
"""Benchmark of the fast student: mapping time and query relocalization recall on a synthetic room.

    python bench/fast_mapping.py --scene /tmp/office1 [--render office:1:640x480] [--height 240] \\
        [--head knn|mlp] [--knn-size N] [--augment] [--encoder random] [--json OUT]

Renders the room if asked (kd3d_core.synth), labels its mapping frames with the depth teacher (kd3d teach's
code path), maps it with kd3d_core.training.fast, then localizes every query frame with the Relocalizer
(kd3d_core.localization) and prints recall at 2cm/2deg, 5cm/5deg, 10cm/10deg, median errors and timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd3d_core.geometry import pose_error  # noqa: E402
from kd3d_core.labels import default_labels_dir  # noqa: E402
from kd3d_core.scene import Split, open_scene  # noqa: E402


def _prepare(args: argparse.Namespace) -> Path:
    if args.render and not args.scene.exists():
        from kd3d_core.synth import SynthConfig, render_scene

        preset, seed, size = args.render.split(":")
        w, h = (int(v) for v in size.split("x"))
        render_scene(SynthConfig(preset=preset, seed=int(seed), mapping_frames=args.frames,
                                 query_frames=args.frames // 3, size_wh=(w, h)), args.scene)
    labels = default_labels_dir(args.scene, "depth")
    if not (labels / "labels.json").is_file():
        from kd3d_core.teachers.config import TeachConfig
        from kd3d_core.teachers.teach import teach_scene

        teach_scene(args.scene, TeachConfig(progress=False))
    return labels


def evaluate(student, meta, scene, max_frames: int | None = None) -> dict:
    """Localize the query frames with the Relocalizer; recall, medians and per-frame timings."""
    from kd3d_core.localization import Relocalizer
    from kd3d_core.students.scene_model import SceneModel

    reloc = Relocalizer(SceneModel(student, meta, "cpu"))
    frames = scene.split(Split.QUERY)[:max_frames]
    errs, predict_ms, total_ms = [], [], []
    for f in frames:
        rgb = f.load_rgb()
        t0 = time.perf_counter()
        est = reloc.localize(rgb, f.K)
        total_ms.append((time.perf_counter() - t0) * 1000)
        predict_ms.append(est.timings.predict_ms)
        errs.append(pose_error(est.world_T_cam, f.world_T_cam) if est.success else (np.inf, np.inf))
    t = np.array([e[0] for e in errs])
    r = np.array([e[1] for e in errs])
    rec = {f"recall_{c}cm_{d}deg": float(np.mean((t < c / 100) & (r < d))) for c, d in ((2, 2), (5, 5), (10, 10))}
    return {"frames": len(frames), "localized": int(np.isfinite(t).sum()), **rec,
            "median_translation_m": float(np.median(t)), "median_rotation_deg": float(np.median(r)),
            "predict_ms_median": float(np.median(predict_ms)), "localize_ms_median": float(np.median(total_ms)),
            "image_size": list(scene.info.color_size)}


def main() -> int:
    """Parse flags, map, evaluate, print one JSON line."""
    import torch

    from kd3d_core.training.fast import EncoderSource, FastTrainConfig, LossKind, describe, train_fast
    from kd3d_core.training.fast_buffer import AugmentConfig
    from kd3d_core.students.fast import FastConfig, HeadKind

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", type=Path, required=True)
    p.add_argument("--render", default=None, help="PRESET:SEED:WxH to render the scene first")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--buffer", type=int, default=1_000_000)
    p.add_argument("--loss", default="euclidean", choices=[k.value for k in LossKind])
    p.add_argument("--encoder", default="seeded", choices=[k.value for k in EncoderSource])
    p.add_argument("--encoder-path", type=Path, default=None)
    p.add_argument("--head-width", type=int, default=256)
    p.add_argument("--head-blocks", type=int, default=2)
    p.add_argument("--no-homogeneous", action="store_true")
    p.add_argument("--head", default="knn", choices=["knn", "mlp"])
    p.add_argument("--knn-size", type=int, default=400_000)
    p.add_argument("--knn-dim", type=int, default=64)
    p.add_argument("--knn-lists", type=int, default=512)
    p.add_argument("--knn-probe", type=int, default=8)
    p.add_argument("--augment", action="store_true", help="augment mapping views (the trainer's default: off)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--eval-frames", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the .kd3d model file here")
    p.add_argument("--json", type=Path, default=None, help="append the result as one JSON line to this file")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a loaded, shared CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    labels = _prepare(args)
    student_cfg = FastConfig(head_width=args.head_width, head_blocks=args.head_blocks,
                             homogeneous=not args.no_homogeneous, head=HeadKind(args.head),
                             knn_size=args.knn_size, knn_dim=args.knn_dim, knn_lists=args.knn_lists,
                             knn_probe=args.knn_probe)
    config = FastTrainConfig(student=student_cfg, input_height=args.height, encoder=EncoderSource(args.encoder),
                             encoder_path=args.encoder_path, buffer_size=args.buffer, iterations=args.iterations,
                             batch_size=args.batch, loss=LossKind(args.loss), lr_max=args.lr, lr_min=args.lr / 10,
                             augment=replace(AugmentConfig(), enabled=args.augment), bf16=not args.fp32)
    scene = open_scene(args.scene)
    res = train_fast(scene, labels, args.out, config, progress=False)
    out = {"config": describe(config), "views": res.views, "buffer_rows": res.buffer_rows,
           "load_s": round(res.load_s, 1), "buffer_s": round(res.buffer_s, 1), "train_s": round(res.train_s, 1),
           "mapping_s": round(res.buffer_s + res.train_s, 1), "final_loss": res.final_loss,
           "median_train_error_m": res.median_train_error_m}
    out.update(evaluate(res.student, res.meta, scene, args.eval_frames))
    if args.out is not None:
        out["model_bytes"] = args.out.stat().st_size
    line = json.dumps(out, default=str)
    print(line)
    if args.json is not None:
        with open(args.json, "a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
