"""Bank and queries of a k-NN: what a run's typed ``data`` and ``eval`` sections name
(:func:`eval_datasets`, the one choice, used by the trainer's k-NN and by ``unimix knn RUN``,
which reads those sections of the run's ``config.yaml`` through the config loader), or the two
splits ``--data`` names (:func:`named_datasets`). A bank that holds every query (a folder
without ``train/`` and ``test/`` serves both splits) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..config import load_sections
from ..data.build import build_dataset
from ..data.config import DataConfig
from ..data.distinct import check_distinct
from ..data.labels import unlabeled
from ..data.options import dataset_options
from ..data.training_set import build_training_set, split_training_set
from .config import EvalConfig
from .report import RUN_CONFIG

__all__ = [
    "RUN_CONFIG",
    "RunEvalSections",
    "eval_datasets",
    "find_run_config",
    "named_datasets",
    "run_eval_datasets",
    "subset",
]


@dataclass
class RunEvalSections:
    """What a run's config says about its eval set: its ``data`` and ``eval`` sections and
    ``seed`` (the keys and checks of :class:`~unimix.ssl.config.PretrainConfig`'s)."""

    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = field(default=0, metadata={"ge": 0})


def find_run_config(checkpoint: str | os.PathLike) -> Path | None:
    """``config.yaml`` of the run ``checkpoint`` belongs to: the run dir itself, or a checkpoint
    dir / weights file inside ``RUN/checkpoints/``; None when there is none."""
    path = Path(checkpoint)
    start = path if path.is_dir() else path.parent
    for folder in (start, *list(start.parents)[:2]):
        if (folder / RUN_CONFIG).is_file():
            return folder / RUN_CONFIG
    return None


def eval_datasets(
    data: DataConfig,
    evaluation: EvalConfig,
    seed: int,
    transform: Callable[[Any], Any],
    root: str | None = None,
    download: bool = False,
    strict: bool = False,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """``(bank, queries, info)`` a run's ``data`` and ``eval`` sections name, each item
    ``(transform(image), label)``. With ``data.holdout > 0``: bank = the training images the
    run trained on, queries = its held-out images (the test split is not read). Otherwise
    ``eval.dataset`` (default ``data.dataset``) under ``eval.root`` (default ``data.root``),
    ``eval.train_split`` against ``eval.test_split``, with ``eval.num_train`` /
    ``eval.num_test`` generated images for ``synthetic``. ``root`` replaces the config's root;
    ``info`` names ``dataset``, ``train_split``, ``test_split`` and the ``description``."""
    if data.holdout:
        return _held_out_datasets(data, evaluation, seed, transform, root, download, strict)
    name = evaluation.dataset or data.dataset
    train_split, test_split = evaluation.train_split, evaluation.test_split
    splits = []
    for split, count in ((train_split, evaluation.num_train), (test_split, evaluation.num_test)):
        options = dataset_options(
            name,
            root=root or evaluation.root or data.root,
            num_samples=count,
            image_size=data.image_size,
            seed=seed,
        )
        splits.append(
            build_dataset(
                name, split, download=download, strict=strict, transform=transform, **options
            )
        )
    bank, queries = splits
    key = "eval.dataset" if evaluation.dataset else "data.dataset"
    check_distinct(
        bank,
        queries,
        f"{key}={name!r} (splits {train_split!r} and {test_split!r})",
        "name a dataset whose two splits are different images (e.g. a folder with train/ and "
        "test/)",
    )
    description = f"{name} {test_split} (bank: {train_split}, {len(bank)} images)"
    info = {"dataset": name, "train_split": train_split, "test_split": test_split}
    return bank, queries, {**info, "description": description}


def _held_out_datasets(
    data: DataConfig,
    evaluation: EvalConfig,
    seed: int,
    transform: Callable[[Any], Any],
    root: str | None,
    download: bool,
    strict: bool,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """:func:`eval_datasets` with ``data.holdout > 0``: the training images without and with
    the held-out ones (which need labels to be queries)."""
    full = build_training_set(data, seed, transform, root=root, download=download, strict=strict)
    bank, queries = split_training_set(data, full)
    name, split, held = data.dataset, data.split, data.holdout
    if unlabeled(full):
        raise ValueError(  # it failed at the search, "train_labels: negative label -1"
            f"data.holdout={held}: data.dataset={name!r} (split {split!r}) has no labels, "
            "so its held-out images cannot be k-NN queries; give a labeled set with --data"
        )
    unread = f"; eval.dataset={evaluation.dataset!r} not read" if evaluation.dataset else ""
    info = {
        "dataset": name,
        "train_split": f"{split} minus {held} held out",
        "test_split": f"{split} held-out",
        "description": f"{name} {split}: {len(queries)} held-out images (bank: the other "
        f"{len(bank)}{unread})",
    }
    return bank, queries, info


def run_eval_datasets(
    config_path: str | os.PathLike,
    transform: Callable[[Any], Any],
    root: str | None = None,
    download: bool = False,
    strict: bool = False,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """:func:`eval_datasets` of the run whose ``config.yaml`` is ``config_path``, its sections
    read and checked by the config loader (one-line ``ConfigError``); ``info`` also names the
    config (``run_config``)."""
    path = Path(config_path)
    run = load_sections(RunEvalSections, path)
    if not (run.eval.dataset or run.data.dataset):
        raise ValueError(
            f"{path}: no eval.dataset or data.dataset to take the eval set from; pass --data"
        )
    bank, queries, info = eval_datasets(
        run.data, run.eval, run.seed, transform, root=root, download=download, strict=strict
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
