"""`kd3d replay MODEL IN_BAG OUT_BAG --image-topic T`: offline relocalization of a bag into a result bag."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import add_quiet_argument, check_model_argument
from kd3d_core.commands.localize import add_relocalizer_arguments, relocalizer_config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the replay subcommand."""
    p = sub.add_parser(
        "replay", help="run the relocalizer on a bag's images; write clouds, poses and TF into a new bag",
        description="Read Image/CompressedImage + CameraInfo from a rosbag2 (sqlite3/mcap) or ROS 1 bag, localize "
                    "every image with the scene model and write a rosbag2 (version 8, for Humble and Foxglove) with "
                    "<ns>/points (PointCloud2, map frame, x y z + rgb), <ns>/pose (PoseStamped), "
                    "<ns>/pose_with_covariance and /tf (map -> odom when odom -> camera is in the input TF, else "
                    "map -> camera), each stamped with its image's stamp. With ground truth in the bag (a TF chain or "
                    "a pose topic; by default the chain map -> image frame when present) an evaluation report is "
                    "written to OUT_BAG.eval/.")
    p.add_argument("model", type=Path, help=".kd3d scene model file")
    p.add_argument("in_bag", type=Path, help="input bag")
    p.add_argument("out_bag", type=Path, help="output rosbag2 folder")
    p.add_argument("--image-topic", required=True, help="colour topic")
    p.add_argument("--camera-info-topic", default=None, help="CameraInfo topic (default: next to the image topic)")
    p.add_argument("--compressed", action="store_true", help="read IMAGE_TOPIC/compressed (CompressedImage)")
    p.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3", help="output storage")
    truth = p.add_mutually_exclusive_group()
    truth.add_argument("--pose-tf", nargs=2, metavar=("PARENT", "CHILD"), default=None,
                       help="ground-truth camera poses from this TF chain")
    truth.add_argument("--pose-topic", default=None, help="ground-truth camera pose topic")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate even when ground truth exists")
    p.add_argument("--max-dt", type=float, default=0.05, metavar="SECONDS", help="TF / pose association tolerance")
    p.add_argument("--ns", default="/relocalizer",
                   help="namespace of the output topics (default /relocalizer: the node's, as in config/kd3d.rviz)")
    p.add_argument("--map-frame", default=None, help="map frame id (default: the model's world frame)")
    p.add_argument("--odom-frame", default="odom", help="odom frame for the map -> odom TF (default odom)")
    p.add_argument("--cloud-voxel", type=float, default=None, metavar="METRES", help="voxel-thin the clouds")
    p.add_argument("--cloud-max-points", type=int, default=20000, help="points per cloud at most")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_BAG if it exists")
    add_quiet_argument(p)
    add_relocalizer_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, replay, print a summary."""
    from kd3d_core.localization import Relocalizer
    from kd3d_core.replay import ReplayConfig, replay_bag
    from kd3d_core.students.scene_model import load_scene_model
    from kd3d_core.threads import apply_threads

    check_model_argument(args.model, [args.in_bag, args.out_bag],
                         "kd3d replay MODEL.kd3d IN_BAG OUT_BAG --image-topic TOPIC")
    apply_threads(args.threads)
    reloc_config = relocalizer_config_from_args(args)
    config = ReplayConfig(
        in_bag=args.in_bag, out_bag=args.out_bag, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, compressed=args.compressed, storage=args.storage,
        pose_tf=tuple(args.pose_tf) if args.pose_tf else None, pose_topic=args.pose_topic, max_dt_s=args.max_dt,
        output_ns=args.ns, map_frame=args.map_frame, odom_frame=args.odom_frame, cloud_voxel_m=args.cloud_voxel,
        cloud_max_points=args.cloud_max_points, evaluate=not args.no_eval, overwrite=args.overwrite,
        progress=not args.quiet)
    model = load_scene_model(args.model, args.device)
    result = replay_bag(Relocalizer(model, reloc_config), config)
    t = result.median_timings_ms
    failures = ", ".join(f"{k} {v}" for k, v in sorted(result.failures.items())) or "none"
    recovered = ", ".join(f"{k} {v}" for k, v in sorted(result.recovered.items()))
    print(f"wrote {result.out_bag}: {result.localized} of {result.frames} frames localized (failures: {failures}; "
          f"recovered by a second chance: {recovered}; turned upright: {result.turned_upright}); "
          f"median predict {t['predict']:.1f} ms, pnp {t['pnp']:.1f} ms, refine {t['refine']:.1f} ms; "
          f"TF child {result.tf_child_frame}", file=sys.stderr)
    for warning in result.warnings:
        print(f"kd3d replay: warning: {warning}", file=sys.stderr)
    if result.report is not None:
        r = result.report
        print(f"ground truth from {result.ground_truth}: recall 2cm/2deg {r['recall_2cm_2deg']:.1%}, 5cm/5deg "
              f"{r['recall_5cm_5deg']:.1%}, 10cm/10deg {r['recall_10cm_10deg']:.1%}; report in {result.report_dir}")
    return 0
