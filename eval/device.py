"""Where evaluation runs: ``--device auto|cpu|cuda|cuda:N|mps`` resolved to a ``torch.device``,
and the DataLoader settings that go with it (workers, pinned memory)."""

from __future__ import annotations

import os

import torch

__all__ = ["default_workers", "is_accelerator", "resolve_device"]


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): this process's CUDA device when there is one (``cuda:LOCAL_RANK``
    under a launcher), else Apple's MPS, else the CPU. ``"cuda"`` means ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: an unknown spec, or a CUDA/MPS device this machine does not have (one line).
    """
    if isinstance(spec, torch.device):  # already resolved (an accelerator's, e.g. cpu:0)
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank() % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu" or spec.startswith("cpu:"):
        return torch.device("cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("--device mps: this machine has no MPS device")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: no CUDA device is available on this machine")
        count = torch.cuda.device_count()
        index = _local_rank() % count if spec == "cuda" else spec.partition(":")[2]
        if not str(index).isdigit() or int(index) >= count:
            raise ValueError(f"--device {spec}: this machine has {count} CUDA device(s)")
        return torch.device("cuda", int(index))
    raise ValueError(f"--device {spec}: expected auto, cpu, cuda, cuda:N or mps")


def is_accelerator(device: torch.device | str) -> bool:
    """Whether ``device`` is not the CPU (pinned host memory and non-blocking copies pay off)."""
    return torch.device(device).type != "cpu"


def default_workers(processes: int = 1) -> int:
    """DataLoader workers per process: the CPUs this process may use, shared between the
    launcher's processes, one left for the main loop; at most 8, at least 0."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus // max(1, processes) - 1))
