"""Bag replay on a synthetic room: messages round-trip through CDR, poses match the ground truth."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kd3d_core.bags import open_bag, write_scene_bag
from kd3d_core.errors import BagError, ConfigError
from kd3d_core.geometry import pose_error
from kd3d_core.localization import OracleScenePredictor, Relocalizer, predictor_for_frame
from kd3d_core.messages import covariance_to_matrix, decode_pointcloud2, pose_to_matrix, stamped_pose_from_msg
from kd3d_core.replay import ReplayConfig, replay_bag
from kd3d_core.scene import Scene, Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene

TOPIC = "/camera/color/image_raw"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    root = tmp_path_factory.mktemp("replay") / "scene"
    render_scene(SynthConfig(preset="tiny", seed=3, mapping_frames=1, query_frames=5, size_wh=(160, 120)), root,
                 progress=False)
    return open_scene(root)


@pytest.fixture(scope="module")
def relocalizer(scene) -> Relocalizer:
    frames = scene.split(Split.QUERY)
    return Relocalizer(OracleScenePredictor([(f.load_rgb(), predictor_for_frame(f, stride=4)) for f in frames]))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_replay_writes_messages_and_report(scene, relocalizer, tmp_path, storage):
    bag = tmp_path / "in"
    write_scene_bag(scene, bag, split=Split.QUERY, storage=storage, progress=False)
    out = tmp_path / "out"
    result = replay_bag(relocalizer, ReplayConfig(bag, out, TOPIC, storage=storage, progress=False))
    assert result.frames == result.localized == 5 and result.failures == {}
    assert result.recovered == {"guided": 0, "roll_retry": 0, "zoom_retry": 0}
    truth = {f.stamp_ns: f.world_T_cam for f in scene.split(Split.QUERY)}
    seen: dict[str, int] = {}
    with open_bag(out) as reader:
        assert reader.storage.value == storage
        assert "version: 8" in (out / "metadata.yaml").read_text()
        for item in reader.messages(list(reader.topics)):
            seen[item.topic] = seen.get(item.topic, 0) + 1
            msg = item.msg
            if item.topic == "/diagnostics":
                status = msg.status[0]
                assert status.name == "relocalizer: relocalization" and status.level == 0
                assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec in truth
                continue
            if item.topic == "/tf":
                ts = msg.transforms[0]
                assert ts.header.frame_id == "map" and ts.child_frame_id == "camera_color_optical_frame_kd3d"
                stamp = ts.header.stamp.sec * 10**9 + ts.header.stamp.nanosec
            else:
                assert msg.header.frame_id == "map"
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert stamp in truth and item.log_ns == stamp  # stamped with the input image's stamp
            if item.topic == "/relocalizer/pose":
                err = pose_error(stamped_pose_from_msg(msg).T, truth[stamp])
                assert err.translation_m < 1e-4 and err.rotation_deg < 1e-3
            elif item.topic == "/relocalizer/pose_with_covariance":
                np.testing.assert_allclose(pose_to_matrix(msg.pose.pose), truth[stamp], atol=1e-4)
                cov = covariance_to_matrix(msg)
                np.testing.assert_allclose(cov, cov.T)
                assert np.all(np.linalg.eigvalsh(cov) > 0)
            elif item.topic == "/relocalizer/points":
                points, colors = decode_pointcloud2(msg)
                assert points.dtype == np.float32 and len(points) > 100 and colors is not None
                assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert seen == {"/relocalizer/points": 5, "/relocalizer/pose": 5, "/relocalizer/pose_with_covariance": 5,
                    "/tf": 5, "/diagnostics": 5}
    report = json.loads((Path(f"{out}.eval") / "report.json").read_text())
    assert report["frames"] == 5 and report["recall_2cm_2deg"] == 1.0
    assert (Path(f"{out}.eval") / "plots" / "trajectory.png").is_file()


def test_replay_counts_frames_recovered_by_a_second_chance(scene, relocalizer, tmp_path):
    import dataclasses

    class MarksEveryOther:
        """The test's relocalizer, with every other localized frame marked as the guided chance's, and every third
        as turned upright."""

        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name):
            return getattr(relocalizer, name)

        def localize_with_prediction(self, *args, **kwargs):
            estimate, prediction = relocalizer.localize_with_prediction(*args, **kwargs)
            self.calls += 1
            return dataclasses.replace(estimate, guided=self.calls % 2 == 0,
                                       upright_turn_deg=12.0 if self.calls % 3 == 0 else 0.0), prediction

    bag = tmp_path / "in"
    write_scene_bag(scene, bag, split=Split.QUERY, progress=False)
    result = replay_bag(MarksEveryOther(), ReplayConfig(bag, tmp_path / "out", TOPIC, progress=False))
    assert result.localized == 5 and result.recovered == {"guided": 2, "roll_retry": 0, "zoom_retry": 0}
    assert result.turned_upright == 1


def test_replay_counts_unknown_images_as_failures(scene, tmp_path):
    """A predictor that knows none of the images: every frame fails, nothing is published, nothing raises."""
    bag = tmp_path / "in"
    write_scene_bag(scene, bag, split=Split.QUERY, progress=False)
    empty = Relocalizer(OracleScenePredictor([]))
    result = replay_bag(empty, ReplayConfig(bag, tmp_path / "out", TOPIC, progress=False))
    assert result.localized == 0 and result.failures == {"prediction_failed": 5}
    assert result.report is not None and result.report["recall_10cm_10deg"] == 0.0


def test_replay_errors(scene, relocalizer, tmp_path):
    bag = tmp_path / "in"
    write_scene_bag(scene, bag, split=Split.QUERY, progress=False)
    with pytest.raises(BagError, match="image topic /nope is not in the bag"):
        replay_bag(relocalizer, ReplayConfig(bag, tmp_path / "o1", "/nope", progress=False))
    with pytest.raises(BagError, match="camera info topic /x"):
        replay_bag(relocalizer, ReplayConfig(bag, tmp_path / "o2", TOPIC, camera_info_topic="/x", progress=False))
    with pytest.raises(ConfigError, match="one ground-truth source"):
        replay_bag(relocalizer, ReplayConfig(bag, tmp_path / "o3", TOPIC, pose_tf=("map", "a"), pose_topic="/p"))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_replay_compressed_png_with_pose_tf(scene, relocalizer, tmp_path):
    bag = tmp_path / "in"
    write_scene_bag(scene, bag, split=Split.QUERY, compressed="png", progress=False)
    result = replay_bag(relocalizer, ReplayConfig(bag, tmp_path / "out", TOPIC, compressed=True, storage="mcap",
                                                  pose_tf=("map", "camera_color_optical_frame"), progress=False))
    assert result.localized == 5 and result.report["recall_2cm_2deg"] == 1.0
    assert result.ground_truth == "TF map -> camera_color_optical_frame"
