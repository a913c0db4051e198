"""`kd3d ingest BAG OUT --image-topic T ...`: turn a rosbag (rosbag2 sqlite3/mcap or ROS 1) into a scene folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import add_quiet_argument


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ingest subcommand."""
    p = sub.add_parser(
        "ingest", help="rosbag -> scene folder (images, K, optional depth and poses)",
        description="Read colour images (Image or CompressedImage), CameraInfo, optional registered depth and "
                    "poses (a TF chain or a pose topic) from a rosbag2 (sqlite3 or mcap) or ROS 1 bag and write a "
                    "12Scenes-layout scene folder. Images with distortion are undistorted to a pinhole image with "
                    "the same K. Frames without a pose within --max-dt are dropped with a warning; the command "
                    "fails when none has one. Nothing is left behind on failure.")
    p.add_argument("bag", type=Path, help="rosbag2 folder (or its .db3/.mcap file) or ROS 1 .bag file")
    p.add_argument("out", type=Path, help="scene folder to create")
    p.add_argument("--image-topic", required=True, help="colour topic (sensor_msgs/Image or CompressedImage)")
    p.add_argument("--camera-info-topic", default=None,
                   help="CameraInfo topic (default: camera_info next to the image topic)")
    p.add_argument("--depth-topic", default=None, help="depth topic registered to colour (16UC1 mm or 32FC1 m)")
    p.add_argument("--K", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"), default=None,
                   help="intrinsics of the (distortion-free) images, instead of CameraInfo")
    poses = p.add_mutually_exclusive_group()
    p.epilog = ("Poses: --pose-tf or --pose-topic; with neither, the TF chain map -> the image's frame_id is used "
                "when the bag's TF connects them (the same rule as kd3d replay; `kd3d info BAG` lists the chains).")
    poses.add_argument("--pose-tf", nargs=2, metavar=("PARENT", "CHILD"), default=None,
                       help="camera pose from the TF chain PARENT -> CHILD (/tf + /tf_static), e.g. "
                            "map camera_color_optical_frame")
    poses.add_argument("--pose-topic", default=None,
                       help="camera (optical frame) pose topic: PoseStamped, PoseWithCovarianceStamped, Odometry "
                            "or TransformStamped")
    p.add_argument("--max-dt", type=float, default=0.05, metavar="SECONDS",
                   help="pose/depth association tolerance in seconds (default 0.05)")
    keyframes = p.add_mutually_exclusive_group()
    keyframes.add_argument("--stride", type=int, default=1, metavar="N", help="keep every Nth posed frame")
    keyframes.add_argument("--min-motion", nargs=2, type=float, metavar=("M", "DEG"), default=None,
                           help="keep a frame once the camera moved M metres or DEG degrees since the last kept one")
    p.add_argument("--split", choices=["mapping", "query"], default="mapping",
                   help="scene split the frames belong to (default mapping)")
    p.add_argument("--jpg", action="store_true", help="store colour as JPEG (default: lossless PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_quiet_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the IngestConfig, ingest, print a summary and the warnings on stderr."""
    from kd3d_core.ingest import IngestConfig, ingest_bag
    from kd3d_core.scene import Split

    config = IngestConfig(
        bag=args.bag, out=args.out, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        depth_topic=args.depth_topic, intrinsics=tuple(args.K) if args.K else None,
        pose_tf=tuple(args.pose_tf) if args.pose_tf else None, pose_topic=args.pose_topic, max_dt_s=args.max_dt,
        stride=args.stride, min_motion=tuple(args.min_motion) if args.min_motion else None,
        split=Split(args.split), color_ext="jpg" if args.jpg else "png", overwrite=args.overwrite,
        progress=not args.quiet)
    result = ingest_bag(config)
    for warning in result.warnings:
        print(f"kd3d ingest: warning: {warning}", file=sys.stderr)
    K = result.K
    undist = f", undistorted ({result.undistorted})" if result.undistorted else ""
    print(f"wrote {result.path}: {result.frames} frames of {result.images_in_bag} images "
          f"({result.dropped_without_pose} without pose, {result.dropped_by_keyframing} skipped by keyframing), "
          f"{result.size[0]}x{result.size[1]}, fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} cx={K[0, 2]:.2f} cy={K[1, 2]:.2f}"
          f"{undist}, depth on {result.depth_frames} frames, world frame {result.world_frame}", file=sys.stderr)
    print(f"poses: {result.pose_source}", file=sys.stderr)
    return 0
