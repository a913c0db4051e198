"""The CPU thread policy of every command that runs a network (and of the ROS node).

A robot's CPU is never idle. PyTorch's default uses one OpenMP thread per core, and every parallel region
waits for its slowest thread: when another process holds one of those cores, each region stalls until the
scheduler gives the thread back, and per-frame time collapses (measured on a 2-core machine with one core
busy: 2 threads 4-5x slower than idle, 1 thread about as fast as idle; figures in README "Threads").
So kd3d leaves half the cores to the rest of the machine by default:

* `--threads N` (or the node's `threads` parameter) wins;
* else OMP_NUM_THREADS when the user set it;
* else max(1, usable cores // 2).

On an otherwise idle machine `--threads $(nproc)` gives PyTorch's own default (all cores).

One exception: with one torch thread, the fast student's memory lookup shares its list scan with one helper
thread (KnnHead._share): its small matrix products never used torch's threads, and chunks are handed out one at
a time, so a busy second core costs nothing measurable (0.96-0.99x) while an idle one saves 8-14 %.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from kd3d_core.errors import ConfigError


def usable_cores() -> int:
    """CPU cores this process may run on (affinity mask when the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """OMP_NUM_THREADS when set to a positive integer, else half the usable cores (at least 1)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, usable_cores() // 2)


def resolve_threads(requested: int | None) -> int:
    """The thread count to set: `requested`, or the policy's default when None.

    Raises:
        ConfigError: a count below 1.
    """
    if requested is None:
        return default_threads()
    if requested < 1:
        raise ConfigError(f"threads must be at least 1, got {requested}")
    return int(requested)


def apply_threads(requested: int | None) -> int:
    """Set torch's intra-op thread count once (at the start of a command), and NumPy's BLAS to the same count;
    returns the count in effect.

    NumPy's BLAS (OpenBLAS) otherwise starts one thread per core for products as small as the memory lookup's
    (KnnHead._inverted), which then competes with the lookup's helper thread and with everything else on the
    robot's CPU."""
    import torch

    count = resolve_threads(requested)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a ROS install that skipped pip's requirements: slower lookups, same results
        logging.getLogger(__name__).warning("kd3d: threadpoolctl is not installed, so NumPy's BLAS keeps its own "
                                            "thread count (pip install threadpoolctl)")
    else:
        threadpool_limits(limits=count, user_api="blas")
    return count


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to `count`, restoring the caller's afterwards."""
    import torch

    before = torch.get_num_threads()
    if before != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
