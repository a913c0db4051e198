"""Safe loading of DUSt3R checkpoints: no `eval`, no unrestricted unpickling.

Formats:
  * official `.pth` (224_linear, 512_linear, 512_dpt): {'args': argparse.Namespace(model="AsymmetricCroCo3DStereo(
    ...)"), 'model': state_dict}. Tensors are read with torch.load(weights_only=True), allowing one extra class,
    argparse.Namespace; the constructor string is parsed with `ast` and only literal keyword arguments from a
    whitelist are accepted (what DUSt3R's own loader would `eval`).
  * Hugging Face folders: config.json (constructor keywords) + model.safetensors.
  * hub names ("naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt") when online: downloaded into the HF cache, then as a
    folder.
Like DUSt3R's loader, ManyAR_PatchEmbed becomes PatchEmbedDust3R and landscape_only becomes False (inference with
same-orientation batches).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd3d_core.errors import ModelError

MODEL_CLASS = "AsymmetricCroCo3DStereo"
INSTALL_HINT = ("install the DUSt3R model code: `pip install --no-deps mini-dust3r && pip install -r "
                "requirements/dust3r.txt`, or put a clone of https://github.com/naver/dust3r (with its croco "
                "submodule) on PYTHONPATH")
DOWNLOAD_HINT = ("download an official checkpoint, e.g. https://download.europe.naverlabs.com/ComputerVision/DUSt3R/"
                 "DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth, and pass --checkpoint PATH (or, online, "
                 "--checkpoint naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt)")
_STR_CHOICES = {"output_mode": {"pts3d"}, "head_type": {"linear", "dpt"}, "freeze": {"none", "mask", "encoder"},
                "patch_embed_cls": {"PatchEmbedDust3R", "ManyAR_PatchEmbed"}}
_INT_KEYS = {"patch_size", "enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth",
             "dec_num_heads"}
_FLOAT_KEYS = {"mask_ratio", "mlp_ratio"}
_BOOL_KEYS = {"landscape_only", "norm_im2_in_dec"}
_MODE_KEYS = {"depth_mode", "conf_mode"}
ALLOWED_KEYS = set(_STR_CHOICES) | _INT_KEYS | _FLOAT_KEYS | _BOOL_KEYS | _MODE_KEYS | {"img_size", "pos_embed"}


@dataclass(frozen=True)
class LoadedTeacher:
    """A DUSt3R model ready for inference, with what identifies it."""

    model: Any
    digest: str
    kwargs: dict
    source: str
    backend: str


def import_model_class() -> tuple[type, str]:
    """The AsymmetricCroCo3DStereo class: official `dust3r` first, then `mini_dust3r`."""
    errors = []
    for module_name in ("dust3r.model", "mini_dust3r.model"):
        try:
            module = importlib.import_module(module_name)
            return getattr(module, MODEL_CLASS), module_name.split(".")[0]
        except ImportError as err:
            errors.append(f"{module_name}: {err}")
    raise ModelError(f"DUSt3R is not installed ({'; '.join(errors)}); {INSTALL_HINT}")


def _literal(node: ast.AST) -> Any:
    """Evaluate a literal expression node: numbers, strings, booleans, None, inf/nan, tuples and lists."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ModelError(f"checkpoint model string holds a non-literal expression: {ast.dump(node)[:80]}")


def parse_model_string(text: str) -> dict:
    """Keyword arguments of "AsymmetricCroCo3DStereo(k=v, ...)" without evaluating code."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ModelError(f"checkpoint model string is not valid Python syntax: {err}") from err
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == MODEL_CLASS):
        raise ModelError(f"checkpoint model string must be a call of {MODEL_CLASS}(...), got {text[:80]!r}")
    if call.args or any(k.arg is None for k in call.keywords):
        raise ModelError("checkpoint model string may only hold keyword arguments")
    return validate_kwargs({k.arg: _literal(k.value) for k in call.keywords})


def validate_kwargs(kwargs: dict) -> dict:
    """Check constructor keywords against the whitelist; normalise as DUSt3R's loader does."""
    unknown = set(kwargs) - ALLOWED_KEYS
    if unknown:
        raise ModelError(f"checkpoint names unknown model arguments {sorted(unknown)}")
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, list):
            value = tuple(value)
        ok = ((key in _STR_CHOICES and value in _STR_CHOICES[key])
              or (key in _INT_KEYS and isinstance(value, int) and not isinstance(value, bool) and value > 0)
              or (key in _FLOAT_KEYS and isinstance(value, (int, float)) and math.isfinite(value))
              or (key in _BOOL_KEYS and isinstance(value, bool))
              or (key in _MODE_KEYS and isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str))
              or (key == "img_size" and (isinstance(value, int) or (isinstance(value, tuple) and len(value) == 2)))
              or (key == "pos_embed" and isinstance(value, str) and re.fullmatch(r"cosine|RoPE\d+", value)))
        if not ok:
            raise ModelError(f"checkpoint model argument {key}={value!r} is not acceptable")
        out[key] = value
    if out.get("patch_embed_cls") == "ManyAR_PatchEmbed":
        out["patch_embed_cls"] = "PatchEmbedDust3R"
    out["landscape_only"] = False
    return out


def file_digest(path: Path) -> str:
    """sha256 of a file (identifies the teacher in the labels metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_official_checkpoint(path: Path) -> tuple[dict, dict]:
    """Constructor keywords and state dict of an official .pth, loaded with weights_only (no code execution)."""
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(err).__name__)
        raise ModelError(f"refusing to load {path}: not a plain-weights checkpoint ({first})") from err
    except OSError as err:
        raise ModelError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ModelError(f"{path} is not a DUSt3R checkpoint (no 'model' state dict)")
    args = ckpt.get("args")
    text = getattr(args, "model", None) if not isinstance(args, dict) else args.get("model")
    if not isinstance(text, str):
        raise ModelError(f"{path} has no model description (args.model); is it a DUSt3R training checkpoint?")
    return parse_model_string(text), ckpt["model"]


def read_hf_folder(folder: Path) -> tuple[dict, dict, Path]:
    """Constructor keywords (config.json), state dict (safetensors) and the weights file of a HF folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, weights = folder / "config.json", folder / "model.safetensors"
    if not weights.is_file():
        found = sorted(folder.glob("*.safetensors"))
        weights = found[0] if found else weights
    if not config.is_file() or not weights.is_file():
        raise ModelError(f"{folder} is not a Hugging Face model folder (needs config.json and model.safetensors)")
    try:
        kwargs = json.loads(config.read_text())
        state = load_file(str(weights))
    except (json.JSONDecodeError, SafetensorError, OSError) as err:
        raise ModelError(f"cannot read model folder {folder}: {err}") from err
    if not isinstance(kwargs, dict):
        raise ModelError(f"{config} must hold a JSON object of model arguments")
    return validate_kwargs(kwargs), state, weights


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["config.json", "*.safetensors"]))
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear message
        raise ModelError(f"cannot fetch {name!r} from the Hugging Face hub ({type(err).__name__}); "
                         f"{DOWNLOAD_HINT}") from err


def load_teacher(checkpoint: str | Path | None, device: str) -> LoadedTeacher:
    """Build the DUSt3R model of a checkpoint (file, HF folder or hub name) on `device`, in eval mode."""
    if checkpoint is None or str(checkpoint) == "":
        raise ModelError(f"the DUSt3R teacher needs a checkpoint; {DOWNLOAD_HINT}")
    model_cls, backend = import_model_class()
    path = Path(checkpoint).expanduser()
    if path.is_file():
        kwargs, state = read_official_checkpoint(path)
        weights = path
    elif path.is_dir():
        kwargs, state, weights = read_hf_folder(path)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(checkpoint)) and not str(checkpoint).startswith("."):
        kwargs, state, weights = read_hf_folder(_download(str(checkpoint)))
    else:
        raise ModelError(f"checkpoint {checkpoint} does not exist; {DOWNLOAD_HINT}")
    try:
        model = model_cls(**kwargs)
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, ValueError, AssertionError, KeyError) as err:
        raise ModelError(f"checkpoint {checkpoint} does not fit {MODEL_CLASS}({kwargs}): {err}") from err
    if result.missing_keys:
        raise ModelError(f"checkpoint {checkpoint} lacks {len(result.missing_keys)} weights "
                         f"(e.g. {result.missing_keys[:3]})")
    return LoadedTeacher(model.to(device).eval(), file_digest(weights), kwargs, str(checkpoint), backend)


def save_official_checkpoint(path: Path, model_string: str, state_dict: dict) -> None:
    """Write a checkpoint in the official layout (used by tests and for converting trained teachers)."""
    import torch

    torch.save({"args": argparse.Namespace(model=model_string), "model": state_dict}, path)
