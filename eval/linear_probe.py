"""Linear probe on cached frozen features (dinov2's one-pass grid): every learning rate of a grid
trained at once (one ``[L, D, C]`` weight tensor, each head with its own lr), the best lr chosen
on a stratified validation split of the training set (never the test set), then one head with
that lr retrained on the whole training set and scored once on test. Protocol, defaults and why
features are standardised: docs/evaluation.md. The augmented-image protocol:
:mod:`unimix.eval.linear_probe_augmented`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_LRS", "linear_probe", "stratified_split"]

#: Base learning rates (per 256 samples of batch): dinov2's linear-probe grid.
DEFAULT_LRS: tuple[float, ...] = (
    1e-5,
    2e-5,
    5e-5,
    1e-4,
    2e-4,
    5e-4,
    1e-3,
    2e-3,
    5e-3,
    1e-2,
    2e-2,
    5e-2,
    0.1,
)


def _check(features: Any, labels: Any, name: str, dim: int | None = None):
    x = torch.as_tensor(features).float()
    y = torch.as_tensor(labels).reshape(-1)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError(f"{name}_labels: expected integer class labels, got {y.dtype} fractions")
    y = y.long()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"{name}_features: expected a non-empty [N, D] tensor, got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{name}_features: {int((~torch.isfinite(x)).any(1).sum())} row(s) with NaN/inf"
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{name}_labels: {y.shape[0]} labels for {x.shape[0]} feature rows")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"feature dimensions differ: train has {dim}, {name} has {x.shape[1]}")
    if y.min() < 0:
        raise ValueError(f"{name}_labels: negative label {int(y.min())} (unlabeled data?)")
    return x, y


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices): ``fraction`` of every class (at least one) goes to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten().numpy()
        rng.shuffle(idx)
        n_val = max(1, round(fraction * len(idx)))
        if n_val >= len(idx):
            raise ValueError(
                f"val_fraction={fraction}: class {c} has {len(idx)} sample(s), too few to keep "
                "one for training and one for validation"
            )
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.from_numpy(np.sort(np.concatenate(train))), torch.from_numpy(
        np.sort(np.concatenate(val))
    )


def _train_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    weight_decay: float,
    seed: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``L = len(lrs)`` linear heads at once; returns ``(W [L, D, C], b [L, C])``."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    w0 = 0.01 * torch.randn(d, num_classes, generator=g)
    weight = w0.expand(len(lrs), d, num_classes).clone().to(x.device).requires_grad_()
    bias = torch.zeros(len(lrs), num_classes, device=x.device, requires_grad=True)
    lr = torch.tensor(lrs, dtype=torch.float32, device=x.device)
    buffers = [torch.zeros_like(weight), torch.zeros_like(bias)]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"linear probe ({len(lrs)} lrs)", unit="step", leave=False)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(x.device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            logits = torch.einsum("nd,ldc->lnc", x[batch], weight) + bias[:, None, :]
            # sum over heads of each head's mean cross-entropy: the heads' gradients stay separate
            loss = F.cross_entropy(
                logits.reshape(-1, num_classes), y[batch].repeat(len(lrs)), reduction="sum"
            ) / len(batch)
            grads = torch.autograd.grad(loss, (weight, bias))
            scale = 0.5 * (1 + math.cos(math.pi * step / total))  # cosine to 0, per step
            # SGD written out: torch.optim takes one lr per tensor, and the L heads share one
            with torch.no_grad():
                for p, grad, buf, decay in zip(
                    (weight, bias), grads, buffers, (weight_decay, 0.0), strict=True
                ):
                    d_p = grad + decay * p if decay else grad
                    buf.mul_(0.9).add_(d_p)  # torch.optim.SGD(momentum=0.9), dampening 0
                    shape = (-1,) + (1,) * (p.ndim - 1)
                    p.sub_((lr * scale).view(shape) * buf)
            step += 1
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return weight.detach(), bias.detach()


def _accuracy(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """(top-1 [L], top-5 [L]) in percent for every head."""
    with torch.no_grad():
        logits = torch.einsum("nd,ldc->lnc", x, weight) + bias[:, None, :]
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        hit = top == y[None, :, None]
        return 100 * hit[..., 0].float().mean(1), 100 * hit.any(-1).float().mean(1)


def _probe_settings(
    y_train: torch.Tensor,
    lrs: Sequence[float] | None,
    epochs: int,
    batch_size: int,
    val_fraction: float,
    normalize: str,
) -> list[float]:
    """Check :func:`linear_probe`'s settings; returns the learning rates to try."""
    if len(torch.unique(y_train)) < 2:
        raise ValueError("train_labels: a linear probe needs at least 2 classes")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected 0 < value < 1, got {val_fraction}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    lrs = [lr * batch_size / 256 for lr in DEFAULT_LRS] if lrs is None else list(lrs)
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs: expected one or more learning rates > 0, got {lrs}")
    if normalize not in ("standardize", "none"):
        raise ValueError(f"normalize: expected 'standardize' or 'none', got {normalize!r}")
    return lrs


def _standardise(
    normalize: str, device: torch.device, fit: torch.Tensor, *others: torch.Tensor
) -> list[torch.Tensor]:
    """``fit`` and ``others`` (``[N, D]``) on ``device``, standardised with ``fit``'s per-dimension
    mean and std unless ``normalize == "none"``."""
    if normalize == "none":
        return [t.to(device) for t in (fit, *others)]
    mean, std = fit.mean(0), fit.std(0).clamp_min(1e-6)  # statistics of `fit` only
    return [((t - mean) / std).to(device) for t in (fit, *others)]


def linear_probe(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    *,
    lrs: Sequence[float] | None = None,
    epochs: int = 100,
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    normalize: Literal["standardize", "none"] = "standardize",
) -> dict[str, Any]:
    """Linear probe with an lr grid trained in one pass, chosen on a validation split.

    Args:
        train_features, test_features: ``[N, D]`` and ``[M, D]`` frozen features (float).
        train_labels, test_labels: ``[N]`` and ``[M]`` integer class labels (>= 0).
        lrs: learning rates to try, used as given (default :data:`DEFAULT_LRS` ×
            ``batch_size / 256``). Ties on validation go to the first in this order.
        val_fraction: share of every class of the training set held out to choose the lr.
        normalize: ``"standardize"`` (per-dimension, fitting-set statistics) or ``"none"``.

    Returns:
        ``{"best_lr", "val_top1", "test_top1", "test_top5", "grid": {lr: val_top1}, "epochs",
        "batch_size", "normalize", "train_size", "val_size", "test_size"}`` (accuracies in
        percent; ``train_size`` is the fitting part used for the grid, the final head is
        retrained on ``train_size + val_size`` samples).
    """
    x_train, y_train = _check(train_features, train_labels, "train")
    x_test, y_test = _check(test_features, test_labels, "test", dim=x_train.shape[1])
    lrs = _probe_settings(y_train, lrs, epochs, batch_size, val_fraction, normalize)
    device = torch.device(device or "cpu")
    train_heads = functools.partial(
        _train_heads,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
        epochs=epochs,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
        progress=progress,
    )
    fit_idx, val_idx = stratified_split(y_train, val_fraction, seed)
    best, val_top1, test_top1, test_top5 = _choose_and_retrain(
        train_heads, normalize, device, x_train, y_train, x_test, y_test, fit_idx, val_idx, lrs
    )
    settings = {"epochs": epochs, "batch_size": batch_size, "normalize": normalize}
    sizes = {"train_size": len(fit_idx), "val_size": len(val_idx), "test_size": len(y_test)}
    return _report(lrs, best, val_top1, test_top1, test_top5, {**settings, **sizes})


def _report(
    lrs: Sequence[float],
    best: int,
    val_top1: torch.Tensor,
    test_top1: torch.Tensor,
    test_top5: torch.Tensor,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The probe's result: the chosen lr, its scores and the whole grid, then ``extra``."""
    grid = {float(lr): float(v) for lr, v in zip(lrs, val_top1, strict=True)}
    return {
        "best_lr": lrs[best],
        "val_top1": float(val_top1[best]),
        "test_top1": float(test_top1[0]),
        "test_top5": float(test_top5[0]),
        "grid": grid,
        **extra,
    }


def _choose_and_retrain(
    train_heads: Any,
    normalize: str,
    device: torch.device,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    fit_idx: torch.Tensor,
    val_idx: torch.Tensor,
    lrs: Sequence[float],
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(best, val top-1 [L], test top-1 [1], test top-5 [1])``: every lr trained on the
    fitting rows and scored on the validation rows; the best retrained on all training rows
    and scored on test."""
    x_fit, x_val = _standardise(normalize, device, x_train[fit_idx], x_train[val_idx])
    weight, bias = train_heads(x_fit, y_train[fit_idx].to(device), lrs=lrs)
    val_top1, _ = _accuracy(x_val, y_train[val_idx].to(device), weight, bias)
    best = int(val_top1.argmax())
    x_all, x_te = _standardise(normalize, device, x_train, x_test)
    weight, bias = train_heads(x_all, y_train.to(device), lrs=[lrs[best]])
    test_top1, test_top5 = _accuracy(x_te, y_test.to(device), weight, bias)
    return best, val_top1, test_top1, test_top5
