"""Resumable training state: written atomically after every epoch, read with `torch.load(weights_only=True)`
(tensors, numbers, strings, lists and dicts only — no pickled code is ever executed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kd3d_core.errors import ConfigError, ModelError
from kd3d_core.io_utils import atomic_file

CHECKPOINT_VERSION = 1


@dataclass
class TrainState:
    """Everything that changes during training besides the network and the optimizer."""

    epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    best_val: float = float("inf")
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


def save_checkpoint(path: Path, *, identity: dict, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any, generator: torch.Generator, state: TrainState) -> None:
    """Write the full training state (atomic)."""
    blob = {
        "version": CHECKPOINT_VERSION, "identity": identity, "model": net.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(), "epoch": state.epoch, "step": state.step,
        "elapsed_s": state.elapsed_s, "best_val": state.best_val, "bad_epochs": state.bad_epochs,
        "best_state": state.best_state, "history": state.history,
    }
    with atomic_file(path, suffix=".ckpt") as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path: Path, *, identity: dict, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any, generator: torch.Generator) -> TrainState:
    """Restore a checkpoint into net/optimizer/scaler/generator; refuse one from a different run setup."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling refusal, truncation, ... all mean "unusable"
        raise ModelError(f"cannot read training checkpoint {path}: {err}") from err
    if not isinstance(blob, dict) or blob.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{path} is not a kd3d training checkpoint (version {CHECKPOINT_VERSION})")
    if blob.get("identity") != identity:
        raise ConfigError(f"checkpoint {path} was written for a different run ({blob.get('identity')}); "
                          "delete it or drop --resume")
    try:
        net.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scaler.load_state_dict(blob["scaler"])
        generator.set_state(blob["generator"])
        torch.set_rng_state(blob["torch_rng"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise ModelError(f"checkpoint {path} does not match the network: {err}") from err
    return TrainState(blob["epoch"], blob["step"], blob["elapsed_s"], blob["best_val"], blob["bad_epochs"],
                      blob["best_state"], blob["history"])
