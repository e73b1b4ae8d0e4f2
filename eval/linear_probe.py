"""Linear probes on frozen features.

:func:`linear_probe` — the fast path on cached features (dinov2's one-pass grid): every learning
rate of a grid is trained **in one pass** over the data (one weight tensor ``[L, D, C]``; each
step is one batched matmul for all L heads, and each head moves with its own lr), the best lr is
chosen on a validation split carved from the training set (stratified, seeded; the test set is
never looked at — unlike dinov2, which picks its best head on the set it reports), then a fresh
head with that lr is **retrained on the whole training set** (train + val, same seed and
schedule) and scored once on test.

Protocol (DINO ``eval_linear.py`` / dinov2 ``eval/linear.py``): heads start from
``N(0, 0.01²)`` weights and zero bias; SGD with momentum 0.9 (no dampening, no Nesterov),
cross-entropy, no weight decay by default, lr decayed per step by a cosine to 0. The default
grid is dinov2's, ``1e-5, 2e-5, 5e-5, …, 5e-2, 0.1`` (13 values), each × ``batch_size / 256``.

Feature normalisation: DINO and dinov2 feed the backbone's output to the linear layer as is —
their ViT features are already LayerNorm-ed by the backbone, and neither adds a BatchNorm
(MAE's probe does). Our zoo mixes backbones that end in a norm (MetaFormer, ViT) with ones that
do not (convolutional stages), so by default (``normalize="standardize"``) each feature
dimension is standardised with the fitting set's mean and std — a parameter-free affine map,
so the family of linear classifiers is unchanged, but one lr grid suits every backbone.
``normalize="none"`` is the DINO/dinov2 protocol exactly. Everything is seeded: the same call
gives the same numbers.

:func:`linear_probe_augmented` — the reference protocol: random-resized-crop + flip images
through the frozen backbone every epoch, one lr, the same SGD + cosine, scored on the test set
with the eval transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_LRS", "linear_probe", "linear_probe_augmented", "stratified_split"]

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
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    lrs = _probe_settings(y_train, lrs, epochs, batch_size, val_fraction, normalize)
    device = torch.device(device or "cpu")

    fit_idx, val_idx = stratified_split(y_train, val_fraction, seed)

    def standardise(fit: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
        return _standardise(normalize, device, fit, *others)

    x_fit, x_val = standardise(x_train[fit_idx], x_train[val_idx])
    kw = {"epochs": epochs, "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed}
    weight, bias = _train_heads(
        x_fit, y_train[fit_idx].to(device), num_classes, lrs, progress=progress, **kw
    )
    val_top1, _ = _accuracy(x_val, y_train[val_idx].to(device), weight, bias)
    best = int(val_top1.argmax())
    x_all, x_te = standardise(x_train, x_test)
    weight, bias = _train_heads(
        x_all, y_train.to(device), num_classes, [lrs[best]], progress=progress, **kw
    )
    test_top1, test_top5 = _accuracy(x_te, y_test.to(device), weight, bias)
    return {
        "best_lr": lrs[best],
        "val_top1": float(val_top1[best]),
        "test_top1": float(test_top1[0]),
        "test_top5": float(test_top5[0]),
        "grid": {float(lr): float(v) for lr, v in zip(lrs, val_top1, strict=True)},
        "epochs": epochs,
        "batch_size": batch_size,
        "normalize": normalize,
        "train_size": len(fit_idx),
        "val_size": len(val_idx),
        "test_size": len(y_test),
    }


def linear_probe_augmented(
    model: torch.nn.Module,
    train_dataset: Any,
    test_dataset: Any,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """DINO's ``eval_linear.py`` protocol: augmented images through the frozen backbone.

    ``train_dataset``/``test_dataset`` yield untransformed images (PIL or uint8 ``[H, W, 3]``
    arrays) and int labels. Train: RandomResizedCrop(image_size, scale 0.08–1) + horizontal
    flip, fresh every epoch; test: :func:`~unimix.eval.eval_transform`. The backbone runs in
    eval mode under ``no_grad`` (its parameters and mode are left as they were); one linear
    head, ``N(0, 0.01²)`` init, SGD (momentum 0.9, lr × batch/256, no weight decay), cosine to
    0 per step. Seeded without touching the global RNG: the same call gives the same numbers
    (for ``num_workers`` > 0 the workers are seeded from the same generator).

    Returns:
        ``{"test_top1", "test_top5", "lr", "epochs", "train_size", "test_size"}`` (percent).
    """
    from .features import extract_features
    from .transform import eval_transform

    labels = _augmented_labels(train_dataset, test_dataset, epochs, batch_size, lr)
    device = torch.device(device or "cpu")
    peak = lr * batch_size / 256
    was_training = model.training
    model.eval().to(device)
    try:
        # the crops and flips draw from torch's global RNG: fork it so the caller's is untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            test_x, test_y = extract_features(
                model,
                _Transformed(test_dataset, eval_transform(image_size, mean, std)),
                batch_size=batch_size,
                device=device,
                progress=False,
            )
            num_classes = int(max(labels.max(), test_y.max())) + 1
            head = torch.nn.Linear(test_x.shape[1], num_classes).to(device)
            torch.nn.init.normal_(head.weight, std=0.01)
            torch.nn.init.zeros_(head.bias)
            train = _Transformed(train_dataset, _train_transform(image_size, mean, std))
            _train_head(model, head, train, epochs, peak, batch_size, num_workers, seed, device)
    finally:
        model.train(was_training)
    with torch.no_grad():
        top = head(test_x.to(device)).topk(min(5, num_classes), dim=1).indices.cpu()
    return {
        "test_top1": 100 * (top[:, 0] == test_y).float().mean().item(),
        "test_top5": 100 * (top == test_y[:, None]).any(1).float().mean().item(),
        "lr": peak,
        "epochs": epochs,
        "train_size": len(train_dataset),
        "test_size": len(test_y),
    }


def _augmented_labels(
    train_dataset: Any, test_dataset: Any, epochs: int, batch_size: int, lr: float
) -> torch.Tensor:
    """Check :func:`linear_probe_augmented`'s inputs; returns the ``[N]`` training labels."""
    if len(train_dataset) == 0 or len(test_dataset) == 0:
        raise ValueError(
            f"linear_probe_augmented: empty dataset (train {len(train_dataset)}, "
            f"test {len(test_dataset)} items)"
        )
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}"
        )
    targets = getattr(train_dataset, "targets", None)
    if targets is None or len(targets) != len(train_dataset):
        targets = [int(train_dataset[i][1]) for i in range(len(train_dataset))]
    labels = torch.as_tensor(list(targets)).long()
    if labels.min() < 0:
        raise ValueError("train_dataset: negative labels (unlabeled data?) cannot train a probe")
    return labels


def _train_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """RandomResizedCrop(image_size, scale 0.08–1) + flip → normalised ``[3, S, S]`` float."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def _train_head(
    model: torch.nn.Module,
    head: torch.nn.Linear,
    train: torch.utils.data.Dataset,
    epochs: int,
    peak_lr: float,
    batch_size: int,
    num_workers: int,
    seed: int,
    device: torch.device,
) -> None:
    """SGD (momentum 0.9) on ``head`` over frozen ``model`` features of ``train``, shuffled with
    ``seed``, lr cosine-decayed per step from ``peak_lr`` to 0."""
    optimizer = torch.optim.SGD(head.parameters(), lr=peak_lr, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    for _ in range(epochs):
        for images, batch_labels in loader:
            with torch.no_grad():
                feats = model(images.to(device)).float()
            loss = F.cross_entropy(head(feats), batch_labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()


class _Transformed(torch.utils.data.Dataset):
    """``(transform(image), label)`` over a dataset of ``(image, label)`` (picklable for workers)."""

    def __init__(self, base: Any, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), int(label)
