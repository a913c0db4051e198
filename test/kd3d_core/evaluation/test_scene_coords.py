"""Scene-coordinate error against labels: zero for exact predictions, the noise level for noisy ones."""
from __future__ import annotations

import numpy as np
import pytest

from kd3d_core.errors import Kd3dError
from kd3d_core.evaluation import scene_coordinate_error
from kd3d_core.geometry import backproject_depth, transform_points
from kd3d_core.labels import FrameLabel, LabelStore
from kd3d_core.localization import OracleNoise, OracleScenePredictor, predictor_for_frame
from kd3d_core.scene import Split, open_scene
from kd3d_core.synth import SynthConfig, render_scene


def test_scene_coordinate_error(tmp_path):
    render_scene(SynthConfig(preset="tiny", seed=4, mapping_frames=3, query_frames=1, size_wh=(96, 72)),
                 tmp_path / "scene", progress=False)
    scene = open_scene(tmp_path / "scene")
    frames = scene.split(Split.MAPPING)
    store = LabelStore(tmp_path / "labels")
    for f in frames:
        depth = f.load_depth()
        pts = transform_points(f.world_T_cam, backproject_depth(depth, f.K)).astype(np.float32)
        store.write(FrameLabel(f.name, pts, (depth > 0).astype(np.float32), f.world_T_cam, f.K))
    exact = OracleScenePredictor([(f.load_rgb(), predictor_for_frame(f, stride=4)) for f in frames])
    res = scene_coordinate_error(exact, frames, store, progress=False)
    assert res.frames == 3 and res.cells > 500 and res.mean_m < 1e-5 and set(res.per_frame_median_m) == {
        f.name for f in frames}
    rng = np.random.default_rng(0)
    noisy = OracleScenePredictor([(f.load_rgb(), predictor_for_frame(f, 4, OracleNoise(0.01), rng)) for f in frames])
    res = scene_coordinate_error(noisy, frames, store, progress=False)
    # |N(0, 0.01^2 I3)| has mean 0.01 * 2 sqrt(2 / pi) = 0.01596 and median about 0.01538.
    assert res.mean_m == pytest.approx(0.01596, rel=0.08) and res.median_m == pytest.approx(0.01538, rel=0.08)
    with pytest.raises(Kd3dError, match="none of the 1 frames has a label"):
        scene_coordinate_error(exact, scene.split(Split.QUERY), store, progress=False)
