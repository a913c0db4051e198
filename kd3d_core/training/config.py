"""Frozen configs of student training (built once from CLI flags; never an argparse namespace)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from kd3d_core.config_utils import check_device
from kd3d_core.errors import ConfigError


class LossKind(str, Enum):
    """Robust function of the per-cell 3D error."""

    MSE = "mse"      # the paper's: squared L2
    L1 = "l1"        # L2 norm (robust to label outliers)
    HUBER = "huber"  # squared below huber_delta_m, linear above


@dataclass(frozen=True)
class AugmentConfig:
    """Label-consistent augmentation.

    Colour jitter changes pixels only. Geometric changes (scale and in-plane rotation about the principal point,
    shift) warp the image and the label maps with the same affine map and update K (scale, shift) and
    world_T_cam (rotation about the optical axis), so labels remain exact world points of the pixels they sit on.

    Attributes:
        enabled: master switch.
        brightness, contrast, saturation: maximum relative change (factor drawn in [1 - x, 1 + x]).
        scale_min, scale_max: zoom range (log-uniform).
        rotation_deg: maximum in-plane rotation (applied only when fx == fy, where it is an exact camera roll).
        shift_frac: maximum principal-point shift as a fraction of the image size.
    """

    enabled: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    scale_min: float = 0.8
    scale_max: float = 1.25
    rotation_deg: float = 10.0
    shift_frac: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max or min(self.brightness, self.contrast, self.saturation) < 0:
            raise ConfigError("augmentation needs 0 < scale_min <= scale_max and non-negative jitter")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        student: registry name of the architecture.
        arch: the architecture's config dataclass (None: its defaults).
        input_size: network input (w, h).
        epochs: maximum number of passes over the training frames.
        batch_size: images per step (per process under DDP).
        lr, weight_decay: AdamW settings; the learning rate follows a warm-up + cosine schedule.
        loss: robust function of the 3D error; huber_delta_m its threshold in metres.
        reproj_weight: weight of the reprojection term (0 = off); needs K and poses (labels carry both).
        reproj_tau_px: robust scale of the reprojection error.
        conf_weight: weight of the confidence-head loss; conf_tau_m the error (m) at which the target is 1/e.
        val_fraction: share of labelled mapping frames held out (every k-th frame) for the error report.
        patience: epochs without held-out improvement before stopping (0 = never stop early).
        max_minutes: wall-clock budget (None = epochs only); the schedule then follows elapsed time too.
        seed: seeds the generator for shuffling/augmentation and the weight initialisation.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        amp: mixed precision on CUDA (ignored on CPU).
        pretrained: backbone weights file (mobilenetv3: torchvision ImageNet state_dict).
        checkpoint: resumable training-state file; resume: continue from it when it exists.
        log_dir: where the CSV log, TensorBoard events and the loss-curve PNG go (None: no logs).
        progress: show a progress bar.
    """

    student: str = "cnn"
    arch: Any = None
    input_size: tuple[int, int] = (320, 240)
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: LossKind = LossKind.MSE
    huber_delta_m: float = 0.1
    reproj_weight: float = 0.0
    reproj_tau_px: float = 10.0
    conf_weight: float = 0.1
    conf_tau_m: float = 0.05
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = 0.1
    patience: int = 10
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    pretrained: Path | None = None
    checkpoint: Path | None = None
    resume: bool = False
    log_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        numbers = {"lr": self.lr, "weight_decay": self.weight_decay, "huber_delta_m": self.huber_delta_m,
                   "reproj_weight": self.reproj_weight, "reproj_tau_px": self.reproj_tau_px,
                   "conf_weight": self.conf_weight, "conf_tau_m": self.conf_tau_m, "val_fraction": self.val_fraction,
                   "max_minutes": 1.0 if self.max_minutes is None else self.max_minutes}
        bad = [k for k, v in numbers.items() if not math.isfinite(float(v))]
        if bad:
            raise ConfigError(f"training {', '.join(bad)} must be finite numbers (got nan or inf)")
        check_device(self.device)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch size and learning rate must be positive")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError("max_minutes must be positive")
        if self.patience < 0 or self.reproj_weight < 0 or self.conf_weight < 0:
            raise ConfigError("patience and loss weights must be non-negative")
