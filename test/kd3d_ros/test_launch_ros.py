"""The launch files loaded by ROS 2's own launch system (skipped where launch / launch_ros are not installed)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Order matters: without ROS, `import launch` alone finds this repository's launch/ folder (a namespace package).
WHY = "ROS 2 launch / launch_ros are not installed (a ROS install has them; PyPI's ROS wheels do not)"
launch_ros = pytest.importorskip("launch_ros", reason=WHY)
sources = pytest.importorskip("launch.launch_description_sources", reason=WHY)
launch = pytest.importorskip("launch", reason=WHY)

ROOT = Path(__file__).resolve().parents[2]


def _args(path: Path) -> set[str]:
    description = sources.get_launch_description_from_python_launch_file(str(path))
    return {arg.name for arg in description.get_launch_arguments()}


def test_relocalize_launch_declares_the_arguments():
    assert {"model", "image_topic", "camera_info_topic", "compressed", "params_file", "use_sim_time",
            "rviz"} <= _args(ROOT / "launch" / "relocalize.launch.py")


def test_replay_launch_declares_the_arguments():
    assert {"bag", "model", "rate", "rviz"} <= _args(ROOT / "launch" / "replay.launch.py")


def test_relocalize_launch_builds_the_node_with_only_given_overrides(tmp_path):
    ament = pytest.importorskip("ament_index_python.packages")
    try:
        ament.get_package_share_directory("kd3d_ros")
    except (ament.PackageNotFoundError, OSError) as err:  # OSError: AMENT_PREFIX_PATH is not set (pip's wheels)
        pytest.skip(f"kd3d_ros is not installed in an ament index (run after colcon build): {err}")
    spec = importlib.util.spec_from_file_location("relocalize_launch", ROOT / "launch" / "relocalize.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = launch.LaunchContext()
    for name, default, _ in module.ARGUMENTS:
        context.launch_configurations[name] = default
    context.launch_configurations.update({"model": "/models/room.kd3d", "compressed": "true"})
    (node,) = module._node(context)
    assert node.node_package == "kd3d_ros" and node.node_executable == "relocalizer_node"
    context.launch_configurations["compressed"] = "maybe"
    with pytest.raises(ValueError, match="compressed"):
        module._node(context)
