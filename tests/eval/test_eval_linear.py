"""Linear probe: learns separable data, is deterministic, picks its lr on validation data only,
and each head of the one-pass grid equals a plain single-lr SGD run written here."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from unimix.eval import linear_probe, linear_probe_augmented
from unimix.eval.linear_probe import _train_heads, stratified_split


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Single-threaded: on the shared, oversubscribed CPU, two spinning OpenMP threads make
    these many small ops up to 100x slower (measured 0.07 s vs 10 s for one probe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gaussians(n: int, d: int, classes: int, seed: int, spread: float = 0.5):
    centres = 3 * torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g), y


def test_separable_features_reach_near_100_and_are_deterministic() -> None:
    x, y = _gaussians(600, 16, 5, seed=0)
    xt, yt = _gaussians(200, 16, 5, seed=1)
    kw = {"epochs": 10, "batch_size": 64, "progress": False, "seed": 3}
    first = linear_probe(x, y, xt, yt, **kw)
    assert first["test_top1"] >= 98 and first["test_top5"] == 100
    assert linear_probe(x, y, xt, yt, **kw) == first
    # dinov2's grid, 1e-5 … 0.1 in 13 steps, scaled by batch / 256
    assert sorted(first["grid"]) == pytest.approx(
        [
            lr * 64 / 256
            for lr in (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
        ]
    )
    assert first["val_top1"] == max(first["grid"].values())
    assert first["grid"][first["best_lr"]] == first["val_top1"]


def test_standardised_probe_ignores_per_dimension_scale() -> None:
    # scaling each dimension by a power of two is exact in float, so standardising must undo it
    # bit for bit; without standardisation the same scales change the result
    x, y = _gaussians(300, 8, 3, seed=8, spread=2.0)
    xt, yt = _gaussians(100, 8, 3, seed=9, spread=2.0)
    scale = 2.0 ** torch.tensor([-6, -3, 0, 2, 4, 5, 7, 9])
    kw = {"epochs": 3, "batch_size": 32, "progress": False, "lrs": [1e-2, 1e-1]}
    assert linear_probe(x * scale, y, xt * scale, yt, **kw) == linear_probe(x, y, xt, yt, **kw)
    raw = linear_probe(x * scale, y, xt * scale, yt, normalize="none", **kw)
    assert raw["normalize"] == "none" and raw["grid"] != linear_probe(x, y, xt, yt, **kw)["grid"]


def test_validation_split_is_stratified_disjoint_and_from_train_only() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    fit, val = stratified_split(y, 0.1, seed=0)
    assert set(fit.tolist()).isdisjoint(val.tolist())
    assert sorted(fit.tolist() + val.tolist()) == list(range(100))
    assert [int((y[val] == c).sum()) for c in range(3)] == [5, 3, 2]
    # the test labels cannot influence the choice of lr: scrambling them changes nothing but
    # the test score
    x, yy = _gaussians(300, 8, 3, seed=4, spread=2.0)
    xt, yt = _gaussians(100, 8, 3, seed=5, spread=2.0)
    kw = {"epochs": 3, "batch_size": 32, "progress": False, "lrs": [1e-3, 1e-1, 10.0]}
    a = linear_probe(x, yy, xt, yt, **kw)
    b = linear_probe(x, yy, xt, yt.flip(0), **kw)
    c = linear_probe(x, yy, torch.randn_like(xt), yt, **kw)  # nor can the test features
    assert a["best_lr"] == b["best_lr"] == c["best_lr"] and a["grid"] == b["grid"] == c["grid"]
    assert a["train_size"] + a["val_size"] == 300 and a["test_size"] == 100


def test_grid_heads_equal_independent_single_lr_sgd_runs() -> None:
    x, y = _gaussians(100, 6, 4, seed=6, spread=1.5)
    lrs, epochs, batch, wd, seed = [0.01, 0.1, 0.5], 3, 16, 1e-3, 7
    weight, bias = _train_heads(x, y, 4, lrs, epochs, batch, wd, seed, progress=False)
    for i, lr in enumerate(lrs):
        # the reference: torch.nn.Linear + torch.optim.SGD, same init draw and batch order
        g = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(6, 4)
        with torch.no_grad():
            head.weight.copy_((0.01 * torch.randn(6, 4, generator=g)).T)
            head.bias.zero_()
        opt = torch.optim.SGD(
            [{"params": [head.weight], "weight_decay": wd}, {"params": [head.bias]}],
            lr=lr,
            momentum=0.9,
        )
        total, step = epochs * math.ceil(100 / batch), 0
        for _ in range(epochs):
            order = torch.randperm(100, generator=g)
            for start in range(0, 100, batch):
                idx = order[start : start + batch]
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
                opt.zero_grad()
                F.cross_entropy(head(x[idx]), y[idx]).backward()
                opt.step()
                step += 1
        torch.testing.assert_close(weight[i], head.weight.detach().T, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(bias[i], head.bias.detach(), atol=1e-5, rtol=1e-4)


def test_grid_entry_equals_a_single_lr_probe() -> None:
    x, y = _gaussians(200, 6, 4, seed=10, spread=3.0)  # overlapping: accuracies differ by lr
    xt, yt = _gaussians(80, 6, 4, seed=11, spread=3.0)
    kw = {"epochs": 2, "batch_size": 32, "progress": False, "seed": 5}
    grid = linear_probe(x, y, xt, yt, lrs=[1e-3, 0.05, 1.0], **kw)
    for lr in (1e-3, 0.05, 1.0):
        alone = linear_probe(x, y, xt, yt, lrs=[lr], **kw)
        assert alone["val_top1"] == pytest.approx(grid["grid"][lr], abs=1e-4)
    best = linear_probe(x, y, xt, yt, lrs=[grid["best_lr"]], **kw)
    assert best["test_top1"] == pytest.approx(grid["test_top1"], abs=1e-4)


def test_bad_inputs_give_one_line_errors() -> None:
    x, y = _gaussians(40, 4, 2, seed=0)
    cases = [
        ((x, y, x[:, :3], y), "dimensions differ"),
        ((x, y[:-1], x, y), "39 labels for 40"),
        ((x.clone().fill_(float("nan")), y, x, y), "NaN"),
        ((x, torch.zeros_like(y), x, y), "at least 2 classes"),
        ((x[:3], torch.tensor([0, 0, 1]), x, y), "class 1 has 1 sample"),
        ((x, y.float() + 0.5, x, y), "integer class labels"),
        ((x, y - 1, x, y), "negative label"),
        ((x[:0], y[:0], x, y), "non-empty"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            linear_probe(*args, epochs=1, progress=False)
        assert "\n" not in str(info.value)
    for kwargs, match in (({"lrs": []}, "lrs"), ({"normalize": "l1"}, "normalize")):
        with pytest.raises(ValueError, match=match):
            linear_probe(x, y, x, y, epochs=1, progress=False, **kwargs)  # type: ignore[arg-type]


def test_augmented_probe_is_seeded_and_leaves_the_backbone_alone() -> None:
    from unimix.data import SyntheticShapes

    train = SyntheticShapes("train", num_samples=24, image_size=16, num_classes=3)
    test = SyntheticShapes("test", num_samples=12, image_size=16, num_classes=3)
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    kw = {"image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3, "epochs": 2, "batch_size": 8}
    rng = torch.get_rng_state()
    a = linear_probe_augmented(backbone, train, test, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched
    assert linear_probe_augmented(backbone, train, test, seed=1, **kw) == a
    assert backbone.training and all(p.requires_grad for p in backbone.parameters())
    for k, v in backbone.state_dict().items():  # frozen: eval mode kept BatchNorm stats fixed
        assert torch.equal(v, before[k]), k
    assert a["train_size"] == 24 and a["test_size"] == 12 and 0 <= a["test_top1"] <= 100
    assert a["lr"] == pytest.approx(1e-3 * 8 / 256)
