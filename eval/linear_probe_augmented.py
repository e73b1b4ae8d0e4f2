"""DINO's ``eval_linear.py`` linear-probe protocol: random-resized-crop + flip images through the
frozen backbone every epoch, one lr, SGD with a cosine schedule, scored on the test set with the
eval transform (the fast path on cached features: :mod:`unimix.eval.linear_probe`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .features import extract_features
from .transform import eval_transform

__all__ = ["linear_probe_augmented"]


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
    labels = _augmented_labels(train_dataset, test_dataset, epochs, batch_size, lr)
    device = torch.device(device or "cpu")
    peak = lr * batch_size / 256
    was_training = model.training
    model.eval().to(device)
    try:
        # the crops and flips draw from torch's global RNG: fork it so the caller's is untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            test = _Transformed(test_dataset, eval_transform(image_size, mean, std))
            test_x, test_y = extract_features(
                model, test, batch_size=batch_size, device=device, progress=False
            )
            num_classes = int(max(labels.max(), test_y.max())) + 1
            head = _new_head(test_x.shape[1], num_classes, device)
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


def _new_head(dim: int, num_classes: int, device: torch.device) -> torch.nn.Linear:
    """A linear head with DINO's init: ``N(0, 0.01²)`` weights, zero bias."""
    head = torch.nn.Linear(dim, num_classes).to(device)
    torch.nn.init.normal_(head.weight, std=0.01)
    torch.nn.init.zeros_(head.bias)
    return head


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
