"""The renderer's sensor noise floor (SynthConfig.sensor_noise): what a camera adds to every image."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from kd3d_core.errors import ConfigError
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene

CFG = SynthConfig(preset="tiny", mapping_frames=3, query_frames=2, size_wh=(64, 48))


def _images(path: Path, split: Split) -> list[np.ndarray]:
    return [f.load_rgb().astype(np.float64) for f in open_scene(path).split(split)]


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sensor")
    out = {}
    for name, cfg in {"clean": CFG, "noisy": dataclasses.replace(CFG, sensor_noise=4.0),
                      "again": dataclasses.replace(CFG, sensor_noise=4.0),
                      "queries": dataclasses.replace(CFG, sensor_noise=4.0, include_mapping=False)}.items():
        render_scene(cfg, root / name, progress=False)
        out[name] = root / name
    return out


def test_noise_has_the_configured_spread_on_every_image(renders: dict[str, Path]) -> None:
    for split in (Split.MAPPING, Split.QUERY):
        for clean, noisy in zip(_images(renders["clean"], split), _images(renders["noisy"], split)):
            diff = noisy - clean
            inside = (clean > 20) & (clean < 235)  # away from clipping at 0 and 255
            assert 3.6 < diff[inside].std() < 4.4 and abs(diff[inside].mean()) < 0.3


def test_noise_is_fixed_by_the_config_and_differs_between_frames(renders: dict[str, Path]) -> None:
    noisy = _images(renders["noisy"], Split.MAPPING)
    for a, b in zip(noisy, _images(renders["again"], Split.MAPPING)):
        np.testing.assert_array_equal(a, b)
    clean = _images(renders["clean"], Split.MAPPING)
    first, second = noisy[0] - clean[0], noisy[1] - clean[1]
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.1


def test_a_query_only_rendering_gets_the_same_query_images(renders: dict[str, Path]) -> None:
    for a, b in zip(_images(renders["noisy"], Split.QUERY), _images(renders["queries"], Split.QUERY)):
        np.testing.assert_array_equal(a, b)


def test_the_scene_records_its_noise(renders: dict[str, Path]) -> None:
    import json

    assert json.loads((renders["noisy"] / "kd3d.json").read_text())["synth"]["sensor_noise"] == 4.0


@pytest.mark.parametrize("sigma", [-0.5, 65.0, float("nan")])
def test_impossible_noise_is_refused(sigma: float) -> None:
    with pytest.raises(ConfigError, match="sensor noise"):
        dataclasses.replace(CFG, sensor_noise=sigma).validate()
