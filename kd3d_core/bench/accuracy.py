"""Accuracy family: every room of the suite, mapping -> distil -> query, per student and classical baseline.

Each room's mapping frames (with depth and poses) feed both the depth teacher (labels -> students) and the
classical maps, so every method sees exactly the same mapping data; all are evaluated on the room's query walk
with the same metrics (kd3d_core.evaluation). A second table gives the distillation (mapping) time per room.
"""
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence

import numpy as np

from kd3d_core.bench.context import BenchContext
from kd3d_core.bench.report import Table
from kd3d_core.scene import Frame, Split

ACCURACY_COLUMNS = [
    ("room", "room"), ("method", "method"), ("frames", "query frames"), ("localized", "localized"),
    ("recall_2cm_2deg", "2cm/2°"), ("recall_5cm_5deg", "5cm/5°"), ("recall_10cm_10deg", "10cm/10°"),
    ("median_translation_cm", "median t (cm)"), ("median_rotation_deg", "median R (°)"),
    ("ms_per_frame", "ms/frame"), ("size_mb", "model/map MB"),
]
DISTIL_COLUMNS = [
    ("room", "room"), ("method", "method"), ("mapping_frames", "mapping frames"), ("label_s", "labels (s)"),
    ("build_s", "train / build (s)"), ("total_s", "total (s)"), ("budget", "budget"),
]


def evaluate_localizer(localizer: object, frames: Sequence[Frame], progress: bool = False) -> dict:
    """Localize frames with anything that has `localize(rgb, K, stamp_ns=...)`; the evaluation summary.

    Returns the kd3d_core.evaluation summary keys (fractions 0-1, metres, degrees), plus the per-frame errors
    (`errors_m`, `errors_deg`, inf when not localized) for pooling over rooms, the NEES of the localized frames'
    reported covariances (`covariance`, a CovarianceCalibration; frames without a covariance or true pose are left
    out), and the median total time.
    """
    from kd3d_core.evaluation import evaluate_trajectories
    from kd3d_core.evaluation.poses import Trajectory
    from kd3d_core.localization.calibration import covariance_calibration
    from kd3d_core.localization.scene_run import localize_frames

    run = localize_frames(localizer, frames, progress=progress)  # type: ignore[arg-type]
    reference = Trajectory.from_lists([f.name for f in frames], [f.world_T_cam for f in frames])
    result = evaluate_trajectories(run.trajectory(), reference, mode="name")
    out = result.summary()
    out["errors_m"] = result.translation_m.tolist()
    out["errors_deg"] = result.rotation_deg.tolist()
    # NEES of the covariances as reported (the inflation argument only labels the result)
    out["covariance"] = covariance_calibration(run.estimates, [f.world_T_cam for f in frames], inflation=1.0)
    out["ms_per_frame"] = run.median_timings_ms().get("total", float("nan"))
    return out


def accuracy_row(room: str, method: str, summary: dict, size_mb: float) -> dict:
    """One table row from an evaluation summary."""
    t, r = summary.get("median_translation_m"), summary.get("median_rotation_deg")
    return {"room": room, "method": method, "frames": summary["frames"], "localized": summary["localized"],
            "recall_2cm_2deg": summary["recall_2cm_2deg"], "recall_5cm_5deg": summary["recall_5cm_5deg"],
            "recall_10cm_10deg": summary["recall_10cm_10deg"],
            "median_translation_cm": None if t is None else round(100 * t, 2),
            "median_rotation_deg": None if r is None else round(r, 2),
            "ms_per_frame": round(summary["ms_per_frame"], 1), "size_mb": round(size_mb, 2)}


def pooled_rows(per_method: dict[str, list[dict]]) -> list[dict]:
    """'all rooms' rows: recall and medians over the pooled query frames of every room."""
    rows = []
    for method, summaries in per_method.items():
        t = np.concatenate([s["errors_m"] for s in summaries])
        r = np.concatenate([s["errors_deg"] for s in summaries])
        pooled = {"frames": int(t.size), "localized": int(np.isfinite(t).sum()),
                  "ms_per_frame": float(np.median([s["ms_per_frame"] for s in summaries]))}
        for max_t, max_r, key in ((0.02, 2.0, "recall_2cm_2deg"), (0.05, 5.0, "recall_5cm_5deg"),
                                  (0.10, 10.0, "recall_10cm_10deg")):
            pooled[key] = float(np.mean((t <= max_t) & (r <= max_r)))
        med_t, med_r = float(np.median(t)), float(np.median(r))
        pooled["median_translation_m"] = med_t if np.isfinite(med_t) else None
        pooled["median_rotation_deg"] = med_r if np.isfinite(med_r) else None
        rows.append(accuracy_row("all rooms", method, pooled, float(np.mean([s["size_mb"] for s in summaries]))))
    return rows


def _round_fractions(row: dict) -> dict:
    for key in ("recall_2cm_2deg", "recall_5cm_5deg", "recall_10cm_10deg"):
        row[key] = round(row[key], 3)
    return row


def _classical(ctx: BenchContext, preset: str, baseline: str, queries: list[Frame], n_map: int) -> tuple[dict, dict]:
    from kd3d_core.baselines import ClassicalMap

    built = ctx.classical_map(preset, baseline)
    summary = evaluate_localizer(ClassicalMap.load(built.path), queries)
    summary["size_mb"] = built.path.stat().st_size / 1e6
    distil_row = {"room": preset, "method": built.name, "mapping_frames": n_map, "label_s": None,
                  "build_s": round(built.build_s, 2), "total_s": round(built.build_s, 2), "budget": "feature map"}
    return summary, distil_row


def _student(ctx: BenchContext, preset: str, student: str, queries: list[Frame], n_map: int) -> tuple[dict, dict]:
    from kd3d_core.localization import Relocalizer
    from kd3d_core.students import load_scene_model

    room, model = ctx.room(preset), ctx.model(preset, student)
    relocalizer = Relocalizer(load_scene_model(model.model_path, ctx.device()))
    summary = evaluate_localizer(relocalizer, queries)
    summary["size_mb"] = model.model_path.stat().st_size / 1e6
    distil_row = {"room": preset, "method": student, "mapping_frames": n_map, "label_s": round(room.label_s, 1),
                  "build_s": round(model.train_s, 1), "total_s": round(room.label_s + model.train_s, 1),
                  "budget": model.budget}
    return summary, distil_row


def _room_rows(ctx: BenchContext, preset: str, per_method: dict[str, list[dict]], distil_rows: list[dict],
               errors: list[tuple[str, Exception]]) -> list[dict]:
    """Rows of one room; a method that fails is recorded in `errors` and the others still run."""
    scene = ctx.room(preset).scene()
    queries, n_map = scene.split(Split.QUERY), len(scene.split(Split.MAPPING))
    methods = [(f"classical-{b}", _classical, b) for b in ctx.config.baselines]
    methods += [(s, _student, s) for s in ctx.students()]
    rows = []
    for method, fn, arg in methods:
        try:
            summary, distil_row = fn(ctx, preset, arg, queries, n_map)
        except Exception as err:  # noqa: BLE001 - one failing method must not lose the other results
            traceback.print_exc(file=sys.stderr)
            errors.append((f"{preset}/{method}", err))
            continue
        per_method.setdefault(method, []).append(summary)
        rows.append(accuracy_row(preset, method, summary, summary["size_mb"]))
        distil_rows.append(distil_row)
    return rows


def run_accuracy(ctx: BenchContext) -> list[Table]:
    """The accuracy table (per room and pooled) and the distillation-time table."""
    cfg = ctx.config
    per_method: dict[str, list[dict]] = {}
    rows: list[dict] = []
    distil_rows: list[dict] = []
    errors: list[tuple[str, Exception]] = []
    t0 = time.perf_counter()
    for preset in cfg.rooms:
        rows += _room_rows(ctx, preset, per_method, distil_rows, errors)
    rows += pooled_rows(per_method)
    w, h = cfg.image_wh
    notes = [
        f"Rooms: synth presets {', '.join(cfg.rooms)}, seed {cfg.seed}, {cfg.mapping_frames} mapping + "
        f"{cfg.query_frames} query frames each at {w}x{h}; students distilled from depth-teacher labels of the "
        "mapping frames; classical maps built from the same mapping frames (depth + poses).",
        "Recall = fraction of query frames within both thresholds (failures count as misses); medians over all "
        "query frames (a median of '-' means fewer than half were localized). 'all rooms' pools every query frame.",
        f"Budgets: end-to-end students {cfg.train_minutes:g} min / {cfg.train_epochs} epochs per room; fast student: "
        f"its default head (see the distillation table), at most {cfg.fast_buffer:,} buffer rows and "
        f"{cfg.fast_iterations} steps (an MLP head trains; the kNN head only stores features).",
        "ms/frame: median relocalization time (network or features + PnP, image already decoded) at the room's "
        "image size; see the speed section for 640x480 with decoding.",
    ]
    accuracy = Table("accuracy", "Accuracy on the synthetic room suite", ACCURACY_COLUMNS,
                     [_round_fractions(r) for r in rows], notes)
    distillation = Table("distillation", "Distillation (mapping) time per room", DISTIL_COLUMNS, distil_rows, [
        "labels: depth teacher (sensor depth + poses -> world pointmaps) for all mapping frames; DUSt3R weights are "
        "not available on this machine, see the speed section for its per-pair forward time.",
        "train / build: student training wall time (fast: feature buffer + head steps), or classical map build.",
    ])
    for what, err in errors:
        accuracy.fail(what, err)
        distillation.fail(what, err)
    distillation.seconds = accuracy.seconds = time.perf_counter() - t0
    return [accuracy, distillation]
