"""The images a pretraining run reads: its training set (minus the held-out images) and the
bank and queries of its k-NN monitor. What each dataset kind needs is :mod:`unimix.data`'s."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ...data import build_training_set, split_training_set
from ...data.distinct import check_distinct
from ...data.user_datasets import LabeledTransformed, check_image_dataset
from ...eval import eval_datasets, eval_transform
from ..config import PretrainConfig

__all__ = ["build_train_dataset", "check_eval_dataset", "knn_datasets"]


def build_train_dataset(
    cfg: PretrainConfig, transform: Any = None, holdout: bool = True
) -> Dataset:
    """The training set named by ``cfg.data``, minus its ``data.holdout`` held-out images
    (``holdout=False``: all of them); untransformed unless ``transform`` is given."""
    d = cfg.data
    dataset = build_training_set(d, cfg.seed, transform, cache=d.cache and transform is None)
    if holdout and d.holdout:
        dataset = split_training_set(d, dataset)[0]
    return dataset


def check_eval_dataset(eval_dataset: Any) -> tuple[Dataset, Dataset]:
    """``eval_dataset`` as a (bank, queries) pair of labeled datasets, each yielding
    ``(PIL image or [H, W, 3] uint8 array, int label)``; else a one-line TypeError (a bank that
    holds every query, e.g. one dataset twice: a one-line ValueError)."""
    if not (isinstance(eval_dataset, tuple | list) and len(eval_dataset) == 2):
        raise TypeError(
            "eval_dataset: expected a (bank, queries) pair of labeled datasets, got "
            f"{type(eval_dataset).__name__}"
        )
    bank, queries = eval_dataset
    check_image_dataset(bank, "eval_dataset bank", labeled=True)
    check_image_dataset(queries, "eval_dataset queries", labeled=True)
    check_distinct(bank, queries, "eval_dataset", "pass a bank and queries of different images")
    return bank, queries


def knn_datasets(
    cfg: PretrainConfig, eval_dataset: tuple[Dataset, Dataset] | None = None
) -> tuple[Dataset, Dataset, str]:
    """(bank, queries, description) of the run's k-NN, transformed for evaluation.

    ``eval_dataset``: a (bank, queries) pair of the caller's labeled datasets (see
    :func:`check_eval_dataset`), used instead of the config's. Else, with ``data.holdout > 0``:
    bank = the training images pretraining used, queries = the held-out ones (a validation
    k-NN; the test split is not read). Otherwise ``eval.dataset`` (default: the training
    dataset), ``eval.train_split`` against ``eval.test_split``.
    """
    e = cfg.eval
    transform = eval_transform(cfg.augment.global_size, cfg.data.mean, cfg.data.std)
    if eval_dataset is not None:
        bank, queries = (LabeledTransformed(d, transform) for d in check_eval_dataset(eval_dataset))
        return bank, queries, f"eval_dataset: {len(queries)} queries (bank: {len(bank)} images)"
    bank, queries, info = eval_datasets(cfg.data, e, cfg.seed, transform, strict=cfg.data.strict)
    return bank, queries, info["description"]
