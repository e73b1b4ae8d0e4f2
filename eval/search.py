"""Nearest-neighbour search over a bank of features, on any device, exact or approximate.

Backends (``backend="auto"`` picks the first that applies; see docs/evaluation.md):

- ``faiss-gpu``: FAISS on the GPU, when ``faiss`` was built with GPU support and the device is CUDA;
- ``torch``: DINO's chunked ``queries @ bank.T`` + top-k, on the device (an accelerator without
  GPU FAISS);
- ``faiss``: FAISS on the CPU (BLAS inner products with a bounded heap per query).

Exact search reads the bank in chunks of rows (a :class:`~unimix.eval.feature_store.FeatureStore`
on disk, or a tensor / array in memory), L2-normalises each chunk, searches it and merges the
running top-k: memory holds one chunk, whatever the bank's size. Every backend ranks the same
cosine similarities, so they agree on every neighbour up to float rounding (exact ties may be
ordered differently). Approximate indexes (FAISS IVF-Flat, HNSW) are built from the same chunks
and hold one copy of the bank.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch

from .feature_store import FeatureStore

__all__ = [
    "BANK_ROWS",
    "Bank",
    "as_queries",
    "bank_chunks",
    "build_index",
    "choose_backend",
    "exact_search",
    "faiss_available",
    "faiss_gpus",
    "index_search",
    "search_index",
]

Bank = torch.Tensor | np.ndarray | FeatureStore
Backend = Literal["auto", "faiss", "faiss-gpu", "torch"]
#: Bank rows normalised and searched at a time (50 MB at D = 384).
BANK_ROWS = 32768


def faiss_available() -> bool:
    """Whether FAISS imports (a required dependency, but a trimmed GPU image may lack it)."""
    return importlib.util.find_spec("faiss") is not None


def faiss_gpus() -> int:
    """GPUs visible to FAISS (0 for the ``faiss-cpu`` build, or without FAISS)."""
    if not faiss_available():
        return 0
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def choose_backend(backend: str, device: torch.device | str | None) -> str:
    """Resolve ``"auto"``: GPU FAISS on CUDA when available, ``torch`` on other accelerators
    (and CUDA without GPU FAISS), CPU FAISS on the CPU (``torch`` where FAISS is missing)."""
    kind = torch.device(device or "cpu").type
    if backend == "auto":
        if kind == "cuda" and faiss_gpus() > 0:
            return "faiss-gpu"
        return "faiss" if kind == "cpu" and faiss_available() else "torch"
    if backend not in ("faiss", "faiss-gpu", "torch"):
        raise ValueError(f"backend: expected auto, faiss, faiss-gpu or torch, got {backend!r}")
    if backend == "faiss-gpu" and faiss_gpus() == 0:
        raise ValueError("backend faiss-gpu: this faiss build sees no GPU (faiss-cpu?)")
    return backend


def _unit(array: np.ndarray, name: str, start: int = 0) -> np.ndarray:
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf (rows from {start})")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


def _as_2d(name: str, x: Any) -> np.ndarray:
    array = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [N, D] array, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 rows)")
    return array


def as_queries(x: Any) -> np.ndarray:
    """Queries ``[M, D]`` as L2-normalised float32 (checked: 2-D, not empty, finite)."""
    if isinstance(x, FeatureStore):
        x = x.memmap()
    return _unit(_as_2d("test_features", x).astype(np.float32, copy=False), "test_features")


def bank_shape(bank: Bank) -> tuple[int, int]:
    """``(N, D)`` of a bank, checked to be 2-D and not empty."""
    if isinstance(bank, FeatureStore):
        return bank.shape
    return tuple(_as_2d("train_features", bank).shape)  # type: ignore[return-value]


def bank_chunks(bank: Bank, rows: int = BANK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, L2-normalised float32 rows [<=rows, D])`` over the bank, in order."""
    if isinstance(bank, FeatureStore):
        for start, chunk in bank.chunks(rows):
            yield start, _unit(chunk, "train_features", start)
        return
    array = _as_2d("train_features", bank)
    for start in range(0, array.shape[0], rows):
        chunk = array[start : start + rows].astype(np.float32, copy=False)
        yield start, _unit(chunk, "train_features", start)


def _merge(best: tuple[torch.Tensor, torch.Tensor] | None, sims, ids, k: int):
    """Top-k of the running best ``[M, k]`` and a chunk's ``[M, k']`` (earlier rows first on
    equal similarity)."""
    if best is not None:
        sims, ids = torch.cat([best[0], sims], 1), torch.cat([best[1], ids], 1)
    order = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return sims.gather(1, order), ids.gather(1, order)


def _chunk_search(backend: str, chunk: np.ndarray, queries, k: int, device, gpu_res):
    """Exact top-k ``(sims [M, k], local ids [M, k])`` of the queries in one bank chunk."""
    if backend == "torch":
        bank = torch.from_numpy(chunk).to(device, non_blocking=True)
        sims, ids = [], []
        for start in range(0, queries.shape[0], 4096):  # [4096, rows] scores at a time
            s, i = (queries[start : start + 4096] @ bank.T).topk(k, dim=1)
            sims.append(s.float().cpu())
            ids.append(i.cpu())
        return torch.cat(sims), torch.cat(ids)
    import faiss

    index = faiss.IndexFlatIP(chunk.shape[1])
    if backend == "faiss-gpu":
        index = faiss.index_cpu_to_gpu(gpu_res, torch.device(device).index or 0, index)
    index.add(chunk)
    s, i = index.search(queries, k)
    return torch.from_numpy(s), torch.from_numpy(i)


def exact_search(
    bank: Bank,
    queries: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    bank_rows: int = BANK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine top-k: ``(sims [M, k] float32, ids [M, k] int64)``, most similar first.

    ``queries`` ``[M, D]`` are already L2-normalised (:func:`as_queries`); the bank is read and
    normalised ``bank_rows`` rows at a time; ``backend`` as in :func:`choose_backend`.
    """
    backend = choose_backend(backend, device)
    gpu_res = None
    if backend == "faiss-gpu":
        import faiss

        gpu_res = faiss.StandardGpuResources()
    q: Any = queries
    if backend == "torch":
        q = torch.from_numpy(queries).to(device)
    best = None
    for start, chunk in bank_chunks(bank, bank_rows):
        s, i = _chunk_search(backend, chunk, q, min(k, chunk.shape[0]), device, gpu_res)
        best = _merge(best, s, i + start, k)
    assert best is not None
    return best


def _ivf(dim: int, n: int, nlist: int | None, nprobe: int | None, seed: int, bank: Bank):
    import faiss

    nlist = nlist or default_nlist(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    # k-means on at most 64 points a cell, spread over the bank (faiss warns below 39)
    take = np.linspace(0, n - 1, num=min(n, 64 * nlist)).astype(np.int64)
    index.train(_sample(bank, take))
    index.nprobe = min(nlist, nprobe or default_nprobe(nlist))
    return index


def _sample(bank: Bank, rows: np.ndarray) -> np.ndarray:
    if isinstance(bank, FeatureStore):
        mapped = bank.memmap()
        sample = np.array(mapped[rows])
        del mapped
    else:
        sample = _as_2d("train_features", bank)[rows].astype(np.float32)
    return _unit(sample, "train_features")


def default_nlist(n: int) -> int:
    """IVF cells for a bank of ``n`` rows: about sqrt(n), at least 39 points a cell."""
    return max(1, min(int(math.sqrt(n)), n // 39 or 1))


def default_nprobe(nlist: int) -> int:
    """IVF cells searched per query: 8 (measured on a 1M-row bank of 1,000 clusters,
    docs/evaluation.md: 8 of 1,000 cells agree with exact search on 99.9%), 1/128 of the cells
    when that is more, and a quarter of a small index's (<= 64 cells: a class then spans
    several cells, and searching them costs little)."""
    small = math.ceil(nlist / 4) if nlist <= 64 else 0
    return min(nlist, max(8, small, round(nlist / 128)))


def build_index(
    bank: Bank,
    kind: str,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    use_gpu: bool = False,
) -> Any:
    """A FAISS ``"ivf"`` (IVF-Flat: k-means cells trained on at most 64 bank rows a cell, spread
    over the bank) or ``"hnsw"`` (32 links, efSearch 128) index holding the bank's normalised
    rows, added chunk by chunk (one copy of the bank in memory)."""
    import faiss

    n, dim = bank_shape(bank)
    if kind == "ivf":
        index = _ivf(dim, n, nlist, nprobe, seed, bank)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        raise ValueError(f"index: expected 'exact', 'ivf', 'hnsw' or 'auto', got {kind!r}")
    if use_gpu and kind == "ivf":
        index = faiss.index_cpu_to_all_gpus(index)
    elif kind == "ivf":
        _add_reserved(index, bank)
        return index
    for _, chunk in bank_chunks(bank):
        index.add(chunk)
    return index


def _add_reserved(index: Any, bank: Bank) -> None:
    """Add the bank to a CPU IVF index with every inverted list allocated once at its final
    size: FAISS's own ``add`` grows each list as it goes, which leaves up to twice the bank's
    size allocated (measured: 2.2× the bank at peak instead of about 1×). One pass assigns the
    rows to cells, a second adds them."""
    import faiss

    cells = np.concatenate([index.quantizer.assign(c, 1).reshape(-1) for _, c in bank_chunks(bank)])
    lists = faiss.downcast_InvertedLists(index.invlists)
    for cell, count in enumerate(np.bincount(cells, minlength=index.nlist).tolist()):
        if count:
            lists.resize(cell, count)  # allocate, then empty: the capacity stays
            lists.resize(cell, 0)
    for start, chunk in bank_chunks(bank):
        where = np.ascontiguousarray(cells[start : start + chunk.shape[0]], dtype=np.int64)
        index.add_core(chunk.shape[0], faiss.swig_ptr(chunk), None, faiss.swig_ptr(where))


def _ivf_scan(index: Any, queries: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IVF-Flat search with the cells scanned by BLAS: FAISS's quantizer picks each query's
    ``nprobe`` cells, then every cell is scored against all the queries that probe it in one
    ``queries @ cell.T`` (FAISS scans one query-vector pair at a time), each keeps its top k and
    the ``nprobe`` lists are merged. The same neighbours as ``index.search`` (tested)."""
    import faiss

    m, nprobe, d = queries.shape[0], index.nprobe, index.d
    _, probes = index.quantizer.search(queries, nprobe)  # [M, nprobe] cell ids, -1: none
    lists = faiss.downcast_InvertedLists(index.invlists)
    flat = probes.reshape(-1)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(index.nlist + 1))
    q = torch.from_numpy(queries)
    sims = torch.full((m, nprobe, k), float(np.finfo(np.float32).min))
    ids = torch.full((m, nprobe, k), -1, dtype=torch.int64)
    for cell in range(index.nlist):
        n = lists.list_size(cell)
        if bounds[cell] == bounds[cell + 1] or n == 0:
            continue
        entries = torch.from_numpy(order[bounds[cell] : bounds[cell + 1]])
        rows, slots = entries // nprobe, entries % nprobe
        vectors = faiss.rev_swig_ptr(lists.get_codes(cell), n * d * 4).view(np.float32)
        cell_ids = torch.from_numpy(faiss.rev_swig_ptr(lists.get_ids(cell), n).copy())
        s, j = (q[rows] @ torch.from_numpy(vectors.reshape(n, d)).T).topk(min(k, n), dim=1)
        sims[rows, slots, : s.shape[1]] = s
        ids[rows, slots, : s.shape[1]] = cell_ids[j]
    sims, ids = sims.reshape(m, -1), ids.reshape(m, -1)
    best = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return sims.gather(1, best), ids.gather(1, best)


def search_index(index: Any, queries: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sims [M, k], ids [M, k])`` from a :func:`build_index` index (an index that finds
    fewer than k neighbours pads with id -1): a CPU IVF-Flat index by :func:`_ivf_scan`, others
    by FAISS, 8192 queries a call."""
    import faiss

    if isinstance(index, faiss.IndexIVFFlat) and isinstance(
        faiss.downcast_InvertedLists(index.invlists), faiss.ArrayInvertedLists
    ):
        return _ivf_scan(index, np.ascontiguousarray(queries, dtype=np.float32), k)
    sims, ids = [], []
    for start in range(0, queries.shape[0], 8192):
        s, i = index.search(queries[start : start + 8192], k)
        sims.append(torch.from_numpy(s))
        ids.append(torch.from_numpy(i))
    return torch.cat(sims), torch.cat(ids)


def index_search(
    bank: Bank, queries: np.ndarray, k: int, kind: str, **options: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-k: :func:`build_index` (``options``: ``nlist``, ``nprobe``, ``seed``,
    ``use_gpu``) then :func:`search_index`; results as :func:`exact_search`."""
    return search_index(build_index(bank, kind, **options), queries, k)
