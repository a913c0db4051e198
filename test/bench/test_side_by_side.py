"""bench/side_by_side.py on the tiny real-model room: both comparisons run and report, bad input is one line."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "side_by_side.py"


@pytest.fixture(scope="module")
def side_by_side():
    spec = importlib.util.spec_from_file_location("kd3d_bench_side_by_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("compare,names", [("scan", ["torch scan", "numpy scan"]),
                                           ("ransac:usac_default,usac_light", ["usac_default", "usac_light"])])
def test_both_settings_are_timed_and_scored(side_by_side, fast_room, capsys, compare, names):
    rc = side_by_side.main([str(fast_room.model_path), str(fast_room.root), "--compare", compare, "--frames", "2",
                            "--rounds", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in names:
        assert f"predict   {name}" in out and f"localize  {name}" in out and f"{name} " in out
        assert "PnP-RANSAC" in out and "within 2 cm / 2 deg" in out
    assert ("bit-identical" in out) == (compare == "scan")
    assert "(2 frames x 1 rounds, 1 thread(s))" in out


@pytest.mark.parametrize("args,message", [
    (["--compare", "nonsense"], "--compare must be scan or ransac:A,B"),
    (["--compare", "ransac:usac_default,bogus"], "ransac must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(side_by_side, fast_room, capsys, args, message):
    assert side_by_side.main([str(fast_room.model_path), str(fast_room.root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_missing_model_is_one_line_and_exit_2(side_by_side, tmp_path, capsys):
    assert side_by_side.main([str(tmp_path / "none.kd3d"), str(tmp_path), "--compare", "scan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1
