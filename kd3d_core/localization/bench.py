"""Per-stage timing of the relocalizer at a given input resolution (used by `kd3d bench`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kd3d_core.errors import Kd3dError
from kd3d_core.geometry import scale_intrinsics
from kd3d_core.localization.relocalizer import Relocalizer


@dataclass(frozen=True)
class StageBenchmark:
    """Median / min / max milliseconds per stage over the timed runs, at one input size.

    Attributes:
        size_wh: input image size.
        runs: timed runs (after warm-up).
        success_rate: fraction of timed runs that produced a pose.
        median_ms, min_ms, max_ms: stage name ("predict", "select", "pnp", "refine", "total") -> milliseconds.
    """

    size_wh: tuple[int, int]
    runs: int
    success_rate: float
    median_ms: dict[str, float]
    min_ms: dict[str, float]
    max_ms: dict[str, float]

    @property
    def hz(self) -> float:
        """Frames per second at the median total time."""
        return 1000.0 / self.median_ms["total"] if self.median_ms["total"] > 0 else float("inf")


def time_relocalizer(relocalizer: Relocalizer, rgb_HW3: np.ndarray, K: np.ndarray,
                     size_wh: tuple[int, int] | None = None, runs: int = 20, warmup: int = 3) -> StageBenchmark:
    """Time `relocalizer.localize` per stage on one image, resized (with K) to `size_wh` when given.

    Args:
        relocalizer: the engine to time (its predictor decides the device).
        rgb_HW3: an image of the scene (a real view gives realistic RANSAC times).
        K: intrinsics of that image.
        size_wh: input resolution to time at (the image and K are rescaled); None keeps the image's.
        runs: timed repetitions.
        warmup: untimed repetitions first (lazy initialisation, caches, CUDA kernels).
    """
    if runs < 1 or warmup < 0:
        raise Kd3dError(f"need runs >= 1 and warmup >= 0, got {runs} and {warmup}")
    import cv2

    if size_wh is not None and tuple(size_wh) != (rgb_HW3.shape[1], rgb_HW3.shape[0]):
        sx, sy = size_wh[0] / rgb_HW3.shape[1], size_wh[1] / rgb_HW3.shape[0]
        rgb_HW3 = cv2.resize(rgb_HW3, tuple(size_wh), interpolation=cv2.INTER_LINEAR)
        K = scale_intrinsics(K, sx, sy)
    for _ in range(warmup):
        relocalizer.localize(rgb_HW3, K)
    rows, ok = [], 0
    for _ in range(runs):
        est = relocalizer.localize(rgb_HW3, K)
        ok += est.success
        t = est.timings
        rows.append((t.predict_ms, t.select_ms, t.pnp_ms, t.refine_ms, t.total_ms))
    arr = np.array(rows)
    names = ("predict", "select", "pnp", "refine", "total")
    return StageBenchmark((rgb_HW3.shape[1], rgb_HW3.shape[0]), runs, ok / runs,
                          dict(zip(names, map(float, np.median(arr, axis=0)))),
                          dict(zip(names, map(float, arr.min(axis=0)))), dict(zip(names, map(float, arr.max(axis=0)))))
