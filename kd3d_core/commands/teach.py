"""`kd3d teach SCENE --teacher dust3r|depth ...`: write labels for every mapping frame of a scene."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import add_quiet_argument, add_threads_argument
from kd3d_core.commands.simulated import (add_depth_correction_argument, add_simulated_arguments, align_config,
                                          simulated_config)
from kd3d_core.errors import ConfigError


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 160x120, not {text!r}") from err
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError("label size must be positive")
    return w, h


def register(subparsers) -> None:
    """Add the `teach` parser."""
    p = subparsers.add_parser("teach", help="label a scene's mapping frames with a teacher (DUSt3R or depth)",
                              description="Write world pointmap labels for every mapping frame. Under torchrun "
                                          "(torchrun --nproc_per_node=N -m kd3d_core teach ...) DUSt3R pair "
                                          "inference is sharded over the processes.")
    p.add_argument("scene", type=Path, help="scene folder (12Scenes/7Scenes layout)")
    p.add_argument("--teacher", choices=("dust3r", "depth", "simulated-dust3r"), default=None,
                   help="dust3r (pairwise pointmaps + global alignment; needs --checkpoint) or depth (sensor depth + "
                        "poses); default: dust3r when --checkpoint is given, else depth (as kd3d distill); "
                        "simulated-dust3r is a benchmark/test teacher (see --sim-*)")
    p.add_argument("--checkpoint", help="DUSt3R .pth, Hugging Face folder, or hub name (online)")
    p.add_argument("--labels-dir", type=Path, help="output folder (default SCENE/labels/TEACHER)")
    p.add_argument("--size", type=int, choices=(512, 224), default=512, help="DUSt3R input size")
    p.add_argument("--label-size", type=_size, help="label resolution WxH (default 160 wide, teacher aspect)")
    p.add_argument("--window", type=int, default=3, help="pair each frame with the next K frames")
    p.add_argument("--stride-pairs", type=int, nargs="*", default=[], metavar="S",
                   help="extra long-range pairs (i, i+S) every --stride-every frames")
    p.add_argument("--stride-every", type=int, help="spacing of frames with strided pairs (default: window)")
    p.add_argument("--loop", action="store_true", help="wrap the window around (sequence returns to its start)")
    p.add_argument("--complete", action="store_true", help="all pairs (small frame sets only)")
    p.add_argument("--batch", type=int, default=8, help="pairs per forward pass")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-amp", action="store_true", help="disable autocast on CUDA")
    p.add_argument("--estimate-focal", action="store_true", help="ignore the scene's K; estimate focal length")
    p.add_argument("--min-conf", type=float, default=1.5, help="DUSt3R confidence below which pixels get no label")
    add_simulated_arguments(p)
    add_depth_correction_argument(p)
    add_threads_argument(p)
    add_quiet_argument(p)
    p.set_defaults(handler=run)


def build_config(args: argparse.Namespace):
    """Frozen TeachConfig from the parsed flags."""
    from kd3d_core.teachers import DeviceChoice, Dust3rConfig, PairGraphConfig, TeachConfig, TeacherKind

    if args.batch < 1 or args.window < 1:
        raise ConfigError("--batch and --window must be at least 1")
    pairs = PairGraphConfig(window=args.window, strides=tuple(args.stride_pairs), stride_every=args.stride_every,
                            loop=args.loop, complete=args.complete)
    dust3r = Dust3rConfig(checkpoint=args.checkpoint, size=args.size, batch=args.batch,
                          device=DeviceChoice(args.device), amp=not args.no_amp,
                          use_known_K=not args.estimate_focal, pairs=pairs,
                          align=align_config(args, min_conf=args.min_conf))
    from kd3d_core.commands.distill import teacher_of

    return TeachConfig(teacher=TeacherKind(teacher_of(args)), labels_dir=args.labels_dir, label_size=args.label_size,
                       dust3r=dust3r, simulated=simulated_config(args), progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    """Handler: build the config, run the teacher, print a one-line summary."""
    from kd3d_core.teachers import teach_scene
    from kd3d_core.threads import apply_threads

    apply_threads(args.threads)
    result = teach_scene(args.scene, build_config(args))
    if result is None:
        return 0
    m = result.meta
    diag = m.extra.get("pair_diagnostics")
    print(f"{result.labelled}/{result.frames} frames labelled by {m.teacher} into {result.labels_dir} "
          f"(scale: {m.scale_source.value}, {len(result.failed)} failed, {result.seconds:.1f} s)"
          + (f"; pairs RRA@15={diag['RRA@15']:.2f} RTA@15={diag['RTA@15']:.2f} mAA@30={diag['mAA@30']:.2f}"
             if diag and diag.get("pairs") else ""), file=sys.stdout)
    return 0
