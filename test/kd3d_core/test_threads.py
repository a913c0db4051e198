"""The thread policy of every network command, the competing load the benchmark uses, and the --threads flag."""
from __future__ import annotations

import os

import pytest

from kd3d_core.bench.contention import busy_cores, load_average
from kd3d_core.cli import build_parser
from kd3d_core.errors import ConfigError
from kd3d_core.threads import default_threads, resolve_threads, usable_cores

NETWORK_COMMANDS = {
    "localize": ["M.kd3d", "S", "--out", "p.txt"], "replay": ["M.kd3d", "in", "out", "--image-topic", "/i"],
    "demo": [], "distill": ["S", "--out", "m.kd3d"], "teach": ["S"], "train": ["S", "--out", "m.kd3d"],
    "export": ["M.kd3d", "--onnx", "m.onnx"], "bench": [],
}


def test_default_is_half_the_cores_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == max(1, usable_cores() // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert default_threads() == max(1, usable_cores() // 2)


def test_an_explicit_count_wins_and_nonsense_is_refused():
    assert resolve_threads(5) == 5
    assert resolve_threads(None) == default_threads()
    with pytest.raises(ConfigError, match="at least 1"):
        resolve_threads(0)


@pytest.mark.parametrize("command", sorted(NETWORK_COMMANDS))
def test_every_network_command_takes_threads(command):
    args = build_parser().parse_args([command, *NETWORK_COMMANDS[command], "--threads", "2"])
    assert args.threads == 2


def test_threads_zero_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["localize", "M.kd3d", "S", "--out", "p", "--threads", "0"])


def test_busy_cores_starts_and_stops_its_load():
    with busy_cores(1, settle_s=0.05) as pids:
        assert len(pids) == 1
        os.kill(pids[0], 0)  # alive while the block runs
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert load_average() is None or len(load_average()) == 3


def test_apply_threads_sets_torch_and_numpys_blas_to_the_same_count():
    import numpy  # noqa: F401  (its BLAS must be loaded for threadpoolctl to see it)
    import torch
    from threadpoolctl import threadpool_info

    from kd3d_core.threads import apply_threads

    before = torch.get_num_threads()
    blas_before = [(lib["prefix"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]
    try:
        for count in (2, 1):
            assert apply_threads(count) == count and torch.get_num_threads() == count
            blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
            assert blas and all(lib["num_threads"] == count for lib in blas)
    finally:
        torch.set_num_threads(before)
        from threadpoolctl import threadpool_limits
        for prefix, n in blas_before:
            threadpool_limits(limits={prefix: n})


def test_apply_threads_without_threadpoolctl_warns_and_still_sets_torch(monkeypatch, caplog):
    import sys

    import torch

    from kd3d_core.threads import apply_threads

    before = torch.get_num_threads()
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import now raises ImportError
    try:
        with caplog.at_level("WARNING"):
            assert apply_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "threadpoolctl is not installed" in caplog.text


def test_torch_threads_sets_the_count_for_the_block_and_restores_it_even_on_error():
    import torch

    from kd3d_core.threads import torch_threads

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
