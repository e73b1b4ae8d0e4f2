"""Evaluation in several processes (``accelerate launch``, ``torchrun``): which rows each
process extracts, and gathering them so every process holds the whole bank in dataset order.

Each process takes one contiguous block of the dataset (:func:`shard_range`); after extraction
:func:`gather_rows` all-gathers the blocks (padded to one size, the padding dropped), so the
result is the same tensor, row for row, on every process and as in one process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["barrier", "gather_rows", "init_from_launcher", "shard_range", "world"]


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_launcher(device: torch.device) -> tuple[int, int]:
    """Join the launcher's process group when ``WORLD_SIZE`` > 1 (gloo on the CPU, NCCL on
    CUDA, through ``accelerate``'s ``PartialState``); returns :func:`world`."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=device.type == "cpu")
    return world()


def barrier() -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if world()[1] > 1:
        dist.barrier()


def shard_range(n: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(n)`` that process ``rank`` of ``world_size`` extracts;
    blocks differ in size by at most one and cover ``range(n)`` in order."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(shard: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every process's :func:`shard_range` block ``[len(block), ...]`` into the
    whole ``[n, ...]`` (on the CPU), identical on every process; one process: ``shard`` as is."""
    rank, size = world()
    if size == 1:
        return shard.cpu()
    blocks = [shard_range(n, r, size) for r in range(size)]
    if shard.shape[0] != len(blocks[rank]):
        raise ValueError(
            f"gather_rows: rank {rank} holds {shard.shape[0]} rows, expected {len(blocks[rank])}"
        )
    longest = max(len(b) for b in blocks)
    device = _comm_device()
    padded = torch.zeros((longest, *shard.shape[1:]), dtype=shard.dtype, device=device)
    padded[: shard.shape[0]] = shard.to(device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: len(b)].cpu() for p, b in zip(parts, blocks, strict=True)])
