"""Helpers for the frozen config dataclasses of every component."""
from __future__ import annotations

import argparse
import math
import re
from enum import Enum

from kd3d_core.errors import ConfigError


def coerce_enum_fields(config: object, fields: dict[str, type[Enum]], component: str) -> None:
    """In a frozen dataclass's __post_init__: turn string values of enum fields into their enums.

    Raises ConfigError naming the component, the field and the valid choices when a value is not one of them.
    """
    for name, enum_type in fields.items():
        value = getattr(config, name)
        if isinstance(value, enum_type):
            continue
        try:
            object.__setattr__(config, name, enum_type(value))
        except ValueError as err:
            choices = ", ".join(str(e.value) for e in enum_type)
            raise ConfigError(f"{component} {name} must be one of {choices}, got {value!r}") from err


# ------------------------------------------------------------------ command-line values (argparse `type=`)
# Shared by every command so `--threads 0`, `--lr nan` or `--device tpu7` fail the same way: argparse reports
# the ArgumentTypeError as one line (see kd3d_core.cli) before any work starts.

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|mps)(:\d+)?$")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (thread counts, epochs, batch sizes, ...)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """argparse type for `--threads`: 1 .. 4096 (0 or negative would disable or crash torch's pool)."""
    value = positive_int(text)
    if value > 4096:
        raise argparse.ArgumentTypeError(f"must be at most 4096, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (nan and inf are refused)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, distances, scales)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def device_name(text: str) -> str:
    """argparse type for `--device`: auto, cpu, cuda, cuda:N or mps (spelling only; see `check_device`)."""
    value = str(text).strip().lower()
    if not _DEVICE_RE.match(value) or value.startswith(("auto:", "cpu:")):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def check_device(name: str) -> str:
    """The torch device `name` resolves to on this machine ("auto" -> "cuda" when present, else "cpu").

    Raises ConfigError when the device is misspelt or not present (`cuda` without CUDA, `cuda:9` on a 2-GPU
    machine, `mps` off Apple silicon), before any work starts.
    """
    try:
        value = device_name(name)
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"device {err}") from None
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(":")[1]) if ":" in value else 0
        if count == 0:
            raise ConfigError(f"device {value} asked for but no CUDA device is available (use --device cpu)")
        if index >= count:
            raise ConfigError(f"device {value} does not exist: this machine has {count} CUDA device(s) "
                              f"(cuda:0 .. cuda:{count - 1})")
    if value.startswith("mps") and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {value} asked for but MPS is not available (use --device cpu)")
    return value
