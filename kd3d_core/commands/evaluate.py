"""`kd3d evaluate --estimates E --reference R [--split query|mapping|all] [--json OUT]`: compare pose files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import add_overwrite_argument, refuse_existing
from kd3d_core.config_utils import nonnegative_float

FORMATS = ["auto", "tum", "colmap", "posefolder"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the evaluate subcommand."""
    p = sub.add_parser(
        "evaluate", help="compare estimated poses with reference poses: recall, median errors, plots",
        description="Per-frame camera-centre and rotation errors of estimated poses against reference poses; recall "
                    "at 2cm/2deg, 5cm/5deg and 10cm/10deg over all scored reference frames (missing estimates "
                    "count as failures); medians. Formats: TUM trajectories (t tx ty tz qx qy qz qw, matched by "
                    "timestamp), COLMAP-convention image lists (name qw qx qy qz tx ty tz [f], world->camera) and "
                    "7Scenes/12Scenes pose.txt folders or scene folders (matched by frame name). With a scene "
                    "folder as reference only its query split is scored unless --split says otherwise (its "
                    "mapping frames are what a model distilled from it was built from).")
    p.add_argument("--estimates", type=Path, required=True, help="estimated poses (file or folder)")
    p.add_argument("--reference", type=Path, required=True, help="reference poses (file, pose folder or scene)")
    p.add_argument("--split", choices=["query", "mapping", "all"], default=None,
                   help="frames of a scene-folder reference to score (default query)")
    p.add_argument("--model", type=Path, default=None,
                   help="the .kd3d model that made the estimates: warn when scored frames are its mapping frames")
    p.add_argument("--estimates-format", choices=FORMATS, default="auto")
    p.add_argument("--reference-format", choices=FORMATS, default="auto")
    p.add_argument("--match", choices=["auto", "name", "timestamp"], default="auto",
                   help="pair frames by name or timestamp (auto: timestamp for TUM files)")
    p.add_argument("--max-dt", type=nonnegative_float, default=0.02, metavar="SECONDS", help="timestamp tolerance")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON report (per-frame errors) here")
    p.add_argument("--markdown", type=Path, default=None, help="also write a Markdown summary here")
    p.add_argument("--plots", type=Path, default=None, help="folder for error_cdf.png and trajectory.png")
    add_overwrite_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read both pose sets, evaluate, print the headline numbers, write the requested files."""
    from kd3d_core.evaluation import evaluate_trajectories, read_poses, write_report
    from kd3d_core.io_utils import check_output
    from kd3d_core.evaluation.metrics import select_scene_split

    def fmt(name: str) -> str | None:
        return None if name == "auto" else name

    refuse_existing([args.json, args.markdown, args.plots], args.overwrite)
    for out in (args.json, args.markdown):  # writable, not being written by another run: before any work
        if out is not None:
            check_output(out)
    estimates = read_poses(args.estimates, fmt(args.estimates_format))
    reference = read_poses(args.reference, fmt(args.reference_format))
    selection = select_scene_split(reference, args.reference, args.split)
    reference = selection.trajectory
    print(f"scored: {selection.description}", file=sys.stderr)
    _warn_seen(args.model, reference)
    result = evaluate_trajectories(estimates, reference, args.match, args.max_dt)
    report = write_report(result, args.json, args.markdown, args.plots,
                          extra={"estimates": str(args.estimates), "reference": str(args.reference),
                                 "split": selection.split, "scored": selection.description})
    med_t = report["median_translation_m"]
    med_r = report["median_rotation_deg"]
    print(f"{report['localized']} of {report['frames']} reference frames have an estimate (matched by "
          f"{report['matched_by']}); recall 2cm/2deg {report['recall_2cm_2deg']:.1%}, 5cm/5deg "
          f"{report['recall_5cm_5deg']:.1%}, 10cm/10deg {report['recall_10cm_10deg']:.1%}; median "
          f"{'n/a' if med_t is None else f'{med_t * 100:.2f} cm'}, {'n/a' if med_r is None else f'{med_r:.2f} deg'}")
    for path in (args.json, args.markdown, args.plots):
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _warn_seen(model: Path | None, reference) -> None:
    from kd3d_core.evaluation.seen import seen_warning
    from kd3d_core.students.model_file import read_model_meta

    if model is None:
        return
    if reference.stamps_s is None:
        print("kd3d evaluate: warning: the reference has no timestamps; cannot tell whether the scored frames are "
              f"mapping frames of {model}", file=sys.stderr)
        return
    warning = seen_warning(read_model_meta(model), [round(s * 1e9) for s in reference.stamps_s], "scored frames")
    if warning:
        print(f"kd3d evaluate: warning: {warning}", file=sys.stderr)
