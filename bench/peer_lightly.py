"""The peer: lightly's own CIFAR-10 DINO recipe, as a plain loop built from lightly's components.

What lightly's ``cifar10_benchmark.py`` trains DINO with (its ResNet-18 swapped for the backbone
under test, so both sides of a race train the same network): ``DINOTransform`` (two 32-px global
crops, no blur, no local crops), a 2-layer ``DINOProjectionHead`` with 2,048 prototypes,
``DINOLoss``, a teacher EMA at a constant 0.99, SGD with cosine annealing stepped per epoch.
One departure, in the peer's favour: the teacher's head starts as a copy of the student's, as
in the DINO paper (lightly builds it fresh). ``--optimizer adamw`` is the AdamW variant. Every
setting is listed in docs/benchmarks.md.

Run as ``python -m unimix.bench.peer_lightly --data DIR --backbone NAME --images N --out DIR``;
it writes checkpoints that :func:`unimix.eval.load_backbone` reads (teacher and student
backbones, ``backbone.json`` with the ImageNet mean/std it trained with) and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_peer", "main"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUT_DIM = 2048


class _Views(torch.utils.data.Dataset):
    """``(list of views, label)`` from a unimix dataset of PIL images and a lightly transform."""

    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        image, label = self.dataset[index]
        return self.transform(image), label


def build_peer(backbone: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """(student backbone, student head, teacher backbone, teacher head): lightly's 2-layer
    CIFAR-10 head on ``backbone``; the teacher is a frozen copy of both."""
    from lightly.models.modules import heads
    from lightly.models.utils import deactivate_requires_grad

    dim = backbone.num_features

    def make_head() -> nn.Module:
        head = heads.DINOProjectionHead(dim, 2048, 256, OUT_DIM, batch_norm=True)
        head.layers = heads.ProjectionHead(  # "use only 2 layers for cifar10"
            [(dim, 2048, nn.BatchNorm1d(2048), nn.GELU()), (2048, 256, None, None)]
        ).layers
        return head

    head, teacher_head = make_head(), make_head()
    # lightly's weight_norm (the deprecated hook version) cannot be deep-copied: copy the weights
    teacher_head.load_state_dict(head.state_dict())
    teacher_backbone = copy.deepcopy(backbone)
    deactivate_requires_grad(teacher_backbone)
    deactivate_requires_grad(teacher_head)
    return backbone, head, teacher_backbone, teacher_head


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset name or ImageFolder root (train split)")
    p.add_argument("--backbone", required=True, help="unimix preset or timm model name")
    p.add_argument("--images", type=int, default=None, help="stop after this many source images")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="length of the cosine schedule (default: --images / training-set size)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--holdout", type=int, default=0, help="training images held out (validation)")
    p.add_argument("--points", type=int, default=4, help="checkpoints along the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument(
        "--device", default="auto", help="auto (cuda when available, else cpu), cpu or cuda[:N]"
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: the forward passes and the loss under bf16 autocast, as ours",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.images is None and args.minutes is None:
        p.error("give --images and/or --minutes")
    if args.epochs is None and args.images is None:
        p.error("--minutes alone needs --epochs (the schedule's length)")
    return args


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _loader(args: argparse.Namespace) -> tuple[Any, torch.utils.data.DataLoader]:
    """(training set, DataLoader of lightly's two 32-px global views per image, shuffled with
    ``args.seed``)."""
    from lightly.transforms import DINOTransform

    from ..data import build_dataset, split_holdout

    dataset = build_dataset(
        args.data, "train", **({"cache": True} if Path(args.data).is_dir() else {})
    )
    if args.holdout:
        dataset = split_holdout(dataset, args.holdout)[0]
    transform = DINOTransform(global_crop_size=32, n_local_views=0, gaussian_blur=(0, 0, 0))
    loader = torch.utils.data.DataLoader(
        _Views(dataset, transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
        pin_memory=_device(args.device).type == "cuda",
    )
    return dataset, loader


def _optimizer(args: argparse.Namespace, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """lightly's SGD (lr 0.06·batch/128, weight decay 5e-4) or its DINO example's AdamW."""
    if args.optimizer == "sgd":
        lr = 6e-2 * args.batch_size / 128
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    lr = 5e-4 * args.batch_size / 256
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.04)


def _saver(
    args: argparse.Namespace, backbone: nn.Module, teacher: nn.Module, student: nn.Module
) -> Callable[[int, int, float], None]:
    """``save(step, epoch, elapsed)``: an atomic checkpoint of both backbones (safetensors) and
    ``backbone.json`` that :func:`unimix.eval.load_backbone` reads."""
    from ..checkpoint import write_checkpoint

    meta = {
        "backbone": args.backbone,
        "backbone_kwargs": {},
        "num_features": int(backbone.num_features),
        "image_size": 32,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "trainer": "lightly cifar10 recipe (unimix.bench.peer_lightly)",
    }

    def save(step: int, epoch: int, elapsed: float) -> None:
        def write_files(tmp: Path) -> None:
            for name, module in (("teacher", teacher), ("student", student)):
                state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
                save_file(state, str(tmp / f"{name}_backbone.safetensors"))
            (tmp / "backbone.json").write_text(json.dumps({**meta, "step": step}, indent=1))

        state = {"step": step, "epoch": epoch, "batch_size": args.batch_size, "elapsed_s": elapsed}
        write_checkpoint(
            Path(args.out) / "checkpoints",
            step,
            write_files,
            state,
            is_main=True,
            barrier=lambda: None,
            keep_last=args.points + 2,
        )

    return save


def _train(
    args: argparse.Namespace,
    loader: torch.utils.data.DataLoader,
    networks: tuple[nn.Module, nn.Module, nn.Module, nn.Module],
    optimizer: torch.optim.Optimizer,
    schedule: tuple[float, int, int],
    save: Callable[[int, int, float], None],
    metrics: Any,
) -> tuple[int, float]:
    """lightly's loop until ``planned`` steps or ``args.minutes``; ``schedule`` is (epochs,
    planned steps, checkpoint every); returns (steps, elapsed seconds)."""
    from lightly.loss import DINOLoss
    from lightly.models.utils import update_momentum

    student, head, teacher, teacher_head = networks
    epochs, planned, every = schedule
    device = next(student.parameters()).device
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16")
    criterion = DINOLoss(output_dim=OUT_DIM).to(device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    student.train(), head.train(), teacher.train(), teacher_head.train()
    start, step, epoch, done = time.perf_counter(), 0, 0, False
    while not done:
        for views, _ in loader:
            update_momentum(student, teacher, m=0.99)
            update_momentum(head, teacher_head, m=0.99)
            views = [v.to(device, non_blocking=True) for v in views]
            with autocast:
                with torch.no_grad():
                    teacher_out = [teacher_head(teacher(v)) for v in views[:2]]
                student_out = [head(student(v)) for v in views]
                loss = criterion(teacher_out, student_out, epoch=epoch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            elapsed = time.perf_counter() - start
            if step % 10 == 0:
                record = {
                    "step": step,
                    "epoch": step / len(loader),
                    "loss": float(loss),
                    "lr": optimizer.param_groups[0]["lr"],
                    "elapsed_s": elapsed,
                }
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            out_of_budget = step >= planned or (
                args.minutes is not None and elapsed >= 60 * args.minutes
            )
            if step % every == 0 or out_of_budget:
                save(step, epoch, elapsed)
            if out_of_budget:
                done = True
                break
        else:
            epoch += 1
            scheduler.step()  # lightly steps the cosine once per epoch
    return step, elapsed


def main(argv: list[str] | None = None) -> int:
    """Train the peer as ``argv`` says (see ``--help``); writes checkpoints and metrics.jsonl."""
    args = parse_args(argv)
    from ..backbones import create_dino_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, loader = _loader(args)
    epochs = args.epochs or args.images / len(dataset)
    max_steps = math.inf if args.images is None else args.images // args.batch_size
    planned = min(max_steps, round(epochs * len(loader)))
    every = max(1, math.ceil(planned / args.points))

    device = _device(args.device)
    backbone = create_dino_backbone(args.backbone)
    student, head, teacher, teacher_head = (m.to(device) for m in build_peer(backbone))
    optimizer = _optimizer(args, list(student.parameters()) + list(head.parameters()))
    lr = optimizer.param_groups[0]["lr"]
    save = _saver(args, backbone, teacher, student)
    metrics = open(out / "metrics.jsonl", "w")  # noqa: SIM115 (closed below)
    metrics.write(
        json.dumps({"event": "start", "args": vars(args), "planned_steps": planned}) + "\n"
    )
    print(
        f"lightly peer: {args.backbone}, {len(dataset)} images, batch {args.batch_size}, "
        f"{args.optimizer} lr {lr:g}, schedule {epochs:.3f} epochs, {planned} steps planned, "
        f"{device}, {args.precision}",
        flush=True,
    )
    networks = (student, head, teacher, teacher_head)
    step, elapsed = _train(
        args, loader, networks, optimizer, (epochs, planned, every), save, metrics
    )
    metrics.write(json.dumps({"event": "end", "step": step, "elapsed_s": elapsed}) + "\n")
    metrics.close()
    print(f"lightly peer: {step} steps, {step * args.batch_size} images in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
