"""What ``unimix knn``, ``linear`` and ``export`` share: their model and data options, the
one-line error handling (``error: ...`` on stderr, exit code 2), and the steps from parsed
options to features and report path. torch and the evaluation modules are imported once the
arguments are parsed, so ``--help`` answers without them."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "add_data_args",
    "add_model_args",
    "features",
    "placement",
    "report_help",
    "report_path",
    "run_command",
]


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto (an accelerator when present, else the CPU) | cpu | cuda | cuda:N | mps",
    )
    p.add_argument(
        "checkpoint",
        help="run output dir (newest checkpoint), checkpoint dir, *.safetensors with backbone.json, "
        "an exported extractor, or a folder written by `unimix export --format hf`",
    )
    p.add_argument(
        "--which",
        choices=("teacher", "student"),
        default="teacher",
        help="which network of a training checkpoint (default: teacher, the one DINO evaluates)",
    )


def add_data_args(p: argparse.ArgumentParser, data_default_help: str | None = None) -> None:
    """The data options; ``data_default_help``: ``--data`` is optional and this says why."""
    names = "synthetic | cifar10 | cifar100 | stl10 | folder"
    p.add_argument(
        "--data",
        required=data_default_help is None,
        help=names if data_default_help is None else f"{names} ({data_default_help})",
    )
    p.add_argument("--root", help="root= for torchvision datasets")
    p.add_argument("--download", action="store_true", help="let torchvision download the data")
    p.add_argument("--train-split", default="train", help="split of the bank (default: train)")
    p.add_argument("--test-split", default="test", help="split of the queries (default: test)")
    p.add_argument("--image-size", type=int, help="eval resolution (default: the checkpoint's)")
    p.add_argument("--limit-train", type=int, help="random subset of the train split")
    p.add_argument("--limit-test", type=int, help="random subset of the test split")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward (default: 256)")
    p.add_argument(
        "--workers",
        "--num-workers",
        dest="workers",
        type=int,
        help="DataLoader workers per process (default: the CPUs per process minus one, <= 8)",
    )
    p.add_argument("--cache-dir", help="store/reuse extracted features here")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: --limit-* subsets, the linear probe (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image file (default: skip it and count it)",
    )


def report_help(command: str) -> str:
    return (
        f"JSON report path (default: RUN/eval/{command}-<which>-step<N>-<data>-<split>.json in "
        f"the run of a run / checkpoint; <folder>/eval/{command}-<name>-<data>-<split>.json "
        "beside an exported file or inside an hf folder; never a run's own files)"
    )


def report_path(args: argparse.Namespace, command: str, meta: dict[str, Any]) -> Path:
    """``--out``, checked (never a run's own file), or the default under the model's home."""
    from .report import check_report_path, default_report_path, report_home

    if args.out is not None:
        check_report_path(args.out)
        return Path(args.out)
    home, label = report_home(args.checkpoint, meta)
    return default_report_path(home, command, label, args.data, args.test_split)


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """``main(argv)``, with bad arguments or files as one ``error:`` line and exit code 2."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.stderr.write(f"error: {msg}\n")  # one write: processes' lines never interleave
        return 2


def placement(args: argparse.Namespace) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: ``--device`` resolved (one-line error when absent), and
    the launcher's process group joined when ``accelerate launch`` / ``torchrun`` started
    several processes."""
    from .device import resolve_device
    from .distributed import init_from_launcher

    device = resolve_device(args.device)
    rank, size = init_from_launcher(device)
    return device, rank, size


def _file_tag(path: str | None) -> str:
    """Path, size and modification time of the model file: part of the feature-cache key."""
    if not path or not Path(path).is_file():
        return str(path)
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _datasets(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Bank, queries and their description: ``--data``'s splits, or without it the eval set of
    the run's config.yaml (``args.run_config``; ``args.data`` and the splits are then set to
    what it names, for the report)."""
    from .eval_sets import named_datasets, run_eval_datasets, subset
    from .transform import eval_transform

    size = args.image_size or meta.get("image_size") or 224
    mean = meta.get("mean") or (0.485, 0.456, 0.406)
    std = meta.get("std") or (0.229, 0.224, 0.225)
    transform = eval_transform(size, mean, std)
    if args.data is None:  # `unimix knn RUN`: the run's own eval set
        train, test, info = run_eval_datasets(
            args.run_config, transform, args.root, args.download, strict=args.strict
        )
        args.data, args.train_split, args.test_split = (
            info["dataset"],
            info["train_split"],
            info["test_split"],
        )
    else:
        train, test = named_datasets(
            args.data,
            args.train_split,
            args.test_split,
            transform,
            image_size=size,
            root=args.root,
            download=args.download,
            strict=args.strict,
        )
        info = {
            "dataset": args.data,
            "train_split": args.train_split,
            "test_split": args.test_split,
        }
    info.update(image_size=size, transform=repr(transform))
    return (
        subset(train, args.limit_train, args.seed),
        subset(test, args.limit_test, args.seed + 1),
        info,
    )


def features(
    args: argparse.Namespace, model: torch.nn.Module, meta: dict[str, Any], device: torch.device
) -> tuple[Any, ...]:
    """``(x_train, y_train, x_test, y_test, info)``: features and labels of bank and queries
    (the bank as a memory-mapped store with ``--features-cache``), each process extracting its
    block of the data; ``info`` describes the data and the extraction for the report."""
    from .device import default_workers
    from .distributed import world
    from .features import extract_bank_and_queries

    train, test, info = _datasets(args, meta)
    size = world()[1]
    workers = default_workers(size) if args.workers is None else args.workers
    options = {
        "batch_size": args.batch_size,
        "num_workers": workers,
        "device": device,
        "shard": size > 1,
        "progress": not args.no_progress,
        "cache_tag": f"{_file_tag(meta.get('model_file') or meta.get('source'))}|{info}",
    }
    info.update(device=str(device), processes=size, workers=workers)
    start = time.perf_counter()
    store = getattr(args, "features_cache", None)
    x_train, y_train, x_test, y_test = extract_bank_and_queries(
        model, train, test, features_cache=store, cache_dir=args.cache_dir, **options
    )
    if store:
        info["features_cache"] = str(x_train.directory)
    info["extract_s"] = time.perf_counter() - start
    info["skipped"] = {"train": len(train) - len(y_train), "test": len(test) - len(y_test)}
    return x_train, y_train, x_test, y_test, info
