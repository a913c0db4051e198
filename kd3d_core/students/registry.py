"""Student architectures by name: a config dataclass and a builder per architecture.

The contract every student network satisfies (so training, the `.kd3d` file, export and the relocalizer treat
all architectures alike, including ones registered by other modules such as the fast-mapping student):

    net = architecture.build(config, input_size_wh)        # an nn.Module
    points_B3hw, conf_Bhw = net(image_B3HW)

* `image_B3HW` is float32 RGB, already normalised with the model file's input mean/std
  ((x / 255 - mean) / std per channel), at exactly `input_size_wh`.
* `points_B3hw` are scene coordinates in the model's *normalised* coordinate frame:
  world = points * coord_scale + coord_mean (both stored in the model file, computed from the labels).
  Keeping the network in normalised units makes training well conditioned whatever the scene's size/offset.
* `conf_Bhw` is a confidence in [0, 1] (higher is better).
* (h, w) = (H // s, W // s) with s = `net.output_stride` (an int attribute every student has); output cell
  (i, j) stands for the network-input pixel (j * s + s // 2, i * s + s // 2) (see `cell_centres`).
* Input sizes must be multiples of the output stride (checked by `check_input_size`).

Config dataclasses are frozen, JSON-serialisable through `config_to_dict` / `config_from_dict` (fields of
type str/int/float/bool, str enums, or tuples of those), and validate themselves in `__post_init__` by raising
ConfigError.
"""
from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kd3d_core.errors import ConfigError

_REGISTRY: dict[str, Architecture] = {}


@dataclass(frozen=True)
class Architecture:
    """A registered student architecture.

    Attributes:
        name: the name users type (`--student NAME`) and the model file stores.
        config_cls: frozen dataclass type holding the architecture's hyper-parameters (all fields defaulted).
        builder: `builder(config, input_size_wh) -> nn.Module` following the module contract above.
        description: one line for `--help`.
        trainer: optional name of a non-default trainer ("end_to_end" for the paper students); lets other
            trainers (e.g. a fast-mapping head trainer) claim their architectures.
    """

    name: str
    config_cls: type
    builder: Callable[[Any, tuple[int, int]], Any]
    description: str = ""
    trainer: str = "end_to_end"

    def build(self, config: Any, input_size_wh: tuple[int, int]) -> Any:
        """Build the network for a config (of `config_cls`) and an input size (w, h)."""
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"student {self.name!r} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        check_input_size(input_size_wh, getattr(config, "output_stride", 1))
        return self.builder(config, tuple(int(v) for v in input_size_wh))

    def default_config(self) -> Any:
        """The architecture's default hyper-parameters."""
        return self.config_cls()


def register_architecture(arch: Architecture, *, replace: bool = False) -> None:
    """Add an architecture to the registry (modules call this at import time)."""
    if arch.name in _REGISTRY and not replace and _REGISTRY[arch.name] is not arch:
        raise ConfigError(f"student architecture {arch.name!r} is already registered")
    if not dataclasses.is_dataclass(arch.config_cls):
        raise ConfigError(f"config of student {arch.name!r} must be a dataclass")
    _REGISTRY[arch.name] = arch


def _load_builtin() -> None:
    # Importing the modules registers them; done lazily so the registry module itself stays torch-free.
    import importlib

    for module in ("cnn", "mobilenetv3", "vit", "fast"):
        try:
            importlib.import_module(f"kd3d_core.students.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"kd3d_core.students.{module}":
                raise


def get_architecture(name: str) -> Architecture:
    """The architecture registered under `name` (ConfigError listing the known ones otherwise)."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown student {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_architectures() -> list[str]:
    """Names of all registered architectures, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def check_input_size(input_size_wh: tuple[int, int], stride: int) -> None:
    """Raise ConfigError unless (w, h) are positive multiples of the output stride."""
    w, h = input_size_wh
    if w <= 0 or h <= 0 or w % stride or h % stride:
        raise ConfigError(f"input size {w}x{h} must be positive multiples of the output stride {stride}")


def cell_centres(input_size_wh: tuple[int, int], stride: int) -> np.ndarray:
    """Network-input pixel (u, v) that each output cell stands for, float32 (h, w, 2)."""
    w, h = input_size_wh
    u = np.arange(w // stride, dtype=np.float32) * stride + stride // 2
    v = np.arange(h // stride, dtype=np.float32) * stride + stride // 2
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv], axis=-1)


# --------------------------------------------------------------------------- config (de)serialisation

def config_to_dict(config: Any) -> dict:
    """A config dataclass as a JSON-ready dict (enums by value, tuples as lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = [v.value if isinstance(v, enum.Enum) else v for v in value]
        out[f.name] = value
    return out


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return tuple(_coerce(name, item, v) for v in value)
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if hint in (int, float, str):
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return hint(value)
    return value


def config_from_dict(config_cls: type, data: dict, *, partial: bool = False) -> Any:
    """Rebuild a config dataclass from a dict, with type checks.

    Args:
        config_cls: the dataclass type.
        data: field values (e.g. from a model file's JSON, or `--arch-opt key=value` strings).
        partial: allow missing fields (they keep their defaults); unknown fields are always an error.
    """
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{config_cls.__name__} has no option(s) {', '.join(unknown)}; "
                          f"options: {', '.join(sorted(names))}")
    # Options added after model files were written: an older file lacks them and means the value that reproduces
    # its behaviour (the config class's ADDED_LATER), which need not be today's default. Partial configs (CLI
    # options) get today's defaults instead.
    if not partial:
        data = {**getattr(config_cls, "ADDED_LATER", {}), **data}
    missing = sorted(names - set(data))
    if missing and not partial:
        raise ConfigError(f"{config_cls.__name__} is missing option(s) {', '.join(missing)}")
    try:
        values = {k: _coerce(k, hints[k], v) for k, v in data.items()}
        return config_cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {config_cls.__name__}: {err}") from err


def parse_arch_options(options: list[str]) -> dict[str, Any]:
    """`key=value` strings (CLI) as a dict of strings; `config_from_dict` converts types (lists: a,b,c)."""
    out: dict[str, Any] = {}
    for opt in options:
        if "=" not in opt:
            raise ConfigError(f"architecture option {opt!r} must look like key=value")
        key, value = opt.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out
