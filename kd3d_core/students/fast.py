"""The "fast" student: a frozen, scene-agnostic encoder plus a small scene-specific MLP head.

Why this split (after ACE, Brachmann et al. 2023): training a whole network per scene is far too slow on a CPU,
but a head that maps fixed per-cell features to world coordinates trains in minutes on a buffer of features
computed once from all mapping views. The encoder is pretrained once on many procedural rooms
(tools/pretrain_encoder.py) and shipped in kd3d_core/assets; only the head is learned per scene
(kd3d_core/training/fast.py). The model file still holds both, so it is self-contained.

Module contract (kd3d_core/students/registry.py): normalised RGB B3HW (H, W multiples of 8) ->
(normalised points B3hw, confidence Bhw in [0, 1]), h = H / 8, w = W / 8. Output cell (i, j) stands for
input pixel (8 j + 4, 8 i + 4); the stem's padding is chosen so the receptive field is centred exactly there
(the last stride-2 convolution pads right/bottom only), so labels sampled at that pixel and the 2D points
given to PnP agree without a half-cell bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd3d_core.errors import ConfigError
from kd3d_core.students.registry import Architecture, register_architecture

OUTPUT_STRIDE = 8


@dataclass(frozen=True)
class FastConfig:
    """Hyper-parameters of the fast student (stored in the model file).

    Attributes:
        stem_channels: channels of the three stride-2 convolutions (stride 8 in total).
        block_dilations: one residual block (two 3x3 convolutions) per entry, with this dilation; dilation
            widens the receptive field (context disambiguates repeated texture) at no extra cost.
        feature_dim: encoder output channels (what the head sees; what the mapping buffer stores).
        head_width: hidden channels of the head MLP.
        head_blocks: residual blocks (two layers each) of the head.
        homogeneous: the head predicts homogeneous coordinates (x, y, z, w) as ACE does, which keeps far
            points well conditioned; otherwise a plain 3D offset.
    """

    stem_channels: tuple[int, ...] = (32, 64, 128)
    block_dilations: tuple[int, ...] = (1, 2, 4, 1)
    feature_dim: int = 256
    head_width: int = 256
    head_blocks: int = 2
    homogeneous: bool = True

    def __post_init__(self) -> None:
        if len(self.stem_channels) != 3 or min(self.stem_channels) < 1:
            raise ConfigError(f"fast stem_channels must be three positive numbers, got {self.stem_channels}")
        if any(d < 1 for d in self.block_dilations):
            raise ConfigError(f"fast block_dilations must be positive, got {self.block_dilations}")
        if self.feature_dim < 1 or self.head_width < 1 or self.head_blocks < 0:
            raise ConfigError("fast feature_dim/head_width must be positive and head_blocks >= 0")

    @property
    def output_stride(self) -> int:
        """Input pixels per output cell (fixed by the stem)."""
        return OUTPUT_STRIDE


class _ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, dilation, dilation=dilation)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return x_BCHW + self.conv2(F.relu(self.conv1(x_BCHW)))


class FastEncoder(nn.Module):
    """Stride-8 fully convolutional feature extractor (no normalisation layers: batch size 1 is exact)."""

    def __init__(self, config: FastConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.stem_channels
        self.conv1 = nn.Conv2d(3, c1, 3, 2, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 2, 1)
        # Padding (0, 2) instead of (1, 1): shifts the receptive-field centre of cell j from 8 j to 8 j + 4.
        self.conv3 = nn.Conv2d(c2, c3, 3, 2, 0)
        self.blocks = nn.Sequential(*[_ResBlock(c3, d) for d in config.block_dilations])
        self.out = nn.Conv2d(c3, config.feature_dim, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation, with residual branches starting small: without it activations shrink several-fold
        per layer and an untrained (or freshly pretraining) encoder gives the heads almost constant features."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            block.conv2.weight.data.mul_(0.2)
        nn.init.kaiming_normal_(self.out.weight, nonlinearity="linear")

    def forward(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """Features B x feature_dim x H/8 x W/8."""
        x = F.relu(self.conv2(F.relu(self.conv1(image_B3HW))))
        x = F.relu(self.conv3(F.pad(x, (0, 2, 0, 2))))
        return self.out(F.relu(self.blocks(x)))


class FastHead(nn.Module):
    """Per-cell MLP: features -> normalised scene coordinates and a confidence logit.

    Works on flat (N, C) features for training (plain linear layers are fastest on a CPU) and on BChw maps.
    """

    MIN_SCALE = 0.01
    MAX_SCALE = 4.0

    def __init__(self, config: FastConfig) -> None:
        super().__init__()
        self.homogeneous = config.homogeneous
        width = config.head_width
        self.inp = nn.Linear(config.feature_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
            for _ in range(config.head_blocks))
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, (4 if config.homogeneous else 3) + 1)

    def forward_flat(self, features_NC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points (N, 3) float32 and confidence logits (N,)."""
        x = F.relu(self.inp(features_NC))
        for block in self.blocks:
            x = F.relu(x + block(x))
        out = self.out(F.relu(self.hidden(x))).float()
        if not self.homogeneous:
            return out[:, :3], out[:, 3]
        # ACE's dehomogenisation: w in [1/MAX_SCALE, 1/MIN_SCALE], smooth through softplus.
        beta = math.log(2) / (1 - 1 / self.MAX_SCALE)
        w = (F.softplus(out[:, 3:4], beta=beta) + 1 / self.MAX_SCALE).clamp(max=1 / self.MIN_SCALE)
        return out[:, :3] / w, out[:, 4]

    def forward(self, features_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points B3hw and confidence logits Bhw for a feature map."""
        B, C, h, w = features_BChw.shape
        xyz_N3, logit_N = self.forward_flat(features_BChw.permute(0, 2, 3, 1).reshape(-1, C))
        return xyz_N3.reshape(B, h, w, 3).permute(0, 3, 1, 2), logit_N.reshape(B, h, w)


class FastStudent(nn.Module):
    """Encoder + head under the registry's module contract."""

    def __init__(self, config: FastConfig = FastConfig()) -> None:
        super().__init__()
        self.config = config
        self.output_stride = OUTPUT_STRIDE
        self.encoder = FastEncoder(config)
        self.head = FastHead(config)

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points B3hw and confidence Bhw in [0, 1]."""
        points_B3hw, logit_Bhw = self.head(self.encoder(image_B3HW))
        return points_B3hw, torch.sigmoid(logit_Bhw)


def build_fast(config: FastConfig, input_size_wh: tuple[int, int]) -> FastStudent:
    """Builder for the registry (any input size that is a multiple of 8)."""
    del input_size_wh
    return FastStudent(config)


register_architecture(Architecture(
    "fast", FastConfig, build_fast,
    "frozen pretrained encoder + scene-specific MLP head trained on a feature buffer (minutes on a CPU)",
    trainer="fast"))
