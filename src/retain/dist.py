"""Sums across processes when running under ``accelerate launch`` (no-ops in one process)."""

import torch
import torch.distributed as dist


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In place: every process ends with the sum of ``t`` over all processes."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
