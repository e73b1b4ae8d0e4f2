"""Weighted k-NN classification on frozen features, searched with FAISS.

The protocol is DINO's ``eval_knn.py``: features are L2-normalised, similarity is the cosine
(inner product), and each of the k nearest training features votes for its class with weight
``exp(sim / T)``; the prediction is the class with the largest total. One search at the largest
k serves every k asked for (the neighbours of a smaller k are a prefix).

Search (:mod:`unimix.eval.search`): the bank, in memory or a memory-mapped
:class:`~unimix.eval.feature_store.FeatureStore`, is read and normalised in chunks of rows and
searched on the chosen device: GPU FAISS, DINO's chunked ``torch.mm`` + top-k on an accelerator,
or CPU FAISS, all with the same neighbours. ``index="ivf"``/``"hnsw"`` use an approximate FAISS
index (``"auto"`` switches to IVF for banks of a million rows on the CPU);
:func:`approximate_agreement` reports how often it predicts as exact search does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from .search import Bank, as_queries, bank_shape, choose_backend, exact_search, index_search

__all__ = [
    "AUTO_APPROXIMATE_ROWS",
    "approximate_agreement",
    "knn_classify",
    "knn_evaluate",
    "knn_search",
    "resolve_index",
    "torch_knn_search",
]

logger = logging.getLogger("unimix.eval")
IndexKind = Literal["exact", "ivf", "hnsw", "auto"]
#: ``index="auto"`` switches to IVF on CPU FAISS from this bank size (ImageNet-1k's 1.28M
#: train images are above it): exact search of 10k queries there takes minutes on a CPU.
AUTO_APPROXIMATE_ROWS = 1_000_000


def _as_labels(name: str, y: torch.Tensor | np.ndarray | Sequence[int], n: int) -> np.ndarray:
    labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{name}: {labels.shape[0]} labels for {n} feature rows")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: negative label {int(labels.min())} (unlabeled data?)")
    return labels.astype(np.int64)


def resolve_index(index: str, n: int, backend: str) -> str:
    """``"auto"``: ``"ivf"`` for banks of at least :data:`AUTO_APPROXIMATE_ROWS` rows searched
    by CPU FAISS, else ``"exact"`` (an accelerator searches such banks exactly in seconds)."""
    if index != "auto":
        return index
    return "ivf" if n >= AUTO_APPROXIMATE_ROWS and backend == "faiss" else "exact"


def knn_search(
    train_features: Bank,
    test_features: torch.Tensor | np.ndarray,
    k: int,
    *,
    index: IndexKind = "exact",
    backend: str = "auto",
    device: torch.device | str | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices of the ``k`` nearest bank rows of every query.

    Args:
        train_features: the bank ``[N, D]``: a tensor, an array or a
            :class:`~unimix.eval.feature_store.FeatureStore` (read in chunks, never whole);
            test_features: the queries ``[M, D]``; both are L2-normalised here (copies).
        index: ``"exact"``; ``"ivf"`` (FAISS IVF-Flat, ``nlist`` cells, default about
            sqrt(N); ``nprobe`` cells searched, default 8, see default_nprobe); ``"hnsw"`` (32
            links, efSearch 128); ``"auto"``: :func:`resolve_index`.
        backend, device: where exact search runs (:func:`~unimix.eval.search.choose_backend`:
            GPU FAISS, chunked ``torch.mm`` + top-k on the device, or CPU FAISS); every backend
            gives the same neighbours up to float rounding.

    Returns:
        ``(similarities [M, k] float32, indices [M, k] int64)``, most similar first. An
        approximate index that finds fewer than k neighbours pads with index -1 (and a
        similarity of about -3.4e38), which the vote ignores.
    """
    n, dim = bank_shape(train_features)
    queries = as_queries(test_features)
    if dim != queries.shape[1]:
        raise ValueError(
            f"feature dimensions differ: train_features has {dim}, "
            f"test_features has {queries.shape[1]}"
        )
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the bank size ({n} train features)")
    backend = choose_backend(backend, device)
    kind = resolve_index(index, n, backend)
    if kind == "exact":
        return exact_search(train_features, queries, k, backend=backend, device=device)
    return index_search(
        train_features,
        queries,
        k,
        kind,
        nlist=nlist,
        nprobe=nprobe,
        seed=seed,
        use_gpu=backend == "faiss-gpu",
    )


def torch_knn_search(
    train_features: torch.Tensor, test_features: torch.Tensor, k: int, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The peers' method as they write it (dino's ``eval_knn.py``): the whole bank normalised
    in memory, chunked ``torch.mm`` + ``topk``. A reference for tests and benchmarks."""
    bank = torch.nn.functional.normalize(train_features.float(), dim=1)
    queries = torch.nn.functional.normalize(test_features.float(), dim=1)
    sims, ids = [], []
    for start in range(0, queries.shape[0], chunk_size):
        s, i = (queries[start : start + chunk_size] @ bank.T).topk(k, dim=1)
        sims.append(s)
        ids.append(i)
    return torch.cat(sims), torch.cat(ids)


def _vote(
    sims: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    temperature: float,
) -> torch.Tensor:
    """Class scores ``[M, C]``: each neighbour adds ``exp(sim / T)`` to its class.

    ``sims``/``ids`` are ``[M, k]``; ids of -1 (no neighbour found) add nothing.
    """
    found = ids >= 0
    weights = (sims.double() / temperature).exp() * found
    scores = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64)
    return scores.scatter_add_(1, labels[ids.clamp(min=0)], weights)


def knn_classify(
    train_features: Bank,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    **search: Any,
) -> torch.Tensor:
    """Predicted labels ``[M]`` of the test features by DINO's weighted k-NN vote.

    Args:
        train_features: the bank ``[N, D]`` (tensor, array or FeatureStore); test_features:
            the queries ``[M, D]``.
        train_labels: ``[N]`` non-negative ints.
        num_classes: defaults to ``max(train_labels) + 1``.
        search: ``index``, ``backend``, ``device``, ``nlist``, ``nprobe``, ``seed``: see
            :func:`knn_search`.

    Raises:
        ValueError: NaN/inf features, empty bank, dimension or label-count mismatch, k < 1 or
            k larger than the bank (an error, not a silent clamp: a smaller k is another
            protocol), temperature <= 0, a label >= ``num_classes``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    n = bank_shape(train_features)[0]
    labels = torch.from_numpy(_as_labels("train_labels", train_labels, n))
    sims, ids = knn_search(train_features, test_features, k, **search)
    classes = num_classes or int(labels.max()) + 1
    if int(labels.max()) >= classes:
        raise ValueError(f"train_labels: label {int(labels.max())} >= num_classes={classes}")
    scores = _vote(sims, ids, labels, classes, temperature)
    return scores.sort(dim=1, descending=True, stable=True).indices[:, 0]


def knn_evaluate(
    train_features: Bank,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    *,
    return_predictions: bool = False,
    **search: Any,
) -> dict:
    """Top-1 and top-5 accuracy (percent) for every k in ``ks`` from one search.

    ``search``: ``index``, ``backend``, ``device``, ``nlist``, ``nprobe``, ``seed`` (see
    :func:`knn_search`).

    Returns:
        ``{"top1": {k: float}, "top5": {k: float}, "bank": N, "queries": M, "index": kind,
        "backend": name}`` (``kind``/``name`` as resolved), and with ``return_predictions``
        ``"predictions": {k: [M] list of ints}``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if not ks:
        raise ValueError("ks: give at least one k")
    n = bank_shape(train_features)[0]
    y_train = torch.from_numpy(_as_labels("train_labels", train_labels, n))
    y_test = torch.from_numpy(_as_labels("test_labels", test_labels, test_features.shape[0]))
    sims, ids = knn_search(train_features, test_features, max(ks), **search)
    classes = int(max(y_train.max(), y_test.max())) + 1
    top1, top5, predictions = {}, {}, {}
    for k in sorted(ks):
        scores = _vote(sims[:, :k], ids[:, :k], y_train, classes, temperature)
        # stable: ties (e.g. classes without votes) rank by class index, deterministically
        ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, :5]
        top1[k] = 100.0 * (ranked[:, 0] == y_test).double().mean().item()
        top5[k] = 100.0 * (ranked == y_test[:, None]).any(dim=1).double().mean().item()
        predictions[k] = ranked[:, 0].tolist()
    backend = choose_backend(search.get("backend", "auto"), search.get("device"))
    result = {
        "top1": top1,
        "top5": top5,
        "bank": n,
        "queries": int(test_features.shape[0]),
        "index": resolve_index(search.get("index", "exact"), n, backend),
        "backend": backend,
    }
    if return_predictions:
        result["predictions"] = predictions
    return result


def approximate_agreement(
    train_features: Bank,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    index: IndexKind = "ivf",
    **search: Any,
) -> float:
    """Share (0–1) of queries whose approximate-index prediction equals exact search's
    (``search``: ``backend``, ``device``, ``nlist``, ``nprobe``, ``seed``)."""
    exact_options = {key: v for key, v in search.items() if key in ("backend", "device")}
    exact = knn_classify(
        train_features, train_labels, test_features, k, temperature, index="exact", **exact_options
    )
    approx = knn_classify(
        train_features, train_labels, test_features, k, temperature, index=index, **search
    )
    return (exact == approx).double().mean().item()
