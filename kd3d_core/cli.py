"""The `kd3d` command line: one entry point, one module per subcommand under kd3d_core.commands.

Each command module defines `register(subparsers)`, which adds its parser and sets `handler` to a function
taking the parsed namespace and returning an exit code. Handlers build a frozen config from the flags and call
the library; they never pass the namespace on. Heavy imports (torch, rosbags) happen inside handlers so
`kd3d --help` and `kd3d info` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from kd3d_core import __version__
from kd3d_core.errors import Kd3dError

# Subcommands in help order; a name whose module does not exist yet is reported as not available.
COMMANDS = ("synth", "ingest", "info", "teach", "train", "distill", "export", "localize", "evaluate", "replay",
            "demo", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all available subcommands)."""
    parser = argparse.ArgumentParser(
        prog="kd3d", description="Camera relocalization by knowledge distillation (DUSt3R teacher -> small student).")
    parser.add_argument("--version", action="version", version=f"kd3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"kd3d_core.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"kd3d_core.commands.{name}":
                raise
            p = sub.add_parser(name, help="(not yet available)")
            p.set_defaults(handler=_not_available(name))
            continue
        module.register(sub)
    return parser


def _not_available(name: str):
    def handler(_args: argparse.Namespace) -> int:
        raise Kd3dError(f"`kd3d {name}` is not yet available in this version")
    return handler


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one subcommand, turn kd3d errors into one line on stderr and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except Kd3dError as err:
        print(f"kd3d {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kd3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
