"""The k-NN data a pretraining run names in its saved ``config.yaml``: what ``unimix knn RUN``
evaluates on when ``--data`` is not given.

The same choice as :func:`unimix.ssl.datasets.knn_datasets` (which this layer cannot import),
read from the YAML file: with ``data.holdout > 0``, bank = the training images the run trained
on, queries = its held-out images; otherwise ``eval.dataset`` (default ``data.dataset``) under
``eval.root`` (default ``data.root``), ``eval.train_split`` against ``eval.test_split``, with
``eval.num_train`` / ``eval.num_test`` generated images for ``synthetic``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from torch.utils.data import Dataset

from unimix.data import build_dataset, dataset_options, split_holdout

__all__ = ["RUN_CONFIG", "find_run_config", "run_eval_datasets"]

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
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{config_path}: cannot read the run's config ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a mapping, got {type(config).__name__}")
    data, evaluation = config.get("data") or {}, config.get("eval") or {}
    if not data.get("dataset"):
        raise ValueError(f"{config_path}: no data.dataset to take the eval set from; pass --data")
    return data, evaluation, int(config.get("seed") or 0)


def run_eval_datasets(
    config_path: str | os.PathLike,
    transform: Callable[[Any], Any],
    root: str | None = None,
    download: bool = False,
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """``(bank, queries, info)`` of the run whose ``config.yaml`` is ``config_path``, each item
    ``(transform(image), label)``. ``root`` replaces the config's root; ``info`` names the
    dataset (``dataset``, ``train_split``, ``test_split``) and the ``description``."""
    path = Path(config_path)
    d, e, seed = _sections(path)
    image_size = d.get("image_size")
    if d.get("holdout"):
        name, held = d["dataset"], int(d["holdout"])
        options = dataset_options(
            name, root=root or d.get("root"), num_samples=d.get("num_samples"),
            image_size=image_size, seed=seed,
        )  # fmt: skip
        split = d.get("split", "train")
        full = build_dataset(
            name, split, download=download or bool(d.get("download")), transform=transform,
            **options,
        )  # fmt: skip
        bank, queries = split_holdout(full, held)
        description = (
            f"{name} {split}: {len(queries)} held-out images (bank: the other {len(bank)})"
        )
        info = {"dataset": name, "train_split": f"{split} minus {held} held out",
                "test_split": f"{split} held-out"}  # fmt: skip
        return bank, queries, {**info, "description": description, "run_config": str(path)}
    name = e.get("dataset") or d["dataset"]
    train_split, test_split = e.get("train_split", "train"), e.get("test_split", "test")
    splits = []
    for split, count in ((train_split, e.get("num_train")), (test_split, e.get("num_test"))):
        options = dataset_options(
            name, root=root or e.get("root") or d.get("root"), num_samples=count,
            image_size=image_size, seed=seed,
        )  # fmt: skip
        splits.append(build_dataset(name, split, download=download, transform=transform, **options))
    bank, queries = splits
    description = f"{name} {test_split} (bank: {train_split}, {len(bank)} images)"
    info = {"dataset": name, "train_split": train_split, "test_split": test_split}
    return bank, queries, {**info, "description": description, "run_config": str(path)}
