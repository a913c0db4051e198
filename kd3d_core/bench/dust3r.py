"""The DUSt3R 512-DPT architecture (random weights) for size and speed comparisons.

Built from the DUSt3R model class (official `dust3r` when installed, else `mini_dust3r`, via the teacher's
`import_model_class`) with the constructor arguments of the official DUSt3R_ViTLarge_BaseDecoder_512_dpt
checkpoint, as DUSt3R's own loader rewrites them (PatchEmbedDust3R, landscape_only=False).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from kd3d_core.bench.stats import Spread, time_calls

PUBLISHED_CHECKPOINT_GB = 2.28  # DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth as published
DPT_512_KWARGS: dict = {
    "output_mode": "pts3d", "head_type": "dpt", "patch_embed_cls": "PatchEmbedDust3R", "img_size": (512, 512),
    "pos_embed": "RoPE100", "enc_embed_dim": 1024, "enc_depth": 24, "enc_num_heads": 16, "dec_embed_dim": 768,
    "dec_depth": 12, "dec_num_heads": 12, "landscape_only": False,
    "depth_mode": ("exp", -float("inf"), float("inf")), "conf_mode": ("exp", 1, float("inf")),
}


@dataclass(frozen=True)
class Dust3rSize:
    """Parameter count of the 512-DPT architecture and its float32 weight bytes."""

    params: int
    float32_gb: float
    backend: str


@dataclass(frozen=True)
class Dust3rTiming:
    """Forward time of one image pair (batch 1, one direction) at a given size."""

    size_wh: tuple[int, int]
    forward_ms: Spread
    build_s: float
    device: str


def build_dpt512(device: str):
    """The 512-DPT model with random weights; device "meta" allocates nothing (for counting parameters)."""
    import torch

    from kd3d_core.teachers.checkpoint import import_model_class

    cls, backend = import_model_class()
    with torch.device(device):
        model = cls(**DPT_512_KWARGS)
    return model.eval(), backend


def dpt512_size() -> Dust3rSize:
    """Parameters of the 512-DPT architecture, counted on the meta device."""
    model, backend = build_dpt512("meta")
    params = int(sum(p.numel() for p in model.parameters()))
    return Dust3rSize(params, params * 4 / 1e9, backend)


def _pair_views(size_wh: tuple[int, int], device: str) -> list[dict]:
    import torch

    w, h = size_wh
    gen = torch.Generator(device=device).manual_seed(0)
    return [{"img": torch.randn(1, 3, h, w, generator=gen, device=device),
             "true_shape": torch.tensor([[h, w]], device=device), "instance": [str(k)], "idx": [k]}
            for k in range(2)]


def time_dpt512_pair(size_wh: tuple[int, int], repeats: int, device: str) -> Dust3rTiming:
    """Build the model with random weights on `device` and time the forward of one pair.

    The warm-up forward runs at 64x48 (lazy initialisation, allocator, kernels), so it costs seconds rather than
    another full-resolution forward (which takes minutes on a small CPU).
    """
    import torch

    t0 = time.perf_counter()
    model, _ = build_dpt512(device)
    build_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else None

    def forward(views: list[dict]) -> None:
        with torch.inference_mode():
            model(views[0], views[1])

    small = _pair_views((64, 48), device)
    time_calls(lambda: forward(small), repeats=1, warmup=0, sync=sync)
    views = _pair_views(size_wh, device)
    spread = time_calls(lambda: forward(views), repeats, warmup=0, sync=sync)
    return Dust3rTiming(tuple(size_wh), spread, build_s, str(device))
