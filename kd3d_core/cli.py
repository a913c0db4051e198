"""The `kd3d` command line: one entry point, one module per subcommand under kd3d_core.commands.

Each command module defines `register(subparsers)`, which adds its parser and sets `handler` to a function
taking the parsed namespace and returning an exit code. Handlers build a frozen config from the flags and call
the library; they never pass the namespace on. Heavy imports (torch, rosbags) happen inside handlers so
`kd3d --help` and `kd3d info` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from kd3d_core import __version__
from kd3d_core.errors import Kd3dError
from kd3d_core.failures import debug_enabled, describe_failure, one_line

# Subcommands in help order; a name whose module does not exist yet is reported as not available.
COMMANDS = ("synth", "ingest", "info", "teach", "train", "distill", "export", "localize", "evaluate", "replay",
            "demo", "bench")


class _Parser(argparse.ArgumentParser):
    """argparse with kd3d's failure contract: a usage error is one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class Terminated(Exception):
    """SIGTERM arrived: raised in the main thread so `finally` blocks remove temporary outputs."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all available subcommands)."""
    parser = _Parser(
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
    from kd3d_core.commands import HelpFormatter

    for command_parser in sub.choices.values():  # every option's default shows in --help
        command_parser.formatter_class = HelpFormatter
    return parser


def _not_available(name: str):
    def handler(_args: argparse.Namespace) -> int:
        raise Kd3dError(f"`kd3d {name}` is not yet available in this version")
    return handler


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand.

    Every failure ends as ONE line on stderr and a non-zero exit status: 1 for errors (kd3d's own with their
    message; anything else translated by kd3d_core.failures), 2 for usage errors, 130 / 143 when interrupted
    or terminated (temporary outputs are removed on the way out). KD3D_DEBUG=1 shows the traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _run(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    prefix = f"kd3d {args.command}"
    try:
        return int(args.handler(args) or 0)
    except Kd3dError as err:
        if debug_enabled():
            raise
        print(f"{prefix}: error: {one_line(err, 600)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prefix}: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # The reader of our output went away (`kd3d info ... | head`): nothing left to say to anyone.
        return 1
    except Exception as err:  # noqa: BLE001 - the one place where every other failure becomes one line
        if debug_enabled():
            raise
        print(f"{prefix}: error: {describe_failure(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
