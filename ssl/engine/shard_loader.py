"""The streaming counterpart of :mod:`~unimix.ssl.engine.loader`: micro-batches read from WebDataset
shards in one pass per epoch, never the whole set in memory.

Epoch ``e`` permutes the shards with a generator seeded by (seed, e) and deals them out: process
``r`` of ``W`` with ``R`` readers (DataLoader workers, at least one) gives reader ``w`` every
``W·R``-th shard starting at ``r + W·w``; each reader streams its shards through a shuffle
buffer seeded by (seed, e, r, w). Micro-batch ``g`` of the run (counted over all epochs) comes
from reader ``g mod R``, which is the order a DataLoader collects its workers' items in.

Every reader gets at least ``S // (W·R)`` shards, so an epoch is as many steps as the
``S // (W·R)`` smallest shards fill on every reader (:attr:`ShardPlan.steps_per_epoch`) on
every process; the samples beyond that are dropped, a different few each epoch. A resume
restarts each reader at the start of the shard its position was in (derived from the step,
with the current process and worker counts); what that re-reads and skips: docs/data.md.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ...data.shard_dataset import ShardDataset
from ...data.shards import (
    ShardSet,
    buffer_rng,
    decoded_samples,
    iter_shard_samples,
    reader_shards,
    shuffle_buffer,
)
from ..multicrop import MultiCropAugment
from .loader import BatchPlan, _worker_init, augmented_item

__all__ = [
    "ShardBatches",
    "ShardPlan",
    "ShardReadError",
    "StreamLoader",
    "make_stream_loader",
    "resume_message",
    "stream_plan",
]


@dataclass(frozen=True)
class ShardPlan(BatchPlan):
    """A :class:`BatchPlan` over shards: ``counts`` samples per shard, ``readers`` per process."""

    counts: tuple[int, ...] = ()
    readers: int = 1
    buffer_size: int = 1000
    spec: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"data.dataset={self.spec}: {len(self.counts)} shards over {self.world_size} "
                f"process(es) × {self.readers} reader(s) give each reader too few images for "
                f"one step of data.batch_size={self.batch_size}"
            )

    @property
    def shards_per_reader(self) -> int:
        return len(self.counts) // (self.world_size * self.readers)

    @property
    def steps_per_epoch(self) -> int:
        fewest = sum(sorted(self.counts)[: self.shards_per_reader])
        return self.readers * (fewest // self.local_batch) // self.accum

    @property
    def micro_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accum

    def reader_shards(self, epoch: int, reader: int) -> list[int]:
        return reader_shards(
            len(self.counts), self.seed, epoch, self.rank, self.world_size, reader, self.readers
        )

    def position(self, micro: int, reader: int) -> tuple[int, int, int]:
        """``(epoch, shards done, samples done)`` of ``reader`` when micro-batch ``micro`` of the
        run is next: its whole shards before the resume point, and the samples they hold."""
        epoch = micro // self.micro_per_epoch
        first = epoch * self.micro_per_epoch
        first += (reader - first) % self.readers
        consumed = len(range(first, micro, self.readers)) * self.local_batch
        counts = np.cumsum([self.counts[s] for s in self.reader_shards(epoch, reader)])
        done = min(bisect.bisect_right(counts.tolist(), consumed), len(counts) - 1)
        return epoch, done, int(counts[done - 1]) if done else 0


def stream_plan(dataset: Any, plan: BatchPlan, num_workers: int) -> BatchPlan:
    """``plan`` as a :class:`ShardPlan` when ``dataset`` streams shards, else ``plan`` itself.

    Raises:
        ValueError: fewer shards than processes, or ``data.holdout`` with shards.
    """
    if isinstance(getattr(dataset, "dataset", None), ShardDataset):
        raise ValueError(
            f"data.holdout: not supported for streaming shards ({dataset.dataset.spec}); "
            "hold images out when writing the shards instead"
        )
    if not isinstance(dataset, ShardDataset):
        return plan
    shards, world = dataset.shards, plan.world_size
    if len(shards.paths) < world:
        raise ValueError(
            f"data.dataset={dataset.spec}: {len(shards.paths)} shard(s) for {world} processes; "
            "each process needs at least one (write smaller shards: unimix shards --shard-size)"
        )
    readers = max(1, min(num_workers, len(shards.paths) // world))
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(BatchPlan)}
    return ShardPlan(
        **fields,
        counts=shards.counts,
        readers=readers,
        buffer_size=dataset.buffer_size,
        spec=dataset.spec,
    )


def resume_message(plan: ShardPlan, micro: int) -> str:
    """The line a resumed streaming run prints: where this process's readers restart."""
    epoch = micro // plan.micro_per_epoch
    if micro % plan.micro_per_epoch == 0:
        return f"resume: streaming shards start epoch {epoch} at its first shard"
    end = (epoch + 1) * plan.micro_per_epoch  # readers done with this epoch are left out
    places = [
        f"{plan.position(micro, w)[1] + 1} of {len(plan.reader_shards(epoch, w))}"
        for w in range(plan.readers)
        if micro + (w - micro) % plan.readers < end
    ]
    per = " (one per data worker still in the epoch)" if plan.readers > 1 else ""
    return (
        f"resume: streaming shards restart at shard {', '.join(places)}{per} of epoch {epoch} "
        "(samples already seen in it are seen again)"
    )


class ShardBatches(IterableDataset):
    """This process's micro-batches ``start … total-1`` of the run, read from ``shards``.

    Yields ``{"crops": [globals [2·b, 3, G, G], locals [V_l·b, 3, L, L]], "indices": [b]}``
    like :class:`~unimix.ssl.engine.loader.MultiCropBatches` (or ``"views"`` with ``render=False``);
    ``indices`` are global sample indices.
    Undecodable images are reported, counted in ``skipped`` and replaced by the next ones;
    a reader that runs short reads its shards again.
    """

    def __init__(
        self,
        shards: ShardSet,
        plan: ShardPlan,
        augment: MultiCropAugment,
        start: int,
        total: int,
        skipped: torch.Tensor | None = None,
        render: bool = True,
    ) -> None:
        self.shards, self.plan, self.augment = shards, plan, augment
        self.start, self.total, self.render = start, total, render
        # [1] int64 in shared memory (e.g. the ShardDataset's, which sums up at exit)
        self.skipped = (
            torch.zeros(1, dtype=torch.int64).share_memory_() if skipped is None else skipped
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._micro_batches()
        except (ValueError, OSError) as err:  # a damaged shard, a count its index gets wrong
            if get_worker_info() is None:
                raise
            # in a loader worker: sent back as an item, so the training process raises the one
            # line (torch would wrap it in "Caught ValueError in DataLoader worker process 0"
            # and the worker's whole traceback)
            yield {"error": " ".join(str(err).split()) or type(err).__name__}

    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        # A DataLoader hands task i to worker i mod R: worker w serves micro-batches start+w,
        # start+w+R, …, i.e. reader (start + w) mod R's share of the run.
        info = get_worker_info()
        worker = info.id if info is not None else 0
        plan, per_epoch = self.plan, self.plan.micro_per_epoch
        reader = (self.start + worker) % plan.readers
        micro = self.start + worker
        while micro < self.total:
            epoch = micro // per_epoch
            stop = min((epoch + 1) * per_epoch, self.total)
            wanted = len(range(micro, stop, plan.readers))
            yield from self._epoch(epoch, reader, plan.position(micro, reader)[1], wanted)
            micro += wanted * plan.readers

    def _samples(self, ids: list[int], epoch: int, reader: int, done: int) -> Iterator[Any]:
        """Decoded samples of shards ``ids[done:]``, then of all ``ids`` again, endlessly."""
        plan = self.plan
        for again in count():
            chosen = ids[done:] if again == 0 else ids
            rng = buffer_rng(plan.seed, epoch, plan.rank, reader, done + again * len(ids))
            stream = shuffle_buffer(iter_shard_samples(self.shards, chosen), plan.buffer_size, rng)
            found = False
            for item in decoded_samples(stream, self.skipped):
                found = True
                yield item
            if not found and again:
                names = ", ".join(self.shards.paths[s] for s in ids[:3])
                raise ValueError(f"no decodable image in shards {names}")

    def _epoch(self, epoch: int, reader: int, done: int, wanted: int) -> Iterator[dict[str, Any]]:
        """``wanted`` micro-batches of ``epoch`` from ``reader``, starting at shard ``done``."""
        images: list[np.ndarray] = []
        indices: list[int] = []
        ids = self.plan.reader_shards(epoch, reader)
        for sample, image in self._samples(ids, epoch, reader, done):
            images.append(np.asarray(image))
            indices.append(sample.index)
            if len(images) < self.plan.local_batch:
                continue
            yield augmented_item(self.augment, images, indices, epoch, self.render)
            images, indices = [], []
            wanted -= 1
            if wanted == 0:
                return


class ShardReadError(ValueError):
    """A shard could not be read while training; ``str(err)`` is one line naming it."""


class StreamLoader:
    """The micro-batches of a DataLoader over :class:`ShardBatches`; an error a worker sent
    back (``{"error": ...}``) is raised here as :class:`ShardReadError`."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self.loader:
            if "error" in item:
                raise ShardReadError(item["error"])
            yield item


def make_stream_loader(
    batches: ShardBatches, num_workers: int, seed: int = 0, pin_memory: bool = False
) -> StreamLoader:
    """A DataLoader over ``batches`` with one worker per reader (none when ``num_workers`` is 0),
    in a :class:`StreamLoader` (a worker's read error is one line in the training process).

    It has its own generator, so creating it never consumes the global torch RNG.
    """
    workers = batches.plan.readers if num_workers else 0
    loader = DataLoader(
        batches,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
    )
    return StreamLoader(loader)
