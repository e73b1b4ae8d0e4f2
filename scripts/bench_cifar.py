"""DINO features on CIFAR-10 for a budget of source images (or minutes): our recipe, several
seeds, next to its floors (raw pixels, the backbone untrained) and, with ``--peer lightly``,
lightly's own CIFAR-10 DINO recipe on the same backbone, data, budget and evaluation.

Every checkpoint's teacher (and the last student) is evaluated like for like: one bank (the
training set), one set of queries (the test set; with ``--holdout N``, N held-out training
images instead), k = 20 and 200, T = 0.07, BatchNorm statistics as kept and re-estimated on
the same 2,048 clean images. Runs go two at a time on one thread each; with ``--minutes`` each
seed's two methods start together, so they share the machine's speed that hour. Prints a
Markdown table and writes ``<out>/race.json``, ``<out>/bench_cifar.png`` (k-NN curves) and each
run's ``curves.png`` (``unimix plot``: loss, entropies, lr, momentum). The logic is
:mod:`unimix.bench.race`, :mod:`unimix.viz.race_plot` and :mod:`unimix.viz.run_plot`. Examples::

    python scripts/bench_cifar.py --images 250000 --seeds 0 1 --peer lightly \
        --recipe cifar10_nano --out runs/race_images
    python scripts/bench_cifar.py --minutes 30 --seeds 0 1 --peer lightly --out runs/race_30min
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10", help="ImageFolder root or name")
    p.add_argument("--recipe", default="cifar10_nano")
    p.add_argument("--backbone", default=None, help="preset (default: the recipe's)")
    p.add_argument("--images", type=int, default=None, help="budget in source images")
    p.add_argument("--minutes", "--budget-min", type=float, default=None, help="budget in minutes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--peer", choices=("lightly", "none"), default="none")
    p.add_argument(
        "--peer-optimizers",
        nargs="+",
        choices=("sgd", "adamw"),
        default=["sgd"],
        help="lightly's recipe with SGD (its own) and/or the AdamW variant",
    )
    p.add_argument("--holdout", type=int, default=0, help="evaluate on held-out training images")
    p.add_argument("--points", type=int, default=5, help="evaluated checkpoints along each run")
    p.add_argument("--eval-size", type=int, default=32, help="image side of the k-NN evaluation")
    p.add_argument("--bank-limit", type=int, default=None, help="k-NN bank size (default all)")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="both methods (bf16: autocast); each trains on the GPU when there is one",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (on CPU, cores per run)"
    )
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers per run")
    p.add_argument("--out", default="runs/bench_cifar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides (ours)")
    args = p.parse_args(argv)
    if args.images is None and args.minutes is None:
        p.error("give a budget: --images N and/or --minutes M")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from unimix.bench import JobSpec
    from unimix.bench.race import format_race, race
    from unimix.ssl.config import load_pretrain_config

    backbone = args.backbone or load_pretrain_config(args.recipe, args.overrides).model.backbone
    base = JobSpec(
        method="ours",
        out=args.out,
        data=args.data,
        backbone=backbone,
        images=args.images,
        minutes=args.minutes,
        recipe=args.recipe,
        overrides=list(args.overrides),
        holdout=args.holdout,
        points=args.points,
        bank_limit=args.bank_limit,
        eval_size=args.eval_size,
        precision=args.precision,
        threads=args.threads,
        num_workers=args.num_workers,
    )
    report = race(
        base,
        args.seeds,
        peer=None if args.peer == "none" else args.peer,
        peer_optimizers=args.peer_optimizers,
        parallel=args.parallel,
        lockstep=args.minutes is not None,
    )
    budget = f"{args.images:,} images" if args.images else f"{args.minutes:g} minutes"
    print(f"\n{backbone}, {budget}; {report['evaluation']}")
    print(format_race(report))
    draw_curves(report, Path(args.out))
    return 0


def draw_curves(report: dict, out: Path) -> list[Path]:
    """``<out>/bench_cifar.png`` (every run's k-NN against images seen) and, for each run that
    logged metrics, ``<out>/<method>/seed<N>/run/curves.png`` (as ``unimix plot`` draws it)."""
    from unimix.viz.race_plot import plot_race
    from unimix.viz.run_plot import METRICS_FILE, plot_run

    written = [plot_race(report, out / "bench_cifar.png")]
    for method, summary in report["methods"].items():
        for run in summary["runs"]:
            run_dir = out / method / f"seed{run['seed']}" / "run"
            if (run_dir / METRICS_FILE).is_file():
                written.append(plot_run(run_dir))
    print(f"wrote {out}/race.json, " + ", ".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    sys.exit(main())
