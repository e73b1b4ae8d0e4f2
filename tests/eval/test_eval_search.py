"""Search backends and the memory-mapped bank against brute force written here (numpy): CPU FAISS,
chunked torch mm + top-k and a FeatureStore read in chunks find the same neighbours and give the
same predictions; device strings; the store's rows, labels and extraction into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unimix.eval import knn_classify, knn_search
from unimix.eval.device import default_workers, resolve_device
from unimix.eval.distributed import shard_range
from unimix.eval.feature_store import FeatureStore
from unimix.eval.features import extract_features, extract_to_store
from unimix.eval.search import choose_backend, exact_search


def _data(n: int = 300, m: int = 40, d: int = 12, seed: int = 0):
    """Continuous random features: exact ties between similarities have probability ~0."""
    g = np.random.default_rng(seed)
    centres = g.standard_normal((5, d))
    y = g.integers(0, 5, n)
    bank = (centres[y] + 1.5 * g.standard_normal((n, d))).astype(np.float32)
    queries = (centres[g.integers(0, 5, m)] + 1.5 * g.standard_normal((m, d))).astype(np.float32)
    return bank, y, queries


def _brute(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 cosine similarities, full argsort."""
    b = bank / np.linalg.norm(bank.astype(np.float64), axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries.astype(np.float64), axis=1, keepdims=True)
    sims = q @ b.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, 1), ids


def _vote(sims: np.ndarray, ids: np.ndarray, y: np.ndarray, classes: int, t: float = 0.07):
    scores = np.zeros((len(ids), classes))
    for q in range(len(ids)):
        for s, i in zip(sims[q], ids[q], strict=True):
            scores[q, y[i]] += np.exp(s / t)
    return scores.argmax(1)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("bank_rows", [7, 64, 100_000])
def test_exact_backends_find_the_brute_force_neighbours(backend: str, bank_rows: int) -> None:
    bank, _, queries = _data()
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims, ids = exact_search(
        bank, unit.astype(np.float32), 20, backend=backend, device="cpu", bank_rows=bank_rows
    )
    ref_sims, ref_ids = _brute(bank, queries, 20)
    assert np.array_equal(ids.numpy(), ref_ids)
    np.testing.assert_allclose(sims.numpy(), ref_sims, atol=1e-5)


def test_backends_and_the_store_give_the_same_predictions(tmp_path: Path) -> None:
    bank, y, queries = _data(n=500, m=60, seed=1)
    expected = _vote(*_brute(bank, queries, 20), y, 5)
    store = FeatureStore.allocate(tmp_path / "bank", *bank.shape)
    for start in range(0, len(bank), 128):  # streamed in pieces, as extraction writes it
        store.write(start, bank[start : start + 128], y[start : start + 128])
    assert np.array_equal(store.labels(), y) and np.array_equal(store.rows(0, 500), bank)
    for backend in ("faiss", "torch"):
        for source in (torch.from_numpy(bank), bank, FeatureStore(tmp_path / "bank")):
            got = knn_classify(source, y, queries, k=20, num_classes=5, backend=backend)
            assert got.tolist() == expected.tolist(), (backend, type(source))


def test_search_options_and_device_strings() -> None:
    assert choose_backend("auto", "cpu") == "faiss"
    assert choose_backend("auto", "mps") == "torch"  # an accelerator without GPU FAISS
    assert choose_backend("torch", None) == "torch"
    with pytest.raises(ValueError, match="expected auto, faiss"):
        choose_backend("blas", "cpu")
    assert resolve_device("cpu") == resolve_device("cpu:0") == torch.device("cpu")
    assert resolve_device(torch.device("cpu", 0)) == torch.device("cpu", 0)  # an accelerator's
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        for spec in ("cuda", "cuda:0"):
            with pytest.raises(ValueError, match=f"--device {spec}: no CUDA device"):
                resolve_device(spec)
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")
    assert 0 <= default_workers() <= 8 and default_workers(1000) == 0


def test_auto_index_switches_to_ivf_only_for_large_cpu_banks() -> None:
    from unimix.eval.knn import AUTO_APPROXIMATE_ROWS, resolve_index

    assert resolve_index("auto", AUTO_APPROXIMATE_ROWS - 1, "faiss") == "exact"
    assert resolve_index("auto", AUTO_APPROXIMATE_ROWS, "faiss") == "ivf"
    assert resolve_index("auto", AUTO_APPROXIMATE_ROWS, "torch") == "exact"
    bank, _, queries = _data()
    a = knn_search(bank, queries, 5, index="auto")[1]
    assert torch.equal(a, knn_search(bank, queries, 5, index="exact")[1])


def test_shards_cover_the_dataset_in_order() -> None:
    for n in (0, 1, 7, 10):
        for size in (1, 2, 3, 4):
            blocks = [shard_range(n, r, size) for r in range(size)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return torch.randn(3, 4, 4, generator=g), i % 4


def test_extract_to_store_streams_the_same_features(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 6))
    feats, labels = extract_features(model, _Items(), batch_size=5, progress=False)
    store = extract_to_store(model, _Items(), tmp_path, batch_size=5, progress=False)
    assert store.shape == (23, 6) and FeatureStore.is_complete(store.directory)
    assert torch.equal(torch.from_numpy(store.rows(0, 23)), feats)
    assert store.labels().tolist() == labels.tolist()
    again = extract_to_store(model, _Items(), tmp_path, batch_size=5, progress=False)
    assert again.directory == store.directory  # a complete store is reused
    # workers and a device string give the same rows
    with_workers, _ = extract_features(
        model, _Items(), batch_size=5, num_workers=2, device="cpu", progress=False
    )
    assert torch.equal(with_workers, feats)


def test_store_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no feature store"):
        FeatureStore(tmp_path / "nothing")
    store = FeatureStore.allocate(tmp_path / "s", 4, 3)
    with pytest.raises(ValueError, match="exceed 4"):
        store.write(3, np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"expected \[B, 3\]"):
        store.write(0, np.zeros((2, 5)), np.zeros(2))
    store.write(0, np.full((4, 3), np.nan), np.zeros(4))
    with pytest.raises(ValueError, match="train_features: 4 row"):
        knn_search(store, np.ones((2, 3)), 2)


def test_ivf_with_reserved_lists_equals_faiss_add() -> None:
    import faiss

    from unimix.eval.search import build_index, search_index

    bank, _, queries = _data(n=3000, m=50, d=16, seed=2)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    index = build_index(bank, "ivf", nlist=20, nprobe=4)
    ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 20, faiss.METRIC_INNER_PRODUCT)
    ref.cp.seed = 0
    unit = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    ref.train(unit[np.linspace(0, 2999, num=64 * 20).astype(np.int64)])
    ref.nprobe = 4
    ref.add(unit)
    sims, ids = search_index(index, unit_q.astype(np.float32), 10)
    ref_sims, ref_ids = ref.search(unit_q.astype(np.float32), 10)
    assert index.ntotal == 3000 and np.array_equal(ids.numpy(), ref_ids)
    np.testing.assert_allclose(sims.numpy(), ref_sims, atol=1e-6)


def test_blas_scan_of_ivf_cells_equals_faiss_search() -> None:
    from unimix.eval.search import _ivf_scan, build_index

    bank, _, queries = _data(n=4000, m=80, d=24, seed=3)
    unit_q = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    index = build_index(bank, "ivf", nlist=25, nprobe=3)
    for k in (1, 20, 400):  # 400: more than some probed cells hold, so lists are padded
        sims, ids = _ivf_scan(index, unit_q, k)
        ref_sims, ref_ids = index.search(unit_q, k)
        if k < 400:
            assert np.array_equal(ids.numpy(), ref_ids), k
        else:  # 400 deep, two similarities 1e-8 apart may swap (BLAS vs FAISS rounding)
            assert all(set(a) == set(b) for a, b in zip(ids.numpy(), ref_ids, strict=True))
        found = ref_ids >= 0
        np.testing.assert_allclose(sims.numpy()[found], ref_sims[found], atol=1e-5)


def test_without_faiss_the_knn_takes_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # The GPU image this project measures on has no faiss: auto must not import it.
    import importlib.util
    import sys

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "faiss" else real_find_spec(name, *a),
    )
    monkeypatch.setitem(sys.modules, "faiss", None)  # any `import faiss` now raises ImportError
    assert choose_backend("auto", "cpu") == "torch"
    assert choose_backend("auto", "cuda") == "torch"
    bank, y, queries = _data()
    preds = knn_classify(bank, y, queries, k=20, num_classes=5)
    expected = _vote(*_brute(bank, queries, 20), y, 5)
    assert np.array_equal(np.asarray(preds), expected)
