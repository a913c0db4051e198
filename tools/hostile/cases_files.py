"""Hostile output paths: folders, files in the way, devices, FIFOs, symlinks, read-only and full disks,
umask, leftovers of killed runs, concurrent writers, SIGTERM."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from tools.hostile.harness import Verdict, call, cli, expect_error, expect_ok, judge_common, leftovers

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False):
    """Mount a small tmpfs at `path` (root only); yields False when it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _skip(why: str) -> Verdict:
    return Verdict(False, [f"skipped: {why}"], None)


@functools.lru_cache(maxsize=None)
def _has_overwrite(command: str) -> bool:
    """Whether this kd3d's `command` takes --overwrite (older versions replaced outputs without asking)."""
    import argparse

    from kd3d_core.cli import build_parser

    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return any("--overwrite" in a.option_strings for a in subs.choices[command]._actions)


def _evaluate_to(bases, out: Path, overwrite: bool = False):
    """`kd3d evaluate` writing its report to `out` (with --overwrite where the output exists on purpose)."""
    extra = ["--overwrite"] if overwrite and _has_overwrite("evaluate") else []
    return call(cli(["evaluate", "--estimates", bases.tum, "--reference", bases.tum, "--json", out, *extra]))


def _json_dir(work, bases):
    (work / "r.json").mkdir()
    return expect_error(_evaluate_to(bases, work / "r.json", overwrite=True), work)


def _json_under_file(work, bases):
    (work / "file").write_text("x")
    return expect_error(_evaluate_to(bases, work / "file" / "r.json"), work)


def _json_device(work, bases):
    node = work / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a private /dev/full
    except OSError as err:
        return _skip(f"cannot create a device node ({err.strerror})")
    verdict = expect_error(_evaluate_to(bases, node, overwrite=True), work)
    if not stat.S_ISCHR(os.lstat(node).st_mode):
        verdict.held = False
        verdict.reasons.append("the device node was replaced by a file")
    return verdict


def _json_fifo(work, bases):
    fifo = work / "pipe"
    os.mkfifo(fifo)
    verdict = expect_error(_evaluate_to(bases, fifo, overwrite=True), work)
    if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
        verdict.held = False
        verdict.reasons.append("the FIFO was replaced by a file")
    return verdict


def _json_symlink(work, bases):
    (work / "target.json").write_text("old")
    (work / "link.json").symlink_to("target.json")

    def check():
        if not (work / "link.json").is_symlink():
            return "the symlink was replaced by a file"
        return None if (work / "target.json").read_text().startswith("{") else "the link's target was not written"
    return expect_ok(_evaluate_to(bases, work / "link.json", overwrite=True), work, check)


def _read_only(command: str):
    def run(work, bases):
        ro = work / "ro"
        with tmpfs(ro, read_only=True) as ok:
            if not ok:
                return _skip("cannot mount a read-only tmpfs (needs root)")
            argv = {"evaluate": ["evaluate", "--estimates", bases.tum, "--reference", bases.tum, "--json",
                                 ro / "r.json"],
                    "synth": ["synth", ro / "scene", "--preset", "tiny", "--frames", "4", "--size", "64x48"],
                    "export": ["export", bases.vit, "--torchscript", ro / "m.pt"],
                    "localize": ["localize", bases.vit, bases.scene, "--out", ro / "p.txt", "--quiet"]}[command]
            return expect_error(call(cli(argv), timeout_s=60), work)
    return run


def _subprocess(argv: list, timeout: float = 120) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("KD3D_HOSTILE_PYTHONPATH", str(REPO))}
    proc = subprocess.run([sys.executable, "-m", "kd3d_core", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return proc.returncode, proc.stderr


def _verdict_from_process(rc: int, stderr: str, work: Path) -> Verdict:
    from tools.hostile.harness import Run

    run = Run(rc, stderr, "", 0.0)
    reasons = judge_common(run, work)
    if rc == 0:
        reasons.append("exit status 0 (expected an error)")
    if rc < 0 or rc > 128:
        reasons.append(f"killed by signal (exit {rc})")
    if len(run.stderr_lines) != 1:
        reasons.append(f"{len(run.stderr_lines)} stderr lines")
    return Verdict(not reasons, reasons, run)


def _full_disk(command: str):
    def run(work, bases):
        full = work / "full"
        with tmpfs(full, size="1m") as ok:
            if not ok:
                return _skip("cannot mount a 1 MiB tmpfs (needs root)")
            argv = {"export": ["export", bases.vit_big, "--torchscript", full / "m.pt"],
                    "export-onnx": ["export", bases.vit_big, "--onnx", full / "m.onnx"],
                    "synth": ["synth", full / "scene", "--preset", "tiny", "--frames", "40", "--query-frames", "4",
                              "--size", "160x120"]}[command]
            rc, err = _subprocess(argv)
            verdict = _verdict_from_process(rc, err, work)
            left = leftovers(full)
            if left:
                verdict.held = False
                verdict.reasons.append(f"left {left[:2]} on the full disk")
            return verdict
    return run


def _umask(mask: int, command: str):
    def run(work, bases):
        old = os.umask(mask)
        try:
            out = work / ("r.json" if command == "evaluate" else "m.pt")
            argv = (["evaluate", "--estimates", bases.tum, "--reference", bases.tum, "--json", out]
                    if command == "evaluate" else ["export", bases.vit, "--torchscript", out])
            result = call(cli(argv), timeout_s=60)
        finally:
            os.umask(old)
        want = 0o666 & ~mask
        return expect_ok(result, work, lambda: None if stat.S_IMODE(out.stat().st_mode) == want else
                         f"mode {oct(stat.S_IMODE(out.stat().st_mode))}, umask {oct(mask)} wants {oct(want)}")
    return run


def _stale(kind: str):
    def run(work, bases):
        out = work / "r.json"
        if kind == "tagged":
            stale = work / ".r.json.kd3d-999999-ab12cd.tmp"
        else:
            stale = work / ".r.json.ab12cd34.tmp"
        stale.write_text("half a report")
        if kind == "old-style":
            hours_ago = time.time() - 7200
            os.utime(stale, (hours_ago, hours_ago))
        return expect_ok(_evaluate_to(bases, out), work, lambda: None if out.exists() else "no report")
    return run


def _stale_partial(work, bases):
    (work / ".scene.kd3d-999999-ab12cd.partial" / "data").mkdir(parents=True)
    argv = ["synth", work / "scene", "--preset", "tiny", "--frames", "4", "--query-frames", "2", "--size", "64x48"]
    return expect_ok(call(cli(argv), timeout_s=120), work)


_HOLDER = """
import fcntl, os, sys, time
path = os.path.join(sys.argv[1], f".r.json.kd3d-{os.getpid()}-zz99yy.tmp")
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print(path, flush=True)
time.sleep(60)
"""


def _concurrent(work, bases):
    """Another live process is writing the same output (its pid-tagged, locked temporary exists)."""
    out = work / "r.json"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        temp = Path(holder.stdout.readline().strip())
        result = _evaluate_to(bases, out)
    finally:
        holder.kill()
        holder.wait()
    temp.unlink(missing_ok=True)
    return expect_error(result, work, "another process")


def _sigterm(work, bases):
    """SIGTERM while synth writes its scene: exit 143, one line, and no temporary folder left behind."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("KD3D_HOSTILE_PYTHONPATH", str(REPO))}
    proc = subprocess.Popen([sys.executable, "-m", "kd3d_core", "synth", str(work / "scene"), "--preset", "tiny",
                             "--frames", "400", "--size", "160x120"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".partial") for p in work.iterdir()):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    from tools.hostile.harness import Run

    run = Run(proc.returncode, err, "", 0.0)
    reasons = judge_common(run, work)
    if proc.returncode != 143:
        reasons.append(f"exit {proc.returncode} (killed by the signal: no clean-up)" if proc.returncode < 0
                       else f"exit {proc.returncode}")
    if len(run.stderr_lines) > 1:
        reasons.append(f"{len(run.stderr_lines)} stderr lines")
    return Verdict(not reasons, reasons, run)


def _synth_under_file(work, bases):
    (work / "file").write_text("x")
    argv = ["synth", work / "file" / "scene", "--preset", "tiny", "--frames", "4", "--size", "64x48"]
    return expect_error(call(cli(argv), timeout_s=60), work)


def _onnx_to_dir(work, bases):
    (work / "m.onnx").mkdir()
    extra = ["--overwrite"] if _has_overwrite("export") else []
    return expect_error(call(cli(["export", bases.vit, "--onnx", work / "m.onnx", *extra]), timeout_s=60), work)


FILE_CASES = [
    ("--json is a folder", _json_dir),
    ("--json under a file", _json_under_file),
    ("--json is a device node (private /dev/full)", _json_device),
    ("--json is a FIFO", _json_fifo),
    ("--json is a symlink (written through)", _json_symlink),
    ("evaluate onto a read-only disk", _read_only("evaluate")),
    ("synth onto a read-only disk", _read_only("synth")),
    ("export onto a read-only disk", _read_only("export")),
    ("localize onto a read-only disk", _read_only("localize")),
    ("export --torchscript onto a full disk", _full_disk("export")),
    ("export --onnx onto a full disk", _full_disk("export-onnx")),
    ("synth onto a full disk", _full_disk("synth")),
    ("umask 027: evaluate report mode", _umask(0o027, "evaluate")),
    ("umask 022: export mode", _umask(0o022, "export")),
    ("stale .tmp of a killed run (pid tagged)", _stale("tagged")),
    ("stale .tmp of an older kd3d (2 h old)", _stale("old-style")),
    ("stale .partial of a killed synth", _stale_partial),
    ("concurrent writer of the same output", _concurrent),
    ("SIGTERM during synth", _sigterm),
    ("synth output under a file", _synth_under_file),
    ("export --onnx to a folder", _onnx_to_dir),
]
