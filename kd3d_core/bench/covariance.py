"""Covariance family: is the relocalizer's reported pose covariance honest on the room suite?

For every room and student, the query walk is localized with the default `RelocalizerConfig` (its
`covariance_inflation` included) and each localized frame's error is normalised by its reported covariance
(NEES, kd3d_core.localization.calibration). An honest covariance gives mean NEES 3 and puts 95 % of frames
inside the chi^2(3) 95 % ellipsoid; the table also gives the inflation that would make that so, which is how
the default was chosen.
"""
from __future__ import annotations

import sys
import time
import traceback

import numpy as np

from kd3d_core.bench.context import BenchContext
from kd3d_core.bench.report import Table
from kd3d_core.localization.calibration import CovarianceCalibration, covariance_calibration, expected_coverage
from kd3d_core.scene import Split

COLUMNS = [
    ("room", "room"), ("method", "method"), ("frames", "localized"), ("inflation", "inflation"),
    ("nees_position_mean", "NEES t mean"), ("nees_position_median", "NEES t median"),
    ("nees_rotation_mean", "NEES R mean"), ("nees_rotation_median", "NEES R median"),
    ("coverage_position_2sigma", "t in 2σ"), ("coverage_position_chi2_95", "t in χ²95"),
    ("coverage_rotation_2sigma", "R in 2σ"), ("coverage_rotation_chi2_95", "R in χ²95"),
    ("inflation_for_95", "inflation for 95 %"),
]


def room_calibration(ctx: BenchContext, preset: str, student: str) -> CovarianceCalibration:
    """NEES of one student's localized query frames of one room (default relocalizer settings)."""
    from kd3d_core.localization import Relocalizer
    from kd3d_core.localization.scene_run import localize_frames
    from kd3d_core.students import load_scene_model

    frames = ctx.room(preset).scene().split(Split.QUERY)
    relocalizer = Relocalizer(load_scene_model(ctx.model(preset, student).model_path, ctx.device()))
    run = localize_frames(relocalizer, frames, progress=False)
    return covariance_calibration(run.estimates, [f.world_T_cam for f in frames],
                                  relocalizer.config.covariance_inflation)


def calibration_row(room: str, method: str, cal: CovarianceCalibration) -> dict:
    """One table row (NEES rounded to 2 decimals, coverages to 3)."""
    row = {"room": room, "method": method, "frames": cal.frames, "inflation": round(cal.inflation, 3),
           "inflation_for_95": None if not cal.frames else round(cal.inflation_for(0.95), 2)}
    if cal.frames:
        for key, value in cal.summary().items():
            if key in dict(COLUMNS) and key not in row:
                row[key] = round(value, 3 if key.startswith("coverage") else 2)
    return row


def pooled(cals: list[CovarianceCalibration]) -> CovarianceCalibration:
    """All rooms' frames together (every calibration must have used the same inflation)."""
    return CovarianceCalibration(sum(c.frames for c in cals), cals[0].inflation,
                                 np.concatenate([c.nees_position for c in cals]),
                                 np.concatenate([c.nees_rotation for c in cals]))


def run_covariance(ctx: BenchContext) -> list[Table]:
    """The covariance table: per room and pooled over all rooms, per student."""
    rows: list[dict] = []
    per_method: dict[str, list[CovarianceCalibration]] = {}
    errors: list[tuple[str, Exception]] = []
    t0 = time.perf_counter()
    for preset in ctx.config.rooms:
        for student in ctx.students():
            try:
                cal = room_calibration(ctx, preset, student)
            except Exception as err:  # noqa: BLE001 - one failing student must not lose the other rows
                traceback.print_exc(file=sys.stderr)
                errors.append((f"{preset}/{student}", err))
                continue
            per_method.setdefault(student, []).append(cal)
            rows.append(calibration_row(preset, student, cal))
    rows += [calibration_row("all rooms", method, pooled(cals)) for method, cals in per_method.items()]
    expected = ", ".join(f"{name} {100 * expected_coverage(b):.1f} %" for name, b in
                         (("2σ", 4.0), ("χ²95", 7.815)))
    table = Table("covariance", "Pose covariance calibration (NEES)", COLUMNS, rows, [
        "NEES = e^T P^-1 e of each localized query frame's position (t) and rotation (R) error under its reported "
        "covariance P (REP 103 order, after `covariance_inflation`); an honest 3-DoF covariance gives mean 3, "
        f"median 2.37, and these fractions inside the ellipsoids: {expected}.",
        "inflation for 95 %: the covariance_inflation that would put 95 % of the frames inside the χ²(3) 95 % "
        "ellipsoid of both position and rotation (the larger of the two); the default was chosen this way.",
    ])
    for what, err in errors:
        table.fail(what, err)
    table.seconds = time.perf_counter() - t0
    return [table]
