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
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from unimix.data.skips import skipped_mask

from .device import resolve_device
from .features import calibrate_batchnorm, extract_features
from .knn import knn_evaluate

__all__ = [
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

    def score(train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y) -> dict[str, float]:
        result = knn_evaluate(
            train_x, train_y, test_x, test_y, ks=ks, temperature=temperature, device=where
        )
        return {f"top1@{k}": float(result["top1"][k]) for k in ks}

    def network_score(model: nn.Module) -> dict[str, float]:
        kw: dict[str, Any] = {"batch_size": batch_size, "device": where, "progress": False,
                              "accelerator": accelerator, "num_workers": num_workers}  # fmt: skip
        train_x, train_y = extract_features(model, bank, **kw)
        test_x, test_y = extract_features(model, queries, **kw)
        return score(train_x, train_y, test_x, test_y)

    rows: list[dict[str, Any]] = []
    if raw_pixels:
        rows.append(
            {
                "network": "raw_pixels",
                "bn": "none",
                **score(*pixel_features(bank), *pixel_features(queries)),
            }
        )
    for name, model in networks.items():
        if not has_batchnorm(model):
            rows.append({"network": name, "bn": "none", **network_score(model)})
            continue
        rows.append({"network": name, "bn": "kept", **network_score(model)})
        if bn_images > 0:
            calibrated = copy.deepcopy(model)
            calibrate_batchnorm(calibrated, bank, bn_images, seed, batch_size)
            rows.append({"network": name, "bn": "recalibrated", **network_score(calibrated)})
    return rows


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
