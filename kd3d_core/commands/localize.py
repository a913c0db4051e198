"""`kd3d localize MODEL SCENE --out POSES`: localize a scene split with a scene model and write the poses."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import (add_overwrite_argument, add_quiet_argument, add_threads_argument,
                                check_model_argument, refuse_existing)


def add_relocalizer_arguments(p: argparse.ArgumentParser) -> None:
    """Relocalizer options shared by localize, replay and bench."""
    from kd3d_core.localization.config import PnpSolver, RansacMethod, RefineMethod, RelocalizerConfig

    d = RelocalizerConfig()
    g = p.add_argument_group("relocalizer")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    g.add_argument("--min-confidence", type=float, default=d.min_confidence, help="drop cells at or below this")
    g.add_argument("--max-correspondences", type=int, default=d.max_correspondences,
                   help=f"most confident cells kept for PnP (default {d.max_correspondences}; 0 = all)")
    g.add_argument("--ransac", choices=[m.value for m in RansacMethod], default=d.ransac.value)
    g.add_argument("--solver", choices=[m.value for m in PnpSolver], default=d.solver.value,
                   help="minimal solver of classic RANSAC")
    g.add_argument("--threshold", type=float, default=d.reprojection_threshold_px,
                   help=f"inlier threshold in pixels (default {d.reprojection_threshold_px})")
    g.add_argument("--iterations", type=int, default=d.ransac_iterations, help="RANSAC iterations")
    g.add_argument("--refine", choices=[m.value for m in RefineMethod], default=d.refine.value)
    g.add_argument("--min-inliers", type=int, default=d.min_inliers, help="fewer inliers = not localized")
    g.add_argument("--roll-retry", type=float, default=abs(d.roll_retry_deg[0]) if d.roll_retry_deg else 0.0,
                   metavar="DEG", help="retry a lost frame on the image turned back by +DEG and -DEG about the "
                                       "optical axis (rolled cameras; default %(default)s, 0 = off)")
    g.add_argument("--zoom-retry", type=float, default=d.zoom_retry[0] if d.zoom_retry else 0.0, metavar="Z",
                   help="a frame still lost after the roll retries is retried on the image zoomed out by Z about the "
                        "principal point (default %(default)s, 0 = off)")
    g.add_argument("--roll-upright", type=float, default=d.roll_upright_deg, metavar="DEG",
                   help="a frame localized with the camera rolled by DEG or more from the mapping cameras' up is "
                        "localized once more on the image turned upright; the pose with more inliers is kept "
                        "(default %(default)s, 0 = off)")
    g.add_argument("--guided", type=int, default=d.guided_candidates, metavar="K",
                   help="a frame whose pose fails the inlier checks gets a guided second chance among each cell's K "
                        "most similar memory cells (fast student; default %(default)s, 0 = off)")
    add_threads_argument(g)


def relocalizer_config_from_args(args: argparse.Namespace):  # -> RelocalizerConfig (lazy import)
    """The RelocalizerConfig of the shared relocalizer flags."""
    from kd3d_core.localization.config import RelocalizerConfig

    return RelocalizerConfig(
        min_confidence=args.min_confidence, max_correspondences=args.max_correspondences, ransac=args.ransac,
        solver=args.solver, reprojection_threshold_px=args.threshold, ransac_iterations=args.iterations,
        refine=args.refine, min_inliers=args.min_inliers, roll_retry_deg=args.roll_retry,
        zoom_retry=args.zoom_retry, roll_upright_deg=args.roll_upright, guided_candidates=args.guided)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the localize subcommand."""
    p = sub.add_parser(
        "localize", help="localize the frames of a scene split with a scene model; write poses",
        description="Run the relocalizer (scene model -> 2D-3D matches -> PnP-RANSAC) on every frame of a scene "
                    "split and write the estimated camera poses (world_T_cam). Frames that fail are left out of "
                    "the file (they count as failures in `kd3d evaluate`). Prints recall when the scene has poses.")
    p.add_argument("model", type=Path, help=".kd3d scene model file")
    p.add_argument("scene", type=Path, help="scene folder (12Scenes or 7Scenes layout)")
    p.add_argument("--split", choices=["query", "mapping", "all"], default="query", help="frames (default query)")
    p.add_argument("--out", type=Path, required=True, help="pose file (or folder for --format posefolder)")
    p.add_argument("--format", choices=["tum", "colmap", "posefolder"], default="colmap",
                   help="tum (needs timestamps), colmap (name qw qx qy qz tx ty tz, world->camera; default) or "
                        "posefolder (NAME.pose.txt files)")
    p.add_argument("--json", type=Path, default=None, help="also write the evaluation report (needs poses)")
    add_quiet_argument(p)
    add_overwrite_argument(p)
    add_relocalizer_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, localize, write poses, print accuracy and speed."""
    from kd3d_core.errors import Kd3dError
    from kd3d_core.evaluation import evaluate_trajectories, write_poses, write_report
    from kd3d_core.localization import Relocalizer
    from kd3d_core.localization.scene_run import localize_frames, reference_trajectory
    from kd3d_core.scene import open_scene
    from kd3d_core.students.scene_model import load_scene_model
    from kd3d_core.threads import apply_threads

    check_model_argument(args.model, [args.scene], "kd3d localize MODEL.kd3d SCENE --out POSES")
    refuse_existing([args.out, args.json], args.overwrite)
    threads = apply_threads(args.threads)
    config = relocalizer_config_from_args(args)
    scene = open_scene(args.scene)
    frames = scene.split(args.split)
    if not frames:
        raise Kd3dError(f"scene {args.scene} has no frames in split {args.split}")
    model = load_scene_model(args.model, args.device)
    _warn_seen(model.meta, frames, args.split)
    run_ = localize_frames(Relocalizer(model, config), frames, progress=not args.quiet)
    write_poses(args.out, run_.trajectory(), args.format)
    t = run_.median_timings_ms()
    failures = ", ".join(f"{k} {v}" for k, v in sorted(run_.failures().items())) or "none"
    print(f"wrote {args.out}: {len(run_.trajectory())} of {len(frames)} frames localized (failures: {failures}); "
          f"median {t['total']:.1f} ms/frame (predict {t['predict']:.1f}, select {t['select']:.1f}, "
          f"pnp {t['pnp']:.1f}, refine {t['refine']:.1f}) on {model.device}, {threads} CPU thread"
          f"{'s' if threads != 1 else ''}", file=sys.stderr)
    reference = reference_trajectory(frames)
    if reference is None:
        return 0
    result = evaluate_trajectories(run_.trajectory(), reference)
    s = result.summary()
    med_t = "n/a" if s["median_translation_m"] is None else f"{s['median_translation_m'] * 100:.2f} cm"
    med_r = "n/a" if s["median_rotation_deg"] is None else f"{s['median_rotation_deg']:.2f} deg"
    print(f"recall 2cm/2deg {s['recall_2cm_2deg']:.1%}, 5cm/5deg {s['recall_5cm_5deg']:.1%}, "
          f"10cm/10deg {s['recall_10cm_10deg']:.1%}; median error {med_t}, {med_r}")
    if args.json is not None:
        write_report(result, args.json, extra={f"timing_{k}_ms": v for k, v in t.items()})
    return 0


def _warn_seen(meta, frames, split: str) -> None:
    """Warn when frames to score are the model's mapping frames (by stamp, else by the scene's split)."""
    from kd3d_core.evaluation.seen import seen_warning

    warning = seen_warning(meta, [f.stamp_ns for f in frames], f"{split} frames")
    if warning is None and split != "query" and not meta.teacher.get("mapping"):
        warning = (f"--split {split} scores mapping frames; a model distilled from this scene was built from them, "
                   "so their accuracy is not relocalization accuracy")
    if warning:
        print(f"kd3d localize: warning: {warning}", file=sys.stderr)
