"""Query-time changes of the synthetic rooms: photometric changes of images, scene and camera-path changes."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.errors import ConfigError
from kd3d_core.synth import SynthConfig, make_room, render_view, synth_intrinsics, synth_poses
from kd3d_core.synth.conditions import Photometric, SceneChange, apply_photometric, change_poses, change_room

SIZE = (96, 72)


@pytest.fixture(scope="module")
def office():
    cfg = SynthConfig(preset="office", mapping_frames=6, query_frames=4, size_wh=SIZE)
    room = make_room(cfg)
    _, query = synth_poses(cfg)
    return room, query


def _textured() -> np.ndarray:
    return np.random.default_rng(5).integers(20, 200, (48, 64, 3)).astype(np.uint8)


@pytest.mark.parametrize("change", list(Photometric))
def test_every_photometric_change_changes_the_image_but_keeps_its_format(change: Photometric) -> None:
    rgb = _textured()
    out = apply_photometric(rgb, change, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() > 0.5


def test_photometric_values() -> None:
    rgb = np.full((8, 8, 3), 100, np.uint8)
    rng = np.random.default_rng(0)
    assert apply_photometric(rgb, Photometric.GAIN_050, rng)[0, 0, 0] == 50
    assert apply_photometric(rgb, Photometric.GAIN_160, rng)[0, 0, 0] == 160
    assert np.all(apply_photometric(np.full((2, 2, 3), 200, np.uint8), Photometric.GAIN_160, rng) == 255)
    wb = apply_photometric(rgb, Photometric.WHITE_BALANCE, rng)[0, 0]
    assert tuple(wb) == (125, 100, 75)
    dark = apply_photometric(rgb, Photometric.GAMMA_160, rng)[0, 0, 0]
    bright = apply_photometric(rgb, Photometric.GAMMA_060, rng)[0, 0, 0]
    assert dark < 100 < bright


def test_dimmed_lights_darken_unevenly(office) -> None:
    room, query = office
    K = synth_intrinsics(SIZE)
    before = render_view(room, K, query[0], SIZE).rgb.astype(np.float32)
    after = render_view(change_room(room, SceneChange.LIGHTS_DIMMED, np.random.default_rng(0)), K, query[0],
                        SIZE).rgb.astype(np.float32)
    ratio = (after.mean(-1) + 1) / (before.mean(-1) + 1)
    assert ratio.mean() < 0.9
    assert ratio.std() > 0.01  # spatially varying, not one global gain


def test_moved_lights_and_object_change_the_room_not_the_geometry_of_walls(office) -> None:
    room, _ = office
    moved = change_room(room, SceneChange.LIGHTS_MOVED, np.random.default_rng(1))
    assert moved.lights.shape == room.lights.shape and not np.allclose(moved.lights, room.lights)
    obj = change_room(room, SceneChange.OBJECT_MOVED, np.random.default_rng(1))
    changed = [i for i, (a, b) in enumerate(zip(room.boxes, obj.boxes)) if not np.allclose(a.center, b.center)]
    assert len(changed) == 1 and changed[0] != 0


def test_camera_path_changes(office) -> None:
    _, query = office
    lower = change_poses(query, SceneChange.LOWER)
    assert np.allclose([p[2, 3] for p in lower], [p[2, 3] - 0.4 for p in query])
    rolled = change_poses(query, SceneChange.ROLL)
    for before, after in zip(query, rolled):
        assert np.allclose(before[:3, 3], after[:3, 3])
        assert np.allclose(before[:3, 2], after[:3, 2])  # same optical axis
        cos = np.clip(before[:3, 0] @ after[:3, 0], -1, 1)
        assert np.degrees(np.arccos(cos)) == pytest.approx(20.0, abs=1e-6)
    assert change_poses(query, SceneChange.LIGHTS_DIMMED) is query


def test_synth_config_query_change_is_validated() -> None:
    assert SynthConfig(query_change="roll-20").query_change is SceneChange.ROLL
    with pytest.raises(ConfigError, match="unknown query change"):
        SynthConfig(query_change="earthquake")


def test_low_texture_preset_has_less_texture_than_the_office() -> None:
    def texture(preset: str) -> float:
        cfg = SynthConfig(preset=preset, mapping_frames=9, query_frames=1, size_wh=SIZE)
        room = make_room(cfg)
        mapping, _ = synth_poses(cfg)
        grads = []
        for pose in mapping[::3]:
            grey = render_view(room, synth_intrinsics(SIZE), pose, SIZE).rgb.mean(-1)
            grads.append(np.abs(np.diff(grey, axis=1)).mean())
        return float(np.mean(grads))
    assert texture("lowtex") < 0.5 * texture("office")
    assert texture("lowtex") < texture("plain") < texture("office")  # the same layout, five times the paint contrast
