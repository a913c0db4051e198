"""The paper's Vision Transformer student (its best model).

Patch extractor (non-overlapping patches by unfolding) -> input embedding (linear projection + class token +
learned positions) -> encoder blocks -> decoder blocks (same structure: pre-LayerNorm, multi-head attention,
GELU MLP with dropout, residuals) -> tokens reshaped to a (latent, H/p, W/p) map -> convolutional head
(upsampling stages with LeakyReLU down to the output stride, then the shared per-pixel head).

Inputs whose size is not a multiple of the patch are zero-padded on the right/bottom; the output is cropped
back to (H/stride, W/stride). Positions are learned for the model's fixed input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd3d_core.errors import ConfigError
from kd3d_core.students.layers import ConvHead, split_output
from kd3d_core.students.registry import Architecture, register_architecture


@dataclass(frozen=True)
class ViTConfig:
    """Hyper-parameters (the paper's ablation grid: patch 16/32/64, blocks 4/6/8, heads 4/8, latent 64/128/256).

    Attributes:
        patch: patch size in pixels.
        blocks: number of encoder blocks.
        decoder_blocks: number of decoder blocks.
        heads: attention heads (must divide latent).
        latent: token width.
        mlp_ratio: MLP hidden width / latent.
        dropout: dropout in the MLPs and attention.
        head_channels: channels of the convolutional head.
        output_stride: one output cell per stride x stride pixels (power of two dividing the patch).
    """

    patch: int = 16
    blocks: int = 6
    decoder_blocks: int = 2
    heads: int = 4
    latent: int = 256
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    head_channels: int = 128
    output_stride: int = 8

    def __post_init__(self) -> None:
        s, p = self.output_stride, self.patch
        if p < 1 or p & (p - 1) or s < 1 or s & (s - 1) or s > p:
            raise ConfigError(f"vit patch ({p}) and output_stride ({s}) must be powers of two with stride <= patch")
        if self.latent % self.heads:
            raise ConfigError(f"vit heads ({self.heads}) must divide latent ({self.latent})")
        if self.blocks < 1 or self.decoder_blocks < 0 or not 0 <= self.dropout < 1:
            raise ConfigError("vit needs blocks >= 1, decoder_blocks >= 0 and 0 <= dropout < 1")


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv projection + scaled dot-product attention; exports to ONNX)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x_BND: torch.Tensor) -> torch.Tensor:
        b, n, d = x_BND.shape
        qkv = self.qkv(x_BND).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x_BND: torch.Tensor) -> torch.Tensor:
        x_BND = x_BND + self.attn(self.norm1(x_BND))
        return x_BND + self.mlp(self.norm2(x_BND))


class ViTStudent(nn.Module):
    """See the module docstring."""

    def __init__(self, config: ViTConfig, input_size_wh: tuple[int, int]) -> None:
        super().__init__()
        self.output_stride = config.output_stride
        self.patch = p = config.patch
        w, h = input_size_wh
        self.grid_hw = (-(-h // p), -(-w // p))
        self.out_hw = (h // config.output_stride, w // config.output_stride)
        self.pad_hw = (self.grid_hw[0] * p - h, self.grid_hw[1] * p - w)
        d = config.latent
        self.embed = nn.Linear(3 * p * p, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid_hw[0] * self.grid_hw[1], d) * 0.02)
        blk = (d, config.heads, config.mlp_ratio, config.dropout)
        self.encoder = nn.ModuleList([TransformerBlock(*blk) for _ in range(config.blocks)])
        self.decoder = nn.ModuleList([TransformerBlock(*blk) for _ in range(config.decoder_blocks)])
        self.norm = nn.LayerNorm(d)
        ups: list[nn.Module] = []
        ch = d
        for _ in range(p.bit_length() - config.output_stride.bit_length()):
            ups += [nn.ConvTranspose2d(ch, config.head_channels, 2, 2), nn.LeakyReLU(0.1, inplace=True),
                    nn.Conv2d(config.head_channels, config.head_channels, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True)]
            ch = config.head_channels
        self.upsample = nn.Sequential(*ups)
        self.head = ConvHead(ch, config.head_channels, 2)

    def patches(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """Patch extractor: (B, N, 3*p*p) non-overlapping patches in row-major order."""
        if self.pad_hw != (0, 0):
            image_B3HW = F.pad(image_B3HW, (0, self.pad_hw[1], 0, self.pad_hw[0]))
        return F.unfold(image_B3HW, self.patch, stride=self.patch).transpose(1, 2)

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.embed(self.patches(image_B3HW))
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos
        for block in self.encoder:
            x = block(x)
        for block in self.decoder:
            x = block(x)
        x = self.norm(x)[:, 1:]
        fmap = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.grid_hw[0], self.grid_hw[1])
        out = self.head(self.upsample(fmap))[:, :, :self.out_hw[0], :self.out_hw[1]]
        return split_output(out)


def build_vit(config: ViTConfig, input_size_wh: tuple[int, int]) -> ViTStudent:
    """Builder for the registry (positions depend on the input size)."""
    return ViTStudent(config, input_size_wh)


register_architecture(Architecture("vit", ViTConfig, build_vit,
                                   "the paper's Vision Transformer (encoder/decoder blocks + conv head)"))
