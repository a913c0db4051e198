"""Classical baseline: localizes a real (synthetic) room, map round trip, geometry of the lifted points, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kd3d_core.baselines import ClassicalConfig, ClassicalMap, FeatureType, GlobalDescriptorKind
from kd3d_core.baselines.features import detect, lift_to_world, make_detector
from kd3d_core.errors import ConfigError, ModelError, SceneError
from kd3d_core.geometry import invert_pose, pose_error, project_points
from kd3d_core.localization import FailureReason
from kd3d_core.scene import Split, open_scene

# Measured on this fixture (tiny preset, seed 1, 40 mapping + 12 query frames at 240x180): ORB+BoW localizes
# 12/12 query frames within 5 cm / 5 deg (10/12 within 2 cm / 2 deg), SIFT+BoW 12/12. Thresholds leave margin
# for OpenCV version differences but fail on a broken lift, retrieval or PnP (those give ~0).
MIN_RECALL_5CM = 0.75


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kd3d_core.synth import SynthConfig, render_scene

    out = tmp_path_factory.mktemp("classical") / "tiny"
    render_scene(SynthConfig(preset="tiny", seed=1, mapping_frames=40, query_frames=12, size_wh=(240, 180)), out,
                 progress=False)
    return out


@pytest.fixture(scope="module")
def orb_map(room: Path) -> ClassicalMap:
    return ClassicalMap.build(room, ClassicalConfig(vocabulary_size=128), progress=False)


def recall_5cm_5deg(cmap: ClassicalMap, room: Path) -> float:
    hits = []
    for frame in open_scene(room).split(Split.QUERY):
        est = cmap.localize(frame.load_rgb(), frame.K, stamp_ns=frame.stamp_ns)
        assert est.stamp_ns == frame.stamp_ns
        if est.success:
            err = pose_error(est.world_T_cam, frame.world_T_cam)
            hits.append(err.translation_m < 0.05 and err.rotation_deg < 5.0)
        else:
            hits.append(False)
    return float(np.mean(hits))


def test_orb_bow_localizes_query_frames(orb_map: ClassicalMap, room: Path) -> None:
    assert orb_map.num_frames == 40
    assert recall_5cm_5deg(orb_map, room) >= MIN_RECALL_5CM


def test_sift_localizes_query_frames(room: Path) -> None:
    cmap = ClassicalMap.build(room, ClassicalConfig(feature=FeatureType.SIFT, vocabulary_size=64,
                                                    map_stride=2), progress=False)
    assert cmap.num_frames == 20
    assert cmap.descriptors_ND.shape[1] == 128
    assert recall_5cm_5deg(cmap, room) >= MIN_RECALL_5CM


def test_lifted_points_reproject_onto_their_keypoints(room: Path) -> None:
    config = ClassicalConfig()
    frame = open_scene(room).split(Split.MAPPING)[5]
    rgb = frame.load_rgb()
    feats = detect(make_detector(config), config.feature, rgb)
    lifted, world = lift_to_world(feats, frame.load_depth_for_color((240, 180)), frame.K, frame.world_T_cam, config)
    assert 50 < len(world) <= len(feats.uv_N2)
    uv, z = project_points(frame.K, invert_pose(frame.world_T_cam), world.astype(np.float64))
    assert np.all(z > 0)
    # Depth is read at the rounded pixel, so the reprojection lands within half a pixel (plus depth quantisation).
    assert np.max(np.abs(uv - lifted.uv_N2)) < 0.75


def test_save_load_round_trip(orb_map: ClassicalMap, room: Path, tmp_path: Path) -> None:
    path = tmp_path / "map.npz"
    orb_map.save(path)
    loaded = ClassicalMap.load(path)
    assert loaded.config == orb_map.config
    assert loaded.frame_names == orb_map.frame_names and loaded.world_frame == orb_map.world_frame
    for name in ("points_N3", "descriptors_ND", "frame_offsets", "world_T_cam_F44", "global_FD"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(orb_map, name))
    np.testing.assert_array_equal(loaded.vocabulary.words_VD, orb_map.vocabulary.words_VD)
    frame = open_scene(room).split(Split.QUERY)[0]
    a, b = orb_map.localize(frame.load_rgb(), frame.K), loaded.localize(frame.load_rgb(), frame.K)
    assert a.success and b.success
    np.testing.assert_allclose(a.world_T_cam, b.world_T_cam, atol=1e-3)
    assert path.stat().st_size < orb_map.nbytes  # compressed


def test_thumbnail_map_has_no_vocabulary_and_round_trips(room: Path, tmp_path: Path) -> None:
    config = ClassicalConfig(global_descriptor=GlobalDescriptorKind.THUMBNAIL, map_stride=4)
    cmap = ClassicalMap.build(room, config, progress=False)
    assert cmap.vocabulary is None and cmap.global_FD.shape == (10, 32 * 24)
    cmap.save(tmp_path / "thumb.npz")
    assert ClassicalMap.load(tmp_path / "thumb.npz").vocabulary is None


def test_bad_inputs_become_failures_not_exceptions(orb_map: ClassicalMap) -> None:
    K = np.array([[200.0, 0, 120], [0, 200.0, 90], [0, 0, 1]])
    assert orb_map.localize(np.zeros((180, 240), np.uint8), K).failure is FailureReason.BAD_IMAGE
    assert orb_map.localize(np.zeros((180, 240, 3), np.uint8), np.eye(2)).failure is FailureReason.BAD_INTRINSICS
    blank = orb_map.localize(np.full((180, 240, 3), 128, np.uint8), K)
    assert not blank.success and blank.failure is FailureReason.TOO_FEW_CORRESPONDENCES


def test_load_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read classical map"):
        ClassicalMap.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", meta_json=np.array('{"format": "something-else", "version": 1}'))
    with pytest.raises(ModelError, match="not a classical map"):
        ClassicalMap.load(tmp_path / "other.npz")


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="feature must be one of orb, sift"):
        ClassicalConfig(feature="surf")
    with pytest.raises(ConfigError, match="top_k must be >= 1"):
        ClassicalConfig(top_k=0)
    assert ClassicalConfig(global_descriptor="thumbnail").global_descriptor is GlobalDescriptorKind.THUMBNAIL


def test_build_needs_depth_and_poses(tmp_path: Path) -> None:
    from kd3d_core.scene_writer import SceneWriter

    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    with SceneWriter.create(tmp_path / "nodepth", K, (64, 48)) as writer:
        writer.add(np.zeros((48, 64, 3), np.uint8), world_T_cam=np.eye(4), split=Split.MAPPING)
    with pytest.raises(SceneError, match="no mapping frames with depth and pose"):
        ClassicalMap.build(tmp_path / "nodepth", progress=False)
