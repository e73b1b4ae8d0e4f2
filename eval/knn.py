"""Weighted k-NN classification on frozen features, searched with FAISS.

The protocol is DINO's ``eval_knn.py``: features are L2-normalised, similarity is the cosine
(inner product), and each of the k nearest training features votes for its class with weight
``exp(sim / T)``; the prediction is the class with the largest total. One search at the largest
k serves every k asked for (the neighbours of a smaller k are a prefix).

Why FAISS: the peers (dino, lightly, solo-learn, dinov2) multiply the whole query block by the
whole bank with ``torch.mm`` and ``topk``, whose memory grows with the bank; FAISS's exact
inner-product index keeps a bounded heap per query, and we also bound the queries per search
(``chunk_size``), so banks of millions fit. An approximate index (IVF or HNSW) is an option for
very large banks; :func:`approximate_agreement` reports how often it predicts as exact search does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

__all__ = [
    "approximate_agreement",
    "knn_classify",
    "knn_evaluate",
    "knn_search",
    "torch_knn_search",
]

logger = logging.getLogger("unimix.eval")
IndexKind = Literal["exact", "ivf", "hnsw"]


def _as_float32(name: str, x: torch.Tensor | np.ndarray) -> np.ndarray:
    array = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [N, D] array, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 rows)")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf")
    return np.ascontiguousarray(array, dtype=np.float32)


def _as_labels(name: str, y: torch.Tensor | np.ndarray | Sequence[int], n: int) -> np.ndarray:
    labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{name}: {labels.shape[0]} labels for {n} feature rows")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: negative label {int(labels.min())} (unlabeled data?)")
    return labels.astype(np.int64)


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _check(
    train: torch.Tensor | np.ndarray, test: torch.Tensor | np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    bank = _as_float32("train_features", train)
    queries = _as_float32("test_features", test)
    if bank.shape[1] != queries.shape[1]:
        raise ValueError(
            f"feature dimensions differ: train_features has {bank.shape[1]}, "
            f"test_features has {queries.shape[1]}"
        )
    if k < 1:
        raise ValueError(f"k: expected >= 1, got {k}")
    if k > bank.shape[0]:
        raise ValueError(f"k={k} exceeds the bank size ({bank.shape[0]} train features)")
    return _normalize(bank), _normalize(queries)


def _build_index(bank: np.ndarray, kind: IndexKind, nlist: int | None, seed: int):
    import faiss

    d = bank.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or max(1, min(int(math.sqrt(bank.shape[0])), bank.shape[0] // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(bank)
        # 2·sqrt(nlist) cells: 99.7% agreement on the test bank, 98.7% on 20k noisy 64-d
        # clusters; IVF scans vectors without BLAS (≈5× slower per distance than IndexFlatIP
        # here), so it only wins when it visits a small share of a large bank
        index.nprobe = min(nlist, max(1, math.ceil(2 * math.sqrt(nlist))))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        raise ValueError(f"index: expected 'exact', 'ivf' or 'hnsw', got {kind!r}")
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and kind != "hnsw":
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(bank)
    return index


def knn_search(
    train_features: torch.Tensor | np.ndarray,
    test_features: torch.Tensor | np.ndarray,
    k: int,
    *,
    index: IndexKind = "exact",
    chunk_size: int = 8192,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices of the ``k`` nearest bank rows of every query.

    Args:
        train_features: the bank ``[N, D]``; test_features: the queries ``[M, D]``; both are
            L2-normalised here (copies; the inputs are left alone).
        index: ``"exact"`` (``IndexFlatIP``), ``"ivf"`` (``IndexIVFFlat``, ``nlist`` cells,
            default ≈ sqrt(N); ``nprobe`` cells searched, default 2·sqrt(nlist)) or ``"hnsw"``
            (``IndexHNSWFlat``, 32 links, efSearch 128). On GPU FAISS (``get_num_gpus() > 0``)
            exact and IVF indexes run on every GPU.
        chunk_size: queries per FAISS call, so the result buffers stay bounded.

    Returns:
        ``(similarities [M, k] float32, indices [M, k] int64)``, most similar first. An
        approximate index that finds fewer than k neighbours pads with index -1 (and a
        similarity of about -3.4e38), which the vote ignores.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    bank, queries = _check(train_features, test_features, k)
    faiss_index = _build_index(bank, index, nlist, seed)
    if nprobe is not None and hasattr(faiss_index, "nprobe"):
        faiss_index.nprobe = nprobe
    sims, ids = [], []
    for start in range(0, queries.shape[0], chunk_size):
        s, i = faiss_index.search(queries[start : start + chunk_size], k)
        sims.append(s)
        ids.append(i)
    return torch.from_numpy(np.concatenate(sims)), torch.from_numpy(np.concatenate(ids))


def torch_knn_search(
    train_features: torch.Tensor, test_features: torch.Tensor, k: int, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The peers' method (dino's ``eval_knn.py``): chunked ``torch.mm`` + ``topk``. For benchmarks."""
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
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    *,
    index: IndexKind = "exact",
    chunk_size: int = 8192,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> torch.Tensor:
    """Predicted labels ``[M]`` of the test features by DINO's weighted k-NN vote.

    Args:
        train_features: the bank ``[N, D]``; test_features: the queries ``[M, D]``.
        train_labels: ``[N]`` non-negative ints.
        num_classes: defaults to ``max(train_labels) + 1``.
        index, chunk_size, nlist, nprobe: see :func:`knn_search`.

    Raises:
        ValueError: NaN/inf features, empty bank, dimension or label-count mismatch, k < 1 or
            k larger than the bank (an error, not a silent clamp: a smaller k is another
            protocol), temperature <= 0, a label >= ``num_classes``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    n = train_features.shape[0] if hasattr(train_features, "shape") else len(train_features)
    labels = torch.from_numpy(_as_labels("train_labels", train_labels, n))
    sims, ids = knn_search(
        train_features,
        test_features,
        k,
        index=index,
        chunk_size=chunk_size,
        nlist=nlist,
        nprobe=nprobe,
    )
    classes = num_classes or int(labels.max()) + 1
    if int(labels.max()) >= classes:
        raise ValueError(f"train_labels: label {int(labels.max())} >= num_classes={classes}")
    scores = _vote(sims, ids, labels, classes, temperature)
    return scores.sort(dim=1, descending=True, stable=True).indices[:, 0]


def knn_evaluate(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    *,
    index: IndexKind = "exact",
    chunk_size: int = 8192,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> dict:
    """Top-1 and top-5 accuracy (percent) for every k in ``ks`` from one search.

    Returns:
        ``{"top1": {k: float}, "top5": {k: float}, "bank": N, "queries": M, "index": index}``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if not ks:
        raise ValueError("ks: give at least one k")
    n = train_features.shape[0]
    y_train = torch.from_numpy(_as_labels("train_labels", train_labels, n))
    y_test = torch.from_numpy(_as_labels("test_labels", test_labels, test_features.shape[0]))
    sims, ids = knn_search(
        train_features,
        test_features,
        max(ks),
        index=index,
        chunk_size=chunk_size,
        nlist=nlist,
        nprobe=nprobe,
    )
    classes = int(max(y_train.max(), y_test.max())) + 1
    top1, top5 = {}, {}
    for k in sorted(ks):
        scores = _vote(sims[:, :k], ids[:, :k], y_train, classes, temperature)
        # stable: ties (e.g. classes without votes) rank by class index, deterministically
        ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, :5]
        top1[k] = 100.0 * (ranked[:, 0] == y_test).double().mean().item()
        top5[k] = 100.0 * (ranked == y_test[:, None]).any(dim=1).double().mean().item()
    return {
        "top1": top1,
        "top5": top5,
        "bank": n,
        "queries": int(test_features.shape[0]),
        "index": index,
    }


def approximate_agreement(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_features: torch.Tensor | np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    index: IndexKind = "ivf",
    nlist: int | None = None,
    nprobe: int | None = None,
) -> float:
    """Share (0–1) of queries whose approximate-index prediction equals exact search's."""
    exact = knn_classify(train_features, train_labels, test_features, k, temperature)
    approx = knn_classify(
        train_features,
        train_labels,
        test_features,
        k,
        temperature,
        index=index,
        nlist=nlist,
        nprobe=nprobe,
    )
    return (exact == approx).double().mean().item()
