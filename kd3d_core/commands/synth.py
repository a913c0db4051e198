"""`kd3d synth OUT --preset NAME --seed S [--frames N --size WxH] [--bag PATH]`: render a synthetic room."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kd3d_core.commands import parse_size
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
    p.add_argument("--bag", type=Path, default=None, help="also write the frames as a bag at this path")
    p.add_argument("--bag-storage", default="sqlite3", choices=["sqlite3", "mcap", "ros1"],
                   help="bag format for --bag (default sqlite3 rosbag2)")
    p.add_argument("--bag-depth", action="store_true", help="include a depth image topic in the bag")
    p.add_argument("--overwrite", action="store_true", help="replace OUT (and the bag) if they exist")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Render the scene, then optionally the bag."""
    from kd3d_core.synth import SynthConfig, render_scene

    if args.bag is not None and args.bag.exists() and not args.overwrite:
        raise ConfigError(f"bag {args.bag} already exists (pass --overwrite to replace it)")
    query = args.frames // 3 if args.query_frames is None else args.query_frames
    config = SynthConfig(preset=args.preset, seed=args.seed, mapping_frames=args.frames, query_frames=query,
                         size_wh=args.size, color_ext="jpg" if args.jpg else "png")
    result = render_scene(config, args.out, overwrite=args.overwrite)
    print(f"wrote {result.path}: {result.frames} frames ({config.mapping_frames} mapping, {query} query) at "
          f"{config.size_wh[0]}x{config.size_wh[1]}, {result.fps:.1f} frames/s", file=sys.stderr)
    if args.bag is not None:
        _write_bag(args)
    return 0


def _write_bag(args: argparse.Namespace) -> None:
    from kd3d_core.bags import write_scene_bag
    from kd3d_core.scene import open_scene

    if args.bag.exists():
        import shutil

        shutil.rmtree(args.bag) if args.bag.is_dir() else args.bag.unlink()
    write_scene_bag(open_scene(args.out), args.bag, storage=args.bag_storage,
                    depth_topic="/camera/depth/image_raw" if args.bag_depth else None)
    print(f"wrote bag {args.bag} ({args.bag_storage})", file=sys.stderr)
