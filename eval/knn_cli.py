"""``unimix knn``: weighted k-NN top-1/top-5 of a checkpoint's or an export's frozen features.
Reports go to ``<RUN>/eval/`` (or beside an exported model) unless ``--out`` says otherwise."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

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

KNN_DATA_DEFAULT = (
    "default: the run's own eval set, from config.yaml in the run directory: eval.dataset or "
    "data.dataset, its root (--root overrides it), eval.train_split/test_split, or with "
    "data.holdout the held-out training images against the rest; --train-split/--test-split "
    "apply to --data only"
)
COLUMNS = ["dataset", "bank", "queries", "k", "top-1", "top-5", "time_s"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unimix knn",
        description="Weighted k-NN top-1/top-5 of frozen features (DINO's protocol), on any "
        "device; under `accelerate launch` / `torchrun` each process extracts its share.",
    )
    add_model_args(p)
    add_data_args(p, KNN_DATA_DEFAULT)
    p.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[10, 20, 100, 200],
        help="neighbour counts, one report row each (default: 10 20 100 200)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.07, help="k-NN vote temperature (default: 0.07)"
    )
    p.add_argument(
        "--index",
        choices=("exact", "ivf", "hnsw", "auto"),
        default="exact",
        help="auto: IVF for banks of >= 1M rows searched on the CPU, else exact",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "faiss", "faiss-gpu", "torch"),
        default="auto",
        help="exact search: GPU FAISS, chunked torch.mm+topk on the device, or CPU FAISS",
    )
    p.add_argument("--nlist", type=int, help="IVF cells (default: about sqrt(bank size))")
    p.add_argument(
        "--nprobe",
        type=int,
        help="IVF cells searched per query (default: 8; a quarter of <= 64 cells)",
    )
    p.add_argument(
        "--features-cache",
        help="stream features to memory-mapped files in this directory (reused when complete; "
        "shared by every process): peak memory near one bank instead of several",
    )
    p.add_argument(
        "--predictions", action="store_true", help="add each k's predictions to the JSON"
    )
    p.add_argument("--out", help=report_help("knn"))
    return p


def _rows(args: argparse.Namespace, result: dict[str, Any], ks: list[int], search_s: float):
    return [
        {
            "dataset": f"{args.data}:{args.test_split}",
            "bank": result["bank"],
            "queries": result["queries"],
            "k": k,
            "top-1": result["top1"][k],
            "top-5": result["top5"][k],
            "time_s": search_s,
        }
        for k in ks
    ]


def _check_args(args: argparse.Namespace) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written and a missing eval set."""
    from .eval_sets import RUN_CONFIG, find_run_config
    from .report import check_report_path

    if args.out is not None:
        check_report_path(args.out)
    if args.data is None:
        args.run_config = find_run_config(args.checkpoint)
        if args.run_config is None:
            raise ValueError(
                f"{args.checkpoint}: no {RUN_CONFIG} of a pretraining run here to take the eval "
                "set from; pass --data"
            )


def _knn(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from .knn import approximate_agreement, knn_evaluate
    from .load import load_model
    from .report import format_table, write_report

    _check_args(args)
    device, rank, _ = placement(args)
    model, meta = load_model(args.checkpoint, args.which)
    x_train, y_train, x_test, y_test, info = features(args, model, meta, device)
    ks = sorted({k for k in args.k if k <= len(y_train)})
    if not ks:
        raise ValueError(f"--k {args.k}: every k exceeds the bank size {len(y_train)}")
    if len(ks) < len(set(args.k)) and rank == 0:
        skipped = sorted(set(args.k) - set(ks))
        print(
            f"warning: skipping k={skipped}: larger than the bank ({len(y_train)})", file=sys.stderr
        )
    search = {"index": args.index, "backend": args.backend, "device": device}
    search.update(nlist=args.nlist, nprobe=args.nprobe)
    start = time.perf_counter()
    result = knn_evaluate(
        x_train,
        y_train,
        x_test,
        y_test,
        ks=ks,
        temperature=args.temperature,
        return_predictions=args.predictions,
        **search,
    )
    search_s = time.perf_counter() - start
    if result["index"] != "exact":
        result["agreement_with_exact"] = approximate_agreement(
            x_train, y_train, x_test, max(ks), args.temperature, **search
        )
    if rank != 0:  # every process holds the same result; one reports it
        return 0
    print(format_table(_rows(args, result, ks, search_s), COLUMNS))
    if "agreement_with_exact" in result:
        agreement = 100 * result["agreement_with_exact"]
        print(f"{result['index']} index agrees with exact search on {agreement:.2f}%")
    report = {
        "command": "knn",
        "checkpoint": args.checkpoint,
        "which": meta.get("which", args.which),
        "backbone": meta.get("backbone"),
        "step": meta.get("step"),
        "temperature": args.temperature,
        "search_s": search_s,
        **info,
        **result,
    }
    print(f"wrote {write_report(report_path(args, 'knn', meta), report)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``unimix knn``: see ``unimix knn --help``."""
    return run_command(_knn, argv)
