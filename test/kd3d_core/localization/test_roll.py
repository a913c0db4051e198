"""Rolled and zoomed looks: the homographies' geometry, and a real model that finds a rolled camera, or a close-up,
only by retrying."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kd3d_core.errors import ConfigError
from kd3d_core.geometry import pose_error
from kd3d_core.localization import Relocalizer, RelocalizerConfig
from kd3d_core.localization.roll import (
    camera_roll_deg,
    mapping_up,
    roll_homography,
    rolled_view,
    unroll_prediction,
    zoom_homography,
    zoomed_view,
)
from kd3d_core.prediction import ScenePrediction
from kd3d_core.scene import Split, open_scene
from kd3d_core.students import load_scene_model

K = np.array([[300.0, 0.0, 161.0], [0.0, 290.0, 118.0], [0.0, 0.0, 1.0]])


class CountingPredictor:
    """A loaded model that counts its network passes (and raises on pass number `fail_on`, if given)."""

    def __init__(self, model, fail_on: int | None = None) -> None:
        self.model, self.fail_on, self.calls = model, fail_on, 0
        self.world_frame, self.mapping_up, self.meta = model.world_frame, model.mapping_up, model.meta

    def predict(self, rgb):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("out of memory")
        return self.model.predict(rgb)


def _roll(angle_deg: float) -> np.ndarray:
    return Rotation.from_euler("z", angle_deg, degrees=True).as_matrix()


def _rolled_queries(root, angles):
    """(frame, angle, the image the camera rolled by angle sees, that camera's world_T_cam) per query frame and
    angle."""
    for frame in open_scene(root).split(Split.QUERY):
        for angle in angles:
            rgb, _ = rolled_view(frame.load_rgb(), frame.K, angle)
            truth = frame.world_T_cam.copy()
            truth[:3, :3] = truth[:3, :3] @ _roll(angle).T
            yield frame, angle, rgb, truth


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


@pytest.mark.parametrize("scale", [0.7, 1.43])
def test_zoom_homography_is_the_camera_with_scaled_focal_lengths(scale):
    """A 3D point seen by the real camera at u appears at H u in the camera whose focal lengths are `scale` times
    the real ones (same principal point)."""
    X = np.random.default_rng(1).uniform([-1, -1, 1], [1, 1, 4], (50, 3))
    u = (K @ X.T).T
    u = u[:, :2] / u[:, 2:]
    K_zoomed = K.copy()
    K_zoomed[0, 0] *= scale
    K_zoomed[1, 1] *= scale
    zoomed = (K_zoomed @ X.T).T
    zoomed = zoomed[:, :2] / zoomed[:, 2:]
    H = zoom_homography(K, scale)
    mapped = (H @ np.c_[u, np.ones(len(u))].T).T
    np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], zoomed, atol=1e-9)


def test_zoomed_out_view_shrinks_towards_the_principal_point():
    """The zoomed-out view shows a dot where H puts it, and its border (beyond the real image) is black."""
    rgb = np.full((240, 320, 3), 40, np.uint8)
    rgb[30:34, 250:254] = 255  # a bright dot around (251.5, 31.5)
    view, H = zoomed_view(rgb, K, 0.7)
    p = H @ np.array([251.5, 31.5, 1.0])
    ys, xs = np.nonzero(view[..., 0] > 100)
    assert abs(xs.mean() - p[0] / p[2]) < 1.0 and abs(ys.mean() - p[1] / p[2]) < 1.0
    corner = H @ np.array([0.0, 0.0, 1.0])
    assert view[: int(corner[1]) - 1, :].max() == 0 and view[:, : int(corner[0]) - 1].max() == 0
    assert view[int(corner[1]) + 2:, int(corner[0]) + 2:][:100, :100].min() == 40


def test_config_checks_zoom_factors():
    assert RelocalizerConfig().zoom_retry == (0.7,)
    assert RelocalizerConfig(zoom_retry=0.6).zoom_retry == (0.6,)
    assert RelocalizerConfig(zoom_retry=[0.7, 0.5]).zoom_retry == (0.7, 0.5)
    assert RelocalizerConfig(zoom_retry=0).zoom_retry == ()
    for bad in (1.0, [0.1], [5.0], [float("nan")], "0.7", True, ["near"]):
        with pytest.raises(ConfigError, match="zoom_retry"):
            RelocalizerConfig(zoom_retry=bad)


def test_a_close_up_is_found_by_the_zoomed_out_look(fast_room):
    """Query frames of the real model seen through a lens with 1/0.7 times the focal length (the texture magnified,
    an exact image warp, and that camera's K): as they are, the model finds few of them; the look zoomed out by 0.7
    finds most, and every pose it finds is that camera's (so the homography and the pixel mapping are right)."""
    model = load_scene_model(fast_room.model_path, "cpu")
    plain = Relocalizer(model, RelocalizerConfig(roll_retry_deg=(), zoom_retry=(), roll_upright_deg=0.0))
    zoom = Relocalizer(model, RelocalizerConfig(roll_retry_deg=(), zoom_retry=0.7, roll_upright_deg=0.0))
    good = {"plain": 0, "zoom": 0}
    zoomed = 0
    for frame in open_scene(fast_room.root).split(Split.QUERY):
        rgb, H = zoomed_view(frame.load_rgb(), frame.K, 1 / 0.7)
        for name, relocalizer in (("plain", plain), ("zoom", zoom)):
            est = relocalizer.localize(rgb, H @ frame.K)
            if not est.success:
                continue
            err = pose_error(est.world_T_cam, frame.world_T_cam)
            good[name] += err.translation_m < 0.15 and err.rotation_deg < 5.0
            if est.zoom_retry != 1.0:
                zoomed += 1
                assert est.zoom_retry == 0.7 and est.recovered_by == "zoom_retry" and est.roll_retry_deg == 0.0
                assert err.translation_m < 0.15 and err.rotation_deg < 10.0, (frame.name, err)
    # measured: 1 of 6 as they are, 5 with the zoomed-out look (4 of them found by it)
    assert zoomed >= 3 and good["zoom"] >= good["plain"] + 3, (good, zoomed)


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
    upright = Relocalizer(model, RelocalizerConfig(roll_retry_deg=(), zoom_retry=(), roll_upright_deg=0.0))
    retry = Relocalizer(model, RelocalizerConfig(roll_retry_deg=(20.0, -20.0), zoom_retry=(), roll_upright_deg=0.0))
    good = {"upright": 0, "retry": 0}
    turned = 0
    for frame, angle, rgb, truth in _rolled_queries(fast_room.root, (25.0, -25.0)):
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
    counting = CountingPredictor(load_scene_model(fast_room.model_path, "cpu"))
    frame = open_scene(fast_room.root).split(Split.QUERY)[0]
    est = Relocalizer(counting).localize(np.full_like(frame.load_rgb(), 128), frame.K)
    assert not est.success and counting.calls == 0
    assert dataclasses.replace(est).roll_retry_deg == 0.0 and est.zoom_retry == 1.0


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
    assert relocalizer_config_from_args(p.parse_args([])).roll_upright_deg == 8.0
    assert relocalizer_config_from_args(p.parse_args(["--roll-upright", "0"])).roll_upright_deg == 0.0
    with pytest.raises(ConfigError, match="roll_upright_deg"):
        relocalizer_config_from_args(p.parse_args(["--roll-upright", "-1"]))
    assert relocalizer_config_from_args(p.parse_args([])).zoom_retry == (0.7,)
    assert relocalizer_config_from_args(p.parse_args(["--zoom-retry", "0.6"])).zoom_retry == (0.6,)
    assert relocalizer_config_from_args(p.parse_args(["--zoom-retry", "0"])).zoom_retry == ()
    with pytest.raises(ConfigError, match="zoom_retry"):
        relocalizer_config_from_args(p.parse_args(["--zoom-retry", "1"]))


def _looking_along_x(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """world_T_cam of a camera in a z-up world, looking along +x turned by yaw, tilted by pitch, rolled by roll
    (the rolled camera's frame is the upright one's rotated by Rz(roll)^T, as rolled_view's camera)."""
    upright = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: camera x, y, z in world
    turn = Rotation.from_euler("ZY", [yaw_deg, -pitch_deg], degrees=True).as_matrix()  # yaw after pitch
    T = np.eye(4)
    T[:3, :3] = turn @ upright @ _roll(roll_deg).T
    return T


@pytest.mark.parametrize("roll", [0.0, 12.0, -35.0, 170.0])
def test_camera_roll_is_the_angle_rolled_view_turns_back(roll):
    """A camera rolled by `roll` (what rolled_view(image, K, roll) shows) reads as rolled by `roll`, so
    rolled_view(.., -roll) turns it upright; yaw and a moderate pitch do not change it."""
    for yaw, pitch in ((0.0, 0.0), (73.0, 0.0), (-120.0, 30.0)):
        got = camera_roll_deg(_looking_along_x(yaw, pitch, roll), np.array([0.0, 0.0, 1.0]))
        assert got == pytest.approx(roll, abs=1e-6), (yaw, pitch)
    # looking straight down, a camera has no roll to measure
    assert camera_roll_deg(_looking_along_x(0.0, 85.0, roll), np.array([0.0, 0.0, 1.0])) is None


def test_mapping_up_is_the_cameras_mean_up():
    rng = np.random.default_rng(0)
    walk = [np.linalg.inv(_looking_along_x(rng.uniform(-180, 180), rng.uniform(-15, 15), rng.normal(0, 3)))
            for _ in range(40)]
    up = mapping_up(walk)
    assert isinstance(up, tuple) and len(up) == 3
    np.testing.assert_allclose(up, [0.0, 0.0, 1.0], atol=0.06)  # pitch +-15 deg averages out over yaw
    assert mapping_up([]) is None
    # cameras rolled all round agree on no up
    assert mapping_up([np.linalg.inv(_looking_along_x(0.0, 0.0, r)) for r in range(0, 360, 30)]) is None


def test_rolled_fix_is_redone_upright(fast_room):
    """Query frames rolled 12-16 deg localize upright; with roll_upright_deg the relocalizer turns the image back
    by the roll its pose shows (within a few degrees of the true roll: a wrong direction would turn it twice as
    far the other way), and keeps that pose only where it has more inliers; it stays a right pose."""
    model = load_scene_model(fast_room.model_path, "cpu")
    assert model.mapping_up is not None and abs(model.mapping_up[2]) > 0.99  # the synthetic rooms are z-up
    frames = open_scene(fast_room.root).split(Split.QUERY)
    plain = Relocalizer(model, RelocalizerConfig(roll_upright_deg=0.0))
    look = Relocalizer(model, RelocalizerConfig(roll_upright_deg=8.0))
    turned = 0
    for frame, angle, rgb, truth in _rolled_queries(fast_room.root, (12.0, -16.0)):
        first, est = plain.localize(rgb, frame.K), look.localize(rgb, frame.K)
        assert first.upright_turn_deg == 0.0
        if not est.upright_turn_deg:
            continue
        turned += 1
        assert abs(est.upright_turn_deg + angle) < 6.0, (frame.name, angle, est.upright_turn_deg)
        assert est.success and est.inliers > first.inliers
        err = pose_error(est.world_T_cam, truth)
        assert err.translation_m < 0.15 and err.rotation_deg < 10.0, (frame.name, angle, err)
    assert turned >= len(frames), turned


def test_no_upright_look_without_mapping_up_or_when_upright(fast_room):
    """One network pass per localized frame when the model has no mapping_up (older files) or the camera is
    upright; a rolled one costs two, and its timings count both."""
    counting = CountingPredictor(load_scene_model(fast_room.model_path, "cpu"))
    frame = open_scene(fast_room.root).split(Split.QUERY)[1]
    rolled, _ = rolled_view(frame.load_rgb(), frame.K, 15.0)
    relocalizer = Relocalizer(counting, RelocalizerConfig(roll_retry_deg=()))
    est = relocalizer.localize(frame.load_rgb(), frame.K)
    assert est.success and counting.calls == 1 and est.upright_turn_deg == 0.0
    est = relocalizer.localize(rolled, frame.K)
    assert est.success and counting.calls == 3
    assert est.timings.predict_ms > 0
    counting.mapping_up = None
    est = relocalizer.localize(rolled, frame.K)
    assert est.success and counting.calls == 4 and est.upright_turn_deg == 0.0


def test_a_failing_upright_look_keeps_the_first_fix(fast_room):
    """A network error on the second look (the node must never die on a frame) leaves the first pose, with the
    time the failed look took counted."""
    model = load_scene_model(fast_room.model_path, "cpu")
    frame = open_scene(fast_room.root).split(Split.QUERY)[1]
    rolled, _ = rolled_view(frame.load_rgb(), frame.K, 15.0)
    predictor = CountingPredictor(model, fail_on=2)
    est = Relocalizer(predictor, RelocalizerConfig(roll_retry_deg=())).localize(rolled, frame.K)
    first = Relocalizer(model, RelocalizerConfig(roll_retry_deg=(), roll_upright_deg=0.0)).localize(rolled, frame.K)
    assert predictor.calls == 2 and est.success and est.upright_turn_deg == 0.0
    np.testing.assert_allclose(est.world_T_cam, first.world_T_cam, atol=1e-9)


def test_roll_tracker_remembers_the_last_fix_and_forgets_on_loss():
    from kd3d_core.localization.roll import RollTracker
    from kd3d_core.localization.result import FailureReason, PoseEstimate, StageTimings

    tracker, up = RollTracker(), np.array([0.0, 0.0, 1.0])
    assert tracker.hint_deg is None
    fix = PoseEstimate(True, _looking_along_x(40.0, 5.0, 13.0), np.eye(6), 100, 200, 1.0, StageTimings())
    tracker.update(fix, up)
    assert tracker.hint_deg == pytest.approx(13.0)
    tracker.update(fix, None)  # a model that does not know "up"
    assert tracker.hint_deg is None
    tracker.update(fix, up)
    tracker.update(PoseEstimate.failed(FailureReason.TOO_FEW_INLIERS, "lost"), up)
    assert tracker.hint_deg is None


def test_a_rolled_stream_costs_one_pass_a_frame_with_the_hint(fast_room):
    """A camera that stays rolled 15 deg: with the previous frame's roll as the hint, each frame is looked at
    upright first and costs one network pass (two without it); a wrong hint falls back to the usual path and
    gives the same pose it would have given."""
    from kd3d_core.localization.roll import RollTracker

    model = load_scene_model(fast_room.model_path, "cpu")
    counting = CountingPredictor(model)
    relocalizer = Relocalizer(counting, RelocalizerConfig(roll_retry_deg=()))
    tracker = RollTracker()
    passes, hinted = [], 0
    for frame, angle, rgb, truth in _rolled_queries(fast_room.root, (15.0,)):
        before = counting.calls
        est, _ = relocalizer.localize_with_prediction(rgb, frame.K, None, None, tracker.hint_deg)
        passes.append(counting.calls - before)
        if tracker.hint_deg is not None and passes[-1] == 1:
            hinted += 1
            assert est.success and est.upright_turn_deg == pytest.approx(-tracker.hint_deg)
            err = pose_error(est.world_T_cam, truth)
            assert err.translation_m < 0.15 and err.rotation_deg < 10.0, (frame.name, err)
        tracker.update(est, model.mapping_up)
    assert passes[0] == 2 and hinted >= len(passes) - 2, passes
    # a hint of the wrong sign: the turned look is rolled 30 deg, so the frame takes the usual path after it
    frame, _, rgb, _ = next(_rolled_queries(fast_room.root, (15.0,)))
    usual = relocalizer.localize(rgb, frame.K)
    before = counting.calls
    wrong = relocalizer.localize_with_prediction(rgb, frame.K, None, None, -15.0)[0]
    assert counting.calls - before == 3 and wrong.success
    np.testing.assert_allclose(wrong.world_T_cam, usual.world_T_cam, atol=1e-9)
    assert wrong.timings.predict_ms > usual.timings.predict_ms * 0.5  # the failed hinted look is counted
