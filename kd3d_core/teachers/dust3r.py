"""Batched, resumable, shardable DUSt3R pair inference into the pair cache.

Each batch holds B unordered pairs run in both orders, interleaved as DUSt3R's `make_batch_symmetric` does so
the model encodes each image once. On CUDA the forward runs under autocast. Outputs are resampled (area) to the
label grid and written per pair, atomically; a rerun computes only what is missing. Under torchrun each rank
takes every world_size-th pair.
"""
from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from kd3d_core.alignment.pairwise import PairPrediction
from kd3d_core.teachers.pair_cache import PairCache
from kd3d_core.teachers.preprocess import CropGeometry, normalise, preprocess_rgb


@dataclass(frozen=True)
class InferenceStats:
    """What one rank did: pairs computed now, pairs found in the cache, seconds spent."""

    computed: int
    cached: int
    seconds: float


class FrameImages:
    """Network-ready uint8 images, preprocessed on demand with a small LRU (sequential pairs reuse frames)."""

    def __init__(self, load_rgb: Callable[[int], np.ndarray], geom: CropGeometry, capacity: int = 64) -> None:
        self.load_rgb = load_rgb
        self.geom = geom
        self.capacity = capacity
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def get(self, k: int) -> np.ndarray:
        """Preprocessed image (h, w, 3) of frame k."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        img = preprocess_rgb(self.load_rgb(k), self.geom)
        self._cache[k] = img
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return img


def _to_label(x: np.ndarray, label_wh: tuple[int, int]) -> np.ndarray:
    return cv2.resize(x, label_wh, interpolation=cv2.INTER_AREA)


def _forward(model, imgs: FrameImages, batch: Sequence[tuple[int, int]], device: str, amp: bool):
    """One symmetric forward pass: rows 2k (i -> j) and 2k + 1 (j -> i) of pair k."""
    import torch

    order1 = [a for i, j in batch for a in (i, j)]
    order2 = [b for i, j in batch for b in (j, i)]
    views = []
    for order in (order1, order2):
        x = normalise(np.stack([imgs.get(k) for k in order])).to(device)
        shape = torch.tensor([x.shape[-2:]] * len(order), dtype=torch.int64, device=device)
        views.append({"img": x, "true_shape": shape, "instance": [str(k) for k in order],
                      "idx": list(order)})
    use_amp = amp and str(device).startswith("cuda")
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=dtype, enabled=use_amp):
        pred1, pred2 = model(views[0], views[1])
    return (pred1["pts3d"].float().cpu().numpy(), pred1["conf"].float().cpu().numpy(),
            pred2["pts3d_in_other_view"].float().cpu().numpy(), pred2["conf"].float().cpu().numpy())


def infer_pairs(model, imgs: FrameImages, pairs: Sequence[tuple[int, int]], cache: PairCache,
                label_wh: tuple[int, int], device: str, batch_size: int = 8, amp: bool = True, rank: int = 0,
                world_size: int = 1, progress: bool = True) -> InferenceStats:
    """Run the teacher on this rank's share of `pairs` (i < j) that the cache lacks; write each pair atomically."""
    mine = list(pairs)[rank::world_size]
    todo = [p for p in mine if not cache.has(*p)]
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="pair", desc=f"dust3r pairs (rank {rank})" if world_size > 1 else "dust3r pairs",
               file=sys.stderr, disable=not progress or not todo, dynamic_ncols=True)
    with bar:
        for start in range(0, len(todo), max(1, batch_size)):
            batch = todo[start:start + max(1, batch_size)]
            p1, c1, p2, c2 = _forward(model, imgs, batch, device, amp)
            for k, (i, j) in enumerate(batch):
                fw, bw = (PairPrediction(a, b, _to_label(p1[r], label_wh), _to_label(c1[r], label_wh),
                                         _to_label(p2[r], label_wh), _to_label(c2[r], label_wh))
                          for r, (a, b) in ((2 * k, (i, j)), (2 * k + 1, (j, i))))
                cache.write(fw, bw)
                bar.update(1)
    return InferenceStats(len(todo), len(mine) - len(todo), time.perf_counter() - t0)
