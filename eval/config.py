"""The ``eval`` section of a run's config: the k-NN's labeled dataset, how often it runs and
how it votes. Composed into the pretraining config by :class:`unimix.ssl.config.PretrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EvalConfig"]

_POSITIVE = {"gt": 0}
_NON_NEGATIVE = {"ge": 0}


@dataclass
class EvalConfig:
    """k-NN top-1 on a labeled dataset: online every N epochs and/or once at the end."""

    #: Labeled dataset for the k-NN (None: data.dataset); bank = train_split, queries = test_split.
    dataset: str | None = None
    root: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    #: synthetic only: images per split for the bank and the queries.
    num_train: int | None = field(default=None, metadata={"ge": 1})
    num_test: int | None = field(default=None, metadata={"ge": 1})
    #: Online k-NN every this many epochs (may be fractional; 0: never).
    knn_every_epochs: float = field(default=0.0, metadata=_NON_NEGATIVE)
    #: Warn once the online k-NN has not improved by ``knn_min_delta`` points for this many
    #: evaluations in a row: the features have stopped improving (0: never warn).
    knn_patience: int = field(default=3, metadata=_NON_NEGATIVE)
    knn_min_delta: float = field(default=0.5, metadata=_NON_NEGATIVE)
    #: At the end, k-NN of the trained teacher next to the same backbone untrained.
    knn_at_end: bool = False
    k: int = field(default=20, metadata={"ge": 1})
    temperature: float = field(default=0.07, metadata=_POSITIVE)
    batch_size: int = field(default=256, metadata={"ge": 1})
