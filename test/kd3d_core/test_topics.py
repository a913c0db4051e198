"""`kd3d replay` publishes what the node publishes: same topic names, frame ids and message types, and the
shipped RViz config shows them (README: "what you see in a replayed bag is what the robot gets")."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kd3d_core.bags import open_bag, write_scene_bag
from kd3d_core.localization import OracleScenePredictor, Relocalizer, predictor_for_frame
from kd3d_core.messages import topics
from kd3d_core.replay import ReplayConfig, replay_bag
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene

ROOT = Path(__file__).resolve().parents[2]


def test_resolve_follows_ros_name_rules():
    assert topics.resolve("~/points") == "/relocalizer/points"
    assert topics.resolve("~/pose", namespace="/robot1") == "/robot1/relocalizer/pose"
    assert topics.resolve("/tf", namespace="/robot1") == "/tf"
    assert topics.resolve("scan", namespace="robot1") == "/robot1/scan"


def test_node_declares_the_shared_names():
    """The node's outputs (kd3d_ros.pipeline.Output, ROS-free) and its name are the shared table's."""
    from kd3d_ros.pipeline import Output

    assert {o.value for o in Output} == {topics.CLOUD, topics.POSE, topics.POSE_WITH_COVARIANCE, topics.TF,
                                         topics.INITIAL_POSE}
    node_source = (ROOT / "kd3d_ros" / "relocalizer_node.py").read_text()
    assert "topics.NODE_NAME" in node_source and "topics.DIAGNOSTICS" in node_source
    assert not re.search(r'create_publisher\([^)]*"/', node_source), "a publisher bypasses the shared names"


def test_rviz_config_shows_the_published_topics():
    rviz = (ROOT / "config" / "kd3d.rviz").read_text()
    shown = set(re.findall(r"Value: (/\S+)", rviz))
    for declared in (topics.CLOUD, topics.POSE, topics.POSE_WITH_COVARIANCE):
        assert topics.resolve(declared) in shown


def test_replay_bag_has_the_nodes_topics_and_types(tmp_path):
    root = tmp_path / "scene"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=1, query_frames=3, size_wh=(128, 96)), root,
                 progress=False)
    scene = open_scene(root)
    frames = scene.split(Split.QUERY)
    relocalizer = Relocalizer(OracleScenePredictor([(f.load_rgb(), predictor_for_frame(f, stride=4)) for f in frames]))
    write_scene_bag(scene, tmp_path / "in", split=Split.QUERY, progress=False)
    result = replay_bag(relocalizer, ReplayConfig(tmp_path / "in", tmp_path / "out", "/camera/color/image_raw",
                                                  progress=False))
    assert result.localized == 3
    with open_bag(tmp_path / "out") as reader:
        written = {name: t.msgtype for name, t in reader.topics.items()}
        frame_ids = {item.topic: getattr(getattr(item.msg, "header", None), "frame_id", None)
                     for item in reader.messages([n for n in written if n != topics.TF])}
    assert written == topics.resolved_publications()
    assert frame_ids[topics.resolve(topics.CLOUD)] == frame_ids[topics.resolve(topics.POSE)] == "map"


@pytest.mark.parametrize("ns", ["/robot1/relocalizer"])
def test_replay_namespace_moves_only_the_node_relative_topics(tmp_path, ns):
    root = tmp_path / "scene"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=1, query_frames=2, size_wh=(128, 96)), root,
                 progress=False)
    scene = open_scene(root)
    frames = scene.split(Split.QUERY)
    relocalizer = Relocalizer(OracleScenePredictor([(f.load_rgb(), predictor_for_frame(f, stride=4)) for f in frames]))
    write_scene_bag(scene, tmp_path / "in", split=Split.QUERY, progress=False)
    replay_bag(relocalizer, ReplayConfig(tmp_path / "in", tmp_path / "out", "/camera/color/image_raw",
                                         output_ns=ns, progress=False))
    with open_bag(tmp_path / "out") as reader:
        names = set(reader.topics)
    assert names == {f"{ns}/points", f"{ns}/pose", f"{ns}/pose_with_covariance", "/tf", "/diagnostics"}
