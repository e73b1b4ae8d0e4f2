"""``unimix linear``: a linear probe on a checkpoint's or an export's frozen features. Reports
go to ``<RUN>/eval/`` (or beside an exported model) unless ``--out`` says otherwise."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .cli_options import (
    add_data_args,
    add_model_args,
    features,
    placement,
    report_help,
    report_path,
    run_command,
)

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unimix linear",
        description="Linear probe on frozen features: an lr grid trained in one pass, the best "
        "lr picked on a validation split of the train set, top-1/top-5 on the test set.",
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--epochs", type=int, default=100, help="probe epochs (default: 100)")
    p.add_argument("--lrs", type=float, nargs="+", help="learning rates (default: a log grid)")
    p.add_argument(
        "--probe-batch-size", type=int, default=1024, help="probe minibatch (default: 1024)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the train features held out to choose the lr (default: 0.1)",
    )
    p.add_argument(
        "--weight-decay", type=float, default=0.0, help="probe weight decay (default: 0)"
    )
    p.add_argument("--out", help=report_help("linear"))
    return p


def _linear(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from .linear_probe import linear_probe
    from .load import load_model
    from .report import check_report_path, format_table, write_report

    if args.out is not None:
        check_report_path(args.out)  # before the work, not after
    device, rank, _ = placement(args)
    model, meta = load_model(args.checkpoint, args.which)
    x_train, y_train, x_test, y_test, info = features(args, model, meta, device)
    if rank != 0:  # the probe is cheap next to extraction: one process trains it
        return 0
    start = time.perf_counter()
    result = linear_probe(
        x_train,
        y_train,
        x_test,
        y_test,
        lrs=args.lrs,
        epochs=args.epochs,
        batch_size=args.probe_batch_size,
        val_fraction=args.val_fraction,
        weight_decay=args.weight_decay,
        seed=args.seed,
        progress=not args.no_progress,
    )
    row = {
        "dataset": f"{args.data}:{args.test_split}",
        "train": result["train_size"],
        "val": result["val_size"],
        "best_lr": f"{result['best_lr']:.3g}",
        "val top-1": result["val_top1"],
        "top-1": result["test_top1"],
        "top-5": result["test_top5"],
        "time_s": time.perf_counter() - start,
    }
    print(format_table([row], list(row)))
    report = {
        "command": "linear",
        "checkpoint": args.checkpoint,
        "which": meta.get("which", args.which),
        "backbone": meta.get("backbone"),
        "step": meta.get("step"),
        "probe_s": row["time_s"],
        **info,
        **result,
    }
    print(f"wrote {write_report(report_path(args, 'linear', meta), report)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``unimix linear``: see ``unimix linear --help``."""
    return run_command(_linear, argv)
