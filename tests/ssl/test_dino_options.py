"""Recipe options that speed early learning, each against its formula or a hand computation:
KoLeo, SGD / LARS steps, the BatchNorm head, and the held-out validation split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unimix.config import ConfigError
from unimix.data import build_dataset, holdout_indices, split_holdout
from unimix.ssl.config import OptimConfig, load_pretrain_config
from unimix.ssl.head import DINOHead
from unimix.ssl.koleo import koleo_loss
from unimix.ssl.optim import build_optimizer, param_groups


def test_koleo_matches_the_nearest_neighbour_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(7, 5) * torch.rand(7, 1) * 3  # norms differ: the loss must normalise
    xs = x.numpy().astype(np.float64)
    z = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    nearest = [min(np.linalg.norm(z[i] - z[j]) for j in range(7) if j != i) for i in range(7)]
    expected = -np.mean(np.log(np.array(nearest) + 1e-8))
    assert float(koleo_loss(x)) == pytest.approx(expected, rel=1e-5)


def test_koleo_pushes_the_closest_pair_apart() -> None:
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.2]], requires_grad=True)
    koleo_loss(x).backward()
    step = x.detach() - 0.01 * x.grad
    before = F.normalize(x.detach())[0] @ F.normalize(x.detach())[1]
    after = F.normalize(step)[0] @ F.normalize(step)[1]
    assert after < before  # the two nearest rows moved apart (smaller cosine)
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(torch.randn(1, 3))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))


def _grads(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def _set(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    for group in optimizer.param_groups:  # as DINOStep does
        group["lr"] = lr
        if group["decays"]:
            group["weight_decay"] = wd


def test_param_groups_decay_only_matrices() -> None:
    decay, no_decay = param_groups(_model())
    assert [p.shape for p in decay["params"]] == [torch.Size([2, 3])]
    assert sorted(p.numel() for p in no_decay["params"]) == [2, 2, 2]
    assert no_decay["weight_decay"] == 0.0


def test_sgd_two_steps_by_hand() -> None:
    # heavy ball with coupled weight decay: b ← m·b + (g + wd·w); w ← w − lr·b (b₀ = g + wd·w)
    model = _model()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, OptimConfig(name="sgd", momentum=0.8))
    lr, wd = 0.1, 0.05
    expected, buf = [w.clone() for w in w0], [None] * len(w0)
    for seed in (1, 2):
        _grads(model, seed)
        grads = [p.grad.clone() for p in model.parameters()]
        _set(opt, lr, wd)
        opt.step()
        for i, (w, g) in enumerate(zip(expected, grads, strict=True)):
            d = g + (wd * w if w.ndim == 2 else 0)  # biases and norm weights: no decay
            buf[i] = d if buf[i] is None else 0.8 * buf[i] + d
            expected[i] = w - lr * buf[i]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e)


def test_lars_step_by_hand() -> None:
    # You et al. 2017: local lr λ = η·‖w‖ / (‖g‖ + wd·‖w‖) on decayed tensors; first step
    # w ← w − lr·λ·(g + wd·w); tensors without weight decay take a plain SGD step
    model = _model()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, OptimConfig(name="lars", momentum=0.9, trust_coeff=0.02))
    _grads(model, 3)
    grads = [p.grad.clone() for p in model.parameters()]
    lr, wd = 0.5, 0.1
    _set(opt, lr, wd)
    opt.step()
    for p, w, g in zip(model.parameters(), w0, grads, strict=True):
        if w.ndim == 2:
            local = 0.02 * float(w.norm()) / (float(g.norm()) + wd * float(w.norm()))
            expected = w - lr * local * (g + wd * w)
        else:
            expected = w - lr * g
        torch.testing.assert_close(p.detach(), expected)


def test_adamw_stays_the_default() -> None:
    assert isinstance(build_optimizer(_model(), OptimConfig()), torch.optim.AdamW)


def test_bn_head_is_linear_bn_gelu_linear_then_normalised_prototypes() -> None:
    torch.manual_seed(0)
    head = DINOHead(6, out_dim=5, hidden_dim=8, bottleneck_dim=4, num_layers=2, use_bn=True)
    x = torch.randn(10, 6)
    lin1, bn, _, lin2 = head.mlp
    h = x @ lin1.weight.t() + lin1.bias
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)  # batch statistics
    h = F.gelu(h * bn.weight + bn.bias)
    z = h @ lin2.weight.t() + lin2.bias
    z = z / z.norm(dim=1, keepdim=True)
    v = head.last_layer.parametrizations.weight.original1
    prototypes = v / v.norm(dim=1, keepdim=True)  # gain fixed at 1 (norm_last_layer)
    torch.testing.assert_close(head(x), z @ prototypes.t(), rtol=1e-5, atol=1e-5)


def test_holdout_partitions_the_training_set_independently_of_the_run() -> None:
    kept, held = holdout_indices(100, 10)
    assert len(held) == 10 and len(kept) == 90
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))
    again_kept, again_held = holdout_indices(100, 10)
    assert np.array_equal(held, again_held) and np.array_equal(kept, again_kept)
    assert not np.array_equal(held, holdout_indices(101, 10)[1][:10])  # depends on the size
    with pytest.raises(ValueError, match="holdout"):
        holdout_indices(10, 10)


def test_split_holdout_keeps_the_dataset_interface() -> None:
    data = build_dataset("synthetic", "train", num_samples=40, image_size=8)
    rest, held = split_holdout(data, 8)
    kept, held_idx = holdout_indices(40, 8)
    assert len(rest) == 32 and len(held) == 8
    assert held.targets == [data.targets[i] for i in held_idx]
    assert np.array_equal(rest.get_uint8(3), data.get_uint8(int(kept[3])))
    image, label = held[5]
    assert label == data.targets[int(held_idx[5])]
    assert math.isclose(np.asarray(image).mean(), data.get_uint8(int(held_idx[5])).mean())


def test_progress_tracker_warns_once_when_the_knn_stops_improving() -> None:
    from unimix.ssl.engine.monitor import ProgressTracker

    tracker = ProgressTracker("k-NN", patience=2, min_delta=0.5)
    # 40 → 41 is an improvement; 41.3 beats the best but by less than 0.5 (stale 1, best 41.3);
    # 41.0 is stale 2: warn, naming the best and its step; later stale steps stay silent
    said = [tracker.update(s, v) for s, v in [(10, 40.0), (20, 41.0), (30, 41.3), (40, 41.0)]]
    assert said[:3] == [None, None, None]
    assert said[3] is not None and "best 41.30 at step 30" in said[3] and "2 evaluations" in said[3]
    assert tracker.update(50, 40.0) is None
    assert ProgressTracker("k-NN", patience=0).update(1, 1.0) is None


def test_folder_recipe_asks_for_the_folder_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        load_pretrain_config("folder")
    assert "'data.dataset'" in str(err.value) and "\n" not in str(err.value)
    cfg = load_pretrain_config("folder", ["data.dataset=/data/my_images"])
    assert cfg.data.dataset == "/data/my_images"
    assert load_pretrain_config().data.dataset == "synthetic"  # the default is untouched


@pytest.mark.parametrize("recipe", ["quickstart", "folder"])
def test_short_recipes_hold_the_teacher_momentum_and_use_koleo(recipe: str) -> None:
    cfg = load_pretrain_config(recipe, ["data.dataset=/x"] if recipe == "folder" else [])
    assert cfg.dino.momentum_teacher == cfg.dino.momentum_teacher_end == 0.99
    assert cfg.dino.koleo_weight > 0
