"""DINO step throughput: unimix's trainer next to lightly's documented DINO example loop.

Both sides train the same backbone with the same head sizes, batch size, crops, thread count and
DataLoader workers, starting from the same weights. They run in one process, alternating in
rounds (ours, lightly, ours, lightly, …) so that machine drift hits both alike. Each side's time
includes its data path: unimix's batched multi-crop loader, or lightly's ``DINOTransform`` per
PIL image.

The lightly side re-creates ``examples/pytorch/dino.py`` of lightly 1.6: ``DINOProjectionHead``
for student and teacher, ``DINOLoss``, ``update_momentum`` before each step with a per-epoch
``cosine_schedule``, one backbone forward per view, ``cancel_last_layer_gradients``; only the
optimiser is AdamW like ours.

Prints a table (source images/s, ratio, share of the peak fp32 FLOP/s measured in the same run,
peak RSS) and writes JSON. Examples::

    python scripts/bench_train.py                                  # nano preset, 2×32 + 6×16 px
    python scripts/bench_train.py --backbone caformer_s18 --global-size 224 --local-size 96 \
        --num-local 6 --batch-size 32                              # full preset (GPU)
    python scripts/bench_train.py --data ../shared/data/cifar10 --out bench_train.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_NANO = "poolformer_nano"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default=None, help=f"preset or timm name (default {DEFAULT_NANO})")
    p.add_argument("--data", default="synthetic", help="'synthetic', 'cifar10' or a folder path")
    p.add_argument("--num-samples", type=int, default=4096, help="synthetic only")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--global-size", type=int, default=32)
    p.add_argument("--local-size", type=int, default=16)
    p.add_argument(
        "--num-local",
        type=int,
        default=6,
        help="local crops per image (default 6: lightly's DINOTransform and example)",
    )
    p.add_argument("--out-dim", type=int, default=1024, help="head output dim (both sides)")
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--bottleneck-dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=8, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (both sides)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="bench_train.json", help="JSON report path")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ machine
def peak_matmul_flops(device: torch.device, size: int = 2048, seconds: float = 2.0) -> float:
    """Measured fp32 FLOP/s of a large square matmul on ``device`` (the machine's practical peak)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    _sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ unimix side
class OursRunner:
    """unimix's trainer pieces: per-sample-seeded batched multi-crop loader + ``DINOStep``."""

    def __init__(self, cfg: Any, dataset: Any, accelerator: Any) -> None:
        from unimix.ssl.loader import BatchPlan, MultiCropBatches, make_loader
        from unimix.ssl.multicrop import MultiCropAugment
        from unimix.ssl.schedules import Schedules
        from unimix.ssl.step import DINOStep

        self.cfg = cfg
        self.plan = BatchPlan(len(dataset), cfg.data.batch_size, 1, 1, 0, cfg.seed)
        self.schedules = Schedules(cfg, self.plan.steps_per_epoch)
        self.step_fn = DINOStep(cfg, accelerator)
        augment = MultiCropAugment(cfg.augment, cfg.data.mean, cfg.data.std, cfg.seed)
        total = 10**6 // cfg.data.batch_size
        batches = MultiCropBatches(dataset, self.plan, augment, total)
        self.loader = iter(make_loader(batches, 0, cfg.data.num_workers, seed=cfg.seed))
        self.step = 0

    def run(self, steps: int) -> None:
        for _ in range(steps):
            values = self.schedules.at(self.step % self.schedules.total_steps)
            crops = next(self.loader)["crops"]
            self.step_fn([crops], values, self.plan.local_batch, self.step)
            self.step += 1

    def count_flops(self) -> float:
        """FLOPs of one full step (teacher forward, student forward + backward) on real crops."""
        from torch.utils.flop_counter import FlopCounterMode

        values = self.schedules.at(0)
        crops = next(self.loader)["crops"]
        with FlopCounterMode(display=False) as counter:
            self.step_fn([crops], values, self.plan.local_batch, self.step)
        self.step += 1
        return float(counter.get_total_flops())


# ------------------------------------------------------------------------------ lightly side
class _TransformedDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        image, label = self.dataset[i]
        return self.transform(image), label


class LightlyRunner:
    """lightly's documented DINO example loop (one forward per view, per-epoch schedules)."""

    def __init__(self, cfg: Any, dataset: Any, backbone: nn.Module, device: torch.device) -> None:
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms import DINOTransform

        a, h = cfg.augment, cfg.model.head
        transform = DINOTransform(
            global_crop_size=a.global_size,
            global_crop_scale=tuple(a.global_scale),
            local_crop_size=a.local_size,
            local_crop_scale=tuple(a.local_scale),
            n_local_views=a.num_local,
            normalize={"mean": list(cfg.data.mean), "std": list(cfg.data.std)},
        )
        self.loader_def = torch.utils.data.DataLoader(
            _TransformedDataset(dataset, transform),
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            persistent_workers=cfg.data.num_workers > 0,
        )
        self.loader = iter(self.loader_def)
        dim = backbone.num_features
        self.student_backbone = backbone.to(device)
        self.student_head = DINOProjectionHead(
            dim, h.hidden_dim, h.bottleneck_dim, h.out_dim, freeze_last_layer=1
        ).to(device)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(dim, h.hidden_dim, h.bottleneck_dim, h.out_dim)
        self.teacher_head.to(device)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=h.out_dim, warmup_teacher_temp_epochs=5).to(device)
        params = list(self.student_backbone.parameters()) + list(self.student_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=1e-3)
        self.device, self.epoch, self.epochs = device, 0, 100

    def _next_batch(self) -> Any:
        try:
            return next(self.loader)
        except StopIteration:
            self.epoch += 1
            self.loader = iter(self.loader_def)
            return next(self.loader)

    def run(self, steps: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        for _ in range(steps):
            views = self._next_batch()[0]
            momentum = cosine_schedule(self.epoch, self.epochs, 0.996, 1)
            update_momentum(self.student_backbone, self.teacher_backbone, m=momentum)
            update_momentum(self.student_head, self.teacher_head, m=momentum)
            views = [v.to(self.device) for v in views]
            with torch.no_grad():
                teacher_out = [self.teacher_head(self.teacher_backbone(v)) for v in views[:2]]
            student_out = [self.student_head(self.student_backbone(v)) for v in views]
            loss = self.criterion(teacher_out, student_out, epoch=self.epoch)
            loss.backward()
            self.student_head.cancel_last_layer_gradients(current_epoch=self.epoch)
            self.optimizer.step()
            self.optimizer.zero_grad()


# ------------------------------------------------------------------------------ main
def build_config(args: argparse.Namespace) -> Any:
    from unimix.ssl.config import load_pretrain_config

    overrides = [
        f"model.backbone={args.backbone or DEFAULT_NANO}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.num_workers}",
        f"augment.global_size={args.global_size}",
        f"augment.local_size={args.local_size}",
        f"augment.num_local={args.num_local}",
        f"model.head.out_dim={args.out_dim}",
        f"model.head.hidden_dim={args.hidden_dim}",
        f"model.head.bottleneck_dim={args.bottleneck_dim}",
        "epochs=100",
    ]
    if args.data == "synthetic":
        overrides += ["data.dataset=synthetic", f"data.num_samples={args.num_samples}"]
        overrides += [f"data.image_size={args.global_size}"]
    else:
        overrides += [f"data.dataset={args.data}"]
    return load_pretrain_config("quickstart", overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from accelerate import Accelerator

    from unimix.ssl.model import create_dino_backbone
    from unimix.ssl.trainer import build_train_dataset

    cfg = build_config(args)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    dataset = build_train_dataset(cfg)
    print(f"peak fp32 matmul on {device} with {torch.get_num_threads()} threads …", flush=True)
    peak = peak_matmul_flops(device)

    ours = OursRunner(cfg, dataset, accelerator)
    step_flops = ours.count_flops()
    torch.manual_seed(cfg.seed)
    backbone = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    backbone.load_state_dict(accelerator.unwrap_model(ours.step_fn.student).backbone.state_dict())
    theirs = LightlyRunner(cfg, dataset, backbone, device)

    times: dict[str, list[float]] = {"unimix": [], "lightly": []}
    runners = {"unimix": ours, "lightly": theirs}
    for runner in runners.values():
        runner.run(args.warmup)
        _sync(device)
    rss_after_warmup = peak_rss_mib()
    for r in range(args.rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run(args.steps)
            _sync(device)
            times[name].append(time.perf_counter() - start)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(
                f"{n} {args.steps * args.batch_size / t[-1]:.1f} img/s" for n, t in times.items()
            ),
            flush=True,
        )

    # Measured again at the end, the higher counts: a shared machine's speed drifts, and a peak
    # caught in a slow moment would flatter both loops' share of it.
    peak = max(peak, peak_matmul_flops(device))
    images = args.steps * args.batch_size * args.rounds
    rate = {n: images / sum(t) for n, t in times.items()}
    flops_per_image = step_flops / args.batch_size
    rows = []
    for name in runners:
        mfu = rate[name] * flops_per_image / peak
        rows.append((name, rate[name], rate[name] / rate["lightly"], 100 * mfu))
    n_params = sum(p.numel() for p in backbone.parameters())
    header = (
        f"DINO step, {cfg.model.backbone} ({n_params / 1e6:.2f} M params), batch "
        f"{args.batch_size}, crops 2×{args.global_size}px + {args.num_local}×{args.local_size}px, "
        f"{torch.get_num_threads()} threads, {args.num_workers} loader worker(s), {device}"
    )
    print("\n" + header)
    print(f"{'loop':<10} {'img/s':>8} {'vs lightly':>11} {'% peak fp32':>12}")
    for name, r, ratio, mfu in rows:
        print(f"{name:<10} {r:>8.1f} {ratio:>10.2f}× {mfu:>11.1f}%")
    print(
        f"peak fp32 {peak / 1e9:.0f} GFLOP/s; one step {step_flops / 1e9:.2f} GFLOP "
        f"({flops_per_image / 1e6:.1f} MFLOP/image); peak RSS {peak_rss_mib():.0f} MiB"
    )
    report = {
        "config": vars(args) | {"backbone": cfg.model.backbone},
        "device": str(device),
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "backbone_params": n_params,
        "peak_fp32_flops": peak,
        "step_flops": step_flops,
        "img_per_s": rate,
        "ratio_vs_lightly": rate["unimix"] / rate["lightly"],
        "percent_of_peak": {n: mfu for n, _, _, mfu in rows},
        "round_seconds": times,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_mib_after_warmup": rss_after_warmup,
        "note": "both loops share one process, so peak RSS covers both",
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
