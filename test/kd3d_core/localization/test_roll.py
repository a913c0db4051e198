"""Rolled cameras: the roll homography's geometry, and a real model that finds a rolled camera only by retrying."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import pose_error
from kd3d_core.localization import Relocalizer, RelocalizerConfig
from kd3d_core.localization.roll import roll_homography, rolled_view, unroll_prediction
from kd3d_core.prediction import ScenePrediction
from kd3d_core.scene import Split, open_scene
from kd3d_core.students import load_scene_model

K = np.array([[300.0, 0.0, 161.0], [0.0, 290.0, 118.0], [0.0, 0.0, 1.0]])


def _roll(angle_deg: float) -> np.ndarray:
    return Rotation.from_euler("z", angle_deg, degrees=True).as_matrix()


@pytest.mark.parametrize("angle", [20.0, -35.0, 90.0])
def test_homography_is_the_rolled_camera(angle):
    """A 3D point seen by the real camera at u appears at H u in the camera rolled by `angle` (x' = Rz x)."""
    X = np.random.default_rng(0).uniform([-1, -1, 1], [1, 1, 4], (50, 3))
    u = (K @ X.T).T
    u = u[:, :2] / u[:, 2:]
    rolled = (K @ (_roll(angle) @ X.T)).T
    rolled = rolled[:, :2] / rolled[:, 2:]
    H = roll_homography(K, angle)
    mapped = (H @ np.c_[u, np.ones(len(u))].T).T
    np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], rolled, atol=1e-9)


def test_unroll_maps_cells_back_and_drops_the_border():
    """Cells of a rolled view get the real image's pixel they show; cells on the black border get confidence 0."""
    h, w = 30, 40
    vv, uu = np.mgrid[0:h, 0:w]
    uv = np.stack([8 * uu + 4, 8 * vv + 4], -1).astype(np.float32)
    pred = ScenePrediction(np.zeros((h, w, 3), np.float32), np.ones((h, w), np.float32), uv)
    H = roll_homography(K, 30.0)
    back = unroll_prediction(pred, H, (320, 240), margin_px=0.0)
    there = (H @ np.c_[back.uv_hw2.reshape(-1, 2), np.ones(h * w)].T).T
    np.testing.assert_allclose(there[:, :2] / there[:, 2:], uv.reshape(-1, 2), atol=1e-3)
    real = back.uv_hw2.reshape(-1, 2)
    inside = (real[:, 0] >= 0) & (real[:, 0] <= 319) & (real[:, 1] >= 0) & (real[:, 1] <= 239)
    np.testing.assert_array_equal(back.conf_hw.reshape(-1) > 0, inside)
    assert 0.5 < inside.mean() < 0.95  # a 30 deg roll leaves the corners of the view black


def test_rolled_view_pixels_follow_the_homography():
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[100:104, 200:204] = 255  # a bright dot around (201.5, 101.5)
    view, H = rolled_view(rgb, K, -25.0)
    p = H @ np.array([201.5, 101.5, 1.0])
    ys, xs = np.nonzero(view[..., 0] > 64)
    assert abs(xs.mean() - p[0] / p[2]) < 1.0 and abs(ys.mean() - p[1] / p[2]) < 1.0


def test_config_checks_roll_angles():
    assert RelocalizerConfig(roll_retry_deg=[15, -15]).roll_retry_deg == (15.0, -15.0)
    assert RelocalizerConfig(roll_retry_deg=25).roll_retry_deg == (25.0, -25.0)
    assert RelocalizerConfig(roll_retry_deg=0.0).roll_retry_deg == ()
    for bad in ([0.0], [float("nan")], [180.0], ["left"], "20", True, float("inf")):
        with pytest.raises(ConfigError, match="roll_retry_deg"):
            RelocalizerConfig(roll_retry_deg=bad)


def test_rolled_query_is_found_only_by_the_retry(fast_room):
    """Query frames of the real model, seen by the camera rolled 25 deg (an exact image warp): upright the
    model finds few of them; the retry finds most, and every frame it found by turning the image back is the
    rolled camera's pose (so the homography, its direction and the pixel mapping are right)."""
    model = load_scene_model(fast_room.model_path, "cpu")
    frames = open_scene(fast_room.root).split(Split.QUERY)
    upright = Relocalizer(model, RelocalizerConfig(roll_retry_deg=()))
    retry = Relocalizer(model, RelocalizerConfig(roll_retry_deg=(20.0, -20.0)))
    good = {"upright": 0, "retry": 0}
    turned = 0
    for frame in frames:
        for angle in (25.0, -25.0):
            rgb, _ = rolled_view(frame.load_rgb(), frame.K, angle)
            truth = frame.world_T_cam.copy()
            truth[:3, :3] = truth[:3, :3] @ _roll(angle).T
            for name, relocalizer in (("upright", upright), ("retry", retry)):
                est = relocalizer.localize(rgb, frame.K)
                if not est.success:
                    continue
                err = pose_error(est.world_T_cam, truth)
                good[name] += err.translation_m < 0.15 and err.rotation_deg < 5.0
                if est.roll_retry_deg:
                    turned += 1
                    assert est.roll_retry_deg == -np.sign(angle) * 20.0
                    # a wrong homography direction or pixel mapping is off by ~40 deg (twice the retry angle); the
                    # tiny room's honest poses are 1-6 deg off (one at 6.3 deg, 13 cm, position std 6.5 cm)
                    assert err.translation_m < 0.15 and err.rotation_deg < 10.0, (frame.name, angle, err)
    assert turned >= 4 and good["retry"] >= good["upright"] + 4, (good, turned)
    assert good["retry"] >= 0.75 * 2 * len(frames), good


def test_no_retry_for_refused_images(fast_room):
    """A frame refused before the network (blank) is not retried: the answer and its cost stay the upright ones."""
    model = load_scene_model(fast_room.model_path, "cpu")
    calls = []

    class Counting:
        world_frame = model.world_frame
        meta = model.meta

        def predict(self, rgb):
            calls.append(rgb.shape)
            return model.predict(rgb)

    frame = open_scene(fast_room.root).split(Split.QUERY)[0]
    est = Relocalizer(Counting()).localize(np.full_like(frame.load_rgb(), 128), frame.K)
    assert not est.success and calls == []
    assert dataclasses.replace(est).roll_retry_deg == 0.0


def test_roll_retry_flag_sets_both_directions():
    import argparse

    from kd3d_core.commands.localize import add_relocalizer_arguments, relocalizer_config_from_args

    p = argparse.ArgumentParser()
    add_relocalizer_arguments(p)
    assert relocalizer_config_from_args(p.parse_args([])).roll_retry_deg == (20.0, -20.0)
    assert relocalizer_config_from_args(p.parse_args(["--roll-retry", "15"])).roll_retry_deg == (15.0, -15.0)
    assert relocalizer_config_from_args(p.parse_args(["--roll-retry", "0"])).roll_retry_deg == ()
    with pytest.raises(ConfigError, match="roll_retry_deg"):
        relocalizer_config_from_args(p.parse_args(["--roll-retry", "200"]))
