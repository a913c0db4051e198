#!/usr/bin/env python3
"""Side by side: the fast student's memory search on NumPy (a CPU's default) against the same search on torch.

    python bench/knn_scan.py MODEL.kd3d SCENE [--frames 20] [--rounds 3] [--threads 1]

Loads one fast model, then for every query frame of SCENE runs `predict` and `localize` once with each search,
alternating, in one process (so a busy machine slows both alike), and prints the medians, their ratio and the
share of cells whose predicted point is bit-identical between the two. KnnHead.numpy_scan switches the search.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("scene", type=Path, help="a scene directory with query frames (images at any size)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import cv2

    from kd3d_core.localization import Relocalizer, RelocalizerConfig
    from kd3d_core.scene import Split, open_scene
    from kd3d_core.students import load_scene_model
    from kd3d_core.threads import apply_threads

    apply_threads(args.threads)
    cv2.setNumThreads(args.threads)
    model = load_scene_model(args.model, "cpu")
    head = model._memory_head()
    if head is None:
        print(f"{args.model} has no feature memory (not a fast student with a KNN head)", file=sys.stderr)
        return 2
    relocalizer = Relocalizer(model, RelocalizerConfig())
    frames = [(f.load_rgb(), f.K) for f in list(open_scene(args.scene).split(Split.QUERY))[:args.frames]]
    times = {mode: {"predict": [], "localize": []} for mode in ("torch", "numpy")}
    same = []
    for mode in ("torch", "numpy"):  # warm-up: caches, ONNX Runtime session
        head.numpy_scan = mode == "numpy"
        relocalizer.localize(*frames[0])
    for _ in range(args.rounds):
        for rgb, K in frames:
            points = {}
            for mode in ("torch", "numpy"):
                head.numpy_scan = mode == "numpy"
                t = time.perf_counter()
                points[mode] = model.predict(rgb).points_hw3
                times[mode]["predict"].append(time.perf_counter() - t)
                t = time.perf_counter()
                relocalizer.localize(rgb, K)
                times[mode]["localize"].append(time.perf_counter() - t)
            same.append(float(np.mean(np.all(points["numpy"] == points["torch"], axis=-1))))
    for what in ("predict", "localize"):
        base = np.median(times["torch"][what])
        for mode in ("torch", "numpy"):
            med = np.median(times[mode][what])
            print(f"{what:9s} {mode:6s} {1000 * med:7.1f} ms  ({med / base:.2f}x)")
    print(f"cells with bit-identical points: mean {np.mean(same):.5f}, worst frame {min(same):.4f} "
          f"({len(frames)} frames x {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
