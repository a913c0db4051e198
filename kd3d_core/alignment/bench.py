"""Alignment scaling benchmark on synthetic pairwise inputs (time and peak traced memory)."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

from kd3d_core.alignment.solve import AlignConfig, align_pairs
from kd3d_core.alignment.synthetic import SyntheticConfig, SyntheticPairs
from kd3d_core.geometry import pose_error, umeyama


def alignment_benchmark(n_frames: int, size_wh: tuple[int, int] = (160, 120), window: int = 5,
                        seed: int = 0) -> dict:
    """Align a synthetic loop of `n_frames` frames; returns time, peak memory and accuracy.

    `align_s` excludes the time the synthetic source spends generating predictions (it stands in for reading
    the pair cache); `peak_mb` is the tracemalloc peak (Python and NumPy allocations) during alignment.
    """
    w, h = size_wh
    src = SyntheticPairs(SyntheticConfig(n_frames=n_frames, size_wh=size_wh, focal=0.8 * w, window=window,
                                         n_outliers=max(1, n_frames // 50), seed=seed))
    tracemalloc.start()
    t0 = time.perf_counter()
    res = align_pairs(src, n_frames, (h, w), AlignConfig(), K_N33=np.repeat(src.K[None], n_frames, 0),
                      ref_world_T_cam=list(src.poses))
    total = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    G = umeyama(res.world_T_cam_N44[:, :3, 3], src.poses[:, :3, 3])
    errs = [pose_error(G.apply_pose(res.world_T_cam_N44[k]), src.poses[k]) for k in range(n_frames)]
    return {"frames": n_frames, "pairs": len(src.pairs), "label_size": f"{w}x{h}",
            "align_s": round(total - src.generation_s, 2), "peak_mb": round(peak / 2**20, 1),
            "max_t_cm": round(100 * max(e.translation_m for e in errs), 3),
            "max_r_deg": round(max(e.rotation_deg for e in errs), 3),
            "aligned": int(res.aligned_N.sum()), "outlier_edges_rejected": int((~res.edge_inlier).sum())}
