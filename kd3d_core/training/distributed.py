"""Multi-process training through torchrun (torch.distributed + DistributedDataParallel).

`torchrun --nproc_per_node N -m kd3d_core train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; `init_distributed`
joins the process group (NCCL on CUDA, gloo on CPU). Each rank trains on its shard of every epoch's
permutation; rank 0 evaluates, decides early stopping, and writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the torchrun process group when launched by torchrun; a single-process context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for_rank(device: torch.device) -> torch.device:
    """On CUDA under torchrun each rank uses the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's value on every rank (identity when not distributed)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
