"""`kd3d distill (SCENE | BAG) --out MODEL.kd3d [...]`: ingest (bags) -> teach -> train in one command."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from kd3d_core.commands import add_overwrite_argument, refuse_existing
from kd3d_core.commands.simulated import (add_depth_correction_argument, add_simulated_arguments, align_config,
                                          simulated_config)
from kd3d_core.commands.train import add_training_arguments, config_for_student, report, report_fast
from kd3d_core.errors import ConfigError

TEACHER_RULE = "default: dust3r when --checkpoint is given, else depth"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the distill subcommand."""
    p = sub.add_parser("distill", help="ingest (bag) -> teach -> train in one command",
                       description="Turn a mapping bag or scene folder into a .kd3d scene model: ingest the bag "
                                   "(when given one), label the mapping frames with the teacher (DUSt3R with "
                                   "--checkpoint, else sensor depth + poses), and train the student. What the "
                                   "teacher needs is checked before any work; a scene ingested by a failed run "
                                   "is removed.")
    p.add_argument("input", type=Path, help="scene folder, or rosbag2 folder / ROS 1 .bag file")
    p.add_argument("--out", type=Path, required=True, help="output model file (.kd3d)")
    add_overwrite_argument(p)
    ing = p.add_argument_group("ingest (bag input)")
    ing.add_argument("--scene-out", type=Path, default=None, help="scene folder to create (default OUT_scene/)")
    ing.add_argument("--image-topic", default=None, help="colour topic (required for a bag)")
    ing.add_argument("--camera-info-topic", default=None, help="CameraInfo topic")
    ing.add_argument("--depth-topic", default=None, help="registered depth topic (the depth teacher needs it)")
    ing.add_argument("--pose-tf", nargs=2, metavar=("PARENT", "CHILD"), default=None,
                     help="TF chain for poses (default: map -> the image frame when the bag's TF connects them)")
    ing.add_argument("--pose-topic", default=None, help="pose/odometry topic of the camera optical frame")
    ing.add_argument("--stride", type=int, default=1, help="keep every Nth posed frame")
    tea = p.add_argument_group("teach")
    tea.add_argument("--teacher", choices=("dust3r", "depth", "simulated-dust3r"), default=None,
                     help=TEACHER_RULE + "; simulated-dust3r is a benchmark/test teacher (see --sim-*)")
    tea.add_argument("--checkpoint", default=None, help="DUSt3R checkpoint (.pth, HF folder or hub name)")
    tea.add_argument("--label-size", default=None, help="label resolution WxH (default: the training --size)")
    tea.add_argument("--relabel", action="store_true", help="teach again even if complete labels exist")
    add_simulated_arguments(p)
    add_depth_correction_argument(p)
    add_training_arguments(p)
    p.set_defaults(handler=run)


def _is_scene(path: Path) -> bool:
    return path.is_dir() and ((path / "info.txt").is_file() or any(path.glob("seq-*")))


def teacher_of(args: argparse.Namespace) -> str:
    """The teacher `kd3d distill` and `kd3d teach` use (same rule: TEACHER_RULE)."""
    return args.teacher or ("dust3r" if args.checkpoint else "depth")


def build_config(args: argparse.Namespace):
    """DistillConfig from the flags (ingest only for bag input)."""
    from kd3d_core.commands import parse_size
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
                              stride=args.stride, overwrite=args.overwrite, progress=not args.quiet)
    teacher = TeacherKind(teacher_of(args))
    label_size = parse_size(args.label_size) if args.label_size else args.size
    teach = TeachConfig(teacher=teacher, label_size=label_size,
                        dust3r=Dust3rConfig(checkpoint=args.checkpoint, align=align_config(args)),
                        simulated=simulated_config(args), progress=not args.quiet)
    return DistillConfig(scene=Path(scene), out=args.out, train=config_for_student(args, args.out), teach=teach,
                         ingest=ingest, reuse_labels=not args.relabel)


def check_teacher_inputs(args: argparse.Namespace) -> None:
    """Before any work: ConfigError naming the flag that supplies what the chosen teacher needs."""
    teacher = teacher_of(args)
    if teacher == "simulated-dust3r":
        return  # its truth scene is checked when it runs (before any pair is simulated)
    if teacher == "dust3r":
        if not args.checkpoint:
            raise ConfigError("the dust3r teacher needs --checkpoint (a DUSt3R .pth file, Hugging Face folder or hub "
                              "name); without one use --teacher depth (needs depth and poses)")
        return
    if _is_scene(args.input):
        _check_scene_depth(args.input)
    else:
        _check_bag_depth(args)


def _check_scene_depth(path: Path) -> None:
    from kd3d_core.scene import Split, open_scene

    frames = open_scene(path).split(Split.MAPPING)
    if not any(f.depth_path is not None and f.has_pose for f in frames):
        raise ConfigError(f"the depth teacher needs depth and poses, and no mapping frame of {path} has both; use "
                          "--teacher dust3r --checkpoint PATH, or ingest the bag with --depth-topic and --pose-tf")


def _check_bag_depth(args: argparse.Namespace) -> None:
    from kd3d_core.bags import IMAGE_TYPES, POSE_TYPES, load_tf, open_bag
    from kd3d_core.ingest import discover_pose_tf

    alternative = "or choose --teacher dust3r --checkpoint PATH (no depth needed)"
    with open_bag(args.input) as bag:
        if args.depth_topic is None:
            colour = (args.image_topic, f"{args.image_topic}/compressed")
            images = [t for t in bag.topics_of_type(IMAGE_TYPES) if t not in colour]
            raise ConfigError("the depth teacher (the default without --checkpoint) needs registered depth: pass "
                              f"--depth-topic TOPIC (image topics in the bag: {', '.join(images) or 'none'}), "
                              + alternative)
        if args.pose_tf is None and args.pose_topic is None:
            tf = load_tf(bag)
            first = next(bag.messages([args.image_topic]), None) if args.image_topic in bag.topics else None
            frame = str(first.msg.header.frame_id) if first is not None else ""
            if discover_pose_tf(tf, frame) is None:
                raise ConfigError(
                    "the depth teacher needs camera poses and the bag has no TF chain map -> "
                    f"{frame or 'the image frame'}: pass --pose-tf PARENT CHILD (TF frames: "
                    f"{', '.join(sorted(tf.frames)) or 'none'}) or --pose-topic TOPIC (pose topics: "
                    f"{', '.join(bag.topics_of_type(POSE_TYPES)) or 'none'}), " + alternative)


def run(args: argparse.Namespace) -> int:
    """Check, distil and report; a scene folder this run ingested is removed when a later stage fails."""
    from kd3d_core.threads import apply_threads
    from kd3d_core.training.distill import distill
    from kd3d_core.training.fast import FastTrainResult

    refuse_existing([args.out], args.overwrite)
    config = build_config(args)
    check_teacher_inputs(args)
    apply_threads(args.threads)
    created = config.ingest is not None and not Path(config.scene).exists()
    try:
        result = distill(config)
    except BaseException:
        if created and Path(config.scene).exists():
            shutil.rmtree(config.scene, ignore_errors=True)
            print(f"kd3d distill: removed the scene {config.scene} this run ingested", file=sys.stderr)
        raise
    if isinstance(result, FastTrainResult):
        report_fast(result, config.out)
    else:
        report(result)
    return 0
