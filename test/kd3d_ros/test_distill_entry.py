"""`ros2 run kd3d_ros distill`: the wrapper around `kd3d distill`."""
from __future__ import annotations

import pytest

from kd3d_ros.distill import main, strip_ros_args


def test_ros_arguments_are_dropped():
    assert strip_ros_args(["bag", "--out", "m.kd3d"]) == ["bag", "--out", "m.kd3d"]
    assert strip_ros_args(["bag", "--ros-args", "-r", "__node:=x"]) == ["bag"]
    assert strip_ros_args(["bag", "--ros-args", "-p", "a:=1", "--", "--epochs", "3"]) == ["bag", "--epochs", "3"]


def test_runs_kd3d_distill(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help", "--ros-args", "-r", "__node:=distill"])
    assert exit_info.value.code == 0
    assert "distill" in capsys.readouterr().out
