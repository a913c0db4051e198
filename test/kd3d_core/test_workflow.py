"""A newcomer's path through the command line: synth bags -> ingest/distill -> localize/evaluate/info, checking the
numbers are honest (query frames scored, mapping frames flagged) and the workflow's errors name the fix."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kd3d_core.bags import open_bag, write_scene_bag
from kd3d_core.cli import main
from kd3d_core.evaluation import read_poses, write_poses
from kd3d_core.evaluation.plots import colour_scale_top
from kd3d_core.evaluation.poses import Trajectory
from kd3d_core.scene import Split, open_scene
from kd3d_core.students.model_file import read_model_meta

IMAGE = "/camera/color/image_raw"


@pytest.fixture(scope="module")
def synth_bags(tmp_path_factory) -> tuple[Path, Path]:
    """`kd3d synth --bag`: a tiny room and its mapping/query bags (with depth)."""
    root = tmp_path_factory.mktemp("workflow")
    scene, bags = root / "room", root / "bags"
    assert main(["synth", str(scene), "--preset", "tiny", "--seed", "3", "--frames", "16", "--query-frames", "4",
                 "--size", "96x72", "--bag", str(bags), "--bag-depth"]) == 0
    return scene, bags


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_scene_path) -> tuple[Path, Path]:
    """A fast-student model distilled (depth teacher) from a copy of the tiny scene; returns (scene, model)."""
    root = tmp_path_factory.mktemp("model")
    scene = root / "tiny"
    shutil.copytree(tiny_scene_path, scene)
    out = root / "tiny.kd3d"
    assert main(["distill", str(scene), "--out", str(out), "--size", "96x72", "--threads", "1", "--quiet"]) == 0
    return scene, out


def test_synth_writes_the_walks_as_separate_bags(synth_bags):
    scene, bags = synth_bags
    stamps = {}
    for split, frames in (("mapping", 16), ("query", 4)):
        with open_bag(bags / split) as bag:
            assert bag.topics[IMAGE].count == frames
            stamps[split] = {s.stamp_ns for s in bag.header_stamps(IMAGE)}
    assert not stamps["mapping"] & stamps["query"]  # distill never maps a query frame


def test_ingest_finds_poses_by_the_shared_rule_and_says_so(synth_bags, tmp_path, capsys):
    _, bags = synth_bags
    assert main(["ingest", str(bags / "mapping"), str(tmp_path / "s"), "--image-topic", IMAGE, "--quiet"]) == 0
    assert "TF map -> camera_color_optical_frame (found by the rule" in capsys.readouterr().err
    assert all(f.has_pose for f in open_scene(tmp_path / "s").frames)


def test_info_bag_lists_tf_frames_and_the_pose_chain(synth_bags, capsys):
    _, bags = synth_bags
    assert main(["info", str(bags / "mapping")]) == 0
    out = capsys.readouterr().out
    assert "TF frames: camera_color_optical_frame, camera_link, map" in out
    assert "TF map -> camera_link -> camera_color_optical_frame" in out


def test_distill_names_the_missing_depth_flag_before_any_work(synth_bags, tmp_path, capsys):
    _, bags = synth_bags
    out = tmp_path / "m.kd3d"
    assert main(["distill", str(bags / "mapping"), "--out", str(out), "--image-topic", IMAGE]) == 1
    err = capsys.readouterr().err
    assert "--depth-topic" in err and "/camera/depth/image_raw" in err and "--teacher dust3r --checkpoint" in err
    assert not any(tmp_path.iterdir())  # nothing ingested, nothing left behind


def test_distill_names_the_pose_flags_when_the_bag_has_no_chain(synth_bags, tmp_path, capsys):
    scene, _ = synth_bags
    bag = tmp_path / "no_tf"
    write_scene_bag(open_scene(scene), bag, split=Split.MAPPING, tf=False, depth_topic="/depth", progress=False)
    assert main(["distill", str(bag), "--out", str(tmp_path / "m.kd3d"), "--image-topic", IMAGE,
                 "--depth-topic", "/depth"]) == 1
    assert "--pose-tf PARENT CHILD" in capsys.readouterr().err


def test_distill_removes_the_scene_it_ingested_when_training_fails(synth_bags, tmp_path, capsys, monkeypatch):
    from kd3d_core.errors import Kd3dError
    from kd3d_core.training import fast

    def failing_trainer(*_args, **_kwargs):
        raise Kd3dError("injected training failure")

    monkeypatch.setattr(fast, "train_fast", failing_trainer)
    _, bags = synth_bags
    out = tmp_path / "m.kd3d"
    assert main(["distill", str(bags / "mapping"), "--out", str(out), "--image-topic", IMAGE,
                 "--depth-topic", "/camera/depth/image_raw", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "injected training failure" in err and "removed the scene" in err
    assert not (tmp_path / "m_scene").exists()


@pytest.mark.parametrize("flags, why", [(["--epochs", "5"], "--epochs does nothing with the fast student"),
                                         (["--lr", "0.01"], "--lr does nothing"),
                                         (["--iterations", "10"], "kNN head")])
def test_train_refuses_flags_the_fast_student_ignores(tiny_scene_path, tmp_path, capsys, flags, why):
    assert main(["train", str(tiny_scene_path), "--out", str(tmp_path / "m.kd3d"), *flags]) == 1
    assert why in capsys.readouterr().err


def _perfect_estimates(scene: Path, split: str, path: Path) -> None:
    frames = [f for f in open_scene(scene).split(split) if f.has_pose]
    write_poses(path, Trajectory.from_lists([f.name for f in frames], [f.world_T_cam for f in frames]), "colmap")


def test_evaluate_scores_the_query_split_of_a_scene_by_default(tiny_scene_path, tmp_path, capsys):
    estimates = tmp_path / "est.txt"
    _perfect_estimates(tiny_scene_path, "query", estimates)
    assert main(["evaluate", "--estimates", str(estimates), "--reference", str(tiny_scene_path)]) == 0
    captured = capsys.readouterr()
    assert "the query split of scene" in captured.err and "8 frames (" in captured.err
    assert "8 of 8 reference frames" in captured.out and "5cm/5deg 100.0%" in captured.out
    # --split all: the 24 mapping frames without estimates count as failures, as before this fix
    assert main(["evaluate", "--estimates", str(estimates), "--reference", str(tiny_scene_path),
                 "--split", "all"]) == 0
    assert "8 of 32 reference frames" in capsys.readouterr().out


def test_evaluate_split_needs_a_scene_reference(tiny_scene_path, tmp_path, capsys):
    estimates = tmp_path / "est.txt"
    _perfect_estimates(tiny_scene_path, "query", estimates)
    assert main(["evaluate", "--estimates", str(estimates), "--reference", str(estimates), "--split", "query"]) == 1
    assert "--split needs a scene folder" in capsys.readouterr().err


def test_model_records_its_mapping_frames_and_info_describes_it(model, capsys):
    scene, path = model
    meta = read_model_meta(path)
    mapping = meta.teacher["mapping"]
    expected = {f.name: f.stamp_ns for f in open_scene(scene).split(Split.MAPPING)}
    assert dict(zip(mapping["names"], mapping["stamps_ns"])) == expected
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "student:        fast (knn head)" in out and "mapping frames: 24" in out and "world frame:    map" in out
    # the synthetic rooms are z-up and their mapping walk upright: the model knows where "up" is
    assert meta.mapping_up is not None and meta.mapping_up[2] > 0.99
    assert "mapping up:     (" in out and ") in the world frame" in out


def test_localize_warns_when_scoring_mapping_frames(model, tmp_path, capsys):
    scene, path = model
    assert main(["localize", str(path), str(scene), "--split", "query", "--out", str(tmp_path / "q.txt"),
                 "--quiet"]) == 0
    assert "mapped from" not in capsys.readouterr().err
    assert main(["localize", str(path), str(scene), "--split", "mapping", "--out", str(tmp_path / "m.txt"),
                 "--quiet"]) == 0
    assert "24 of 24 mapping frames are frames the model was mapped from" in capsys.readouterr().err


def test_evaluate_with_the_model_warns_about_mapping_frames(model, tmp_path, capsys):
    scene, path = model
    estimates = tmp_path / "est.tum"
    frames = open_scene(scene).split(Split.MAPPING)
    write_poses(estimates, Trajectory.from_lists([f.name for f in frames], [f.world_T_cam for f in frames],
                                                 [f.stamp_ns / 1e9 for f in frames]), "tum")
    assert main(["evaluate", "--estimates", str(estimates), "--reference", str(scene), "--split", "mapping",
                 "--model", str(path)]) == 0
    assert "24 of 24 scored frames are frames the model was mapped from" in capsys.readouterr().err


def test_localize_hints_at_swapped_arguments_and_refuses_to_overwrite(model, tmp_path, capsys):
    scene, path = model
    assert main(["localize", str(scene), str(path), "--out", str(tmp_path / "p.txt")]) == 1
    assert "did you swap the arguments?" in capsys.readouterr().err
    existing = tmp_path / "poses.txt"
    existing.write_text("keep me\n")
    assert main(["localize", str(path), str(scene), "--out", str(existing), "--quiet"]) == 1
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert existing.read_text() == "keep me\n"
    assert main(["localize", str(path), str(scene), "--out", str(tmp_path / "new" / "dir" / "p.txt"),
                 "--quiet", "--overwrite"]) == 0  # missing parent folders are created
    assert len(read_poses(tmp_path / "new" / "dir" / "p.txt")) > 0


def test_trajectory_colour_scale_follows_the_errors():
    assert colour_scale_top(np.array([0.4, 1.2, 2.9, 3.1])) == 5.0  # 6 cm errors no longer share one colour
    assert colour_scale_top(np.array([0.1, 0.2])) == 0.5
    assert colour_scale_top(np.array([np.inf])) == 0.5
    assert colour_scale_top(np.array([30.0] * 20)) == 50.0


def test_predict_accepts_a_read_only_image_without_warning(model):
    """Replay and the node decode images as read-only views of the message bytes (no PyTorch UB warning)."""
    import warnings

    from kd3d_core.students.scene_model import load_scene_model

    scene, path = model
    net = load_scene_model(path, "cpu")
    w, h = net.meta.input_size
    rgb = np.frombuffer(bytes(w * h * 3), dtype=np.uint8).reshape(h, w, 3)
    assert not rgb.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = net.predict(rgb)
    assert prediction.points_hw3.shape[:2] == prediction.conf_hw.shape


def test_onnx_export_is_quiet_and_refuses_to_overwrite(model, tmp_path, recwarn, capsys):
    _, path = model
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "--onnx", str(out), "--threads", "1"]) == 0
    assert out.is_file()
    assert not [w for w in recwarn if "Constant folding" in str(w.message)]
    assert main(["export", str(path), "--onnx", str(out)]) == 1
    assert "already exists (pass --overwrite" in capsys.readouterr().err
