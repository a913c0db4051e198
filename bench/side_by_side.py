#!/usr/bin/env python3
"""Side by side in one process: two settings of the fast student's relocalization on the same frames.

    python bench/side_by_side.py MODEL.kd3d SCENE --compare scan [--frames 20] [--rounds 3] [--threads 1]
    python bench/side_by_side.py MODEL.kd3d SCENE --compare ransac:usac_default,usac_light

`scan`: the memory search on NumPy (a CPU's default) against the same search on torch (KnnHead.numpy_scan).
`ransac:A,B`: the relocalizer with estimator A against estimator B (RelocalizerConfig.ransac).

Every query frame of SCENE goes through `predict` and `localize` once per setting, alternating, so a busy machine
slows both alike. Prints the medians and their ratios, PnP-RANSAC's median, recall within 2 cm / 2 deg and
5 cm / 5 deg of the first round, and for `scan` the share of cells whose predicted point is bit-identical.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("scene", type=Path, help="a scene directory with query frames (images at any size)")
    parser.add_argument("--compare", default="scan", help="scan, or ransac:A,B (default: scan)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import cv2

    from kd3d_core.errors import Kd3dError
    from kd3d_core.geometry import pose_error
    from kd3d_core.localization import Relocalizer, RelocalizerConfig
    from kd3d_core.scene import Split, open_scene
    from kd3d_core.students import load_scene_model
    from kd3d_core.threads import apply_threads

    base = RelocalizerConfig()
    try:
        if args.compare == "scan":
            settings = {"torch scan": (True, base), "numpy scan": (False, base)}
        elif args.compare.startswith("ransac:") and len(args.compare[7:].split(",")) == 2:
            settings = {name: (None, replace(base, ransac=name)) for name in args.compare[7:].split(",")}
        else:
            raise Kd3dError(f"--compare must be scan or ransac:A,B, got {args.compare!r}")
        apply_threads(args.threads)
        cv2.setNumThreads(args.threads)
        model = load_scene_model(args.model, "cpu")
        head = model._memory_head()
        if args.compare == "scan" and head is None:
            raise Kd3dError(f"{args.model} has no feature memory (not a fast student with a KNN head)")
        relocalizers = {name: Relocalizer(model, cfg) for name, (_, cfg) in settings.items()}
        frames = [(f.load_rgb(), f.K, f.world_T_cam)
                  for f in list(open_scene(args.scene).split(Split.QUERY))[:args.frames]]
        if not frames:
            raise Kd3dError(f"{args.scene} has no query frames")
    except Kd3dError as err:
        print(f"side_by_side: {err}", file=sys.stderr)
        return 2

    def use(name: str) -> None:
        torch_scan = settings[name][0]
        if torch_scan is not None:
            head.numpy_scan = not torch_scan

    samples = {name: {"predict": [], "localize": [], "pnp": [], "err": []} for name in settings}
    same = []
    for name in settings:  # warm-up: caches, ONNX Runtime session
        use(name)
        relocalizers[name].localize(*frames[0][:2])
    for round_ in range(args.rounds):
        for rgb, K, world_T_cam in frames:
            points = []
            for name, s in samples.items():
                use(name)
                t = time.perf_counter()
                points.append(model.predict(rgb).points_hw3)
                s["predict"].append(time.perf_counter() - t)
                t = time.perf_counter()
                est = relocalizers[name].localize(rgb, K)
                s["localize"].append(time.perf_counter() - t)
                s["pnp"].append(est.timings.pnp_ms)
                if round_ == 0:
                    err = pose_error(est.world_T_cam, world_T_cam) if est.success else None
                    s["err"].append((err.translation_m, err.rotation_deg) if err else (np.inf, np.inf))
            same.append(float(np.mean(np.all(points[0] == points[1], axis=-1))))
    first = next(iter(samples))
    for what in ("predict", "localize"):
        for name, s in samples.items():
            med = np.median(s[what])
            print(f"{what:9s} {name:14s} {1000 * med:7.1f} ms  ({med / np.median(samples[first][what]):.2f}x)")
    for name, s in samples.items():
        err = np.array(s["err"])
        r2 = np.mean((err[:, 0] <= 0.02) & (err[:, 1] <= 2))
        r5 = np.mean((err[:, 0] <= 0.05) & (err[:, 1] <= 5))
        print(f"{name:14s} PnP-RANSAC {np.median(s['pnp']):5.1f} ms; "
              f"within 2 cm / 2 deg {r2:.0%}, 5 cm / 5 deg {r5:.0%}")
    if args.compare == "scan":
        print(f"cells with bit-identical points: mean {np.mean(same):.5f}, worst frame {min(same):.4f}")
    print(f"({len(frames)} frames x {args.rounds} rounds, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
