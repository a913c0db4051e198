"""`ros2 run kd3d_ros distill ...`: the `kd3d distill` command for users who live in `ros2 run`.

Same flags as `kd3d distill --help`. ROS arguments that launch adds (`--ros-args ...`) are dropped: this is a
batch tool, not a node.
"""
from __future__ import annotations

import sys

from kd3d_core.cli import main as kd3d_main


def strip_ros_args(argv: list[str]) -> list[str]:
    """Arguments before `--ros-args` (and after a closing `--`, as rclpy's argument parser reads them)."""
    if "--ros-args" not in argv:
        return list(argv)
    start = argv.index("--ros-args")
    rest = argv[start + 1:]
    tail = rest[rest.index("--") + 1:] if "--" in rest else []
    return argv[:start] + tail


def main(argv: list[str] | None = None) -> int:
    """Run `kd3d distill` with this process's arguments."""
    args = strip_ros_args(sys.argv[1:] if argv is None else argv)
    return kd3d_main(["distill", *args])


if __name__ == "__main__":
    sys.exit(main())
