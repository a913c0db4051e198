"""One module per `kd3d` subcommand (see kd3d_core.cli), and the few argument types they share."""
from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (w, h), for argparse `type=`."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, not {text!r}") from err
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return w, h


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except where the help text already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return text
        return super()._get_help_string(action)


def add_threads_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--threads N` for every command that runs a network (see kd3d_core.threads for the policy)."""
    from kd3d_core.config_utils import thread_count

    p.add_argument("--threads", type=thread_count, default=None, metavar="N",
                   help="torch CPU threads (default: OMP_NUM_THREADS when set, else half the cores, at least 1: "
                        "on a busy CPU more threads wait on each other and get much slower)")


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    """`--quiet` (no progress bars), with the older `--no-progress` as a hidden alias."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def refuse_flags(args: argparse.Namespace, defaults: dict[str, object], why: str) -> None:
    """Raise ConfigError naming the flags in `defaults` that were changed from their default but do nothing.

    Args:
        args: the parsed namespace.
        defaults: attribute name -> the value meaning "not given".
        why: the end of the message, e.g. "with the fast student (it has no training loop)".
    """
    from kd3d_core.errors import ConfigError

    given = [f"--{name.replace('_', '-')}" for name, default in defaults.items()
             if getattr(args, name, default) != default]
    if given:
        raise ConfigError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} nothing {why}; remove "
                          f"{'it' if len(given) == 1 else 'them'}")


def add_overwrite_argument(p: argparse.ArgumentParser) -> None:
    """`--overwrite`: the one rule for every output (README "Outputs")."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that already exist (without it an existing output is refused; missing "
                        "parent folders are always created)")


def refuse_existing(paths, overwrite: bool) -> None:
    """The one overwrite rule: ConfigError for the first existing output unless `overwrite` (None paths skipped)."""
    from pathlib import Path

    from kd3d_core.errors import ConfigError

    if overwrite:
        return
    for path in paths:
        if path is not None and (Path(path).exists() or Path(path).is_symlink()):
            raise ConfigError(f"output {path} already exists (pass --overwrite to replace it)")


def check_model_argument(model, others, usage: str) -> None:
    """ConfigError with a hint when the .kd3d model is not where `usage` expects it (swapped arguments)."""
    from pathlib import Path

    from kd3d_core.errors import ConfigError

    model = Path(model)
    swapped = [str(o) for o in others if o is not None and Path(o).suffix == ".kd3d"]
    if model.suffix != ".kd3d" and swapped:
        raise ConfigError(f"{swapped[0]} looks like the model but is not the first argument; did you swap the "
                          f"arguments? usage: {usage}")
    if model.is_dir():
        raise ConfigError(f"{model} is a folder, not a .kd3d model file; usage: {usage}")
