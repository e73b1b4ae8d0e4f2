"""Shards as a torch dataset: one shuffled pass per epoch over WebDataset tar shards, the way
k-NN banks, probes and ``build_dataset`` read them (pretraining streams them through
:mod:`unimix.ssl.engine.shard_loader`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from .shards import (
    SHUFFLE_BUFFER,
    ShardSet,
    buffer_rng,
    decoded_samples,
    iter_shard_samples,
    reader_shards,
    shuffle_buffer,
)
from .skips import warn_unreadable

__all__ = ["ShardDataset"]


def _summarize(spec: str, skipped: torch.Tensor, owner_pid: int) -> None:
    """Finalizer: one summary line when samples were skipped (the owning process only)."""
    count = int(skipped[0])
    if count and os.getpid() == owner_pid and get_worker_info() is None:
        plural = "" if count == 1 else "s"
        warn_unreadable(
            f"skipped {count} unreadable image{plural} in the shards {spec}: each replaced by "
            "the next readable sample"
        )


class ShardDataset(IterableDataset):
    """Images streamed from WebDataset shards as ``(image, label)`` pairs (label ``-1``: none).

    One pass (an epoch) reads the shards in :func:`shard_order` of ``(seed, epoch)`` through a
    :func:`shuffle_buffer` of ``buffer_size`` samples; DataLoader workers split the shards
    between them. Call :meth:`set_epoch` before each pass. ``len()`` is the number of samples;
    ``classes`` comes from the shards' index. There is no random access: pretraining reads it
    through :mod:`unimix.ssl.engine.loader`'s streaming path.
    """

    def __init__(
        self,
        spec: str | os.PathLike[str],
        split: str = "",
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        strict: bool = False,
        seed: int = 0,
        buffer_size: int = SHUFFLE_BUFFER,
    ) -> None:
        self.spec = os.fspath(spec)
        self.shards = ShardSet.open(spec, split)
        self.classes = list(self.shards.classes)
        self.transform, self.strict = transform, strict
        self.seed, self.epoch, self.buffer_size = seed, 0, buffer_size
        #: ``[1]`` int64 in shared memory: undecodable samples skipped so far, in any process
        #: (training's streaming loader counts here too).
        self.skipped = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._finalizer = weakref.finalize(self, _summarize, self.spec, self.skipped, os.getpid())

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def num_skipped(self) -> int:
        """Undecodable samples skipped so far (in any worker)."""
        return int(self.skipped[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        info = get_worker_info()
        reader, readers = (info.id, info.num_workers) if info else (0, 1)
        ids = reader_shards(len(self.shards.paths), self.seed, self.epoch, 0, 1, reader, readers)
        rng = buffer_rng(self.seed, self.epoch, 0, reader, 0)
        stream = shuffle_buffer(iter_shard_samples(self.shards, ids), self.buffer_size, rng)
        for sample, image in decoded_samples(stream, self.skipped, self.strict):
            yield (self.transform(image) if self.transform else image), sample.label

    def __repr__(self) -> str:
        return (
            f"ShardDataset({self.spec!r}: {len(self)} samples in {len(self.shards.paths)} shards)"
        )
