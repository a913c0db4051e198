"""Building blocks shared by the students: the per-pixel regression head and the output split."""
from __future__ import annotations

import torch
from torch import nn


class ConvHead(nn.Module):
    """The paper's output head, shared by every student: per-pixel fully connected layers (1x1 convolutions).

    Maps a feature map (B, C, h, w) to 4 channels: 3 normalised scene coordinates and 1 confidence logit.
    LeakyReLU between layers, as in the paper's ViT head.
    """

    def __init__(self, in_channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        ch = in_channels
        for _ in range(layers):
            mods += [nn.Conv2d(ch, hidden, 1), nn.LeakyReLU(0.1, inplace=True)]
            ch = hidden
        self.body = nn.Sequential(*mods)
        self.out = nn.Conv2d(ch, 4, 1)
        # Start with small coordinates and a neutral confidence: the net begins near the scene centre.
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, features_BChw: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(features_BChw))


def split_output(out_B4hw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output -> (points_B3hw, conf_Bhw in [0, 1])."""
    return out_B4hw[:, :3], torch.sigmoid(out_B4hw[:, 3])
