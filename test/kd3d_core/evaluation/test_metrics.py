"""Recall and medians on hand-built cases; name and timestamp matching; report keys; plots."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kd3d_core.errors import Kd3dError
from kd3d_core.evaluation import MatchMode, Trajectory, evaluate_trajectories, write_report
from kd3d_core.geometry import make_pose


def _reference(n: int = 10) -> Trajectory:
    poses = [make_pose(np.eye(3), [0.5 * i, np.sin(i), 1.0]) for i in range(n)]
    return Trajectory.from_lists([f"frame-{i:06d}" for i in range(n)], poses, [100.0 + i for i in range(n)])


def _perturbed(ref: Trajectory, shifts_m: list[float], rots_deg: list[float], keep: list[int]) -> Trajectory:
    poses = []
    for i in keep:
        R = Rotation.from_rotvec(np.radians(rots_deg[i]) * np.array([0, 0, 1.0])).as_matrix()
        poses.append(make_pose(R @ ref.poses[i][:3, :3], ref.poses[i][:3, 3] + [shifts_m[i], 0, 0]))
    return Trajectory.from_lists([ref.names[i] + ".color.png" for i in keep], poses)


def test_recall_and_medians_by_hand():
    ref = _reference(10)
    shifts = [0.01, 0.01, 0.03, 0.03, 0.08, 0.08, 0.01, 0.5, 0.0, 0.0]
    rots = [1.0, 3.0, 1.0, 4.0, 1.0, 9.0, 12.0, 1.0, 0.0, 0.0]
    est = _perturbed(ref, shifts, rots, keep=[0, 1, 2, 3, 4, 5, 6, 7])  # frames 8, 9 missing
    result = evaluate_trajectories(est, ref)
    s = result.summary()
    assert result.matched_by is MatchMode.NAME
    assert s["frames"] == 10 and s["localized"] == 8
    assert s["recall_2cm_2deg"] == pytest.approx(0.1)   # frame 0
    assert s["recall_5cm_5deg"] == pytest.approx(0.4)   # frames 0-3
    assert s["recall_10cm_10deg"] == pytest.approx(0.6)  # frames 0-5
    # Medians over all 10 frames with two infinities: t sorted 1,1,1,3,3,8,8,50,inf,inf cm -> (3+8)/2.
    assert s["median_translation_m"] == pytest.approx(0.055)
    assert s["median_rotation_deg"] == pytest.approx(3.5)


def test_median_is_none_when_most_frames_are_missing():
    ref = _reference(4)
    est = _perturbed(ref, [0.0] * 4, [0.0] * 4, keep=[0])
    s = evaluate_trajectories(est, ref).summary()
    assert s["median_translation_m"] is None and s["recall_2cm_2deg"] == pytest.approx(0.25)


def test_match_by_timestamp_with_tolerance():
    ref = _reference(5)
    stamps = ref.stamps_s + np.array([0.001, -0.004, 0.5, 0.0, 0.003])
    est = Trajectory(tuple(f"{t:.6f}" for t in stamps), ref.poses.copy(), stamps, keyed_by_stamp=True)
    result = evaluate_trajectories(est, ref, max_dt_s=0.01)
    assert result.matched_by is MatchMode.TIMESTAMP
    assert [f.localized for f in result.frames] == [True, True, False, True, True]
    assert np.nanmax(result.translation_m[np.isfinite(result.translation_m)]) < 1e-12


def test_no_overlap_is_an_error():
    ref = _reference(3)
    est = Trajectory.from_lists(["other-1"], [np.eye(4)])
    with pytest.raises(Kd3dError, match="no estimate matches"):
        evaluate_trajectories(est, ref)


def test_invalid_estimate_counts_as_failure():
    ref = _reference(2)
    poses = ref.poses.copy()
    poses[1] = np.nan
    result = evaluate_trajectories(Trajectory(ref.names, poses), ref)
    assert [f.localized for f in result.frames] == [True, False]


def test_report_files(tmp_path):
    ref = _reference(10)
    est = _perturbed(ref, [0.01 * i for i in range(10)], [0.5 * i for i in range(10)], keep=list(range(9)))
    result = evaluate_trajectories(est, ref)
    report = write_report(result, tmp_path / "r.json", tmp_path / "r.md", tmp_path / "plots",
                          extra={"timing_total_ms": 12.5})
    data = json.loads((tmp_path / "r.json").read_text())
    for key in ("frames", "localized", "recall_2cm_2deg", "recall_5cm_5deg", "recall_10cm_10deg",
                "median_translation_m", "median_rotation_deg"):
        assert key in data
    assert data == json.loads(json.dumps(report))
    assert data["per_frame"][9]["translation_m"] is None and not data["per_frame"][9]["localized"]
    md = (tmp_path / "r.md").read_text()
    assert "recall 5 cm / 5 deg" in md and "timing total ms" not in md and "total ms | 12.5" in md
    for name in ("error_cdf.png", "trajectory.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
