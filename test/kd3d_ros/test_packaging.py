"""ROS packaging checks that run without ROS: launch files, setup.py data files and entry points, package.xml,
the RViz config, and the node staying thin glue over code that replay also runs."""
from __future__ import annotations

import ast
import os
import py_compile
import re
import runpy
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import setuptools
import yaml

from kd3d_ros.params import PARAMETERS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "kd3d_ros"
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
RELOCALIZE_ARGS = {"model", "image_topic", "camera_info_topic", "compressed", "params_file", "use_sim_time", "rviz"}
# Python modules the node side imports -> rosdep keys.
ROSDEP = {"rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
          "geometry_msgs": "geometry_msgs", "diagnostic_msgs": "diagnostic_msgs", "tf2_ros": "tf2_ros_py",
          "std_srvs": "std_srvs", "lifecycle_msgs": "lifecycle_msgs",
          "tf2_msgs": "tf2_msgs", "std_msgs": "std_msgs", "builtin_interfaces": "builtin_interfaces",
          "nav_msgs": "nav_msgs", "launch": "launch", "launch_ros": "launch_ros", "numpy": "python3-numpy",
          "cv2": "python3-opencv", "scipy": "python3-scipy", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
          "matplotlib": "python3-matplotlib"}
NOT_ROSDEP = {"kd3d_core", "kd3d_ros", "torch", "safetensors", "rosbags", "__future__"} | set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def setup_kwargs() -> dict:
    """What setup.py passes to setup(), without building anything."""
    captured: dict = {}
    original, cwd = setuptools.setup, Path.cwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(ROOT)
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    return captured


def _installed(setup_kwargs: dict) -> dict[str, set[str]]:
    """share-relative folder -> installed repository paths."""
    return {dest: set(files) for dest, files in setup_kwargs["data_files"]}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _literal(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _calls(tree: ast.AST, func: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == func or getattr(n.func, "attr", None) == func)]


def _declared_args(path: Path) -> set[str]:
    tree = _tree(path)
    names = {name for name, *_ in (_literal(tree, "ARGUMENTS") or ())}
    names |= {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument") if c.args and isinstance(c.args[0], ast.Constant)}
    return names


def _used_args(path: Path) -> set[str]:
    tree = _tree(path)
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    for table in ("STRING_OVERRIDES", "BOOL_OVERRIDES"):
        used |= set(_literal(tree, table) or {})
    used |= set(_literal(tree, "FORWARDED") or ())
    return used


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_compiles_and_uses_only_declared_arguments(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    tree = _tree(path)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared, used = _declared_args(path), _used_args(path)
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    assert declared <= used, f"declared but unused launch arguments: {declared - used}"


def test_launch_arguments_of_the_issue_and_overrides_name_real_parameters():
    assert RELOCALIZE_ARGS <= _declared_args(ROOT / "launch" / "relocalize.launch.py")
    tree = _tree(ROOT / "launch" / "relocalize.launch.py")
    for table in ("STRING_OVERRIDES", "BOOL_OVERRIDES"):
        for param in _literal(tree, table).values():
            assert param in PARAMETERS_BY_NAME, param
    replay = _tree(ROOT / "launch" / "replay.launch.py")
    forwarded = set(_literal(replay, "FORWARDED")) | {"use_sim_time"}
    assert forwarded <= _declared_args(ROOT / "launch" / "relocalize.launch.py")
    assert {"bag", "model", "rviz"} <= _declared_args(ROOT / "launch" / "replay.launch.py")
    play = next(iter(_calls(replay, "ExecuteProcess")))
    cmd = [e.value for e in next(k.value for k in play.keywords if k.arg == "cmd").elts if isinstance(e, ast.Constant)]
    assert cmd[:3] == ["ros2", "bag", "play"] and "--clock" in cmd


def _referenced_share_files(path: Path) -> set[str]:
    """Share-relative files a launch file names: PathJoinSubstitution([FindPackageShare(...), dir, file]) and
    f"{share}/dir/file" strings."""
    tree = _tree(path)
    files = set()
    for call in _calls(tree, "PathJoinSubstitution"):
        parts = [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]
        files.add("/".join(parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if re.search(r"\.(yaml|rviz|launch\.py)$", text):
                files.add(text.lstrip("/"))
    return files


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_name_only_installed_files_and_executables(path, setup_kwargs):
    installed = _installed(setup_kwargs)
    files = _referenced_share_files(path)
    assert files, "expected the launch file to name installed files"
    for rel in files:
        folder, name = rel.rsplit("/", 1)
        assert f"{folder}/{name}" in installed.get(f"share/{PACKAGE}/{folder}", set()), f"{rel} is not installed"
        assert (ROOT / rel).is_file()
    scripts = {s.split("=")[0].strip() for s in setup_kwargs["entry_points"]["console_scripts"]}
    for call in _calls(_tree(path), "Node"):
        kw = {k.arg: k.value for k in call.keywords}
        package = kw["package"].value if isinstance(kw["package"], ast.Constant) else PACKAGE
        if package == PACKAGE:
            assert kw["executable"].value in scripts
        else:
            assert package in _exec_depends()


def test_setup_installs_every_launch_config_and_rviz_file(setup_kwargs):
    installed = _installed(setup_kwargs)
    for pattern, folder in (("launch/*.launch.py", "launch"), ("config/*.yaml", "config"), ("config/*.rviz", "config"),
                            ("config/*.xml", "config")):
        for path in ROOT.glob(pattern):
            assert path.relative_to(ROOT).as_posix() in installed[f"share/{PACKAGE}/{folder}"], path
    assert "package.xml" in installed[f"share/{PACKAGE}"]
    assert f"resource/{PACKAGE}" in installed["share/ament_index/resource_index/packages"]
    assert (ROOT / "resource" / PACKAGE).is_file()
    assert "script_dir=$base/lib/kd3d_ros" in (ROOT / "setup.cfg").read_text()


def test_console_scripts_point_at_real_functions(setup_kwargs):
    scripts = dict(s.replace(" ", "").split("=") for s in setup_kwargs["entry_points"]["console_scripts"])
    assert {"relocalizer_node", "distill", "kd3d"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        tree = _tree(ROOT / (module.replace(".", "/") + ".py"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), target


def _exec_depends() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text for e in root.findall("exec_depend")} | {e.text for e in root.findall("depend")}


def _imported_modules(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def test_package_xml_is_format_3_ament_python_with_every_runtime_dependency(setup_kwargs):
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == setup_kwargs["name"] == PACKAGE
    assert root.findtext("version") == setup_kwargs["version"]
    assert root.find("export/build_type").text == "ament_python"
    assert root.findtext("license") and root.find("maintainer").get("email")
    needed = set()
    for path in list((ROOT / PACKAGE).glob("*.py")) + LAUNCH_FILES:
        for module in _imported_modules(path) - NOT_ROSDEP:
            assert module in ROSDEP, f"{path.name} imports {module}: add its rosdep key to ROSDEP and package.xml"
            needed.add(ROSDEP[module])
    # Message packages the node builds through kd3d_core's message factory ("pkg/msg/Name" strings).
    sources = [*(ROOT / "kd3d_core" / "messages").glob("*.py"), ROOT / "kd3d_core" / "localization" / "outputs.py",
               *(ROOT / PACKAGE).glob("*.py")]
    for path in sources:
        needed |= set(re.findall(r"[\"']([a-z0-9_]+)/msg/[A-Z][A-Za-z0-9]+[\"']", path.read_text()))
    needed.discard("pkg")  # the docstring placeholder "pkg/msg/Name"
    needed |= {"rviz2", "ros2bag"}  # launch files start rviz2 and `ros2 bag play`
    missing = needed - _exec_depends()
    assert not missing, f"package.xml lacks exec_depend on {sorted(missing)}"


def test_rviz_config_shows_cloud_pose_and_image():
    config = yaml.safe_load((ROOT / "config" / "kd3d.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == PARAMETERS_BY_NAME["map_frame"].default
    topics = {d["Class"]: d.get("Topic", {}).get("Value") for d in manager["Displays"]}
    assert topics["rviz_default_plugins/PointCloud2"] == "/relocalizer/points"
    assert topics["rviz_default_plugins/Pose"] == "/relocalizer/pose"
    assert topics["rviz_default_plugins/PoseWithCovariance"] == "/relocalizer/pose_with_covariance"
    assert topics["rviz_default_plugins/Image"] == PARAMETERS_BY_NAME["image_topic"].default
    assert "rviz_default_plugins/TF" in topics


# ------------------------------------------------------------------------------------ the node stays thin glue
NODE = ROOT / PACKAGE / "relocalizer_node.py"
REPLAY_MODULES = [ROOT / "kd3d_core" / "replay.py", ROOT / "kd3d_core" / "commands" / "replay.py",
                  ROOT / "kd3d_core" / "localization" / "outputs.py"]
# kd3d_core names the node side uses that replay does not, and the test that exercises each.
NODE_ONLY = {
    "build_tf_message": "test_pipeline.py::test_map_to_odom_is_published_and_republished",
    "build_transform_stamped": "test_pipeline.py::test_map_to_odom_is_published_and_republished",
    "build_pose_with_covariance_stamped": "test_pipeline.py::test_initial_pose_is_the_base_pose_with_moved_covariance",
    "frame_pose_in_map": "test_pipeline.py::test_initial_pose_is_the_base_pose_with_moved_covariance",
    "move_pose_covariance": "test_pipeline.py::test_initial_pose_is_the_base_pose_with_moved_covariance",
    "ScenePrediction": "test_pipeline.py::test_cloud_stride_and_on_demand",
    "same_camera": "test_pipeline.py::test_distortion_is_handled_like_replay",
    "MessageFactory": "test_pipeline.py::test_localizes_and_builds_pose_covariance_and_cloud",
    "header_stamp_ns": "test_runtime.py::test_intake_counts_rate_skips_and_drops",
    "as_factory": "test_runtime.py::test_diagnostic_array_round_trips_through_cdr",
    "build_header": "test_runtime.py::test_diagnostic_array_round_trips_through_cdr",
    "ModuleFactory": "test_relocalizer_node_ros.py::test_node_publishes_pose_covariance_cloud_and_diagnostics",
    "pose_error": "test_pipeline.py::test_initial_pose_only_when_the_current_estimate_disagrees",
    "transform_to_matrix": "test_relocalizer_node_ros.py::test_map_to_odom_from_odometry_tf",
}


def _kd3d_core_names(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kd3d_core"):
                names |= {a.name for a in node.names}
    return names


def test_node_module_only_converts_and_publishes():
    tree = _tree(NODE)
    runtime_imports = set()
    for node in tree.body:  # module level, outside `if TYPE_CHECKING:`
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            runtime_imports |= _imported_modules_of(node)
    assert not runtime_imports & {"numpy", "cv2", "scipy", "torch"}, "the node must not compute; kd3d_core does"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult)]
    core = _kd3d_core_names([NODE])
    assert core <= {"ConfigError", "Kd3dError", "Relocalizer", "RelocalizerConfig", "ModuleFactory",
                    "transform_to_matrix", "load_scene_model", "topics", "apply_threads"}, core
    assert "cv_bridge" not in NODE.read_text()


def _imported_modules_of(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    return {node.module.split(".")[0]} if node.module else set()


def test_node_side_decodes_and_builds_with_what_replay_uses():
    """Decoding, localization and message building on the node side are the functions replay runs; the few
    extras (post-dated map -> odom, /initialpose, diagnostics plumbing) are covered by their own tests."""
    node_side = _kd3d_core_names([NODE, *(ROOT / PACKAGE).glob("pipeline.py"), ROOT / PACKAGE / "runtime.py"])
    replay = _kd3d_core_names(REPLAY_MODULES)
    for must in ("decode_rgb", "camera_info_to_model", "build_localization_messages", "predicted_cloud",
                 "Relocalizer"):
        assert must in node_side and must in replay, must
    extra = node_side - replay - {"ConfigError", "Kd3dError", "RelocalizerConfig", "load_scene_model"}
    assert extra <= set(NODE_ONLY), f"node-only kd3d_core names without a declared test: {extra - set(NODE_ONLY)}"
    for name in extra:
        file_name, test_name = NODE_ONLY[name].split("::")
        tests = {n.name for n in _tree(Path(__file__).parent / file_name).body if isinstance(n, ast.FunctionDef)}
        assert test_name in tests, f"{name}: {NODE_ONLY[name]} does not exist"


def test_readme_node_command_overrides_after_the_params_file():
    """rcl applies ROS arguments in order: a `-p model_path:=...` before `--params-file` loses to the file's empty
    value and the node exits FATAL (seen live). test_node_live.py runs this very line."""
    from live_graph import documented_node_command

    args = documented_node_command()
    assert args[0] == "--ros-args" and "--params-file" in args
    assert args.index("--params-file") < min(i for i, a in enumerate(args) if a == "-p")
    assert any(a.startswith("model_path:=") for a in args)
