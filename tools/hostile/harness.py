"""Run one hostile case in-process and judge it by kd3d's failure contract.

A case either expects an error (exit status != 0, exactly one stderr line, no traceback) or a correct answer
(its own check). Every case must also finish in time, leave no temporary files behind and stay within a memory
bound: the address space is capped at the current size + `MEM_HEADROOM` while the case runs, so a lying header
that makes kd3d allocate gigabytes shows up as "out of memory" instead of swapping the machine, and the peak
resident set is measured with /proc/self/clear_refs + VmHWM.
"""
from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MEM_HEADROOM = 3 << 30
MAX_RSS_GROWTH = 1536 << 20
TIMEOUT_S = 20
_TEMP_MARKS = (".tmp", ".partial")
_MEMORY_MARKS = ("out of memory", "can't allocate", "cannot allocate", "failed to allocate", "memoryerror")


class Hang(BaseException):
    """A case ran past its time limit (BaseException: kd3d's CLI must not translate it)."""


@dataclass
class Run:
    """What one call did."""

    rc: int | None
    stderr: str
    stdout: str
    seconds: float
    raised: str | None = None
    rss_growth: int = 0
    hung: bool = False

    @property
    def stderr_lines(self) -> list[str]:
        # Progress bars redraw with \r; only complete lines count.
        return [ln for ln in self.stderr.replace("\r", "\n").splitlines() if ln.strip() and "it/s]" not in ln
                and "frame/s]" not in ln and "%|" not in ln]


@dataclass
class Verdict:
    """A case's outcome: held or not, and why."""

    held: bool
    reasons: list[str] = field(default_factory=list)
    run: Run | None = None


def _status_kb(key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _on_alarm(_signum, _frame):
    raise Hang


@contextlib.contextmanager
def _limits(timeout_s: float):
    old_as = resource.getrlimit(resource.RLIMIT_AS)
    vm = _status_kb("VmSize")
    if vm:
        resource.setrlimit(resource.RLIMIT_AS, (vm + MEM_HEADROOM, old_as[1]))
    old_alarm = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        resource.setrlimit(resource.RLIMIT_AS, old_as)


def call(fn: Callable[[], int | None], timeout_s: float = TIMEOUT_S) -> Run:
    """Run `fn` (e.g. lambda: cli.main(argv)) with stdout/stderr captured, time and memory bounded."""
    err, out = io.StringIO(), io.StringIO()
    _reset_peak()
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    rc, raised, hung = None, None, False
    try:
        with _limits(timeout_s), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = fn()
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 1
                if not isinstance(exc.code, int) and exc.code is not None:
                    err.write(f"{exc.code}\n")
    except Hang:
        hung = True
    except BaseException as exc:  # noqa: BLE001 - an escaped exception is exactly what a case looks for
        raised = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception_only(exc)))
    growth = max(0, _status_kb("VmHWM") - base)
    return Run(rc if isinstance(rc, int) or rc is None else int(rc), err.getvalue(), out.getvalue(),
               time.perf_counter() - t0, raised, growth, hung)


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders (*.tmp, *.partial) anywhere under `root`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.endswith(_TEMP_MARKS) or ".kd3d-" in name and name.startswith("."):
                found.append(str(Path(dirpath, name).relative_to(root)))
    return found


def judge_common(run: Run, root: Path) -> list[str]:
    """Reasons a run broke the contract whatever it was expected to do."""
    reasons = []
    if run.hung:
        reasons.append("hung (time limit)")
    if run.raised or "Traceback" in run.stderr:
        reasons.append(f"traceback ({run.raised})")
    low = run.stderr.lower()
    if any(m in low for m in _MEMORY_MARKS):
        reasons.append("tried to allocate too much memory")
    if run.rss_growth > MAX_RSS_GROWTH:
        reasons.append(f"resident memory grew {run.rss_growth / 2**20:.0f} MiB")
    left = leftovers(root)
    if left:
        reasons.append(f"left temporaries {left[:3]}")
    return reasons


def expect_error(run: Run, root: Path, must_contain: str | None = None) -> Verdict:
    """Held when: non-zero exit, exactly one stderr line, no traceback, bounded, nothing left behind."""
    reasons = judge_common(run, root)
    if run.rc in (0, None) and not run.hung:
        reasons.append(f"exit status {run.rc} (expected an error)")
    lines = run.stderr_lines
    if not run.hung and len(lines) != 1:
        reasons.append(f"{len(lines)} stderr lines")
    if must_contain and must_contain.lower() not in run.stderr.lower():
        reasons.append(f"message lacks {must_contain!r}")
    return Verdict(not reasons, reasons, run)


def expect_ok(run: Run, root: Path, check: Callable[[], str | None] | None = None) -> Verdict:
    """Held when: exit status 0, no traceback, bounded, and `check()` returns None (else its complaint)."""
    reasons = judge_common(run, root)
    if run.rc != 0 and not run.hung:
        reasons.append(f"exit status {run.rc}: {' | '.join(run.stderr_lines[-2:])[:200]}")
    elif check is not None and not reasons:
        problem = check()
        if problem:
            reasons.append(problem)
    return Verdict(not reasons, reasons, run)


def cli(argv: list[str]) -> Callable[[], int | None]:
    """A callable running `kd3d ARGV` in this process."""
    def fn() -> int | None:
        from kd3d_core.cli import main

        return main([str(a) for a in argv])
    return fn


def main_guard() -> None:
    """Settings every hostile run needs: one torch thread, no GPU, headless plots."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
