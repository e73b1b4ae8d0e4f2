"""What the machine can do: measured peak fp32 matmul FLOP/s and the process's peak memory."""

from __future__ import annotations

import resource
import time

import torch

__all__ = ["peak_matmul_flops", "peak_rss_mib", "sync"]


def sync(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (CUDA only; CPU work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_matmul_flops(
    device: torch.device,
    size: int | None = None,
    seconds: float = 2.0,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Measured FLOP/s of a large square ``dtype`` matmul on ``device`` (the machine's practical
    peak; ``size`` defaults to 2048 on CPU, 8192 on a GPU, which a smaller one does not fill)."""
    size = size or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
