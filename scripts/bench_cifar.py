"""DINO features for a fixed wall-clock budget: CIFAR-10 k-NN top-1 along the run, and its floors.

1. Floors: k-NN top-1 of normalised raw pixels and of the same backbone untrained. An untrained
   backbone with BatchNorm first gets its running statistics from ``--bn-images`` training
   images (no weight changes): at init they are 0/1, which alone cost acmix_nano and
   coatnet_nano 3.5–4 points (acmix_nano: 30.05 → 33.50 at k = 20), a gap any training run
   closes for free.
2. A short probe measures this machine's step rate; ``epochs`` is set so the schedules (warm-up,
   cosine lr, teacher momentum) fit the budget, warm-ups are capped at ``--warmup-share`` of it,
   and ``max_minutes`` stops the run at the budget whatever happens.
3. Pretraining from the recipe (default ``cifar10_nano``) with checkpoints at ``--points`` even
   spacings; afterwards (not counted in the budget) every checkpoint's teacher is evaluated:
   k-NN on the test set, bank = the train set, k = 20 and 200, T = 0.07.

Prints a table, writes ``<out>/bench_cifar.json`` and the curve ``<out>/bench_cifar.png``
(k-NN top-1 against images seen and against minutes). Example::

    python scripts/bench_cifar.py --data ../shared/data/cifar10 --budget-min 30 \
        --backbone convformer_nano --out runs/bench_cifar_convformer
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10", help="ImageFolder root or 'cifar10'")
    p.add_argument("--root", default=None, help="root= for torchvision datasets")
    p.add_argument("--recipe", default="cifar10_nano")
    p.add_argument("--backbone", default=None, help="preset (default: the recipe's)")
    p.add_argument("--budget-min", type=float, default=30.0, help="pretraining minutes")
    p.add_argument("--points", type=int, default=5, help="evaluated checkpoints along the run")
    p.add_argument("--probe-steps", type=int, default=6, help="steps timed to size the schedules")
    p.add_argument(
        "--warmup-share", type=float, default=0.1,
        help="cap the recipe's warm-ups (lr, teacher temperature, last-layer freeze) at this share "
        "of the budgeted epochs, unless set on the command line",
    )  # fmt: skip
    p.add_argument(
        "--bn-images", type=int, default=2048,
        help="training images that set an untrained backbone's BatchNorm statistics (0: keep init)",
    )  # fmt: skip
    p.add_argument(
        "--eval-size", type=int, default=None,
        help="image size of the k-NN evaluation and its floors (default: the recipe's global crop "
        "size); set it to evaluate at the data's own size when pretraining at a lower one",
    )  # fmt: skip
    p.add_argument("--ks", type=int, nargs="+", default=[20, 200])
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--limit-train", type=int, default=None, help="k-NN bank size (default all)")
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--out", default="runs/bench_cifar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretraining overrides")
    return p.parse_args(argv)


def _overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    base = [f"data.dataset={args.data}", "eval.knn_every_epochs=0", "eval.knn_at_end=false"]
    if args.root:
        base.append(f"data.root={args.root}")
    if args.backbone:
        base.append(f"model.backbone={args.backbone}")
    return base + list(args.overrides) + extra


def _pretrain(recipe: str, overrides: list[str]) -> None:
    """One pretraining run in a child process (a fresh Accelerator each time)."""
    cmd = [sys.executable, "-m", "unimix.cli", "pretrain", "-c", recipe, *overrides]
    subprocess.run(cmd, check=True)


def _subset(dataset: Any, limit: int | None, seed: int = 0) -> Any:
    if limit is None or limit >= len(dataset):
        return dataset
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=g)[:limit])


def _labels(dataset: Any) -> torch.Tensor:
    if isinstance(dataset, torch.utils.data.Subset):
        targets = torch.as_tensor(dataset.dataset.targets)
        return targets[torch.as_tensor(dataset.indices)]
    return torch.as_tensor(dataset.targets)


def _pixels(dataset: Any, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised raw pixels ``[N, 3·H·W]`` (the raw-pixel floor)."""
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    indices = dataset.indices if isinstance(dataset, torch.utils.data.Subset) else range(len(base))
    rows = []
    for i in indices:
        x = torch.from_numpy(base.get_uint8(int(i)).copy()).permute(2, 0, 1).float() / 255
        rows.append(((x - mean[:, None, None]) / std[:, None, None]).flatten())
    return torch.stack(rows)


_WARMUP_KEYS = (
    "optim.warmup_epochs",
    "dino.warmup_teacher_temp_epochs",
    "dino.freeze_last_layer_epochs",
)


def _fit_warmups(cfg: Any, args: argparse.Namespace, epochs: float) -> list[str]:
    """Overrides capping the recipe's warm-ups at ``--warmup-share`` of a budgeted run.

    A recipe written for 30 epochs warms up for 2; a 30-minute CPU budget is about 3 epochs, and
    keeping those 2 would spend most of the run warming up.
    """
    from unimix.config import parse_overrides

    given = {key for key, _ in parse_overrides(args.overrides)}
    cap = args.warmup_share * epochs
    out = []
    for key in _WARMUP_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if key not in given and value > cap:
            out.append(f"{key}={cap:.4f}")
            print(f"  {key}: {value:g} → {cap:.3f} epochs ({args.warmup_share:g} of the run)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from unimix.data import build_dataset
    from unimix.eval import (
        calibrate_batchnorm,
        eval_transform,
        extract_features,
        knn_evaluate,
        load_backbone,
    )
    from unimix.ssl.checkpoint import list_checkpoints, read_trainer_state
    from unimix.ssl.config import load_pretrain_config
    from unimix.ssl.model import create_dino_backbone

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = load_pretrain_config(args.recipe, _overrides(args, [f"output_dir={out / 'probe'}"]))
    size, mean, std = args.eval_size or cfg.augment.global_size, cfg.data.mean, cfg.data.std
    root = {"root": args.root} if args.root else {}
    transform = eval_transform(size, mean, std)
    train = _subset(
        build_dataset(args.data, "train", transform=transform, **root), args.limit_train
    )
    test = _subset(build_dataset(args.data, "test", transform=transform, **root), args.limit_test)
    ks = tuple(k for k in args.ks if k <= len(train))

    def knn(features_train: torch.Tensor, features_test: torch.Tensor) -> dict[str, float]:
        r = knn_evaluate(
            features_train, _labels(train), features_test, _labels(test), ks=ks,
            temperature=args.temperature,
        )  # fmt: skip
        return {f"top1@{k}": float(r["top1"][k]) for k in ks}

    def backbone_knn(model: torch.nn.Module) -> dict[str, float]:
        ftr, _ = extract_features(model, train, progress=False)
        fte, _ = extract_features(model, test, progress=False)
        return knn(ftr, fte)

    print(f"floors on {args.data}: bank {len(train)}, queries {len(test)}", flush=True)
    m, s = torch.tensor(mean), torch.tensor(std)
    floors = {"raw_pixels": knn(_pixels(train, m, s), _pixels(test, m, s))}
    torch.manual_seed(cfg.seed)
    untrained = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs).eval()
    bn_images = calibrate_batchnorm(untrained, train, args.bn_images, cfg.seed)
    floors["untrained"] = backbone_knn(untrained)
    if bn_images:
        print(f"  untrained floor: BatchNorm statistics from {bn_images} training images")
    print(f"  {floors}", flush=True)

    # Probe the step rate with the real recipe (first steps include start-up, so drop them).
    probe = [
        f"output_dir={out / 'probe'}",
        f"max_steps={args.probe_steps}",
        "checkpoint.every_steps=0",
    ]
    _pretrain(args.recipe, _overrides(args, probe))
    records = [
        json.loads(line) for line in (out / "probe" / "metrics.jsonl").read_text().splitlines()
    ]
    rates = [r["img_per_s"] for r in records if "img_per_s" in r]
    img_per_s = rates[-1]
    n_train = len(build_dataset(args.data, "train", **root))
    images = img_per_s * 60 * args.budget_min
    epochs = max(images / n_train, 0.1)
    steps = int(epochs * (n_train // cfg.data.batch_size))
    every = max(1, math.ceil(steps / args.points))
    print(
        f"probe: {img_per_s:.1f} img/s → {epochs:.2f} epochs ({steps} steps) in "
        f"{args.budget_min:g} min; checkpoint every {every} steps",
        flush=True,
    )
    warmups = _fit_warmups(cfg, args, epochs)
    run_dir = out / "run"
    run = [
        f"output_dir={run_dir}",
        f"epochs={epochs:.4f}",
        f"max_minutes={args.budget_min}",
        f"checkpoint.every_steps={every}",
        f"checkpoint.keep_last={args.points + 2}",
        "logging.progress_bar=false",
        *warmups,
    ]
    start = time.perf_counter()
    _pretrain(args.recipe, _overrides(args, run))
    train_minutes = (time.perf_counter() - start) / 60
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in metrics if "elapsed_s" in r}
    logged = sorted(elapsed)

    def minutes_at(step: int) -> float:
        """Training minutes at ``step`` (metrics are logged every few steps: interpolate)."""
        if step in elapsed or not logged:
            return elapsed.get(step, float("nan")) / 60
        before = max([s for s in logged if s < step], default=0)
        after = min([s for s in logged if s > step], default=logged[-1])
        t0, t1 = elapsed.get(before, 0.0), elapsed[after]
        return (t0 + (t1 - t0) * (step - before) / max(after - before, 1)) / 60

    curve = []
    ckpts = list_checkpoints(run_dir / "checkpoints")
    steps = [int(read_trainer_state(c)["step"]) for c in ckpts]
    for ckpt, step, next_step in zip(ckpts, steps, [*steps[1:], None], strict=True):
        if next_step is not None and next_step - step < max(2, every // 10):
            continue  # a periodic checkpoint a step or two before the final one: same point
        model, _ = load_backbone(ckpt)
        point = {
            "step": step,
            "images_seen": step * cfg.data.batch_size,
            "minutes": minutes_at(step),
            **backbone_knn(model),
        }
        curve.append(point)
        print(f"  {point}", flush=True)

    report = {
        "data": args.data,
        "recipe": args.recipe,
        "backbone": cfg.model.backbone,
        "budget_min": args.budget_min,
        "wall_minutes_with_startup": train_minutes,
        "probe_img_per_s": img_per_s,
        "epochs": epochs,
        "bank": len(train),
        "queries": len(test),
        "temperature": args.temperature,
        "eval_size": size,
        "floors": floors,
        "untrained_bn_images": bn_images,
        "curve": curve,
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
    }
    (out / "bench_cifar.json").write_text(json.dumps(report, indent=1))
    _table(report, ks)
    _plot(report, ks, out / "bench_cifar.png")
    print(f"wrote {out / 'bench_cifar.json'} and {out / 'bench_cifar.png'}")
    return 0


def _table(report: dict[str, Any], ks: tuple[int, ...]) -> None:
    cols = [f"top1@{k}" for k in ks]
    print(f"\n{report['backbone']} on {report['data']}, {report['budget_min']:g} min budget")
    print(f"{'point':<22}" + "".join(f"{c:>10}" for c in cols))
    for name, row in report["floors"].items():
        print(f"{name:<22}" + "".join(f"{row[c]:>10.2f}" for c in cols))
    for p in report["curve"]:
        label = f"{p['images_seen']:,} img, {p['minutes']:.1f} min"
        print(f"{label:<22}" + "".join(f"{p[c]:>10.2f}" for c in cols))


def _plot(report: dict[str, Any], ks: tuple[int, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, x_key, x_label in zip(
        axes, ("images_seen", "minutes"), ("source images seen", "training minutes"), strict=True
    ):
        for k in ks:
            xs = [p[x_key] for p in report["curve"]]
            ax.plot(xs, [p[f"top1@{k}"] for p in report["curve"]], "o-", label=f"DINO k={k}")
            for name, style in (("raw_pixels", ":"), ("untrained", "--")):
                ax.axhline(report["floors"][name][f"top1@{k}"], ls=style, lw=1, color="gray")
        ax.set_xlabel(x_label)
        ax.set_ylabel("k-NN top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="dotted: raw pixels, dashed: untrained", fontsize=8)
    fig.suptitle(f"{report['backbone']}: DINO on {report['data']} ({report['budget_min']:g} min)")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
