"""Teacher-quality family: what a user gets when DUSt3R, not a depth camera, makes the map.

Per room: the depth teacher (exact labels) against the simulated DUSt3R (kd3d_core.teachers.simulated) at
x0.5 / x1 / x2 of the published error figures, each through the production pair cache, global alignment,
Sim(3) onto the scene's poses (TF/odometry) and label filters, then the default (fast) student and the query
walk. Measured: alignment residuals and refused frames, pair RRA/RTA@15 and mAA@30, label error against the
exact geometry (depth-teacher labels), relocalization recall and medians, mapping time. Three more tables: the
depth correction from triangulated anchors off and on (every room and error level), the label filters switched
on one by one (first room, x1), and the pure monocular case (no poses, no depth).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kd3d_core.bench.context import BenchContext
from kd3d_core.bench.report import Table
from kd3d_core.labels import LabelStore
from kd3d_core.scene import Split

QUALITY_COLUMNS = [
    ("room", "room"), ("teacher", "teacher"), ("labelled", "frames labelled"), ("refused", "refused"),
    ("residual_cm", "align residual (cm)"), ("rra15", "RRA@15"), ("rta15", "RTA@15"), ("maa30", "mAA@30"),
    ("label_mean_cm", "label L2 mean (cm)"), ("label_median_cm", "label L2 median (cm)"), ("coverage", "label px"),
    ("recall_2cm_2deg", "2cm/2°"), ("recall_5cm_5deg", "5cm/5°"), ("recall_10cm_10deg", "10cm/10°"),
    ("median_translation_cm", "median t (cm)"), ("median_rotation_deg", "median R (°)"), ("map_s", "mapping (s)"),
]
FILTER_COLUMNS = [("room", "room"), ("filters", "label filters"), ("coverage", "label px"),
                  ("label_mean_cm", "label L2 mean (cm)"), ("label_median_cm", "label L2 median (cm)"),
                  ("recall_5cm_5deg", "5cm/5°"), ("median_translation_cm", "median t (cm)"),
                  ("median_rotation_deg", "median R (°)")]
CORRECTION_COLUMNS = [("room", "room"), ("teacher", "teacher"), ("correction", "depth correction"),
                      ("anchors", "anchors / frame"), ("anchors_s", "anchors (s)"),
                      ("label_mean_cm", "label L2 mean (cm)"), ("label_median_cm", "label L2 median (cm)"),
                      ("recall_2cm_2deg", "2cm/2°"), ("recall_5cm_5deg", "5cm/5°"),
                      ("median_translation_cm", "median t (cm)"), ("median_rotation_deg", "median R (°)"),
                      ("map_s", "mapping (s)")]
MONO_COLUMNS = [("room", "room"), ("teacher", "teacher"), ("scale_source", "scale"), ("labelled", "frames labelled"),
                ("rot_median_deg", "camera R error median (°)"), ("rot_p90_deg", "R p90 (°)"),
                ("t_median_cm", "camera t after Sim(3) (cm)"), ("label_median_cm", "label L2 after Sim(3) (cm)"),
                ("scale_vs_metric", "scale found / metric")]


def _true_points(frame, label_K: np.ndarray, label_hw: tuple[int, int], color_wh: tuple[int, int]):
    """Exact world points on a label grid (from the frame's depth and pose) and where they are defined."""
    from kd3d_core.teachers.simulated import discontinuities

    depth = frame.load_depth_for_color(color_wh)
    h, w = label_hw
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([(u - label_K[0, 2]) / label_K[0, 0], (v - label_K[1, 2]) / label_K[1, 1], np.ones_like(u)], -1)
    uc = np.round(frame.K[0, 0] * rays[..., 0] + frame.K[0, 2]).astype(int)
    vc = np.round(frame.K[1, 1] * rays[..., 1] + frame.K[1, 2]).astype(int)
    inside = (uc >= 0) & (uc < color_wh[0]) & (vc >= 0) & (vc < color_wh[1])
    uc, vc = np.clip(uc, 0, color_wh[0] - 1), np.clip(vc, 0, color_wh[1] - 1)
    d = depth[vc, uc]
    smooth = ~discontinuities(depth, 0.05)[vc, uc]
    T = frame.world_T_cam
    world = (rays * d[..., None]) @ T[:3, :3].T + T[:3, 3]
    return world, inside & (d > 0) & smooth


def label_error(store: LabelStore, scene, transform=None) -> dict:
    """L2 error (cm) of labels against the exact geometry (scene depth + poses) of the same pixels, and the
    labelled pixel share. `transform` maps label points first (the monocular case's Sim(3))."""
    errs, cover = [], []
    color_wh = scene.info.color_size
    for name in store.names():
        frame = scene.frame(name)
        if frame.depth_path is None or frame.world_T_cam is None:
            continue
        label = store.read(name)
        truth, defined = _true_points(frame, label.K, label.conf_HW.shape, color_wh)
        ok = (label.conf_HW > 0) & defined
        pts = label.points_HW3[ok].astype(np.float64)
        if transform is not None:
            pts = transform(pts)
        errs.append(np.linalg.norm(pts - truth[ok], axis=1))
        cover.append(float((label.conf_HW > 0).mean()))
    e = np.concatenate(errs) if errs else np.zeros(0)
    return {"label_mean_cm": round(100 * float(e.mean()), 2) if e.size else None,
            "label_median_cm": round(100 * float(np.median(e)), 2) if e.size else None,
            "coverage": round(float(np.mean(cover)), 3) if cover else None}


def _teach(ctx: BenchContext, preset: str, scale: float | None, tag: str = "", filters="default",
           use_reference: bool = True, correction: bool = True):
    """Label a room with the simulated DUSt3R (pairs cached per error level); returns (result, labels dir)."""
    from kd3d_core.alignment.solve import AlignConfig
    from kd3d_core.teachers import Dust3rConfig, TeachConfig, TeacherKind, teach_scene
    from kd3d_core.teachers.config import SimulatedDust3rConfig

    room = ctx.room(preset)
    cfg = ctx.config
    labels = room.path / "labels" / f"simulated-x{scale:g}{tag}"
    align = AlignConfig() if filters == "default" else AlignConfig(filters=filters)
    if not correction:
        align = replace(align, depth_correction=None)
    teach = TeachConfig(teacher=TeacherKind.SIMULATED_DUST3R, labels_dir=labels, progress=False,
                        dust3r=Dust3rConfig(size=cfg.teacher_net_size, align=align),
                        simulated=SimulatedDust3rConfig(error_scale=scale, seed=cfg.seed, use_reference=use_reference,
                                                        cache_dir=room.path / "labels" / f"pairs-x{scale:g}"))
    return teach_scene(room.path, teach), labels


def _relocalize(ctx: BenchContext, preset: str, labels: Path, name: str) -> tuple[dict, float]:
    """Fast student on these labels, scored on the room's query walk; (summary, train seconds)."""
    from kd3d_core.bench.accuracy import evaluate_localizer
    from kd3d_core.localization import Relocalizer
    from kd3d_core.students import load_scene_model
    from kd3d_core.training.fast import FastTrainConfig, train_fast

    cfg, room = ctx.config, ctx.room(preset)
    out = cfg.workdir / "models" / room.path.name / f"fast-{name}.kd3d"
    t0 = time.perf_counter()
    train_fast(room.path, labels, out, FastTrainConfig(input_height=cfg.image_wh[1], seed=cfg.seed,
                                                       device=cfg.device, threads=None), progress=False)
    train_s = time.perf_counter() - t0
    summary = evaluate_localizer(Relocalizer(load_scene_model(out, ctx.device())), room.scene().split(Split.QUERY))
    return summary, train_s


def _reloc_cells(summary: dict) -> dict:
    t, r = summary.get("median_translation_m"), summary.get("median_rotation_deg")
    return {"recall_2cm_2deg": round(summary["recall_2cm_2deg"], 3), "recall_5cm_5deg": round(summary["recall_5cm_5deg"], 3),
            "recall_10cm_10deg": round(summary["recall_10cm_10deg"], 3),
            "median_translation_cm": None if t is None else round(100 * t, 2),
            "median_rotation_deg": None if r is None else round(r, 2)}


def _quality_row(ctx: BenchContext, preset: str, scale: float | None, correction: bool = True) -> dict:
    room = ctx.room(preset)
    if scale is None:
        meta = LabelStore(room.labels_dir).read_meta()
        summary, train_s = _relocalize(ctx, preset, room.labels_dir, "depth")
        n = len(LabelStore(room.labels_dir).names())
        return {"room": preset, "teacher": "depth", "labelled": f"{n}/{n + len(meta.failed_frames)}",
                "refused": len(meta.failed_frames), **label_error(LabelStore(room.labels_dir), room.scene()),
                **_reloc_cells(summary),
                "map_s": round(room.label_s + train_s, 1)}
    tag = "" if correction else "-nocorrection"
    result, labels = _teach(ctx, preset, scale, tag=tag, correction=correction)
    extra = result.meta.extra
    diag = extra.get("pair_diagnostics", {})
    anchors = extra.get("depth_correction") or {}
    summary, train_s = _relocalize(ctx, preset, labels, f"sim-x{scale:g}{tag}")
    residuals = list(result.meta.residuals.values())
    align_s = result.seconds - extra.get("inference_s", 0.0)
    return {"room": preset, "teacher": f"simulated DUSt3R x{scale:g}", "labelled": f"{result.labelled}/{result.frames}",
            "refused": len(result.failed),
            "residual_cm": round(100 * float(np.median(residuals)), 2) if residuals else None,
            "rra15": _r(diag.get("RRA@15")), "rta15": _r(diag.get("RTA@15")), "maa30": _r(diag.get("mAA@30")),
            **label_error(LabelStore(labels), room.scene()), **_reloc_cells(summary),
            "map_s": round(align_s + train_s, 1), "correction": "on" if anchors else "off",
            "anchors": anchors.get("anchors_median"), "anchors_s": anchors.get("anchors_s")}


def _correction_rows(ctx: BenchContext, preset: str, with_correction: list[dict]) -> list[dict]:
    """The simulated-DUSt3R rows again without the depth correction (same cached pairs), each before its
    corrected row from the quality table."""
    keys = [k for k, _ in CORRECTION_COLUMNS]
    rows = []
    for row in with_correction:
        scale = float(row["teacher"].rsplit("x", 1)[1])
        rows.append({k: v for k, v in _quality_row(ctx, preset, scale, correction=False).items() if k in keys})
        rows.append({k: v for k, v in row.items() if k in keys})
    return rows


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)


def _filter_rows(ctx: BenchContext, preset: str) -> list[dict]:
    """x1 labels with the filters switched on one at a time (same cached pairs), each with its student."""
    from kd3d_core.alignment.filters import LabelFilterConfig

    variants = [("none", None), ("depth edges", LabelFilterConfig(consistency_rel=0.0, min_frame_fraction=0.0)),
                ("+ multi-view consistency", LabelFilterConfig(fuse=False)),
                ("+ fusion (default)", LabelFilterConfig()),
                ("+ confidence >= 0.8", LabelFilterConfig(min_conf=0.8))]
    rows = []
    scene = ctx.room(preset).scene()
    for i, (name, filters) in enumerate(variants):
        _, labels = _teach(ctx, preset, 1.0, tag=f"-filters{i}", filters=filters)
        summary, _ = _relocalize(ctx, preset, labels, f"sim-x1-filters{i}")
        cells = _reloc_cells(summary)
        rows.append({"room": preset, "filters": name, **label_error(LabelStore(labels), scene),
                     **{k: cells[k] for k in ("recall_5cm_5deg", "median_translation_cm", "median_rotation_deg")}})
    return rows


def _mono_row(ctx: BenchContext, preset: str) -> dict:
    """Pure monocular (no poses, no depth): errors after the one Sim(3) a user without odometry cannot know."""
    from kd3d_core.geometry import pose_error, umeyama

    result, labels = _teach(ctx, preset, 1.0, tag="-monocular", use_reference=False)
    store = LabelStore(labels)
    scene = ctx.room(preset).scene()
    names = store.names()
    est = np.array([store.read(n).world_T_cam for n in names])
    ref = np.array([scene.frame(n).world_T_cam for n in names])
    G = umeyama(est[:, :3, 3], ref[:, :3, 3])
    errs = [pose_error(G.apply_pose(a), b) for a, b in zip(est, ref)]
    rot = np.array([e.rotation_deg for e in errs])
    err = label_error(store, scene, transform=G.apply)
    return {"room": preset, "teacher": "simulated DUSt3R x1, no poses", "scale_source": result.meta.scale_source.value,
            "labelled": f"{result.labelled}/{result.frames}", "rot_median_deg": round(float(np.median(rot)), 2),
            "rot_p90_deg": round(float(np.quantile(rot, 0.9)), 2),
            "t_median_cm": round(100 * float(np.median([e.translation_m for e in errs])), 2),
            "label_median_cm": err["label_median_cm"], "scale_vs_metric": round(float(G.scale), 3)}


def run_teacher_quality(ctx: BenchContext) -> list[Table]:
    """The teacher-quality table, the label-filter ablation and the pure monocular table."""
    cfg = ctx.config
    t0 = time.perf_counter()
    quality = Table("teacher_quality", "RGB-only mapping: depth teacher vs simulated DUSt3R", QUALITY_COLUMNS)
    filters = Table("teacher_filters", "Label filters against DUSt3R-level (x1) label noise", FILTER_COLUMNS)
    mono = Table("teacher_monocular", "Pure monocular: no depth, no poses (scale unknown)", MONO_COLUMNS)
    correction = Table("teacher_correction", "Depth correction from triangulated anchors (known poses): off vs on",
                       CORRECTION_COLUMNS)
    for preset in cfg.teacher_rooms:
        for scale in (None, *cfg.teacher_scales):
            try:
                quality.rows.append(_quality_row(ctx, preset, scale))
            except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
                quality.fail(f"{preset}/x{scale}", err)
        try:
            done = [r for r in quality.rows if r["room"] == preset and r["teacher"] != "depth"]
            correction.rows.extend(_correction_rows(ctx, preset, done))
        except Exception as err:  # noqa: BLE001
            correction.fail(preset, err)
        for table, fn, first_only in ((filters, _filter_rows, True), (mono, _mono_row, False)):
            if (first_only and preset != cfg.teacher_rooms[0]) or (table is filters and not cfg.teacher_filters):
                continue
            try:
                out = fn(ctx, preset)
                table.rows.extend(out if isinstance(out, list) else [out])
            except Exception as err:  # noqa: BLE001
                table.fail(preset, err)
    _notes(cfg, quality, filters, mono)
    _correction_notes(correction)
    for table in (quality, correction, filters, mono):
        table.seconds = time.perf_counter() - t0
    return [quality, correction] + ([filters] if cfg.teacher_filters else []) + [mono]


def _correction_notes(table: Table) -> None:
    table.notes = [
        "Depth correction (kd3d_core/alignment/anchors.py, depth_correction.py; on by default when frames have "
        "reference poses and calibrated K): SIFT keypoints on the mapping images themselves, matched between each "
        "frame and the next 12, checked against the epipolar geometry of the known poses, chained into tracks and "
        "triangulated at the known poses (>= 3 views, reprojection <= 1 px, angle >= 2 deg); per frame, a smooth "
        "log-depth correction field (8x10 bilinear nodes, robust fit, prior towards no correction) from the anchors "
        "multiplies the aligned depth before the label filters and fusion. No rendered geometry is used.",
        "Rows 'off' realign the same cached pairs with the correction disabled; 'on' rows are the quality table's. "
        "anchors / frame: median triangulated anchors used per corrected frame; anchors (s): detection, matching "
        "and triangulation time, included in mapping (s).",
    ]


def _notes(cfg, quality: Table, filters: Table, mono: Table) -> None:
    w, h = cfg.image_wh
    quality.notes = [
        f"Rooms {', '.join(cfg.teacher_rooms)} (seed {cfg.seed}, {cfg.mapping_frames} mapping + {cfg.query_frames} "
        f"query frames at {w}x{h}); student: fast (default), trained on each teacher's labels of the mapping frames.",
        "Simulated DUSt3R: the network's pair outputs at its input size "
        f"({cfg.teacher_net_size}) from exact geometry with errors sized from the DUSt3R paper (x1: pairwise CO3Dv2 "
        "RRA@15 94.3 / RTA@15 88.4 / mAA@30 77.2, NYUD-v2 AbsRel 0.065, delta<1.25 0.940; "
        "kd3d_core/teachers/simulated.py); pairs = window 3; everything after the network is production code.",
        "RRA/RTA/mAA: the pairwise relative poses the alignment measured (edge fits), against the true poses; "
        "RTA is far below the simulated 88 % because the mapping pairs' baselines are a few cm, whose direction "
        "the depth errors dominate (the pair errors alone reproduce the published figures: test suite). "
        "Label L2: labels vs the exact geometry of the same pixels (rendered depth + true pose, depth jumps "
        "excluded), as the paper's L2 against ground truth; label px: labelled share of the label grid.",
        "mapping (s): alignment + label writing + student (depth: labels + student); DUSt3R's own inference is not "
        "included: multiply the pairs (3 per frame) by its per-pair forward time (speed section).",
        "Metric scale and poses come from the scene's poses (TF/odometry) in every row; the depth correction from "
        "triangulated anchors is on (next table: off vs on).",
    ]
    filters.notes = ["Same cached x1 pairs, alignment rerun with each filter set (kd3d_core/alignment/filters.py); "
                     "rows are cumulative except 'none' and 'depth edges'; the depth correction is on in every row."]
    mono.notes = ["No TF/odometry and no depth: labels live in the first frame's camera frame at an arbitrary scale. "
                  "Errors are measured after the one Sim(3) (Umeyama on camera centres) that maps them onto the "
                  "truth, which a user without odometry does not have; rotations need only a global rotation.",
                  "Relocalization is not scored: a pose in an unknown scale cannot be compared in metres."]
