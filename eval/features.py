"""Frozen features: batched extraction on any device and in any number of processes, into memory
(optionally cached, :mod:`unimix.eval.feature_cache`) or a memory-mapped store.

Unreadable image files are dropped, never replaced: their rows (features and labels) are left
out of what extraction returns, each file is reported on one line as it is found and rank 0
ends with one summary line (:mod:`unimix.data.skips`); with ``strict`` datasets the first one
raises instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.skips import (
    announce_skipped,
    base_indices,
    mark_reported,
    skipped_mask,
    summary_line,
    warn_unreadable,
)
from .device import is_accelerator, resolve_device
from .distributed import barrier, gather_rows, shard_range, world
from .feature_cache import cache_key, read_cache, write_cache
from .feature_store import META, FeatureStore

__all__ = ["extract_bank_and_queries", "extract_features", "extract_to_store"]

logger = logging.getLogger("unimix.eval")


def _batches(
    model: nn.Module,
    dataset: Any,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(features [B, D] float32 on the CPU, labels [B] int64)`` batch by batch, in order.

    Loader workers feed the model; on an accelerator the batches come from pinned memory and
    are copied without blocking. The model runs in eval mode on ``device`` (mode restored)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=is_accelerator(device),
        persistent_workers=False,
        drop_last=False,
    )
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="features", unit="batch", leave=False)
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():  # not inference_mode: callers may train on the features
            for images, targets in loader:
                out = model(images.to(device, non_blocking=True)).float().cpu()
                announce_skipped(dataset)  # files the loader workers found unreadable
                yield out, torch.as_tensor(targets).long().reshape(-1)
    finally:
        model.train(was_training)


def _placement(
    device: torch.device | str | None, accelerator: Any, shard: bool | None
) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: the accelerator's device and processes when given; the
    process group's when ``shard`` is True; else one process."""
    if accelerator is not None:
        device = accelerator.device
        if shard is None:
            shard = accelerator.num_processes > 1
    rank, size = world() if shard else (0, 1)
    return resolve_device(device or "cpu"), rank, size


def _unreadable_rows(dataset: Any, part: Any, rank: int) -> torch.Tensor:
    """``[len(dataset)]`` bool, identical on every process: rows whose image file was found
    unreadable while ``part`` (this process's block) was extracted. Rank 0 prints the summary
    line; every process marks its files as summarized (no second summary at exit)."""
    n = len(dataset)
    flags = torch.from_numpy(skipped_mask(part).astype(np.uint8))
    drop = gather_rows(flags, n).bool()
    mark_reported(part)
    count = int(drop.sum())
    if count and rank == 0:
        base, index = base_indices(dataset)
        files = getattr(base, "files", None)
        first = files[int(index[int(drop.nonzero()[0, 0])])] if files else "?"
        root = getattr(base, "root", repr(base))
        warn_unreadable(summary_line(count, n, first, root, "left out of the features"))
    if count == n:
        raise ValueError(f"none of the {n} images of {dataset!r} is readable")
    return drop


def extract_features(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    accelerator: Any = None,
    shard: bool | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    cache_tag: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every item of ``dataset`` (items ``(image_tensor, label)``), in dataset order.

    Args:
        model: ``[B, 3, H, W]`` → ``[B, D]``; run in eval mode (restored afterwards).
        dataset: map-style, yielding already transformed image tensors and int labels.
        device: where the model runs (``"auto"``, ``"cuda:1"`` …; default the CPU).
        num_workers: DataLoader workers; memory is pinned when ``device`` is an accelerator.
        accelerator: an ``accelerate.Accelerator`` (or ``PartialState``): its device, and with
            several processes each extracts its block of the dataset
            (:func:`~unimix.eval.distributed.shard_range`) and the blocks are gathered, so every
            process returns the same tensors as one process would.
        shard: force sharding over the default process group (True) or not (False); default:
            when ``accelerator`` has several processes.
        cache_dir: when given, features are stored as safetensors under a key hashed from the
            model's weights, the dataset (type, root/files/targets, subset indices, three
            transformed items) and its transform's repr; a later call, in this process or
            another, with the same model and data returns the stored tensors. Models without
            weights in ``state_dict`` (an ONNX extractor) need ``cache_tag`` to tell them apart.
        cache_tag: extra text mixed into the cache key (the CLI passes the model file's path,
            size and modification time).

    Returns:
        ``(features [K, D] float32, labels [K] int64)`` on the CPU, not normalised: the K
        items whose image could be read, in dataset order; an unreadable file's row is
        dropped (reported on one line, and a summary at the end), never replaced.
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = (
            Path(cache_dir) / f"features_{cache_key(model, dataset, cache_tag)}.safetensors"
        )
        stored = read_cache(cache_file) if cache_file.is_file() else None
        if stored is not None:
            return stored
    if len(dataset) == 0:
        raise ValueError(f"extract_features: dataset {dataset!r} is empty")
    device, rank, size = _placement(device, accelerator, shard)
    result = _extract_rows(model, dataset, device, rank, size, batch_size, num_workers, progress)
    if cache_file is not None and rank == 0:
        write_cache(cache_file, result)
    return result


def _extract_rows(
    model: nn.Module,
    dataset: Any,
    device: torch.device,
    rank: int,
    size: int,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process extracts its block of ``dataset``; the blocks are gathered and the rows of
    unreadable files dropped: the same ``(features, labels)`` on every process."""
    block = shard_range(len(dataset), rank, size)
    part = dataset if size == 1 else torch.utils.data.Subset(dataset, list(block))
    features, labels = [], []
    if len(block):
        for out, targets in _batches(
            model, part, device, batch_size, num_workers, progress and rank == 0
        ):
            features.append(out)
            labels.append(targets)
    else:  # more processes than items: an empty block, shaped like the others
        dim = _feature_dim(model, dataset, device)
        features, labels = [torch.empty(0, dim)], [torch.empty(0, dtype=torch.long)]
    keep = ~_unreadable_rows(dataset, part, rank)
    return (
        gather_rows(torch.cat(features), len(dataset))[keep],
        gather_rows(torch.cat(labels), len(dataset))[keep],
    )


def _feature_dim(model: nn.Module, dataset: Any, device: torch.device) -> int:
    """D of ``model``'s features, from the dataset's first item."""
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():
            return int(model(torch.as_tensor(dataset[0][0])[None].to(device)).shape[1])
    finally:
        model.train(was_training)


def extract_to_store(
    model: nn.Module,
    dataset: Any,
    directory: str | os.PathLike,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    accelerator: Any = None,
    shard: bool | None = None,
    progress: bool = True,
    cache_tag: str | None = None,
) -> FeatureStore:
    """Stream the features of ``dataset`` into a :class:`FeatureStore` under ``directory``
    (``store_<key>``, the key as for ``extract_features``' cache; a complete store is reused).
    Rows of unreadable files are dropped as in :func:`extract_features` (the store is
    compacted in place before it is marked complete).

    Batches go straight to the memory-mapped file, so memory holds one batch, not the bank.
    With several processes each writes its own block of rows (the directory must be on a
    filesystem every process sees) and every process returns the same store.
    """
    if len(dataset) == 0:
        raise ValueError(f"extract_to_store: dataset {dataset!r} is empty")
    target = Path(directory) / f"store_{cache_key(model, dataset, cache_tag)}"
    damage = FeatureStore.damage(target)
    if damage is None:
        return FeatureStore(target)
    if damage not in ("not complete", f"no {META}"):  # marked complete, but cut short
        logger.warning("feature store %s is damaged (%s): computing it again", target, damage)
    device, rank, size = _placement(device, accelerator, shard)
    if rank == 0:
        FeatureStore.allocate(target, len(dataset), _feature_dim(model, dataset, device))
    barrier()
    store = FeatureStore(target)
    block = shard_range(len(dataset), rank, size)
    part = dataset if size == 1 else torch.utils.data.Subset(dataset, list(block))
    if len(block):
        row = block.start
        for out, targets in _batches(
            model, part, device, batch_size, num_workers, progress and rank == 0
        ):
            store.write(row, out.numpy(), targets.numpy())
            row += out.shape[0]
    drop = _unreadable_rows(dataset, part, rank)
    barrier()
    if rank == 0:
        if drop.any():
            store.drop_rows(drop.numpy())
        store.mark_complete()
    barrier()
    return FeatureStore(target)


def extract_bank_and_queries(
    model: nn.Module,
    bank: Any,
    queries: Any,
    *,
    features_cache: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> tuple[Any, torch.Tensor, Any, torch.Tensor]:
    """``(bank features, bank labels, query features, query labels)``: tensors from
    :func:`extract_features` (``cache_dir``), or with ``features_cache`` the bank as a
    :class:`FeatureStore` and the queries as its memory map (:func:`extract_to_store`: peak
    memory near one bank). ``options`` go to both (``batch_size``, ``device``, ``shard``...)."""
    if features_cache:
        bank_store = extract_to_store(model, bank, features_cache, **options)
        query_store = extract_to_store(model, queries, features_cache, **options)
        return (
            bank_store,
            torch.from_numpy(bank_store.labels()),
            query_store.memmap(),
            torch.from_numpy(query_store.labels()),
        )
    x_bank, y_bank = extract_features(model, bank, cache_dir=cache_dir, **options)
    x_queries, y_queries = extract_features(model, queries, cache_dir=cache_dir, **options)
    return x_bank, y_bank, x_queries, y_queries
