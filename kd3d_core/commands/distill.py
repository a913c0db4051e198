"""`kd3d distill (SCENE | BAG) --out MODEL.kd3d [...]`: ingest (bags) -> teach -> train in one command."""
from __future__ import annotations

import argparse
from pathlib import Path

from kd3d_core.commands.train import add_training_arguments, config_for_student, report, report_fast


def register(sub: argparse._SubParsersAction) -> None:
    """Add the distill subcommand."""
    p = sub.add_parser("distill", help="ingest (bag) -> teach -> train in one command",
                       description="Turn a mapping bag or scene folder into a .kd3d scene model: ingest the bag "
                                   "(when given one), label the mapping frames with the teacher (DUSt3R with "
                                   "--checkpoint, else sensor depth), and train the student.")
    p.add_argument("input", type=Path, help="scene folder, or rosbag2 folder / ROS 1 .bag file")
    p.add_argument("--out", type=Path, required=True, help="output model file (.kd3d)")
    ing = p.add_argument_group("ingest (bag input)")
    ing.add_argument("--scene-out", type=Path, default=None, help="scene folder to create (default OUT_scene/)")
    ing.add_argument("--image-topic", default=None, help="colour topic (required for a bag)")
    ing.add_argument("--camera-info-topic", default=None, help="CameraInfo topic")
    ing.add_argument("--depth-topic", default=None, help="registered depth topic")
    ing.add_argument("--pose-tf", nargs=2, metavar=("PARENT", "CHILD"), default=None, help="TF chain for poses")
    ing.add_argument("--pose-topic", default=None, help="pose/odometry topic of the camera optical frame")
    ing.add_argument("--stride", type=int, default=1, help="keep every Nth posed frame")
    ing.add_argument("--overwrite", action="store_true", help="replace --scene-out if it exists")
    tea = p.add_argument_group("teach")
    tea.add_argument("--teacher", choices=("dust3r", "depth"), default=None,
                     help="default: dust3r when --checkpoint is given, else depth")
    tea.add_argument("--checkpoint", default=None, help="DUSt3R checkpoint (.pth, HF folder or hub name)")
    tea.add_argument("--label-size", default=None, help="label resolution WxH (default: the training --size)")
    tea.add_argument("--relabel", action="store_true", help="teach again even if complete labels exist")
    add_training_arguments(p)
    p.set_defaults(handler=run)


def _is_scene(path: Path) -> bool:
    return path.is_dir() and ((path / "info.txt").is_file() or any(path.glob("seq-*")))


def build_config(args: argparse.Namespace):
    """DistillConfig from the flags (ingest only for bag input)."""
    from kd3d_core.commands import parse_size
    from kd3d_core.errors import ConfigError
    from kd3d_core.teachers import Dust3rConfig, TeachConfig, TeacherKind
    from kd3d_core.training.distill import DistillConfig

    ingest = None
    scene = args.input
    if not _is_scene(args.input):
        from kd3d_core.ingest import IngestConfig

        if args.image_topic is None:
            raise ConfigError(f"{args.input} is not a scene folder; for a bag give --image-topic")
        scene = args.scene_out or args.out.with_name(args.out.stem + "_scene")
        ingest = IngestConfig(bag=args.input, out=scene, image_topic=args.image_topic,
                              camera_info_topic=args.camera_info_topic, depth_topic=args.depth_topic,
                              pose_tf=tuple(args.pose_tf) if args.pose_tf else None, pose_topic=args.pose_topic,
                              stride=args.stride, overwrite=args.overwrite, progress=True)
    teacher = TeacherKind(args.teacher or ("dust3r" if args.checkpoint else "depth"))
    label_size = parse_size(args.label_size) if args.label_size else args.size
    teach = TeachConfig(teacher=teacher, label_size=label_size, dust3r=Dust3rConfig(checkpoint=args.checkpoint))
    return DistillConfig(scene=Path(scene), out=args.out, train=config_for_student(args, args.out), teach=teach,
                         ingest=ingest, reuse_labels=not args.relabel)


def run(args: argparse.Namespace) -> int:
    """Distil and report."""
    from kd3d_core.training.distill import distill

    from kd3d_core.training.fast import FastTrainResult

    config = build_config(args)
    result = distill(config)
    if isinstance(result, FastTrainResult):
        report_fast(result, config.out)
    else:
        report(result)
    return 0
