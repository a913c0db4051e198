"""`kd3d demo [--out DIR]`: the whole pipeline on an embedded synthetic room, with a summary at the end."""
from __future__ import annotations

import argparse
from pathlib import Path

from kd3d_core.commands import add_overwrite_argument, add_quiet_argument, add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    """Add the demo subcommand."""
    from kd3d_core.synth import PRESETS

    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic room and summarise",
                       description="Synthesise a room (mapping + query walks, with a rosbag), distil a student "
                                   "(depth teacher unless a DUSt3R checkpoint is given), relocalize the query "
                                   "frames at 640x480, evaluate, replay the query bag, and print a summary. "
                                   "Writes about 270 MB under --out.")
    p.add_argument("--out", type=Path, default=Path("kd3d_demo"),
                   help="output folder (default ./kd3d_demo, in the directory you run it from)")
    p.add_argument("--preset", default="office", choices=sorted(PRESETS), help="room type")
    p.add_argument("--seed", type=int, default=0, help="room seed")
    p.add_argument("--frames", type=int, default=300, help="mapping frames")
    p.add_argument("--query-frames", type=int, default=100, help="query frames")
    p.add_argument("--sensor-noise", type=float, default=2.0, metavar="SIGMA",
                   help="Gaussian noise in grey levels on every rendered image, as a camera records it (default 2; "
                        "0: the renderer's noise-free pixels)")
    p.add_argument("--checkpoint", default=None, help="DUSt3R checkpoint (.pth, HF folder or hub name); "
                                                      "default: depth teacher")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device")
    add_threads_argument(p)
    add_overwrite_argument(p)
    add_quiet_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the config, run the demo, print the summary."""
    from kd3d_core.demo import DemoConfig, format_summary, run_demo

    config = DemoConfig(out=args.out, preset=args.preset, seed=args.seed, mapping_frames=args.frames,
                        query_frames=args.query_frames, sensor_noise=args.sensor_noise,
                        checkpoint=args.checkpoint, device=args.device,
                        threads=args.threads, overwrite=args.overwrite, progress=not args.quiet)
    print(format_summary(run_demo(config)))
    return 0
