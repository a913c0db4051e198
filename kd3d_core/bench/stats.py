"""Repeated timing: medians with min and max, and ratios (robust on noisy, shared machines)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spread:
    """Median, min and max of repeated measurements (ms, MB, ... as the caller decides)."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Summarise measurements (NaN for none)."""
        arr = np.asarray(values, np.float64)
        if arr.size == 0:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(float(np.median(arr)), float(arr.min()), float(arr.max()), int(arr.size))

    def to_dict(self, digits: int = 2) -> dict[str, float | int | None]:
        """JSON-ready {median, min, max, n} (NaN becomes None)."""
        def r(v: float) -> float | None:
            return None if not np.isfinite(v) else round(v, digits)
        return {"median": r(self.median), "min": r(self.min), "max": r(self.max), "n": self.n}

    def text(self, digits: int = 1) -> str:
        """'median (min-max)' for Markdown."""
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}-{self.max:.{digits}f})"


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1,
               sync: Callable[[], None] | None = None) -> Spread:
    """Milliseconds per call of `fn` over `repeats` timed calls after `warmup` untimed ones.

    Args:
        fn: the work to time.
        repeats: timed calls.
        warmup: untimed calls first (lazy initialisation, allocator, CUDA kernels).
        sync: called before reading the clock (e.g. torch.cuda.synchronize) so asynchronous work is counted.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    return Spread.of(times)


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is not positive."""
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator <= 0:
        return None
    return float(numerator / denominator)
