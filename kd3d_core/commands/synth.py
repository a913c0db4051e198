"""`kd3d synth OUT --preset NAME --seed S [--frames N --size WxH] [--bag PATH]`: render a synthetic room."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import add_overwrite_argument, add_quiet_argument, parse_size
from kd3d_core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the synth subcommand."""
    from kd3d_core.synth import PRESETS

    p = sub.add_parser("synth", help="render a synthetic room (scene folder, optionally a rosbag2)",
                       description="Render a procedurally textured room with exact depth and poses: a mapping walk "
                                   "and a separate query walk, as a 12Scenes-layout scene folder.")
    p.add_argument("out", type=Path, help="output scene folder")
    p.add_argument("--preset", default="office", choices=sorted(PRESETS), help="room type (default office)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same room)")
    p.add_argument("--frames", type=int, default=300, help="mapping frames (default 300)")
    p.add_argument("--query-frames", type=int, default=None, help="query frames (default frames / 3)")
    p.add_argument("--size", type=parse_size, default=(320, 240), help="image size WxH (default 320x240)")
    p.add_argument("--jpg", action="store_true", help="store colour as JPEG (12Scenes style) instead of PNG")
    p.add_argument("--sensor-noise", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian noise in grey levels on every image, as a camera records it (default 0: the "
                        "renderer's noise-free pixels; kd3d bench renders its rooms with 2)")
    p.add_argument("--bag", type=Path, default=None, metavar="DIR",
                   help="also write the walks as two bags, DIR/mapping and DIR/query (DIR/mapping.bag and "
                        "DIR/query.bag for ros1), so a model distilled from the mapping bag is never scored on "
                        "the frames it was mapped from")
    p.add_argument("--bag-storage", default="sqlite3", choices=["sqlite3", "mcap", "ros1"],
                   help="bag format for --bag (default sqlite3 rosbag2)")
    p.add_argument("--bag-depth", action="store_true", help="include a depth image topic in the bag")
    add_overwrite_argument(p)
    add_quiet_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Render the scene, then optionally the bag."""
    from kd3d_core.synth import SynthConfig, render_scene

    if args.bag is not None and not args.overwrite:
        for path in [args.out, *_bag_paths(args).values()]:
            if path.exists():
                raise ConfigError(f"output {path} already exists (pass --overwrite to replace it)")
    query = args.frames // 3 if args.query_frames is None else args.query_frames
    config = SynthConfig(preset=args.preset, seed=args.seed, mapping_frames=args.frames, query_frames=query,
                         size_wh=args.size, color_ext="jpg" if args.jpg else "png", sensor_noise=args.sensor_noise)
    result = render_scene(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {result.path}: {result.frames} frames ({config.mapping_frames} mapping, {query} query) at "
          f"{config.size_wh[0]}x{config.size_wh[1]}, {result.fps:.1f} frames/s", file=sys.stderr)
    if args.bag is not None:
        _write_bag(args)
    return 0


def _bag_paths(args: argparse.Namespace) -> dict[str, Path]:
    """Split name -> bag path under --bag DIR."""
    suffix = ".bag" if args.bag_storage == "ros1" else ""
    return {split: args.bag / f"{split}{suffix}" for split in ("mapping", "query")}


def _write_bag(args: argparse.Namespace) -> None:
    from kd3d_core.bags import write_scene_bag
    from kd3d_core.scene import open_scene

    if args.bag.exists() and not args.bag.is_dir():
        raise ConfigError(f"--bag {args.bag} is a file; give a folder for the mapping and query bags")
    scene = open_scene(args.out)
    for split, path in _bag_paths(args).items():
        if not scene.split(split):
            continue
        result = write_scene_bag(scene, path, storage=args.bag_storage, split=split, overwrite=args.overwrite,
                                 depth_topic="/camera/depth/image_raw" if args.bag_depth else None,
                                 progress=not args.quiet)
        print(f"wrote {split} bag {path} ({args.bag_storage}, {result.frames} frames)", file=sys.stderr)
