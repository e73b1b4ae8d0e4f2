"""Like-for-like k-NN (unimix.eval.compare_knn) against a brute-force k-NN written out here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unimix.eval import compare_knn, is_like_for_like, like_for_like_top1


def brute_force_top1(bank_x, bank_y, query_x, query_y, k: int, t: float) -> float:
    """DINO's weighted k-NN with explicit loops: cosine, k nearest, votes exp(sim / T)."""
    b = bank_x / np.linalg.norm(bank_x, axis=1, keepdims=True)
    q = query_x / np.linalg.norm(query_x, axis=1, keepdims=True)
    correct = 0
    for row, label in zip(q, query_y, strict=True):
        sims = b @ row
        votes: dict[int, float] = {}
        for j in np.argsort(-sims, kind="stable")[:k]:
            votes[int(bank_y[j])] = votes.get(int(bank_y[j]), 0.0) + float(np.exp(sims[j] / t))
        correct += max(votes, key=votes.get) == int(label)
    return 100.0 * correct / len(query_y)


def _data(n: int, seed: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randn(n, 3, 6, 6, generator=g) + labels.view(-1, 1, 1, 1).float()
    return torch.utils.data.TensorDataset(images, labels)


def _features(model: torch.nn.Module, data) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(data.tensors[0]).numpy().astype(np.float64)


def test_every_network_and_the_pixel_floor_by_one_protocol() -> None:
    bank, queries = _data(60, 0), _data(30, 1)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    bn = torch.nn.BatchNorm2d(8)
    with torch.no_grad():  # statistics from elsewhere, as a teacher's from training crops
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(4.0)
    with_bn = torch.nn.Sequential(conv, bn, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    with_bn = torch.nn.Sequential(with_bn, torch.nn.Flatten())
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.Flatten())
    before = copy.deepcopy(with_bn.state_dict())

    rows = compare_knn(
        {"bn_net": with_bn, "plain": plain},
        bank,
        queries,
        ks=(5, 100),
        temperature=0.1,
        bn_images=60,
    )
    assert [(r["network"], r["bn"]) for r in rows] == [
        ("raw_pixels", "none"),
        ("bn_net", "kept"),
        ("bn_net", "recalibrated"),
        ("plain", "none"),
    ]
    assert all("top1@100" not in r for r in rows)  # k larger than the bank: dropped
    by = {(r["network"], r["bn"]): r["top1@5"] for r in rows}
    yb, yq = bank.tensors[1].numpy(), queries.tensors[1].numpy()

    def expected(fb, fq):
        return brute_force_top1(fb, yb, fq, yq, 5, 0.1)

    flat_b = bank.tensors[0].flatten(1).numpy().astype(np.float64)
    flat_q = queries.tensors[0].flatten(1).numpy().astype(np.float64)
    assert by[("raw_pixels", "none")] == pytest.approx(expected(flat_b, flat_q))
    assert by[("bn_net", "kept")] == pytest.approx(
        expected(_features(with_bn, bank), _features(with_bn, queries))
    )
    assert by[("plain", "none")] == pytest.approx(
        expected(_features(plain, bank), _features(plain, queries))
    )
    # recalibrated: BN statistics = mean / unbiased variance of the BN input over the bank
    reference = copy.deepcopy(with_bn)
    with torch.no_grad():
        x = conv(bank.tensors[0]).transpose(0, 1).flatten(1)
        reference[0][1].running_mean.copy_(x.mean(1))
        reference[0][1].running_var.copy_(x.var(1))
    assert by[("bn_net", "recalibrated")] == pytest.approx(
        expected(_features(reference, bank), _features(reference, queries))
    )
    for key, value in with_bn.state_dict().items():  # the caller's network is untouched
        torch.testing.assert_close(value, before[key])


def test_no_k_fits_the_bank() -> None:
    with pytest.raises(ValueError, match="exceeds the bank"):
        compare_knn({}, _data(4, 0), _data(4, 1), ks=(20,))


def test_the_quoted_row_is_the_recalibrated_one_where_there_is_batchnorm() -> None:
    rows = [
        {"network": "raw_pixels", "bn": "none", "top1@20": 30.0},
        {"network": "bn_net", "bn": "kept", "top1@20": 10.0},
        {"network": "bn_net", "bn": "recalibrated", "top1@20": 40.0},
    ]
    assert like_for_like_top1(rows, "bn_net") == 40.0
    assert like_for_like_top1(rows, "raw_pixels") == 30.0
    assert like_for_like_top1(rows, "bn_net", k=200) is None
    assert like_for_like_top1(rows, "absent") is None
    assert [is_like_for_like(r) for r in rows] == [True, False, True]
