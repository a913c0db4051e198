"""Multi-process work through torchrun (torch.distributed.run): the one place kd3d joins a process group.

`torchrun --nproc_per_node N -m kd3d_core teach|train ...` sets RANK / WORLD_SIZE / LOCAL_RANK. Teachers shard
their pairs by rank; training wraps the student in DistributedDataParallel. NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kd3d_core.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and reports."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op when alone)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group (after the last collective)."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def init_distributed(device: Any) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1; `device` (str or torch.device) picks the backend."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("torch.distributed is not available in this torch build")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's value on every rank (identity when not distributed)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_device(choice: str, local_rank: int = 0) -> str:
    """'auto' -> CUDA when present (the GPU of this local rank), else CPU; 'cuda' without a GPU is an error."""
    import torch

    if choice == "cpu":
        return "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return "cpu"


def device_for_rank(device: Any) -> Any:
    """On CUDA under torchrun each rank uses the GPU of its LOCAL_RANK (a torch.device in, a torch.device out)."""
    import torch

    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
