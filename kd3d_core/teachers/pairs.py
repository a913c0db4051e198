"""Pair graphs for image sequences: a sequential window, strided long-range pairs, loop closure, or complete."""
from __future__ import annotations

from dataclasses import dataclass

from kd3d_core.errors import ConfigError


@dataclass(frozen=True)
class PairGraphConfig:
    """Which frame pairs the teacher looks at (each pair is run in both orders, as DUSt3R symmetrises).

    Attributes:
        window: pair every frame with the next `window` frames.
        strides: extra offsets s: pair i with i + s for every `stride_every`-th frame i (long-range links).
        stride_every: spacing of the frames that get strided pairs (defaults to `window`).
        loop: wrap the window around (the sequence returns to its start).
        complete: all pairs (small sets only: n(n-1)/2 pairs).
    """

    window: int = 3
    strides: tuple[int, ...] = ()
    stride_every: int | None = None
    loop: bool = False
    complete: bool = False


def make_pairs(n: int, config: PairGraphConfig) -> list[tuple[int, int]]:
    """Unordered pairs (i < j) of frame indices, sorted."""
    if config.window < 1 or any(s < 1 for s in config.strides):
        raise ConfigError("pair window and strides must be positive")
    if config.complete:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs: set[tuple[int, int]] = set()
    for i in range(n):
        for d in range(1, config.window + 1):
            j = i + d
            if j >= n:
                if not config.loop or n <= config.window + 1:
                    break
                j -= n
            pairs.add((min(i, j), max(i, j)))
    every = config.stride_every or config.window
    for s in config.strides:
        for i in range(0, n - s, every):
            pairs.add((i, i + s))
    return sorted(p for p in pairs if p[0] != p[1])
