"""The paper's vanilla CNN student: 3x3 conv layers growing 3 -> 512 channels, then a per-pixel head.

Each conv layer is followed by BatchNorm and ReLU (the paper: "each layer is followed by ReLU"); the first
log2(output_stride) layers have stride 2, so the network regresses one scene coordinate per
output_stride x output_stride block of the input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kd3d_core.errors import ConfigError
from kd3d_core.students.layers import ConvHead, split_output
from kd3d_core.students.registry import Architecture, register_architecture


@dataclass(frozen=True)
class CNNConfig:
    """Hyper-parameters of the vanilla CNN.

    Attributes:
        channels: output channels of each 3x3 conv layer (the paper grows to 512).
        head_channels: width of the per-pixel fully connected head.
        head_layers: hidden layers of the head.
        output_stride: one output cell per stride x stride input pixels (power of two, <= 2**len(channels)).
    """

    channels: tuple[int, ...] = (32, 64, 128, 256, 512, 512)
    head_channels: int = 512
    head_layers: int = 2
    output_stride: int = 8

    def __post_init__(self) -> None:
        s = self.output_stride
        if s < 1 or s & (s - 1) or s > 2 ** len(self.channels):
            raise ConfigError(f"cnn output_stride {s} must be a power of two <= 2**{len(self.channels)}")
        if not self.channels or min(self.channels) < 1 or self.head_channels < 1 or self.head_layers < 0:
            raise ConfigError("cnn channels/head sizes must be positive")


class VanillaCNN(nn.Module):
    """Conv stack + per-pixel head; see the module docstring."""

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.output_stride = config.output_stride
        n_down = config.output_stride.bit_length() - 1
        layers: list[nn.Module] = []
        ch = 3
        for i, out in enumerate(config.channels):
            stride = 2 if i < n_down else 1
            layers += [nn.Conv2d(ch, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = ConvHead(ch, config.head_channels, config.head_layers)

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_output(self.head(self.features(image_B3HW)))


def build_cnn(config: CNNConfig, input_size_wh: tuple[int, int]) -> VanillaCNN:
    """Builder for the registry (the CNN works at any input size that is a multiple of its stride)."""
    del input_size_wh
    return VanillaCNN(config)


register_architecture(Architecture("cnn", CNNConfig, build_cnn, "the paper's vanilla CNN (3 -> 512 channels)"))
