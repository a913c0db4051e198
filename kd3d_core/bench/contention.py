"""A competing CPU load that a measurement starts and stops itself: one busy-looping process.

Used by the speed benchmark's "latency under contention" row: the same frames are timed idle and with one core
busy, and the ratio is reported (target <= 1.5x). The load is a separate Python process spinning in a loop, so
it competes for a core exactly as another program on a robot would; it is always killed on exit.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_BUSY_LOOP = "import os, signal\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\nwhile True:\n    pass\n"


@contextmanager
def busy_cores(count: int = 1, settle_s: float = 0.3) -> Iterator[list[int]]:
    """Keep `count` cores busy while the block runs; yields the busy processes' ids.

    Args:
        count: busy-looping processes to start (one core each).
        settle_s: wait this long after starting them, so the scheduler has placed them before timing starts.
    """
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(max(0, count))]
    try:
        time.sleep(settle_s)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load averages, None where the OS has none."""
    import os

    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None
