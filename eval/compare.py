"""Like-for-like k-NN: every network and the raw-pixel floor measured by one protocol.

A trained teacher, its student and the same backbone untrained differ in more than their
weights if each is evaluated its own way. :func:`compare_knn` removes every other difference:
one bank and one set of queries, already transformed (so one image size and normalisation), one
k-NN rule (cosine, ``exp(sim / T)`` votes), and one BatchNorm treatment. BatchNorm networks are
reported twice:

- ``kept``: the running statistics the network came with — for a DINO teacher those of
  augmented training crops, for an untrained network the initial 0 / 1;
- ``recalibrated``: statistics re-estimated on ``bn_images`` clean bank images (the same images
  for every network; torch's ``update_bn``), on a copy, so the caller's network is untouched.

Networks without BatchNorm get one row (``bn: "none"``): both treatments are the same network.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.skips import skipped_mask
from .device import resolve_device
from .features import extract_features
from .knn import knn_evaluate

__all__ = [
    "calibrate_batchnorm",
    "compare_knn",
    "has_batchnorm",
    "is_like_for_like",
    "like_for_like_top1",
    "pixel_features",
]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer (running statistics that evaluation depends on)."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def pixel_features(dataset: Any, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-pixel floor's features: each transformed image flattened, ``[N, 3·H·W]``, with
    labels ``[N]`` (the transform decides size and normalisation, as for the networks)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    features, labels = [], []
    for images, targets in loader:
        features.append(images.flatten(1).float())
        labels.append(torch.as_tensor(targets).long())
    keep = torch.from_numpy(~skipped_mask(dataset))  # unreadable files: dropped, as in banks
    return torch.cat(features)[keep], torch.cat(labels)[keep]


def compare_knn(
    networks: Mapping[str, nn.Module],
    bank: Any,
    queries: Any,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    bn_images: int = 2048,
    raw_pixels: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    accelerator: Any = None,
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """k-NN top-1 of each network (and of raw pixels), all measured the same way.

    Args:
        networks: name → headless backbone (``[B, 3, H, W]`` → ``[B, D]``); none is modified.
        bank, queries: labeled datasets yielding ``(transformed image [3, H, W], label)``.
        ks: neighbour counts; those larger than the bank are dropped.
        temperature: T of the ``exp(sim / T)`` votes.
        bn_images: bank images that re-estimate BatchNorm statistics (the ``recalibrated``
            rows; 0: report only the statistics each network came with).
        raw_pixels: add the normalised raw-pixel floor as a row named ``raw_pixels``.
        seed: picks the BatchNorm calibration images (the same for every network).
        device, accelerator, num_workers: where features are extracted and searched; with an
            ``accelerate`` accelerator of several processes every process must call this: each
            extracts its block of the data, and all return the same rows.

    Returns:
        One dict per row: ``{"network": name, "bn": "none" | "kept" | "recalibrated",
        "top1@k": float, ...}``; ``raw_pixels`` first, then ``networks`` in order.
    """
    ks = tuple(k for k in ks if k <= len(bank))
    if not ks:
        raise ValueError(f"every k in {tuple(ks)} exceeds the bank's {len(bank)} images")
    where = accelerator.device if accelerator is not None else resolve_device(device or "cpu")
    score = functools.partial(_top1, ks=ks, temperature=temperature, device=where)
    extract = functools.partial(
        extract_features,
        batch_size=batch_size,
        device=where,
        progress=False,
        accelerator=accelerator,
        num_workers=num_workers,
    )

    def network_score(model: nn.Module) -> dict[str, float]:
        return score(*extract(model, bank), *extract(model, queries))

    rows: list[dict[str, Any]] = []
    if raw_pixels:
        pixels = score(*pixel_features(bank), *pixel_features(queries))
        rows.append({"network": "raw_pixels", "bn": "none", **pixels})
    for name, model in networks.items():
        rows.extend(_network_rows(name, model, network_score, bank, bn_images, seed, batch_size))
    return rows


def _network_rows(
    name: str,
    model: nn.Module,
    network_score: Callable[[nn.Module], dict[str, float]],
    bank: Any,
    bn_images: int,
    seed: int,
    batch_size: int,
) -> list[dict[str, Any]]:
    """One network's rows: ``none`` without BatchNorm, else ``kept`` (and ``recalibrated`` on
    ``bn_images`` bank images, a copy of the model)."""
    if not has_batchnorm(model):
        return [{"network": name, "bn": "none", **network_score(model)}]
    rows = [{"network": name, "bn": "kept", **network_score(model)}]
    if bn_images > 0:
        calibrated = copy.deepcopy(model)
        calibrate_batchnorm(calibrated, bank, bn_images, seed, batch_size)
        rows.append({"network": name, "bn": "recalibrated", **network_score(calibrated)})
    return rows


def _top1(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    ks: Sequence[int],
    temperature: float,
    device: torch.device,
) -> dict[str, float]:
    result = knn_evaluate(
        train_x, train_y, test_x, test_y, ks=ks, temperature=temperature, device=device
    )
    return {f"top1@{k}": float(result["top1"][k]) for k in ks}


def is_like_for_like(row: Mapping[str, Any]) -> bool:
    """Whether a :func:`compare_knn` row is the one to quote: BatchNorm statistics re-estimated
    where the network has BatchNorm (``"recalibrated"``), as it came where it has none."""
    return row["bn"] in ("none", "recalibrated")


def like_for_like_top1(
    rows: Sequence[Mapping[str, Any]], network: str = "teacher", k: int = 20
) -> float | None:
    """The quoted top-1 @``k`` of ``network`` among :func:`compare_knn` rows (None if absent)."""
    for row in rows:
        if row["network"] == network and is_like_for_like(row):
            return row.get(f"top1@{k}")
    return None


def calibrate_batchnorm(
    model: nn.Module, dataset: Any, images: int = 2048, seed: int = 0, batch_size: int = 256
) -> int:
    """Set ``model``'s BatchNorm running statistics from ``images`` random samples of ``dataset``.

    For an *untrained* baseline: at init the statistics are 0/1, which alone costs a BatchNorm
    network several k-NN points (docs/evaluation.md), a gap any training run closes for free.
    Uses torch's ``update_bn`` (cumulative averages over the
    batches; weights untouched). ``dataset`` yields ``(image [3, S, S], label)``.

    Returns the number of images used (0, model untouched, when it has no BatchNorm or
    ``images <= 0``). Leaves the model in eval mode.
    """
    if images <= 0 or not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return 0
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(dataset), generator=g)[:images].tolist()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, picked), batch_size=batch_size
    )
    # BatchNorm always has buffers, so this finds the device even without parameters.
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(loader, model, device=device)
    model.eval()
    return len(picked)
