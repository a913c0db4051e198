"""`kd3d info BAG|SCENE [--json]`: what is in a bag (topics, types, counts, rates) or a scene folder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the info subcommand."""
    p = sub.add_parser("info", help="describe a bag, a scene folder or a .kd3d model",
                       description="For a bag (rosbag2 sqlite3/mcap folder or ROS 1 .bag): storage, duration, per "
                                   "topic its type, message count and rate, the TF frames and, per image topic, "
                                   "its TF chain and the pose chain ingest/replay would use. For a scene folder: "
                                   "layout, frames per split, resolution, K, depth and pose coverage, timestamp "
                                   "span. For a .kd3d model: student, size, input, world frame, teacher, mapping "
                                   "frames.")
    p.add_argument("path", type=Path, help="bag, scene folder or .kd3d model")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Summarise and print to stdout."""
    from kd3d_core.summary import format_summary, summarize

    summary = summarize(args.path)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0
