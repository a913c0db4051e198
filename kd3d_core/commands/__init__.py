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
