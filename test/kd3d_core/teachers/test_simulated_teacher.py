"""The simulated DUSt3R: DUSt3R's output structure, errors of the published size, the production path after it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from kd3d_core.errors import SceneError
from kd3d_core.geometry import invert_pose
from kd3d_core.labels import LabelStore, ScaleSource
from kd3d_core.scene import Split, open_scene
from kd3d_core.teachers import Dust3rConfig, TeachConfig, TeacherKind, teach_scene
from kd3d_core.teachers.config import SimulatedDust3rConfig
from kd3d_core.teachers.diagnostics import relative_pose_metrics
from kd3d_core.teachers.preprocess import crop_geometry
from kd3d_core.teachers.simulated import ErrorModel, FrameInput, SimulatedDust3r, relative_pose_error

SMALL = Dust3rConfig(size=224)  # DUSt3R's 224 input (centre square): 5x fewer simulated pixels than 512


def _simulator(scene_root, scale: float, seed: int = 0) -> tuple[SimulatedDust3r, list]:
    scene = open_scene(scene_root)
    frames = scene.split(Split.MAPPING)
    geom = crop_geometry(scene.info.color_size, 512)

    def load(k: int) -> FrameInput:
        f = frames[k]
        return FrameInput(f.load_depth_for_color(scene.info.color_size), f.load_rgb(), f.world_T_cam,
                          geom.intrinsics(f.K))

    return SimulatedDust3r(load, geom, ErrorModel().scaled(scale), seed=seed), frames


def test_prediction_has_dust3r_structure_and_exact_geometry_at_zero_error(synth_scene):
    sim, frames = _simulator(synth_scene, 0.0)
    p = sim.predict(1, 2)
    assert p.pts_i_HW3.shape == p.pts_j_HW3.shape == (384, 512, 3)  # network resolution of a 4:3 image at 512
    assert p.conf_i_HW.min() > 1.0 and p.conf_j_HW.min() > 1.0
    t1, t2 = sim.truth(1), sim.truth(2)
    ok = t1.valid_HW & (t1.band_HW == 0)
    scale = np.median(p.pts_i_HW3[ok][:, 2] / t1.points_HW3[ok][:, 2])
    assert np.allclose(p.pts_i_HW3[ok], scale * t1.points_HW3[ok], rtol=1e-4, atol=1e-4)
    i_T_j = invert_pose(frames[1].world_T_cam) @ frames[2].world_T_cam
    expect = t2.points_HW3 @ i_T_j[:3, :3].T + i_T_j[:3, 3]  # view 2 in view 1's camera frame
    ok2 = t2.valid_HW & (t2.band_HW == 0)
    assert np.allclose(p.pts_j_HW3[ok2], scale * expect[ok2], rtol=1e-3, atol=1e-3)


def test_predictions_are_seeded_per_pair_and_wrong_pairs_are_wrong_both_ways(synth_scene):
    sim, _ = _simulator(synth_scene, 1.0, seed=7)
    a, b = sim.predict(0, 3), sim.predict(0, 3)
    assert np.array_equal(a.pts_j_HW3, b.pts_j_HW3) and np.array_equal(a.conf_i_HW, b.conf_i_HW)
    assert not np.array_equal(sim.predict(0, 3).pts_i_HW3, sim.predict(0, 4).pts_i_HW3)
    rates = np.mean([sim.is_wrong_pair(i, i + 1 + k) for i in range(300) for k in range(3)])
    assert abs(rates - 0.057) < 0.02 and sim.is_wrong_pair(5, 9) == sim.is_wrong_pair(9, 5)


def test_pair_pose_errors_reproduce_the_published_pairwise_figures():
    """Sampled like the simulator does: RRA@15 94.3, RTA@15 88.4, mAA@30 77.2 (DUSt3R pairwise, CO3Dv2)."""
    model, rng = ErrorModel(), np.random.default_rng(0)
    T = np.eye(4)
    T[:3, 3] = [0.3, 0.0, 0.1]
    rot, trans = [], []
    for _ in range(2000):
        wrong = rng.random() < model.wrong_pair_rate
        E = relative_pose_error(T, model, rng, wrong, 2.0)
        dR = E[:3, :3].T @ T[:3, :3]
        rot.append(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1))))
        cos = E[:3, 3] @ T[:3, 3] / np.linalg.norm(E[:3, 3]) / np.linalg.norm(T[:3, 3])
        trans.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    m = relative_pose_metrics(rot, trans)
    assert abs(m["RRA@15"] - 0.943) < 0.02 and abs(m["RTA@15"] - 0.884) < 0.025 and abs(m["mAA@30"] - 0.772) < 0.03


@pytest.mark.parametrize("scale, absrel, delta", [(1.0, (0.045, 0.085), (0.90, 0.98)), (2.0, (0.09, 0.17), (0.75, 0.92))])
def test_view_depth_errors_reproduce_the_published_monocular_figures(synth_scene, scale, absrel, delta):
    """View-1 depth after per-image median scaling: NYUD-v2 AbsRel 0.065, delta<1.25 0.940 at x1."""
    sim, frames = _simulator(synth_scene, scale)
    rel, d1 = [], []
    for i in range(len(frames) - 1):
        p, t = sim.predict(i, i + 1), sim.truth(i)
        z, zt = p.pts_i_HW3[..., 2][t.valid_HW], t.points_HW3[..., 2][t.valid_HW]
        z = z * np.median(zt / z)
        rel.append(np.mean(np.abs(z - zt) / zt))
        d1.append(np.mean(np.maximum(z / zt, zt / z) < 1.25))
    assert absrel[0] < np.mean(rel) < absrel[1] and delta[0] < np.mean(d1) < delta[1]


def test_teacher_runs_the_production_path_and_is_exact_at_zero_error(synth_scene, tmp_path):
    depth = teach_scene(synth_scene, TeachConfig(teacher=TeacherKind.DEPTH, labels_dir=tmp_path / "d",
                                                 label_size=(96, 72), progress=False))
    cfg = TeachConfig(teacher=TeacherKind.SIMULATED_DUST3R, labels_dir=tmp_path / "s", progress=False,
                      label_size=(96, 72), simulated=SimulatedDust3rConfig(error_scale=0.0))
    res = teach_scene(synth_scene, cfg)
    assert res.labelled == res.frames == depth.frames and res.meta.teacher == "simulated-dust3r"
    assert res.meta.scale_source is ScaleSource.POSES and res.meta.extra["pair_diagnostics"]["RRA@15"] == 1.0
    assert len(list((tmp_path / "s" / "pairs").glob("*/*.npz"))) == res.meta.extra["pairs"]  # the real pair cache
    sim, ref = LabelStore(tmp_path / "s"), LabelStore(tmp_path / "d")
    errs = []
    for name in sim.names():
        a, b = sim.read(name), ref.read(name)
        ok = (a.conf_HW > 0) & (b.conf_HW > 0)
        errs.append(np.linalg.norm(a.points_HW3[ok] - b.points_HW3[ok], axis=-1))
    assert np.median(np.concatenate(errs)) < 0.01
    again = teach_scene(synth_scene, cfg)  # resumes: every pair comes from the cache
    assert again.meta.extra["pairs_computed"] == 0


def test_truth_comes_from_another_scene_by_stamp_and_missing_truth_is_refused(synth_scene, tmp_path):
    rgb_only = tmp_path / "rgb_only"
    shutil.copytree(synth_scene, rgb_only)
    for p in (rgb_only / "data").glob("*.depth.png"):
        p.unlink()
    cfg = TeachConfig(teacher=TeacherKind.SIMULATED_DUST3R, labels_dir=tmp_path / "l", progress=False, dust3r=SMALL)
    with pytest.raises(SceneError, match="exact depth and poses"):
        teach_scene(rgb_only, cfg)
    res = teach_scene(rgb_only, TeachConfig(teacher=TeacherKind.SIMULATED_DUST3R, labels_dir=tmp_path / "l",
                                            progress=False, dust3r=SMALL,
                                            simulated=SimulatedDust3rConfig(truth=synth_scene)))
    assert res.labelled == res.frames and res.meta.extra["simulated"]["truth"] == str(synth_scene)


def test_pure_monocular_has_arbitrary_scale(synth_scene, tmp_path):
    cfg = TeachConfig(teacher=TeacherKind.SIMULATED_DUST3R, labels_dir=tmp_path / "m", progress=False, dust3r=SMALL,
                      simulated=SimulatedDust3rConfig(error_scale=0.0, use_reference=False))
    res = teach_scene(synth_scene, cfg)
    assert res.meta.scale_source is ScaleSource.ARBITRARY
    first = LabelStore(tmp_path / "m").read(open_scene(synth_scene).split(Split.MAPPING)[0].name)
    assert np.allclose(first.world_T_cam, np.eye(4))  # gauge: the first frame
