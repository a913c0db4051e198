"""`kd3d evaluate` end to end on pose files, and its one-line errors."""
from __future__ import annotations

import json

import numpy as np

from kd3d_core.cli import main
from kd3d_core.evaluation import Trajectory, write_poses
from kd3d_core.geometry import make_pose


def test_evaluate_colmap_against_pose_folder(tmp_path, capsys):
    names = [f"frame-{i:06d}" for i in range(6)]
    ref = Trajectory.from_lists(names, [make_pose(np.eye(3), [i * 0.3, 0.0, 1.0]) for i in range(6)])
    write_poses(tmp_path / "ref", ref, "posefolder")
    est_poses = [make_pose(np.eye(3), [i * 0.3 + 0.015 * i, 0.0, 1.0]) for i in range(5)]  # last frame missing
    write_poses(tmp_path / "est.txt", Trajectory.from_lists([n + ".color.png" for n in names[:5]], est_poses),
                "colmap")
    code = main(["evaluate", "--estimates", str(tmp_path / "est.txt"), "--reference", str(tmp_path / "ref"),
                 "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"),
                 "--plots", str(tmp_path / "plots")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"] == 6 and report["localized"] == 5
    assert report["recall_2cm_2deg"] == 2 / 6 and report["recall_5cm_5deg"] == 4 / 6
    assert "recall 2cm/2deg 33.3%" in capsys.readouterr().out
    assert (tmp_path / "plots" / "error_cdf.png").is_file() and (tmp_path / "r.md").is_file()


def test_evaluate_error_is_one_line(tmp_path, capsys):
    code = main(["evaluate", "--estimates", str(tmp_path / "none.txt"), "--reference", str(tmp_path),
                 "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "does not exist" in err[0]
