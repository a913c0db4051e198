"""The "fast" student: a frozen, scene-agnostic encoder plus a scene-specific head (a feature memory by default).

Why this split (after ACE, Brachmann et al. 2023): training a whole network per scene is far too slow on a CPU;
encoding every mapping view once with a fixed encoder and storing (or regressing from) its per-cell features
takes seconds. The encoder is *untrained*: He-initialised from a fixed seed and rounded to float16 (the encoders
we pretrained on procedural rooms retrieved worse, see kd3d_core/assets/README.md); what makes its features
survive light changes is the local contrast normalisation of its input (InputNorm.LCN), which cancels exposure,
white balance and dimmed lights before the first convolution. Only the head is built per scene
(kd3d_core/training/fast.py). The model file holds both, so it is self-contained.

Module contract (kd3d_core/students/registry.py): normalised RGB B3HW (H, W multiples of 8) ->
(normalised points B3hw, confidence Bhw in [0, 1]), h = H / 8, w = W / 8. Output cell (i, j) stands for
input pixel (8 j + 4, 8 i + 4); the stem's padding is chosen so the receptive field is centred exactly there
(the last stride-2 convolution pads right/bottom only), so labels sampled at that pixel and the 2D points
given to PnP agree without a half-cell bias.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kd3d_core.errors import ConfigError
from kd3d_core.students.registry import Architecture, register_architecture
from kd3d_core.threads import usable_cores

OUTPUT_STRIDE = 8


def _exporting() -> bool:
    """True while torch.jit traces or torch.onnx exports: what runs must then be the PyTorch ops."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class InputNorm(str, Enum):
    """What the encoder does to the (ImageNet-normalised) image before its first convolution.

    LCN: local contrast normalisation per channel over a square window: (x - local mean) / local std. It cancels
    any per-channel gain and offset that is constant over the window (exposure, auto-exposure, white balance,
    dimmed lights, and locally also gamma), so a memory of mapping features still matches when the light changes.
    NONE: raw pixels (the first fast student; measured 0 % of frames localized after dimming the lights by 0.55).
    """

    NONE = "none"
    LCN = "lcn"


class HeadKind(str, Enum):
    """The scene-specific part of the fast student.

    KNN: the mapping cells' (projected) features and label points are stored; a cell's scene coordinate is the
    label of the most similar stored feature (cosine). Mapping is just the buffer fill (seconds); measured far
    more accurate than the MLP within a CPU budget (see bench/fast_mapping.py).
    MLP: ACE's regression head, trained on the buffer.
    """

    KNN = "knn"
    MLP = "mlp"


@dataclass(frozen=True)
class FastConfig:
    """Hyper-parameters of the fast student (stored in the model file).

    Attributes:
        stem_channels: channels of the three stride-2 convolutions (stride 8 in total).
        block_dilations: one residual block (two 3x3 convolutions) per entry, with this dilation; dilation
            widens the receptive field (context disambiguates repeated texture) at no extra cost. None since the
            second 2026-11-30 change (the stem alone: conv3's features go to the 1x1 output layer), one block
            (dilation 2) before it, four (1, 2, 4, 1) before that. Measured with the default Relocalizer on the
            three bench rooms (14 variants x 30 frames each), encoder seeds 0 and 1, within 5 cm / 5 deg .
            2 cm / 2 deg: office no block 99.5-99.8 . 94.5-96.4 %, one block 99.5-99.8 . 92.4-93.1 %, four
            blocks 99.0-99.3 . 93.3-93.6 %; living 97.6-98.6 . 94.0-96.0 %, 98.6-99.8 . 94.3-95.0 %,
            96.9-98.3 . 89.3-93.6 %; low-texture 63.6-64.8 . 58.1-59.0 %, 65.7-66.2 . 56.9-58.1 %,
            60.7-64.5 . 46.2-47.6 %; wrong poses 1 and 0, 2 and 0, 0 and 3. No block missed 99 % (5 cm) or
            90 % (2 cm) on 4 and 7 of the 28 textured rows, one block on 7 and 8 (these with USAC_DEFAULT and the
            torch search). With the NumPy search and usac_light, frames of 2 x 1260 within 5 cm / 5 deg .
            2 cm / 2 deg: no block 2190 . 2080 with 4 wrong, one block 2213 . 2044 with 3 wrong; one block of a
            single convolution 2194 . 2028 with 5 wrong, one depthwise-separable block 2150 . 1915 with 8. The
            convolutions (ONNX Runtime, one thread, 320x240, side by side) take 6.8 ms with no block, 15.1 ms
            with one (0.45x), 40.9 with four. 64 or 96 channels instead of 128 lost 1-7 points on the living room.
        feature_dim: encoder output channels (what the head sees; what the mapping buffer stores).
        head_width: hidden channels of the head MLP.
        head_blocks: residual blocks (two layers each) of the head.
        homogeneous: the head predicts homogeneous coordinates (x, y, z, w) as ACE does, which keeps far
            points well conditioned; otherwise a plain 3D offset.
        head: KNN (feature memory) or MLP (regression head); see HeadKind.
        knn_size: at most this many mapping cells in the KNN head, spread evenly over the scene
            (fast_buffer.balanced_choice; the trainer writes the actual count). The default keeps the model
            file under 10 MB (22 bytes a cell with knn_pq 16, plus the 0.8 MB float16 encoder) and nearly every
            cell of 300 views at 320x240 (355k); a uniform random 150k of them lost 13 points of recall at
            5 cm / 5 deg after halving the exposure (office room).
        knn_dim: dimension the KNN head projects features to (PCA of the standardised mapping features). 48 and 32
            measured side by side with 64 (bench/results-2026-12-01-cpu2-robustness-v20.md, the ablations
            fast-dim-48 and fast-dim-32; three rooms x 14 variants x 30 frames): 1140 . 1065 and 1126 . 1075 of
            1260 frames within 5 cm / 5 deg . 2 cm / 2 deg against 1132 . 1068, no wrong pose; 32 lost 3 frames
            of the living room at gain x1.6. Localize time on the office at 640x480 (alternating, one thread):
            0.98x and 0.89x. Within what encoder seeds move; 64 stays.
        knn_lists: inverted-file lists (k-means clusters of the keys) of the KNN head.
        knn_probe: lists searched per cell; 0 = exhaustive search (exact, slower, traceable for export).
        knn_pq: 0 stores keys as int8 per dimension (knn_dim bytes a cell); m > 0 stores them product-quantised:
            m one-byte codes a cell, each the nearest of 256 centroids of a knn_dim / m slice.
        input_norm: what the encoder does to the image first (see InputNorm).
        lcn_window, lcn_eps: window (pixels of the network input) and variance floor of LCN (in ImageNet-normalised
            units: 0.05 is a local standard deviation of ~3 grey levels, 0.025 of ~1.4). Measured side by side (300
            mapping / 60 query frames at 640x480, 5 cm / 5 deg): the low-texture room's clean queries 93 % at 0.1 ->
            100 % at 0.05 (2 cm / 2 deg 70 -> 88 %); the office within two frames of 60 on every row (clean, gain
            x0.5 / x1.6, dimmed lights, noise, JPEG q25, motion blur; 5 cm / 5 deg identical). 0.03 was as good on
            the low-texture room but lost a frame on the office's gain x1.6 and JPEG rows. The robustness bench,
            both floors in one run (bench/results-2026-11-30-cpu2-robustness-eps.md, 14 variants): low-texture room
            42.8 -> 55.7 % mean within 5 cm / 5 deg and 22 -> 4 wrong fixes, office 98.1 -> 98.6 %, living 93.6 ->
            92.6 %; at 2 cm / 2 deg the office lost 3 points (83.6 -> 80.5 %). 0.025 since 2026-12-01, once the
            relocalizer had its guided search and the confirmation of weak poses: the bench rooms (14 variants x 30
            frames, the default relocalizer), encoder seeds 0 and 1, frames within 5 cm / 5 deg of 1260 at 0.05 /
            0.025 / 0.015 / 0.008: 1107 / 1118 / 1129 / 1129 and 1117 / 1134 / 1139 / 1150; within 2 cm / 2 deg 1046
            / 1064 / 1073 / 1062 and 1072 / 1086 / 1080 / 1109; wrong poses 1 / 0 / 0 / 1 and none. The gain is the
            low-texture room's dim and over-exposed rows (0.05 -> 0.025, seeds 0 and 1: gain x0.5 20 -> 33 and 27 ->
            33 %, gain x1.6 13 -> 23 and 20 -> 37 %, dimmed lights 13 -> 23 and 7 -> 43 %), where its faint texture
            fell under the floor; the textured rooms moved by a frame a row either way. 0.015 gained a little more
            there but, built once more for the robustness bench, gave three poses 10-11 cm off (-robustness-v16.md),
            and a guided pose 19 cm off on the tiny test room (test_guided); 0.008 gave seed 0 a wrong pose in the
            office.
        lcn_blur: smooth the image with a 5-tap binomial filter before LCN. LCN divides by the local contrast, so
            in flat regions sensor noise and JPEG artefacts are what it amplifies; measured on the office room
            (30 query frames at 320x240): Gaussian noise sigma 8 47 % -> 100 % within 5 cm / 5 deg, JPEG q25
            87 % -> 100 %, gain x1.6 80 % -> 93 %, clean 2 cm / 2 deg 93 % -> 97 %.
        lcn_relative: the variance floor is lcn_eps times each channel's standard deviation over the whole image
            instead of lcn_eps itself, so the floor follows the frame's own contrast (a dim or low-texture frame
            keeps its faint texture; any global gain cancels exactly, floor included). Measured no gain where it
            was meant to help: the low-texture room at gain x0.5 localized 3-7 % of frames with either floor
            (8-bit quantisation and clipping, not the floor, erase that room's faint texture).
    """

    stem_channels: tuple[int, ...] = (32, 64, 128)
    block_dilations: tuple[int, ...] = ()
    feature_dim: int = 256
    head_width: int = 256
    head_blocks: int = 2
    homogeneous: bool = True
    head: HeadKind = HeadKind.KNN
    knn_size: int = 300_000
    knn_dim: int = 64
    knn_lists: int = 512
    knn_probe: int = 8
    knn_pq: int = 16
    input_norm: InputNorm = InputNorm.LCN
    lcn_window: int = 15
    lcn_eps: float = 0.025
    lcn_blur: bool = True
    lcn_relative: bool = False

    # What model files written before an option existed meant by it (registry.config_from_dict).
    ADDED_LATER: ClassVar[dict] = {"lcn_relative": False}

    def __post_init__(self) -> None:
        for name, kind in (("head", HeadKind), ("input_norm", InputNorm)):
            if not isinstance(getattr(self, name), kind):
                try:
                    object.__setattr__(self, name, kind(getattr(self, name)))
                except ValueError as err:
                    raise ConfigError(f"fast {name} must be one of {[k.value for k in kind]}") from err
        if self.knn_pq < 0 or (self.knn_pq and self.knn_dim % self.knn_pq):
            raise ConfigError(f"fast knn_pq must be 0 (int8 keys) or divide knn_dim ({self.knn_dim}), "
                              f"got {self.knn_pq}")
        if self.lcn_window < 3 or self.lcn_window % 2 == 0 or not self.lcn_eps > 0:
            raise ConfigError(f"fast lcn_window must be odd and >= 3 and lcn_eps > 0, got {self.lcn_window}, "
                              f"{self.lcn_eps}")
        if self.knn_lists < 1 or self.knn_probe < 0:
            raise ConfigError("fast knn_lists must be >= 1 and knn_probe >= 0")
        if self.knn_size < 1 or not 1 <= self.knn_dim <= self.feature_dim:
            raise ConfigError(f"fast knn_size must be >= 1 and 1 <= knn_dim <= feature_dim ({self.feature_dim})")
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
        self.lcn_window = config.lcn_window if config.input_norm is InputNorm.LCN else 0
        self.lcn_eps = config.lcn_eps
        self.lcn_relative = config.lcn_relative
        self._counts: dict[tuple, torch.Tensor] = {}
        self.lcn_blur = config.lcn_blur and bool(self.lcn_window)
        taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # fixed, not weights: kept out of the state dict
        self.register_buffer("blur_x", taps.view(1, 1, 1, 5).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("blur_y", taps.view(1, 1, 5, 1).repeat(3, 1, 1, 1), persistent=False)
        c1, c2, c3 = config.stem_channels
        self.conv1 = nn.Conv2d(3, c1, 3, 2, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 2, 1)
        # Padding (0, 2) instead of (1, 1): shifts the receptive-field centre of cell j from 8 j to 8 j + 4.
        self.conv3 = nn.Conv2d(c2, c3, 3, 2, 0)
        self.blocks = nn.Sequential(*[_ResBlock(c3, d) for d in config.block_dilations])
        self.out = nn.Conv2d(c3, config.feature_dim, 1)
        # What runs `trunk` at inference when not None (kd3d_core.students.ort_trunk.OrtTrunk on a CPU; set by
        # SceneModel); tracing and exports always use the PyTorch modules.
        self.trunk_runner: Callable[[torch.Tensor], torch.Tensor] | None = None
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
        # float16 values, as model files store the frozen encoder: what runs is exactly what is saved.
        for p in self.parameters():
            p.data.copy_(p.data.half().float())
        # NHWC convolutions are ~30 % faster on CPUs (oneDNN); loading weights keeps this layout (copy_).
        self.to(memory_format=torch.channels_last)

    def _box_counts(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """LCN's per-pixel box sizes for this input size, computed once per size (a few % of the LCN time)."""
        key = (tuple(image_B3HW.shape[-2:]), image_B3HW.device, image_B3HW.dtype)
        if _exporting():
            return box_counts(key[0], self.lcn_window, key[1], key[2])
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = box_counts(key[0], self.lcn_window, key[1], key[2])
        return counts

    def forward(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """Features B x feature_dim x H/8 x W/8."""
        x = self.normalise(image_B3HW)
        runner = self.trunk_runner
        if runner is not None and not _exporting():
            return runner(x)
        return self.trunk(x)

    def normalise(self, image_B3HW: torch.Tensor) -> torch.Tensor:
        """The input normalisation (blur, LCN) before the convolutions.

        On a CPU outside tracing/export and autograd, OpenCV's filters compute it (normalise_cv); elsewhere the
        PyTorch ops below, which are what exports record. Both agree within ~2e-4 of a float64 reference.
        """
        if ((self.lcn_window or self.lcn_blur) and image_B3HW.device.type == "cpu"
                and image_B3HW.dtype == torch.float32 and not (image_B3HW.requires_grad and torch.is_grad_enabled())
                and not _exporting()):
            return normalise_cv(image_B3HW, self.lcn_blur, self.lcn_window, self.lcn_eps, self.lcn_relative,
                                self._box_counts(image_B3HW) if self.lcn_window else None)
        if self.lcn_blur:
            image_B3HW = _separable(image_B3HW, self.blur_x, self.blur_y)
        if self.lcn_window:
            eps = self.lcn_eps
            if self.lcn_relative:
                eps = self.lcn_eps * image_B3HW.std(dim=(2, 3), keepdim=True).clamp(min=1e-3)
            image_B3HW = local_contrast_normalise(image_B3HW, self.lcn_window, eps, self._box_counts(image_B3HW))
        return image_B3HW

    def trunk(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """The convolutions: normalised image -> features (PyTorch; `trunk_runner` may run them elsewhere)."""
        # channels-last here, not in normalise: ONNX Runtime takes the plain layout, so it would be a second copy there
        x = x_B3HW.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.relu(self.conv3(F.pad(x, (0, 2, 0, 2))))
        return self.out(F.relu(self.blocks(x)))


_BLUR_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def normalise_cv(x_BCHW: torch.Tensor, blur: bool, window: int, eps: float, relative: bool,
                 counts_HW: torch.Tensor | None) -> torch.Tensor:
    """FastEncoder.normalise on a CPU with OpenCV's filters, plane by plane (float32, any batch).

    The same maths as binomial_blur + local_contrast_normalise (edges replicated for the blur, zeros outside the
    image for the box sums), measured 0.15-0.31x the time of the PyTorch ops on a 320x240 frame (one thread,
    2.4-2.5 ms against 7.8 ms on a quiet machine and 17 ms on a loaded one), and closer to a float64 reference
    (2e-4 against 1.5e-3: OpenCV's box filter does not accumulate a running sum over the whole row as the
    float32 cumsum did).
    """
    x = x_BCHW.detach().contiguous()
    out = torch.empty_like(x)
    src, dst = x.numpy(), out.numpy()
    counts = counts_HW.numpy() if counts_HW is not None else None
    size = (window, window)
    for b in range(src.shape[0]):
        for c in range(src.shape[1]):
            plane = src[b, c]
            if blur:
                plane = cv2.sepFilter2D(plane, -1, _BLUR_TAPS, _BLUR_TAPS, borderType=cv2.BORDER_REPLICATE)
            if not window:
                dst[b, c] = plane
                continue
            e = eps * max(float(plane.std(ddof=1)), 1e-3) if relative else eps
            mean = cv2.boxFilter(plane, -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT) / counts
            mean_sq = cv2.boxFilter(plane * plane, -1, size, normalize=False, borderType=cv2.BORDER_CONSTANT) / counts
            var = np.maximum(mean_sq - mean * mean, 0.0)
            np.divide(plane - mean, np.sqrt(var + np.float32(e * e)), out=dst[b, c])
    return out


def local_contrast_normalise(x_BCHW: torch.Tensor, window: int, eps: float | torch.Tensor,
                             counts_HW: torch.Tensor | None = None) -> torch.Tensor:
    """(x - local mean) / sqrt(local variance + eps^2) per channel over a window x window box (at the border: the
    part of the box inside the image). eps (in the input's units; a number or a B x C x 1 x 1 tensor) keeps flat,
    noisy regions from being blown up. counts_HW: the pixels inside each box (box_counts), when the caller keeps
    them for its input size."""
    both = torch.cat([x_BCHW, x_BCHW * x_BCHW], dim=1)
    if counts_HW is None:
        counts_HW = box_counts(x_BCHW.shape[-2:], window, x_BCHW.device, x_BCHW.dtype)
    mean, mean_sq = (box_sum(both, window) / counts_HW).chunk(2, dim=1)
    var = (mean_sq - mean * mean).clamp(min=0.0)
    return (x_BCHW - mean) / torch.sqrt(var + eps * eps)


def box_counts(size_hw: tuple[int, int] | torch.Size, window: int, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """How many pixels of an image of size_hw each window x window box covers (fewer at the border)."""
    return box_sum(torch.ones(1, 1, *size_hw, device=device, dtype=dtype), window)[0, 0]


def binomial_blur(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial smoothing (1 4 6 4 1) / 16 per channel, edges replicated (sigma ~1 pixel)."""
    c = x_BCHW.shape[1]
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x_BCHW.dtype, device=x_BCHW.device) / 16.0
    return _separable(x_BCHW, taps.view(1, 1, 1, 5).repeat(c, 1, 1, 1), taps.view(1, 1, 5, 1).repeat(c, 1, 1, 1))


def _separable(x_BCHW: torch.Tensor, kx_C11K: torch.Tensor, ky_C1K1: torch.Tensor) -> torch.Tensor:
    p = kx_C11K.shape[-1] // 2
    x = F.conv2d(F.pad(x_BCHW, (p, p, 0, 0), mode="replicate"), kx_C11K, groups=x_BCHW.shape[1])
    return F.conv2d(F.pad(x, (0, 0, p, p), mode="replicate"), ky_C1K1, groups=x_BCHW.shape[1])


def box_sum(x_BCHW: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over a window x window box around every pixel (zeros outside the image), by running sums: O(1) per
    pixel whatever the window (a stride-1 average pool costs O(window) and was ~10x slower on a CPU)."""
    p = window // 2
    # float64 running sums: in float32 they lost ~1e-3 of LCN's output over a 320-pixel row (OpenCV's box filter,
    # the CPU path, does not), so exports would disagree with in-process predictions by that much
    c = F.pad(x_BCHW.double(), (p + 1, p)).cumsum(-1)
    rows = c[..., window:] - c[..., :-window]
    c = F.pad(rows, (0, 0, p + 1, p)).cumsum(-2)
    return (c[..., window:, :] - c[..., :-window, :]).to(x_BCHW.dtype)


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


class KnnHead(nn.Module):
    """Feature memory: standardise + project (folded into one affine map), L2-normalise, nearest stored cell.

    Buffers (filled by the trainer through `store`): proj (C, d) and shift (d,) so that z = f @ proj - shift;
    keys (N, d) unit rows quantised to int8 with a per-dimension scale (key_scale), sorted by inverted-file list;
    points (N, 3) scene coordinates quantised to int16 over their bounding box (point_scale, point_offset; 0.1 mm
    steps in a 6 m room); centroids (K, d) and offsets (K + 1,) of the inverted file (k-means lists). Keys and
    points are expanded to float32 once, at the first lookup (the file stays small; searching stays fast). With
    knn_probe > 0 a cell is compared only with the keys of its knn_probe most similar lists (about K / knn_probe
    times less work than exhaustive search); 0 searches all keys. Confidence is the cosine similarity mapped to
    [0, 1].
    """

    def __init__(self, config: FastConfig, chunk: int = 4096) -> None:
        super().__init__()
        self.chunk = chunk
        self.probe = config.knn_probe
        self.register_buffer("proj", torch.zeros(config.feature_dim, config.knn_dim))
        self.register_buffer("shift", torch.zeros(config.knn_dim))
        if config.knn_pq:
            self.register_buffer("keys", torch.zeros(config.knn_size, config.knn_pq, dtype=torch.uint8))
            self.register_buffer("codebooks", torch.zeros(config.knn_pq, 256, config.knn_dim // config.knn_pq))
        else:
            self.register_buffer("keys", torch.zeros(config.knn_size, config.knn_dim, dtype=torch.int8))
            self.register_buffer("key_scale", torch.ones(config.knn_dim))
        self.register_buffer("points", torch.zeros(config.knn_size, 3, dtype=torch.int16))
        self.register_buffer("point_scale", torch.ones(3))
        self.register_buffer("point_offset", torch.zeros(3))
        self.register_buffer("centroids", torch.zeros(config.knn_lists, config.knn_dim))
        self.register_buffer("offsets", torch.zeros(config.knn_lists + 1, dtype=torch.long))
        self._cache: dict[str, tuple] = {}
        self.last_query: torch.Tensor | None = None
        self.share_scan = True  # see _share
        self.numpy_scan = True  # on a CPU, the list scan runs on NumPy (see _inverted); False: on torch

    @torch.no_grad()
    def store(self, keys_Nd: torch.Tensor, points_N3: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Quantise and store unit keys and their scene coordinates (rows already in inverted-file order)."""
        if hasattr(self, "codebooks"):
            books, codes = product_quantise(keys_Nd, self.codebooks.shape[0], generator)
            self.codebooks.copy_(books)
            self.keys.copy_(codes)
        else:
            scale = keys_Nd.abs().amax(dim=0).clamp(min=1e-8) / 127.0
            self.keys.copy_(torch.round(keys_Nd / scale).clamp(-127, 127).to(torch.int8))
            self.key_scale.copy_(scale)
        lo, hi = points_N3.amin(dim=0), points_N3.amax(dim=0)
        p_scale = (hi - lo).clamp(min=1e-6) / 65534.0
        self.points.copy_((torch.round((points_N3 - lo) / p_scale) - 32767).clamp(-32767, 32767).to(torch.int16))
        self.point_scale.copy_(p_scale)
        self.point_offset.copy_(lo + 32767 * p_scale)
        self._cache.clear()

    def _expanded(self, name: str) -> torch.Tensor:
        """float32 keys or points, expanded once per change of the stored buffers (export: in the graph)."""
        raw = getattr(self, name)
        if _exporting():
            return self._decode(name)
        stamp = (raw.data_ptr(), raw._version, raw.device, raw.shape)
        cached = self._cache.get(name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._decode(name))
            self._cache[name] = cached
        return cached[1]

    def _decode(self, name: str) -> torch.Tensor:
        if name == "points":
            return self.points.float() * self.point_scale + self.point_offset
        if not hasattr(self, "codebooks"):
            return self.keys.float() * self.key_scale
        m = self.codebooks.shape[0]
        parts = self.codebooks[torch.arange(m, device=self.keys.device)[None, :], self.keys.long()]  # (N, m, d/m)
        return F.normalize(parts.reshape(self.keys.shape[0], -1), dim=-1)

    def _float_keys(self) -> torch.Tensor:
        return self._expanded("keys")

    def _exhaustive(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best_sim = torch.full((z.shape[0],), -2.0, device=z.device)
        best_idx = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        keys = self._float_keys()
        for a in range(0, keys.shape[0], self.chunk):
            sim, idx = (z @ keys[a:a + self.chunk].T).max(dim=1)
            better = sim.float() > best_sim
            best_sim = torch.where(better, sim.float(), best_sim)
            best_idx = torch.where(better, idx + a, best_idx)
        return best_sim, best_idx

    def _inverted(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, probe = z.shape[0], min(self.probe, self.centroids.shape[0])
        key_lists = self._key_lists()
        # The per-list loop is the hot path (~K iterations per frame), so it does one product and one max;
        # merging the probes per cell is vectorised (_best_of_probes).
        lists_NP, lists, order, z_pairs, ends = self._probe_pairs(z, probe)
        sim_P = torch.full((n * probe,), -2.0, device=z.device)
        idx_P = torch.zeros(n * probe, dtype=torch.long, device=z.device)

        if self._on_numpy(z):
            # NumPy: its argmax is ~10x faster than torch.max's over these small products, and a NumPy call costs
            # less than a torch op. Measured side by side (bench/side_by_side.py --compare scan: office, 20 queries
            # at 640x480, one thread): the scan alone 0.53x; with the NumPy list choice (_probe_pairs) predict
            # 0.68-0.79x and localize 0.71-0.82x. Chosen keys differ in 0.004-0.3 % of the cells (near-ties
            # and exact ties of stored keys, which the two libraries break differently).
            z_np, sim_np, idx_np = z_pairs.numpy(), sim_P.numpy(), idx_P.numpy()
            key_np = self._key_lists(numpy=True)
            rows = np.arange(max(np.diff(ends, prepend=0).max(initial=0), 1))

            def best(c: int, start: int, end: int) -> None:
                sim = z_np[start:end] @ key_np[c]
                pick = sim.argmax(1)
                idx_np[start:end] = pick
                sim_np[start:end] = sim[rows[:end - start], pick]
        else:
            def best(c: int, start: int, end: int) -> None:
                # max(out=) writes into the pairs' slots (no temporary, no copy: fewer ops in a loop run ~K times)
                torch.max(z_pairs[start:end] @ key_lists[c], 1, out=(sim_P[start:end], idx_P[start:end]))

        self._share(best, ends, key_lists)
        idx_P += self.offsets[lists[order]]
        return _best_of_probes(sim_P, idx_P, order, lists_NP)

    def _share(self, body: Callable[[int, int, int], None], ends: list[int],
               key_lists: list[torch.Tensor | None]) -> None:
        """Call body(c, start, end) for every list c that has keys and probing pairs (pairs start:end, grouped by
        list as _probe_pairs orders them), in chunks of SCAN_CHUNK lists; with one torch thread (kd3d's default)
        and a second usable core, a helper thread takes chunks too.

        The scan's products are too small for torch's own threads, so with one torch thread the second core sat
        idle. Chunks are handed out one at a time, so a helper the OS delays (another process on that core) only
        costs the chunk it holds. Measured (predict on 640x480 queries, one process, alternating, identical
        outputs): two office models (300 and 200 mapping views) idle 139 -> 120 ms (0.86x) and 95 -> 87 ms
        (0.92x); with one core kept busy 0.99x and 0.96x. With more torch threads each Python thread would start
        its own OpenMP team (measured slower), so the scan then stays on the calling thread.
        """
        lists = len(ends)
        chunks = iter(range(0, lists, SCAN_CHUNK))  # next() on it is atomic (GIL): each chunk is taken once

        def work() -> None:
            for c0 in chunks:
                start = ends[c0 - 1] if c0 else 0
                for c in range(c0, min(c0 + SCAN_CHUNK, lists)):
                    if ends[c] > start and key_lists[c] is not None:
                        body(c, start, ends[c])
                    start = ends[c]

        helper = _scan_helper() if self.share_scan and torch.get_num_threads() == 1 else None
        if helper is None:
            work()
            return
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def helped() -> None:  # grad and inference modes are per thread
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                work()

        future = helper.submit(helped)
        work()
        future.result()

    def _on_numpy(self, z: torch.Tensor) -> bool:
        """Does the search of these query rows run on NumPy (numpy_scan, a CPU tensor, no autograd)?"""
        return self.numpy_scan and z.device.type == "cpu" and not z.requires_grad

    def _probe_pairs(self, z: torch.Tensor, probe: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor, list[int]]:
        """Each row's `probe` most similar lists, as (row, list) pairs grouped by list: each list's queries are then
        one contiguous slice (a view). Returns the lists per row (N, probe), the pairs' lists, the grouping order,
        the pairs' query rows in that order and each list's end in it."""
        if self._on_numpy(z) and probe <= 16:
            # `probe` rounds of NumPy's argmax: ~2x faster than torch.topk here (both pick the same lists)
            sims = z.numpy() @ self.centroids.numpy().T
            picked, rows = np.empty((z.shape[0], probe), np.int64), np.arange(z.shape[0])
            for j in range(probe):
                picked[:, j] = sims.argmax(1)
                sims[rows, picked[:, j]] = -np.inf
            lists_NP = torch.from_numpy(picked)
        else:
            lists_NP = (z @ self.centroids.T).topk(probe, dim=1).indices
        lists = lists_NP.reshape(-1)
        order = torch.argsort(lists)
        z_pairs = z[torch.arange(z.shape[0], device=z.device).repeat_interleave(probe)[order]]
        ends = torch.bincount(lists, minlength=self.centroids.shape[0]).cumsum(0).tolist()
        return lists_NP, lists, order, z_pairs, ends

    def _key_lists(self, numpy: bool = False) -> list:
        """Per inverted-file list, its float keys transposed into one contiguous (d, size) block (None for an empty
        list), decoded once per change of the stored buffers; numpy=True: the same memory as NumPy arrays (CPU
        only). Contiguous blocks made the frame's list scan ~20 % faster than transposed views of one key matrix
        (small matrix products on a CPU)."""
        stamp = (self.keys.data_ptr(), self.keys._version, self.offsets._version, self.keys.device)
        cached = self._cache.get("key_lists")
        if cached is None or cached[0] != stamp:
            keys, offsets = self._decode("keys"), self.offsets.tolist()
            lists = [keys[a:b].T.contiguous() if b > a else None for a, b in zip(offsets[:-1], offsets[1:])]
            as_numpy = [None if k is None else k.numpy() for k in lists] if keys.device.type == "cpu" else None
            cached = self._cache["key_lists"] = (stamp, lists, as_numpy)
        return cached[2] if numpy else cached[1]

    def lookup(self, features_NC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points (N, 3) and cosine similarity (N,) of the nearest stored cell."""
        z = F.normalize(features_NC.float() @ self.proj - self.shift, dim=-1)
        # Export (tracing) records one fixed graph: only the exhaustive search traces correctly.
        exporting = _exporting()
        if not exporting:
            self.last_query = z  # for `candidates` (the relocalizer's guided second chance on the same frame)
        sim, idx = self._inverted(z) if self.probe > 0 and not exporting else self._exhaustive(z)
        return self._expanded("points")[idx], sim

    @torch.no_grad()
    def candidates(self, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar stored cells of each query row among its probed lists (all lists with
        knn_probe 0): normalised points (N, k, 3) and cosine similarities (N, k), best first; slots beyond the
        probed keys have similarity -2."""
        n, lists_k = z.shape[0], self.centroids.shape[0]
        probe = min(self.probe, lists_k) if self.probe > 0 else lists_k
        key_lists = self._key_lists()
        lists_NP, lists, order, z_pairs, ends = self._probe_pairs(z, probe)
        sim_Pk = torch.full((n * probe, k), -2.0, device=z.device)
        idx_Pk = torch.zeros(n * probe, k, dtype=torch.long, device=z.device)

        def top(c: int, start: int, end: int) -> None:
            kk = min(k, key_lists[c].shape[1])
            torch.topk(z_pairs[start:end] @ key_lists[c], kk, dim=1,
                       out=(sim_Pk[start:end, :kk], idx_Pk[start:end, :kk]))

        self._share(top, ends, key_lists)
        idx_Pk += self.offsets[lists[order]][:, None]
        sim_N = torch.empty_like(sim_Pk).index_copy_(0, order, sim_Pk).reshape(n, probe * k)
        idx_N = torch.empty_like(idx_Pk).index_copy_(0, order, idx_Pk).reshape(n, probe * k)
        sim_Nk, pick = sim_N.topk(min(k, probe * k), dim=1)
        return self._expanded("points")[idx_N.gather(1, pick)], sim_Nk

    def forward(self, features_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points B3hw and confidence Bhw in [0, 1]."""
        B, C, h, w = features_BChw.shape
        points_N3, sim_N = self.lookup(features_BChw.permute(0, 2, 3, 1).reshape(-1, C))
        conf = ((sim_N + 1) / 2).clamp(0, 1)
        return points_N3.reshape(B, h, w, 3).permute(0, 3, 1, 2), conf.reshape(B, h, w)


# Inverted-file lists per work item of the list scan (KnnHead._share).
SCAN_CHUNK = 16
_HELPER: tuple[int, ThreadPoolExecutor | None] | None = None


def _scan_helper() -> ThreadPoolExecutor | None:
    """One helper thread for the list scan (decided and created on first use, again after a fork: a forked
    child has the pool but not its thread); None with one usable core."""
    global _HELPER
    if _HELPER is None or _HELPER[0] != os.getpid():
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kd3d_knn_scan") if usable_cores() >= 2 else None
        _HELPER = (os.getpid(), pool)
    return _HELPER[1]


def _best_of_probes(sim_P: torch.Tensor, idx_P: torch.Tensor, order: torch.Tensor,
                    lists_NP: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cell, the best of its probed lists' matches (pairs given in `order`, grouped by list).

    Ties go to the lowest list id and NaN never wins, exactly as a scan over the lists in id order would pick.
    """
    n, probe = lists_NP.shape
    sim_NP = torch.empty_like(sim_P).index_copy_(0, order, sim_P).reshape(n, probe)
    idx_NP = torch.empty_like(idx_P).index_copy_(0, order, idx_P).reshape(n, probe)
    by_list = lists_NP.argsort(dim=1)
    sim_NP, idx_NP = sim_NP.gather(1, by_list), idx_NP.gather(1, by_list)
    best_sim = torch.full((n,), -2.0, device=sim_P.device)
    best_idx = torch.zeros(n, dtype=torch.long, device=sim_P.device)
    for j in range(probe):
        better = sim_NP[:, j] > best_sim
        best_sim = torch.where(better, sim_NP[:, j], best_sim)
        best_idx = torch.where(better, idx_NP[:, j], best_idx)
    return best_sim, best_idx


@torch.no_grad()
def product_quantise(keys_Nd: torch.Tensor, m: int, generator: torch.Generator | None = None,
                     iterations: int = 10, sample: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Product quantisation: codebooks (m, 256, d/m) by k-means per slice, and one uint8 code per slice and row."""
    n, d = keys_Nd.shape
    sub = keys_Nd.reshape(n, m, d // m)
    rows = torch.randperm(n, generator=generator)[:sample]
    books = torch.empty(m, 256, d // m)
    codes = torch.empty(n, m, dtype=torch.uint8)
    for j in range(m):
        x = sub[rows, j].float()
        c = x[torch.randint(0, len(x), (256,), generator=generator)].clone()
        for _ in range(iterations):
            assign = _nearest(x, c)
            sums = torch.zeros_like(c).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=256)
            filled = counts > 0
            c[filled] = sums[filled] / counts[filled, None]
        books[j] = c
        codes[:, j] = torch.cat([_nearest(sub[a:a + 65_536, j].float(), c)
                                 for a in range(0, n, 65_536)]).to(torch.uint8)
    return books, codes


def _nearest(x_Nk: torch.Tensor, c_Kk: torch.Tensor, rows: int = 16_384) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) per row, as matrix products (cdist is far slower here), `rows` at a
    time: a (rows, K) block of distances stays in cache (65k rows at once: 1.6x slower, measured with K = 256)."""
    norms, c_kK = (c_Kk * c_Kk).sum(1)[None, :], c_Kk.T.contiguous()
    return torch.cat([torch.addmm(norms, x_Nk[a:a + rows], c_kK, alpha=-2.0).argmin(dim=1)
                      for a in range(0, x_Nk.shape[0], rows)])


class FastStudent(nn.Module):
    """Encoder + head under the registry's module contract."""

    def __init__(self, config: FastConfig = FastConfig()) -> None:
        super().__init__()
        self.config = config
        self.output_stride = OUTPUT_STRIDE
        self.encoder = FastEncoder(config)
        self.head = KnnHead(config) if config.head is HeadKind.KNN else FastHead(config)
        self._register_state_dict_hook(_encoder_as_float16)

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points B3hw and confidence Bhw in [0, 1]."""
        features = self.encoder(image_B3HW)
        if isinstance(self.head, KnnHead):
            return self.head(features)
        points_B3hw, logit_Bhw = self.head(features)
        return points_B3hw, torch.sigmoid(logit_Bhw)


def _encoder_as_float16(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    """Model files keep the frozen encoder in float16: the shipped weights are float16 already (nothing is lost)
    and it halves the encoder's share of the file. load_state_dict converts back to float32."""
    del module, local_metadata
    for name, value in state.items():
        # keep_vars=True (exporters mapping parameters to the graph) must see the parameters themselves.
        if name.startswith(prefix + "encoder.") and value.is_floating_point() and not isinstance(value, nn.Parameter):
            state[name] = value.half()


def build_fast(config: FastConfig, input_size_wh: tuple[int, int]) -> FastStudent:
    """Builder for the registry (any input size that is a multiple of 8)."""
    del input_size_wh
    return FastStudent(config)


register_architecture(Architecture(
    "fast", FastConfig, build_fast,
    "frozen encoder + scene-specific feature memory (knn) or MLP head, built from a feature buffer in seconds/minutes",
    trainer="fast"))
