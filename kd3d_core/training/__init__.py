"""Student training: labelled frames from a scene + LabelStore, label-consistent augmentation, distillation
losses, the trainer (AMP, DDP via torchrun, early stopping, resumable checkpoints) and its logs.

Public API:
    TrainConfig, AugmentConfig, LossKind                     (training.config)
    train_student(scene, store, cfg, out, generator=None)    (training.trainer) -> TrainResult
"""
from __future__ import annotations

from kd3d_core.training.config import AugmentConfig, LossKind, TrainConfig

__all__ = ["AugmentConfig", "LossKind", "TrainConfig", "train_student", "TrainResult"]


def __getattr__(name: str):
    if name in ("train_student", "TrainResult"):
        from kd3d_core.training import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
