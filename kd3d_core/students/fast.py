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
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from kd3d_core.errors import ConfigError
from kd3d_core.students.registry import Architecture, register_architecture

OUTPUT_STRIDE = 8


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
            widens the receptive field (context disambiguates repeated texture) at no extra cost.
        feature_dim: encoder output channels (what the head sees; what the mapping buffer stores).
        head_width: hidden channels of the head MLP.
        head_blocks: residual blocks (two layers each) of the head.
        homogeneous: the head predicts homogeneous coordinates (x, y, z, w) as ACE does, which keeps far
            points well conditioned; otherwise a plain 3D offset.
        head: KNN (feature memory) or MLP (regression head); see HeadKind.
        knn_size: stored mapping cells of the KNN head (the trainer writes the actual count); the default
            keeps every labelled cell of ~300 views at 320x240 (measured: all cells 91 %, 100k of them 86 % at
            5 cm / 5 deg in a 6 x 5 m room).
        knn_dim: dimension the KNN head projects features to (PCA of the standardised mapping features).
        knn_lists: inverted-file lists (k-means clusters of the keys) of the KNN head.
        knn_probe: lists searched per cell; 0 = exhaustive search (exact, slower, traceable for export).
    """

    stem_channels: tuple[int, ...] = (32, 64, 128)
    block_dilations: tuple[int, ...] = (1, 2, 4, 1)
    feature_dim: int = 256
    head_width: int = 256
    head_blocks: int = 2
    homogeneous: bool = True
    head: HeadKind = HeadKind.KNN
    knn_size: int = 400_000
    knn_dim: int = 64
    knn_lists: int = 512
    knn_probe: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.head, HeadKind):
            try:
                object.__setattr__(self, "head", HeadKind(self.head))
            except ValueError as err:
                raise ConfigError(f"fast head must be one of {[k.value for k in HeadKind]}") from err
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


class KnnHead(nn.Module):
    """Feature memory: standardise + project (folded into one affine map), L2-normalise, nearest stored cell.

    Buffers (filled by the trainer): proj (C, d) and shift (d,) so that z = f @ proj - shift; keys (N, d) unit
    rows stored in bfloat16 (half the file size; searched in float32), sorted by inverted-file list;
    points (N, 3) normalised scene coordinates in the same order; centroids (K, d) and offsets (K + 1,) of the
    inverted file (k-means lists). With knn_probe > 0 a cell is compared only with the keys of its knn_probe
    most similar lists (about K / knn_probe times less work than exhaustive search); 0 searches all keys.
    Confidence is the cosine similarity mapped to [0, 1].
    """

    def __init__(self, config: FastConfig, chunk: int = 4096) -> None:
        super().__init__()
        self.chunk = chunk
        self.probe = config.knn_probe
        self.register_buffer("proj", torch.zeros(config.feature_dim, config.knn_dim))
        self.register_buffer("shift", torch.zeros(config.knn_dim))
        self.register_buffer("keys", torch.zeros(config.knn_size, config.knn_dim, dtype=torch.bfloat16))
        self.register_buffer("points", torch.zeros(config.knn_size, 3))
        self.register_buffer("centroids", torch.zeros(config.knn_lists, config.knn_dim))
        self.register_buffer("offsets", torch.zeros(config.knn_lists + 1, dtype=torch.long))
        self._keys_f32: torch.Tensor | None = None

    def _float_keys(self) -> torch.Tensor:
        """float32 copy of the keys, made once: small bf16 matrix products are very slow on CPUs."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.keys.float()
        if self._keys_f32 is None or self._keys_f32.shape != self.keys.shape or \
                self._keys_f32.device != self.keys.device or self._keys_version != self.keys._version:
            self._keys_f32 = self.keys.float()
            self._keys_version = self.keys._version
        return self._keys_f32

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
        n, k = z.shape[0], self.centroids.shape[0]
        probe = min(self.probe, k)
        keys = self._float_keys()
        lists_NP = (z @ self.centroids.T).topk(probe, dim=1).indices
        lists = lists_NP.reshape(-1)
        order = torch.argsort(lists)
        # (cell, probed list) pairs grouped by list: each list's queries are one contiguous slice (a view) and its
        # best match goes into the pairs' slots. The per-list loop is the hot path (~K iterations per frame), so
        # it does one product and one max; merging the probes per cell is vectorised (_best_of_probes).
        z_pairs = z[torch.arange(n, device=z.device).repeat_interleave(probe)[order]]
        ends = torch.bincount(lists, minlength=k).cumsum(0).tolist()
        offsets = self.offsets.tolist()
        sim_P = torch.full((n * probe,), -2.0, device=z.device)
        idx_P = torch.zeros(n * probe, dtype=torch.long, device=z.device)
        start = 0
        for c, end in enumerate(ends):
            if end > start and offsets[c + 1] > offsets[c]:
                sim_P[start:end], idx_P[start:end] = (z_pairs[start:end] @ keys[offsets[c]:offsets[c + 1]].T).max(dim=1)
            start = end
        idx_P += self.offsets[lists[order]]
        return _best_of_probes(sim_P, idx_P, order, lists_NP)

    def lookup(self, features_NC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points (N, 3) and cosine similarity (N,) of the nearest stored cell."""
        z = F.normalize(features_NC.float() @ self.proj - self.shift, dim=-1)
        # Export (tracing) records one fixed graph: only the exhaustive search traces correctly.
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        sim, idx = self._inverted(z) if self.probe > 0 and not exporting else self._exhaustive(z)
        return self.points[idx], sim

    def forward(self, features_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points B3hw and confidence Bhw in [0, 1]."""
        B, C, h, w = features_BChw.shape
        points_N3, sim_N = self.lookup(features_BChw.permute(0, 2, 3, 1).reshape(-1, C))
        conf = ((sim_N + 1) / 2).clamp(0, 1)
        return points_N3.reshape(B, h, w, 3).permute(0, 3, 1, 2), conf.reshape(B, h, w)


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


class FastStudent(nn.Module):
    """Encoder + head under the registry's module contract."""

    def __init__(self, config: FastConfig = FastConfig()) -> None:
        super().__init__()
        self.config = config
        self.output_stride = OUTPUT_STRIDE
        self.encoder = FastEncoder(config)
        self.head = KnnHead(config) if config.head is HeadKind.KNN else FastHead(config)

    def forward(self, image_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised points B3hw and confidence Bhw in [0, 1]."""
        features = self.encoder(image_B3HW)
        if isinstance(self.head, KnnHead):
            return self.head(features)
        points_B3hw, logit_Bhw = self.head(features)
        return points_B3hw, torch.sigmoid(logit_Bhw)


def build_fast(config: FastConfig, input_size_wh: tuple[int, int]) -> FastStudent:
    """Builder for the registry (any input size that is a multiple of 8)."""
    del input_size_wh
    return FastStudent(config)


register_architecture(Architecture(
    "fast", FastConfig, build_fast,
    "frozen encoder + scene-specific feature memory (knn) or MLP head, built from a feature buffer in seconds/minutes",
    trainer="fast"))
