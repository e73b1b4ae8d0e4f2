"""The k-NN data a pretraining run names in its saved ``config.yaml``: what ``unimix knn RUN``
evaluates on when ``--data`` is not given.

:func:`eval_datasets` is the one choice, used by the trainer's k-NN
(:func:`unimix.ssl.datasets.knn_datasets`) on its config and here on the saved YAML: with ``data.holdout > 0``, bank = the training images the run trained
on, queries = its held-out images; otherwise ``eval.dataset`` (default ``data.dataset``) under
``eval.root`` (default ``data.root``), ``eval.train_split`` against ``eval.test_split``, with
``eval.num_train`` / ``eval.num_test`` generated images for ``synthetic``. A bank that holds
every query (a folder without ``train/`` and ``test/`` serves both splits) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from unimix.config import read_yaml_file
from unimix.data import build_dataset, dataset_options, split_holdout
from unimix.data.distinct import check_distinct

__all__ = [
    "RUN_CONFIG",
    "eval_datasets",
    "find_run_config",
    "named_datasets",
    "run_eval_datasets",
    "subset",
]

#: The resolved config a pretraining run writes into its output directory.
RUN_CONFIG = "config.yaml"


def find_run_config(checkpoint: str | os.PathLike) -> Path | None:
    """``config.yaml`` of the run ``checkpoint`` belongs to: the run dir itself, or a checkpoint
    dir / weights file inside ``RUN/checkpoints/``; None when there is none."""
    path = Path(checkpoint)
    start = path if path.is_dir() else path.parent
    for folder in (start, *list(start.parents)[:2]):
        if (folder / RUN_CONFIG).is_file():
            return folder / RUN_CONFIG
    return None


def _sections(config_path: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    config = read_yaml_file(config_path)  # untrusted: one-line ConfigError (a ValueError)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a mapping, got {type(config).__name__}")
    data, evaluation = config.get("data") or {}, config.get("eval") or {}
    if not (evaluation.get("dataset") or data.get("dataset")):
        raise ValueError(
            f"{config_path}: no eval.dataset or data.dataset to take the eval set from; pass --data"
        )
    return data, evaluation, int(config.get("seed") or 0)


def eval_datasets(
    data: dict[str, Any],
    evaluation: dict[str, Any],
    seed: int,
    transform: Callable[[Any], Any],
    root: str | None = None,
    download: bool = False,
    strict: bool = False,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """``(bank, queries, info)`` named by a run config's ``data`` and ``eval`` sections (as
    mappings), each item ``(transform(image), label)``: the one choice shared by the trainer's
    k-NN and ``unimix knn RUN``. ``root`` replaces the config's root; ``info`` names the dataset
    (``dataset``, ``train_split``, ``test_split``) and the ``description``."""
    image_size = data.get("image_size")
    if data.get("holdout"):
        name, held = data["dataset"], int(data["holdout"])
        options = dataset_options(
            name, root=root or data.get("root"), num_samples=data.get("num_samples"),
            image_size=image_size, seed=seed,
        )  # fmt: skip
        split = data.get("split", "train")
        full = build_dataset(
            name, split, download=download or bool(data.get("download")), strict=strict,
            transform=transform, **options,
        )  # fmt: skip
        bank, queries = split_holdout(full, held)
        description = (
            f"{name} {split}: {len(queries)} held-out images (bank: the other {len(bank)})"
        )
        info = {"dataset": name, "train_split": f"{split} minus {held} held out",
                "test_split": f"{split} held-out"}  # fmt: skip
        return bank, queries, {**info, "description": description}
    name = evaluation.get("dataset") or data["dataset"]
    train_split = evaluation.get("train_split", "train")
    test_split = evaluation.get("test_split", "test")
    splits = []
    for split, count in (
        (train_split, evaluation.get("num_train")),
        (test_split, evaluation.get("num_test")),
    ):
        options = dataset_options(
            name, root=root or evaluation.get("root") or data.get("root"), num_samples=count,
            image_size=image_size, seed=seed,
        )  # fmt: skip
        splits.append(
            build_dataset(
                name, split, download=download, strict=strict, transform=transform, **options
            )
        )
    bank, queries = splits
    key = "eval.dataset" if evaluation.get("dataset") else "data.dataset"
    check_distinct(
        bank, queries, f"{key}={name!r} (splits {train_split!r} and {test_split!r})",
        "name a dataset whose two splits are different images (e.g. a folder with train/ and "
        "test/)",
    )  # fmt: skip
    description = f"{name} {test_split} (bank: {train_split}, {len(bank)} images)"
    info = {"dataset": name, "train_split": train_split, "test_split": test_split}
    return bank, queries, {**info, "description": description}


def run_eval_datasets(
    config_path: str | os.PathLike,
    transform: Callable[[Any], Any],
    root: str | None = None,
    download: bool = False,
    strict: bool = False,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """:func:`eval_datasets` of the run whose ``config.yaml`` is ``config_path``; ``info`` also
    names the config (``run_config``)."""
    path = Path(config_path)
    data, evaluation, seed = _sections(path)
    bank, queries, info = eval_datasets(
        data, evaluation, seed, transform, root=root, download=download, strict=strict
    )
    return bank, queries, {**info, "run_config": str(path)}


def named_datasets(
    name: str,
    train_split: str,
    test_split: str,
    transform: Callable[[Any], Any],
    *,
    image_size: int,
    root: str | None = None,
    download: bool = False,
    strict: bool = False,
) -> tuple[Dataset, Dataset]:
    """``(bank, queries)``: splits ``train_split`` and ``test_split`` of dataset ``name`` (what
    ``--data`` names), refused when the bank holds every query."""
    options: dict[str, Any] = {"transform": transform, "download": download, "strict": strict}
    options.update(dataset_options(name, root=root or None, image_size=image_size))
    bank = build_dataset(name, train_split, **options)
    queries = build_dataset(name, test_split, **options)
    check_distinct(
        bank,
        queries,
        f"--data {name} (splits {train_split!r} and {test_split!r})",
        "pass a folder with train/ and test/ subfolders, or --train-split / --test-split naming "
        "two different subfolders",
    )
    return bank, queries


def subset(dataset: Any, limit: int | None, seed: int) -> Any:
    """A seeded random ``limit`` items of ``dataset``, in dataset order (all when ``limit`` is
    None or not smaller)."""
    import torch

    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise ValueError(f"--limit: expected >= 1, got {limit}")
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(dataset), generator=g)[:limit].sort().values
    return torch.utils.data.Subset(dataset, keep.tolist())
