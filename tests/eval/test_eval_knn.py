"""k-NN against a brute-force reference written here from DINO's definition, on random features
and on features of real CIFAR-10 images; the approximate index; one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unimix.eval import approximate_agreement, knn_classify, knn_evaluate, knn_search


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: the CPU is shared with other jobs, where small searches run faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_force_knn(train, train_labels, test, k, temperature, num_classes):
    """Full cosine-similarity matrix, explicit loops over every query's k votes."""

    def unit(row):
        norm = math.sqrt(sum(v * v for v in row))
        return [v / norm for v in row]

    train = [unit(row) for row in train.tolist()]
    test = [unit(row) for row in test.tolist()]
    labels = train_labels.tolist()
    predictions, top5 = [], []
    for q in test:
        sims = [sum(a * b for a, b in zip(q, t, strict=True)) for t in train]
        order = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[labels[i]] += math.exp(sims[i] / temperature)
        ranked = sorted(range(num_classes), key=lambda c: -votes[c])
        predictions.append(ranked[0])
        top5.append(ranked[:5])
    return predictions, top5


def _clustered(n: int, d: int, classes: int, spread: float, seed: int):
    """Gaussian clusters around class centres shared by every seed (train and test alike)."""
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, d, generator=g), labels


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.07), (20, 0.5)])
def test_knn_classify_equals_brute_force_on_random_features(k: int, temperature: float) -> None:
    train, y_train = _clustered(120, 16, 6, spread=2.0, seed=0)
    test, _ = _clustered(40, 16, 6, spread=2.0, seed=1)
    expected, _ = brute_force_knn(train, y_train, test, k, temperature, 6)
    got = knn_classify(train, y_train, test, k=k, temperature=temperature, num_classes=6)
    assert got.tolist() == expected


def test_knn_evaluate_top1_top5_equal_brute_force() -> None:
    train, y_train = _clustered(150, 8, 10, spread=3.0, seed=2)
    test, y_test = _clustered(50, 8, 10, spread=3.0, seed=3)
    result = knn_evaluate(train, y_train, test, y_test, ks=(3, 10), temperature=0.07)
    for k in (3, 10):
        pred, top5 = brute_force_knn(train, y_train, test, k, 0.07, 10)
        top1 = 100 * np.mean([p == y for p, y in zip(pred, y_test.tolist(), strict=True)])
        hit5 = 100 * np.mean([y in t for t, y in zip(top5, y_test.tolist(), strict=True)])
        assert result["top1"][k] == pytest.approx(top1)
        assert result["top5"][k] == pytest.approx(hit5)


@pytest.mark.data
def test_knn_classify_equals_brute_force_on_cifar10_pixels(cifar10_root: Path) -> None:
    from unimix.data import build_dataset

    def pixels(split: str, n: int):
        ds = build_dataset(str(cifar10_root), split)
        idx = np.random.default_rng(0).choice(len(ds), n, replace=False)
        # 8×8 thumbnails keep the pure-python reference fast; features are still real images
        x = torch.stack(
            [
                torch.nn.functional.avg_pool2d(
                    torch.from_numpy(ds.get_uint8(int(i)).copy()).permute(2, 0, 1).float(), 4
                ).flatten()
                for i in idx
            ]
        )
        return x - 128.0, torch.tensor([ds.targets[int(i)] for i in idx])

    train, y_train = pixels("train", 300)
    test, _ = pixels("test", 30)
    expected, _ = brute_force_knn(train, y_train, test, 20, 0.07, 10)
    assert knn_classify(train, y_train, test, k=20, num_classes=10).tolist() == expected


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_index_agrees_with_exact(index: str) -> None:
    # overlapping clusters (exact k-NN top-1 about 96%), so the neighbour sets are not trivial
    train, y_train = _clustered(4000, 32, 10, spread=1.3, seed=4)
    test, _ = _clustered(500, 32, 10, spread=1.3, seed=5)
    assert approximate_agreement(train, y_train, test, k=20, index=index) >= 0.99


def test_missing_neighbours_of_an_approximate_index_do_not_vote() -> None:
    # IVF searching 1 of 8 cells cannot find 60 neighbours for every query: FAISS pads with -1
    train, y_train = _clustered(200, 8, 4, spread=1.0, seed=6)
    test, _ = _clustered(30, 8, 4, spread=1.0, seed=7)
    options = {"index": "ivf", "nlist": 8, "nprobe": 1}
    sims, ids = knn_search(train, test, 60, **options)
    assert (ids == -1).any()
    got = knn_classify(train, y_train, test, k=60, num_classes=4, **options)
    for q in range(len(test)):
        votes = [0.0] * 4
        for s, i in zip(sims[q].tolist(), ids[q].tolist(), strict=True):
            if i >= 0:
                votes[int(y_train[i])] += math.exp(s / 0.07)
        assert got[q].item() == max(range(4), key=lambda c: votes[c])


def _one_line_error(fn, *args, match: str, **kwargs) -> None:
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_inputs_give_one_line_errors() -> None:
    train, y = _clustered(30, 8, 3, 1.0, 0)
    test, _ = _clustered(5, 8, 3, 1.0, 1)
    _one_line_error(knn_classify, train, y, test[:, :4], match="dimensions differ")
    nan = train.clone()
    nan[3, 2] = float("nan")
    _one_line_error(knn_classify, nan, y, test, match="train_features: 1 row")
    _one_line_error(knn_classify, train[:0], y[:0], test, match="empty")
    _one_line_error(knn_classify, train, y[:-1], test, match="29 labels for 30")
    _one_line_error(knn_classify, train, y, test, k=0, match="k: expected")
    _one_line_error(knn_classify, train, y, test, k=31, match="exceeds the bank size")
    _one_line_error(knn_classify, train, y, test, temperature=0, match="temperature")
    _one_line_error(knn_classify, train, y, test, num_classes=2, match="num_classes")
    _one_line_error(knn_evaluate, train, y, test, y[:4], match="test_labels: 4 labels for 5")
