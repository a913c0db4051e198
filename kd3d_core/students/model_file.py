"""The `.kd3d` scene model file: ONE safetensors file whose header metadata carries kd3d's JSON.

Layout (a valid safetensors file, readable by any safetensors reader):
    tensors                     the student's state_dict (float weights, BatchNorm buffers)
    __metadata__["format"]      "kd3d-scene-model"
    __metadata__["kd3d"]        JSON of `ModelMeta` (format version, architecture + config, input size and
                                normalisation, output stride, coordinate normalisation, world frame id,
                                training and teacher summaries, SHA-256 of the tensor bytes)

Loading never unpickles: safetensors parses a JSON header and raw tensor bytes only. A file with a wrong
format version, a metadata key missing, a tensor missing/extra/of the wrong shape (e.g. tampered config), or
tensor bytes that do not match their digest raises ModelError naming the problem.

Every size in the metadata is a claim: it is bounded, and the network it describes is first built on the `meta`
device (no memory) so that its tensor names, shapes and dtypes can be compared with the safetensors header
before anything is allocated. Only then is the real network built and the weights read (bounded by the file).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd3d_core.errors import Kd3dError, ModelError
from kd3d_core.io_utils import atomic_file
from kd3d_core.students.registry import config_from_dict, get_architecture

FORMAT_NAME = "kd3d-scene-model"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_INPUT_SIDE = 4096
MAX_INPUT_PIXELS = 1 << 22
_REPEAT_FIELD = re.compile(r"(blocks|layers|depth|heads|repeats)$")
_MAX_REPEATS = 256
_MAX_INT = 1 << 31
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}


@dataclass(frozen=True)
class ModelMeta:
    """Everything besides the weights that is needed to run a scene model.

    Attributes:
        architecture: registry name of the student.
        config: the architecture's config as a dict (see registry.config_to_dict).
        input_size: (w, h) the network runs at; `SceneModel.predict` resizes any image to it.
        output_stride: pixels per output cell.
        coord_mean: world-frame offset of the normalised coordinates (metres).
        coord_scale: metres per normalised unit: world = points * coord_scale + coord_mean.
        world_frame: frame id of the world coordinates (e.g. "map").
        input_mean, input_std: per-channel RGB normalisation of [0, 1] images.
        training: summary of the training run (epochs, losses, held-out errors, time, seed, ...).
        teacher: summary of the labels (teacher name, scale source, checkpoint digest, frames).
        mapping_up: unit vector (world frame) that the mapping cameras' image "up" pointed along on average
            (kd3d_core.localization.roll.mapping_up); the relocalizer measures a query camera's roll from it.
            None when unknown (files written before it existed, or mapping cameras rolled all round).
        weights_sha256: digest of the tensor bytes (sorted by name), filled in by `save_scene_model`.
        format_version: version of this file layout.
    """

    architecture: str
    config: dict
    input_size: tuple[int, int]
    output_stride: int
    coord_mean: tuple[float, float, float]
    coord_scale: float
    world_frame: str
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    training: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    mapping_up: tuple[float, float, float] | None = None
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def arch_config(self) -> Any:
        """The architecture's config dataclass rebuilt from `config`."""
        return config_from_dict(get_architecture(self.architecture).config_cls, self.config)


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_scene_model(path: Path | str, net: nn.Module, meta: ModelMeta) -> ModelMeta:
    """Write net's weights and `meta` to one `.kd3d` file atomically; returns the meta with its digest."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in _unwrap(net).state_dict().items()}
    meta = dataclasses.replace(meta, weights_sha256=_digest(state), format_version=FORMAT_VERSION)
    header = {"format": FORMAT_NAME, "kd3d": json.dumps(dataclasses.asdict(meta))}
    with atomic_file(path, suffix=".kd3d") as tmp:
        save_file(state, str(tmp), metadata=header)
    return meta


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if hasattr(net, "module") and isinstance(net.module, nn.Module) else net


_REQUIRED = ("architecture", "config", "input_size", "output_stride", "coord_mean", "coord_scale", "world_frame")


def meta_from_json(text: str, source: str = "model file") -> ModelMeta:
    """Parse and validate the JSON metadata of a model file (types, finite numbers, bounded sizes)."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        detail = err if isinstance(err, json.JSONDecodeError) else "nested too deeply"
        raise ModelError(f"{source}: metadata is not valid JSON: {detail}") from None
    if not isinstance(d, dict):
        raise ModelError(f"{source}: metadata is not a JSON object")
    version = d.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{source}: unsupported model format version {version!r} (this kd3d reads version "
                         f"{FORMAT_VERSION}); retrain or use a matching kd3d")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ModelError(f"{source}: metadata is missing {', '.join(missing)}")
    known = {f.name for f in dataclasses.fields(ModelMeta)}
    try:
        for key in ("input_size", "coord_mean", "input_mean", "input_std", "mapping_up"):
            if d.get(key) is not None:
                d[key] = tuple(float(v) if key != "input_size" else int(v) for v in d[key])
        meta = ModelMeta(**{k: v for k, v in d.items() if k in known})
        _check_meta_values(meta)
    except (TypeError, ValueError, OverflowError) as err:
        raise ModelError(f"{source}: invalid metadata: {err}") from err
    return meta


def _check_meta_values(meta: ModelMeta) -> None:
    """ValueError unless every metadata value has the right type, is finite and is within sane bounds."""
    if not isinstance(meta.architecture, str) or not isinstance(meta.config, dict):
        raise ValueError("architecture must be a name and config an object")
    if not isinstance(meta.world_frame, str) or not meta.world_frame:
        raise ValueError("world_frame must be a non-empty string")
    if len(meta.input_size) != 2 or len(meta.coord_mean) != 3 or len(meta.input_mean) != 3 or \
            len(meta.input_std) != 3:
        raise ValueError("input_size needs 2 values, coord_mean, input_mean and input_std 3 each")
    w, h = meta.input_size
    if not (0 < w <= MAX_INPUT_SIDE and 0 < h <= MAX_INPUT_SIDE and w * h <= MAX_INPUT_PIXELS):
        raise ValueError(f"input_size {w}x{h} is outside 1..{MAX_INPUT_SIDE} a side / {MAX_INPUT_PIXELS} pixels")
    if isinstance(meta.output_stride, bool) or not isinstance(meta.output_stride, int) or \
            not 1 <= meta.output_stride <= 64:
        raise ValueError(f"output_stride must be an integer 1..64, got {meta.output_stride!r}")
    numbers = (*meta.coord_mean, *meta.input_mean, *meta.input_std, meta.coord_scale)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
        raise ValueError("coord_mean, coord_scale, input_mean and input_std must be finite numbers")
    if not meta.coord_scale > 0 or min(meta.input_std) <= 0:
        raise ValueError("coord_scale and input_std must be > 0")
    if meta.mapping_up is not None and (len(meta.mapping_up) != 3 or not all(math.isfinite(v) for v in meta.mapping_up)
                                        or abs(math.hypot(*meta.mapping_up) - 1.0) > 1e-3):
        raise ValueError(f"mapping_up must be null or a unit vector of 3 numbers, got {meta.mapping_up!r}")
    if not isinstance(meta.weights_sha256, str) or not _HEX64.match(meta.weights_sha256):
        raise ValueError("weights_sha256 must be the 64-digit SHA-256 of the weights (an empty or missing digest "
                         "would skip the integrity check)")
    for key, value in meta.config.items():
        _check_config_value(str(key), value)


def _check_config_value(key: str, value: Any) -> None:
    """Bound one architecture option: repeat counts <= 256, other integers < 2^31, lists <= 256 long."""
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_REPEATS:
            raise ValueError(f"config {key} has {len(value)} entries (at most {_MAX_REPEATS})")
        for v in value:
            _check_config_value(key, v)
        return
    if isinstance(value, dict):
        raise ValueError(f"config {key} must not be an object")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config {key} must be finite, got {value}")
    if isinstance(value, int) and not isinstance(value, bool):
        limit = _MAX_REPEATS if _REPEAT_FIELD.search(key) else _MAX_INT
        if abs(value) > limit:
            raise ValueError(f"config {key} = {value} is out of range (at most {limit})")


def read_model_meta(path: Path | str) -> ModelMeta:
    """Read only the metadata of a `.kd3d` file (cheap: the JSON header)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model file {path} is a folder, not a .kd3d file")
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for malformed files
        raise ModelError(f"{path} is not a kd3d model file (not a valid safetensors file: {err})") from err
    if header.get("format") != FORMAT_NAME or "kd3d" not in header:
        raise ModelError(f"{path} is a safetensors file but not a kd3d scene model (no kd3d metadata)")
    return meta_from_json(header["kd3d"], str(path))


def build_from_meta(meta: ModelMeta) -> nn.Module:
    """An untrained network of the architecture, config and input size the metadata describes."""
    try:
        arch = get_architecture(meta.architecture)
        net = arch.build(meta.arch_config(), meta.input_size)
    except Kd3dError as err:
        raise ModelError(f"model metadata describes an unusable network: {err}") from err
    if getattr(net, "output_stride", None) != meta.output_stride:
        raise ModelError(f"model metadata says output stride {meta.output_stride}, the network has "
                         f"{getattr(net, 'output_stride', None)}")
    return net


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """ModelError unless `found` has exactly the tensors (names and shapes) of `expected`."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise ModelError(f"{source}: weights are missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    if extra:
        raise ModelError(f"{source}: weights have {len(extra)} unexpected tensor(s), e.g. {extra[:3]}")
    for name, t in expected.items():
        if tuple(found[name].shape) != tuple(t.shape):
            raise ModelError(f"{source}: tensor {name} has shape {tuple(found[name].shape)}, the architecture "
                             f"needs {tuple(t.shape)} (file tampered with or metadata edited)")


def _header_tensors(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype) of every tensor, from the header alone (nothing allocated)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: (tuple(fh.get_slice(k).get_shape()), str(fh.get_slice(k).get_dtype())) for k in fh.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for malformed files
        raise ModelError(f"{path}: cannot read the weights header: {err}") from err


def check_header(meta: ModelMeta, header: dict[str, tuple[tuple[int, ...], str]], source: str) -> None:
    """ModelError unless the network the metadata describes has exactly the file's tensors (names, shapes,
    dtypes). Built on the meta device, so a metadata size that lies (knn_size, feature_dim, ...) costs nothing."""
    try:
        with torch.device("meta"):
            expected = build_from_meta(meta).state_dict()
    except ModelError:
        raise
    except (RuntimeError, ValueError, TypeError) as err:
        raise ModelError(f"{source}: model metadata describes an unusable network: {err}") from err
    check_state(expected, {k: torch.empty(shape, device="meta") for k, (shape, _) in header.items()}, source)
    for name, t in expected.items():
        if _ST_DTYPES.get(t.dtype) != header[name][1]:
            raise ModelError(f"{source}: tensor {name} is {header[name][1]}, the architecture needs "
                             f"{_ST_DTYPES.get(t.dtype, t.dtype)} (file tampered with or metadata edited)")


def load_network(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Read a `.kd3d` file: the network with its weights (eval mode, on `device`) and its metadata.

    Sizes are checked against the file's tensor header before the network is built for real, and the weights
    against their SHA-256 before they are used.
    """
    from safetensors.torch import load_file

    meta = read_model_meta(path)
    check_header(meta, _header_tensors(Path(path)), str(path))
    net = build_from_meta(meta)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{path}: cannot read weights: {err}") from err
    check_state(net.state_dict(), state, str(path))
    if _digest(state) != meta.weights_sha256:
        raise ModelError(f"{path}: weights do not match their recorded SHA-256 (file corrupted or tampered)")
    net.load_state_dict(state, strict=True)
    return net.eval().to(device), meta
