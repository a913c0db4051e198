"""MobileNetV3 (Large/Small) backbone with a conv head: the paper's pretrained student.

The backbone is written from the MobileNetV3 paper (Howard et al. 2019) with the module layout of
torchvision's `mobilenet_v3_large/small` (`features.N.block.M...`, Conv2dNormActivation as Sequential(conv,
bn, act), SqueezeExcitation with fc1/fc2, BatchNorm eps 1e-3 / momentum 0.01), so a torchvision ImageNet
state_dict file the user has (`mobilenet_v3_large-*.pth` or a safetensors export) loads with
`load_backbone_weights` — torchvision itself is not needed (and not importable on CPU torch here).

The head fuses the last (stride 32) features with the stride 8 features (as LR-ASPP does) and regresses
per-pixel coordinates at stride 8 through the shared ConvHead.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kd3d_core.errors import ConfigError, ModelError
from kd3d_core.students.layers import ConvHead, split_output
from kd3d_core.students.registry import Architecture, register_architecture


class Variant(str, Enum):
    """MobileNetV3 size."""

    LARGE = "large"
    SMALL = "small"


class Bneck(NamedTuple):
    """One inverted-residual block: in, kernel, expanded, out, squeeze-excite, hard-swish, stride."""

    cin: int
    kernel: int
    expanded: int
    cout: int
    se: bool
    hs: bool
    stride: int


# Tables 1 and 2 of the MobileNetV3 paper (width multiplier 1.0).
_LARGE = [Bneck(16, 3, 16, 16, False, False, 1), Bneck(16, 3, 64, 24, False, False, 2),
          Bneck(24, 3, 72, 24, False, False, 1), Bneck(24, 5, 72, 40, True, False, 2),
          Bneck(40, 5, 120, 40, True, False, 1), Bneck(40, 5, 120, 40, True, False, 1),
          Bneck(40, 3, 240, 80, False, True, 2), Bneck(80, 3, 200, 80, False, True, 1),
          Bneck(80, 3, 184, 80, False, True, 1), Bneck(80, 3, 184, 80, False, True, 1),
          Bneck(80, 3, 480, 112, True, True, 1), Bneck(112, 3, 672, 112, True, True, 1),
          Bneck(112, 5, 672, 160, True, True, 2), Bneck(160, 5, 960, 160, True, True, 1),
          Bneck(160, 5, 960, 160, True, True, 1)]
_SMALL = [Bneck(16, 3, 16, 16, True, False, 2), Bneck(16, 3, 72, 24, False, False, 2),
          Bneck(24, 3, 88, 24, False, False, 1), Bneck(24, 5, 96, 40, True, True, 2),
          Bneck(40, 5, 240, 40, True, True, 1), Bneck(40, 5, 240, 40, True, True, 1),
          Bneck(40, 5, 120, 48, True, True, 1), Bneck(48, 5, 144, 48, True, True, 1),
          Bneck(48, 5, 288, 96, True, True, 2), Bneck(96, 5, 576, 96, True, True, 1),
          Bneck(96, 5, 576, 96, True, True, 1)]
TABLES = {Variant.LARGE: _LARGE, Variant.SMALL: _SMALL}

_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never below 90 % of `v` (the MobileNet rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.Hardswish) -> nn.Sequential:
    """Conv (no bias) + BN + optional activation, as torchvision's Conv2dNormActivation (indices 0, 1, 2)."""
    mods: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                             _BN(cout)]
    if act is not None:
        mods.append(act(inplace=True))
    return nn.Sequential(*mods)


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, fc1 (ReLU), fc2 (hard-sigmoid), scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (kxk) -> squeeze-excite -> project (1x1), residual when shapes allow."""

    def __init__(self, b: Bneck) -> None:
        super().__init__()
        act = nn.Hardswish if b.hs else nn.ReLU
        layers: list[nn.Module] = []
        if b.expanded != b.cin:
            layers.append(conv_bn_act(b.cin, b.expanded, 1, act=act))
        layers.append(conv_bn_act(b.expanded, b.expanded, b.kernel, b.stride, groups=b.expanded, act=act))
        if b.se:
            layers.append(SqueezeExcitation(b.expanded, make_divisible(b.expanded // 4)))
        layers.append(conv_bn_act(b.expanded, b.cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = b.stride == 1 and b.cin == b.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


def build_features(variant: Variant) -> nn.Sequential:
    """The torchvision-compatible `features` Sequential (stem, bnecks, last 1x1 conv)."""
    table = TABLES[variant]
    layers: list[nn.Module] = [conv_bn_act(3, 16, 3, 2)]
    layers += [InvertedResidual(b) for b in table]
    layers.append(conv_bn_act(table[-1].cout, 6 * table[-1].cout, 1))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class MobileNetV3Config:
    """Hyper-parameters of the MobileNetV3 student.

    Attributes:
        variant: large (paper's choice) or small.
        head_channels: width of the fusion layer and of the per-pixel head.
        head_layers: hidden layers of the per-pixel head.
        output_stride: fixed at 8 (the stride of the skip features).
        freeze_backbone: keep the backbone's weights and BatchNorm statistics fixed in training (paper ablation).
    """

    variant: Variant = Variant.LARGE
    head_channels: int = 256
    head_layers: int = 2
    output_stride: int = 8
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        if self.output_stride != 8:
            raise ConfigError("mobilenetv3 output_stride must be 8")
        if self.head_channels < 1 or self.head_layers < 0:
            raise ConfigError("mobilenetv3 head sizes must be positive")


class MobileNetV3Student(nn.Module):
    """Backbone `features` (torchvision names) + stride-8/stride-32 fusion + ConvHead."""

    def __init__(self, config: MobileNetV3Config) -> None:
        super().__init__()
        self.output_stride = 8
        self.freeze_backbone = config.freeze_backbone
        self.features = build_features(config.variant)
        table = TABLES[config.variant]
        stride, self.skip_index = 2, 0
        for i, b in enumerate(table, start=1):
            stride *= b.stride
            if stride == 8:
                self.skip_index = i
        skip_ch, deep_ch, hc = table[self.skip_index - 1].cout, 6 * table[-1].cout, config.head_channels
        self.deep_proj = conv_bn_act(deep_ch, hc, 1, act=nn.ReLU)
        self.skip_proj = conv_bn_act(skip_ch, hc, 1, act=nn.ReLU)
        self.head = ConvHead(hc, hc, config.head_layers)
        if self.freeze_backbone:
            self.features.requires_grad_(False)

    def train(self, mode: bool = True) -> MobileNetV3Student:
        super().train(mode)
        if self.freeze_backbone:
            self.features.eval()  # frozen means frozen BatchNorm statistics too
        return self

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image_B3HW
        skip = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self.skip_index:
                skip = x
        skip = self.skip_proj(skip)
        deep = F.interpolate(self.deep_proj(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return split_output(self.head(skip + deep))


def build_mobilenetv3(config: MobileNetV3Config, input_size_wh: tuple[int, int]) -> MobileNetV3Student:
    """Builder for the registry."""
    del input_size_wh
    return MobileNetV3Student(config)


def load_backbone_weights(net: MobileNetV3Student, path: Path | str) -> int:
    """Load torchvision ImageNet weights (`features.*` keys; `classifier.*` ignored) into the backbone.

    Accepts a torchvision `.pth` state_dict (read with `torch.load(weights_only=True)`, which refuses pickled
    code) or a `.safetensors` file. Returns the number of tensors loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"pretrained weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means "not a weights file we accept"
        raise ModelError(f"cannot read pretrained weights {path}: {err}") from err
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    own = net.features.state_dict()
    missing = sorted(set(own) - set(feats))
    bad = [k for k in own if k in feats and tuple(feats[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch at {bad[:3]}"
        raise ModelError(f"{path} is not a torchvision MobileNetV3-{_variant_of(net)} state_dict: {detail}")
    net.features.load_state_dict({k: feats[k] for k in own})
    return len(own)


def _variant_of(net: MobileNetV3Student) -> str:
    return "Large" if len(net.features) == len(_LARGE) + 2 else "Small"


register_architecture(Architecture("mobilenetv3", MobileNetV3Config, build_mobilenetv3,
                                   "MobileNetV3 backbone (torchvision-compatible weights) + conv head"))
