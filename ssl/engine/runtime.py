"""The process a run lives in: its Accelerator, CPU threads, log handlers and wall-clock budget."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, TorchDynamoPlugin, broadcast

from .launch import LaunchSettings
from .trackers import PROJECT_SUBDIR, accelerate_trackers

__all__ = [
    "budget_spent",
    "configure_logging",
    "device_origin",
    "make_accelerator",
    "reuse_freed_memory",
]


def _cpu_threads_per_process() -> int:
    """The cores this machine lends us, shared evenly by the processes on this node.

    ``accelerate launch`` on a machine without GPU exports ``OMP_NUM_THREADS=1`` unless told
    ``--num_cpu_threads_per_process``, which leaves all but one core idle (half the speed on 2
    cores); ``threads=N`` in the config overrides this.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // max(1, local_world))


def _has_accelerator() -> bool:
    # On a machine without GPU, Accelerator() under a multi-process launcher (accelerate launch
    # --multi_gpu, torchrun) reports one process although every rank joined a gloo group;
    # cpu=True makes it the MULTI_CPU setup it really is.
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system;
    True when it took effect (Linux with glibc; ``UNIMIX_SYSTEM_MALLOC=1`` opts out).

    A CPU training step allocates activations of tens of MB; glibc serves each one above its
    mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it when freed, so every
    step pays page faults and zeroing on every large tensor again (torch's CPU allocator
    caches nothing). Taken from the
    heap and never trimmed, the pages stay mapped from one step to the next; the process keeps
    its peak memory until it exits. What jemalloc/tcmalloc preloading gives, without a preload.
    """
    if os.environ.get("UNIMIX_SYSTEM_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def make_accelerator(
    settings: LaunchSettings,
    threads: int | None,
    trackers: Sequence[str] = (),
    output_dir: str | os.PathLike | None = None,
) -> Accelerator:
    """An Accelerator with ``settings``' precision and compile backend (passed explicitly, so
    a config value wins over the launcher's); on CPU, ``threads`` (or this process's share of
    the cores when 0/None) torch threads. ``trackers`` (``logging.trackers``) are checked first
    (a one-line ConfigError when one is unknown or not installed); Accelerate runs all but
    ``jsonl``, with its logging dir ``<output_dir>/tensorboard``."""
    log_with = accelerate_trackers(trackers)
    project = None
    if output_dir is not None:
        project = ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(Path(output_dir) / PROJECT_SUBDIR)
        )
    # Accelerate keeps precision and compile settings process-wide from the first Accelerator
    # and refuses different ones later; a second run in one process (a notebook, a search)
    # gets its own. The distributed state (process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        mixed_precision=settings.precision,
        dynamo_plugin=TorchDynamoPlugin(
            backend=settings.compile_backend or "no", mode=settings.compile_mode
        ),
        cpu=not _has_accelerator(),
        log_with=log_with or None,
        project_config=project,
    )
    if accelerator.device.type == "cpu":
        reuse_freed_memory()
    threads = threads or (_cpu_threads_per_process() if accelerator.device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    return accelerator


def device_origin(accelerator: Accelerator) -> str:
    """``cuda:0 (accelerator found)``, ``cpu (no accelerator found)`` or ``cpu (forced by
    accelerate launch --cpu)``."""
    device = accelerator.device
    if device.type != "cpu":
        return f"{device} (accelerator found)"
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}:
        return "cpu (forced by accelerate launch --cpu)"
    return "cpu (no accelerator found)"


class _TqdmHandler(logging.Handler):
    """Writes each record through ``tqdm.write`` to the *current* ``sys.stderr`` (looked up at
    each record, so a handler made while stderr was redirected never writes to a closed
    stream): a progress bar is cleared and redrawn around the line instead of being broken."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _LowerLevelFormatter(logging.Formatter):
    """``warning: message``: the level in lower case, as every ``warning:`` / ``error:`` line
    unimix prints itself."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging(is_main: bool) -> None:
    """``level: message`` on stderr (through tqdm's writer, so the progress bar stays whole)
    for the trainer's and the checkpoint format's loggers; only errors from processes other
    than the main one. Unreadable images are reported by
    :mod:`unimix.data.skips` (one ``warning:`` line each, also through tqdm's writer)."""
    for name in ("unimix.ssl", "unimix.checkpoint"):
        log = logging.getLogger(name)
        if log.handlers:
            continue
        handler = _TqdmHandler()
        handler.setFormatter(_LowerLevelFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO if is_main else logging.ERROR)
        log.propagate = False


def budget_spent(max_minutes: float, run_start: float, accelerator: Accelerator) -> bool:
    """Whether the wall-clock budget is used up; the main process's clock decides for all, so
    every process stops at the same step."""
    spent = torch.tensor(
        float(time.perf_counter() - run_start >= 60 * max_minutes), device=accelerator.device
    )
    if accelerator.num_processes > 1:
        spent = broadcast(spent, from_process=0)
    return bool(spent.item())
