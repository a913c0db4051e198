"""Every failure of the CLI is one stderr line and a non-zero exit; KD3D_DEBUG=1 shows the traceback."""
import errno
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from kd3d_core import cli
from kd3d_core.config_utils import check_device, device_name, finite_float, positive_float, thread_count
from kd3d_core.errors import ConfigError
from kd3d_core.failures import describe_failure


def _run_raising(monkeypatch, capsys, exc):
    """Run `kd3d info X` with the info handler replaced by one that raises `exc`."""
    parser = cli.build_parser()

    def handler(_args):
        raise exc

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict) and "info" in action.choices:
            action.choices["info"].set_defaults(handler=handler)
    rc = cli.main(["info", "anything"])
    return rc, capsys.readouterr().err


def _cv2_error():
    try:
        cv2.resize(np.zeros((0, 0), np.uint8), (0, 0))
    except cv2.error as err:
        return err
    raise AssertionError("OpenCV accepted an empty resize")


@pytest.mark.parametrize("exc,match", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.kd3d"), "no space left .*/data/out.kd3d"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "read-only file system"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), "is a folder"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/passwd/x"), "is a file, not a folder"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "permission denied"),
    (OSError(errno.ENXIO, "No such device"), "not a usable device"),
    (MemoryError(), "out of memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (ValueError("invalid literal for int() with base 10: 'abc'\nsecond line"), "unexpected ValueError: invalid "),
    (ZeroDivisionError("division by zero"), "KD3D_DEBUG=1"),
    (RuntimeError("CUDA out of memory. Tried to allocate 20 GiB"), "GPU ran out of memory"),
    (RuntimeError("Expected one of cpu, cuda device type at start of device string: tpu7"), "unexpected RuntimeError"),
])
def test_any_exception_is_one_line(monkeypatch, capsys, exc, match):
    rc, err = _run_raising(monkeypatch, capsys, exc)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("kd3d info: error: ")
    assert re.search(match, lines[0], flags=re.I), lines[0]


def test_cv2_error_is_one_line(monkeypatch, capsys):
    rc, err = _run_raising(monkeypatch, capsys, _cv2_error())
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "OpenCV could not process an image" in err


def test_interrupt_and_debug(monkeypatch, capsys):
    assert _run_raising(monkeypatch, capsys, KeyboardInterrupt())[0] == 130
    assert _run_raising(monkeypatch, capsys, cli.Terminated())[0] == 143
    monkeypatch.setenv("KD3D_DEBUG", "1")
    with pytest.raises(ValueError, match="boom"):
        _run_raising(monkeypatch, capsys, ValueError("boom"))
    assert describe_failure(OSError(errno.ENOSPC, "x")).startswith("no space left on the device while writing a file")


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "scene", "--out", "m.kd3d", "--threads", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--threads: must be >= 1" in err


def test_shared_validators():
    import argparse

    assert thread_count("3") == 3 and positive_float("1e-3") == 1e-3 and finite_float("-2") == -2.0
    for fn, bad in ((thread_count, "0"), (thread_count, "-1"), (thread_count, "x"), (thread_count, "99999"),
                    (positive_float, "nan"), (positive_float, "inf"), (positive_float, "0"), (finite_float, "nan"),
                    (device_name, "tpu7"), (device_name, "cuda:x"), (device_name, "cpu:1")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)
    assert device_name("CUDA:1") == "cuda:1" and check_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="tpu7"):
        check_device("tpu7")
    import torch

    if torch.cuda.device_count() < 10:
        with pytest.raises(ConfigError, match="cuda:9"):
            check_device("cuda:9")


def test_sigterm_removes_temporaries_and_exits_143(tmp_path):
    """A real process: SIGTERM while synth writes its scene -> one line, exit 143, no .partial left."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kd3d_core", "synth", str(tmp_path / "scene"), "--preset", "tiny",
                             "--frames", "400", "--size", "160x120"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    assert proc.returncode == 143 and lines == ["kd3d synth: terminated"]
    assert list(tmp_path.iterdir()) == []
