"""``unimix knn`` / ``linear`` / ``export``: thin command lines over ``unimix.eval``.

Each ``main(argv)`` returns an exit code: 0 done, 2 bad arguments or files (one line on stderr).
torch and the evaluation modules are imported once the arguments are parsed, so ``--help``
answers without them. Reports go to ``<RUN>/eval/`` (or beside an exported model) unless
``--out`` says otherwise: never into the working directory, never over a run's own files.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["load_model", "main_export", "main_knn", "main_linear", "report_home"]


# ------------------------------------------------------------------------------ shared
def _add_model_args(p: argparse.ArgumentParser) -> None:
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
        "--which", choices=("teacher", "student"), default="teacher",
        help="which network of a training checkpoint (default: teacher, the one DINO evaluates)",
    )  # fmt: skip


def _add_data_args(p: argparse.ArgumentParser, data_default_help: str | None = None) -> None:
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


def load_model(path: str, which: str = "teacher") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A checkpoint's backbone (``load_backbone``), an exported extractor (``load_extractor``)
    or a ``--format hf`` folder (``load_hf_folder``: timm's ``local-dir:`` loader)."""
    from unimix.checkpoint import BACKBONE_META, load_backbone

    from .hf_export import is_hf_folder, load_hf_folder

    p = Path(path)
    if is_hf_folder(p):
        return load_hf_folder(p)
    if p.is_dir() or (p.suffix == ".safetensors" and p.with_name(BACKBONE_META).is_file()):
        model, meta = load_backbone(p, which)
        if p.is_file() and p.name.startswith(("teacher_", "student_")):
            which = p.name.split("_")[0]  # the weights file says which network it holds
        return model, {**meta, "which": which}
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint or exported extractor")
    from .export import load_extractor

    model = load_extractor(p)
    return model, {**model.meta, "model_file": str(p)}


def report_home(path: str, meta: dict[str, Any]) -> tuple[Path, str]:
    """``(folder, label)`` of the default report path (``meta`` from :func:`load_model`): a
    training checkpoint's run folder and ``<which>-step<N>``; an exported file's folder and its
    file name; an hf folder itself and its name."""
    from unimix.checkpoint import CHECKPOINTS_DIR

    p = Path(path)
    if meta.get("hf_folder"):
        return p, p.resolve().name
    if meta.get("model_file"):
        return p.parent, p.name
    if p.is_file():
        home = p.parents[2] if p.parent.parent.name == CHECKPOINTS_DIR else p.parent
    else:
        home = p.parent.parent if p.parent.name == CHECKPOINTS_DIR else p
    which, step = meta.get("which", "teacher"), meta.get("step")
    return home, which if step is None else f"{which}-step{step}"


def _report_path(args: argparse.Namespace, command: str, meta: dict[str, Any]) -> Path:
    """``--out``, checked (never a run's own file), or the default under ``report_home``."""
    from .report import check_report_path, default_report_path

    if args.out is not None:
        check_report_path(args.out)
        return Path(args.out)
    home, label = report_home(args.checkpoint, meta)
    return default_report_path(home, command, label, args.data, args.test_split)


def _report_help(command: str) -> str:
    return (
        f"JSON report path (default: RUN/eval/{command}-<which>-step<N>-<data>-<split>.json in "
        f"the run of a run / checkpoint; <folder>/eval/{command}-<name>-<data>-<split>.json "
        "beside an exported file or inside an hf folder; never a run's own files)"
    )


def _file_tag(path: str | None) -> str:
    """Path, size and modification time of the model file: part of the feature-cache key."""
    if not path or not Path(path).is_file():
        return str(path)
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _subset(dataset: Any, limit: int | None, seed: int) -> Any:
    import torch

    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise ValueError(f"--limit: expected >= 1, got {limit}")
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(dataset), generator=g)[:limit].sort().values
    subset = torch.utils.data.Subset(dataset, keep.tolist())
    return subset


def _datasets(args: argparse.Namespace, meta: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    from unimix.data import build_dataset, dataset_options
    from unimix.data.distinct import check_distinct

    from .features import eval_transform

    size = args.image_size or meta.get("image_size") or 224
    mean = meta.get("mean") or (0.485, 0.456, 0.406)
    std = meta.get("std") or (0.229, 0.224, 0.225)
    transform = eval_transform(size, mean, std)
    if args.data is None:  # `unimix knn RUN`: the run's own eval set
        return _run_datasets(args, transform, size)
    options: dict[str, Any] = {"transform": transform, "download": args.download}
    options["strict"] = args.strict
    options.update(dataset_options(args.data, root=args.root or None, image_size=size))
    train = build_dataset(args.data, args.train_split, **options)
    test = build_dataset(args.data, args.test_split, **options)
    check_distinct(
        train, test, f"--data {args.data} (splits {args.train_split!r} and {args.test_split!r})",
        "pass a folder with train/ and test/ subfolders, or --train-split / --test-split naming "
        "two different subfolders",
    )  # fmt: skip
    info = {
        "dataset": args.data,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "image_size": size,
        "transform": repr(transform),
    }
    return (
        _subset(train, args.limit_train, args.seed),
        _subset(test, args.limit_test, args.seed + 1),
        info,
    )


def _run_datasets(
    args: argparse.Namespace, transform: Any, size: int
) -> tuple[Any, Any, dict[str, Any]]:
    """The eval set named by the run's config.yaml (``args.run_config``); ``args.data`` and
    the splits are set to what it names, for the report."""
    from .run_eval_set import run_eval_datasets

    train, test, info = run_eval_datasets(
        args.run_config, transform, args.root, args.download, strict=args.strict
    )
    args.data, args.train_split, args.test_split = (
        info["dataset"], info["train_split"], info["test_split"]
    )  # fmt: skip
    info.update(image_size=size, transform=repr(transform))
    return (
        _subset(train, args.limit_train, args.seed),
        _subset(test, args.limit_test, args.seed + 1),
        info,
    )


def _placement(args: argparse.Namespace) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: ``--device`` resolved (one-line error when absent), and
    the launcher's process group joined when ``accelerate launch`` / ``torchrun`` started
    several processes."""
    from .device import resolve_device
    from .distributed import init_from_launcher

    device = resolve_device(args.device)
    rank, size = init_from_launcher(device)
    return device, rank, size


def _features(
    args: argparse.Namespace, model: torch.nn.Module, meta: dict[str, Any], device: torch.device
) -> tuple[Any, ...]:
    """Train and test features with labels (tensors, or the train bank as a memory-mapped
    store with ``--features-cache``), each process extracting its block of the data."""
    import torch

    from .device import default_workers
    from .distributed import world
    from .features import extract_features, extract_to_store

    train, test, info = _datasets(args, meta)
    size = world()[1]
    workers = default_workers(size) if args.workers is None else args.workers
    kw = {
        "batch_size": args.batch_size,
        "num_workers": workers,
        "device": device,
        "shard": size > 1,
        "progress": not args.no_progress,
        "cache_tag": f"{_file_tag(meta.get('model_file') or meta.get('source'))}|{info}",
    }
    info.update(device=str(device), processes=size, workers=workers)
    start = time.perf_counter()
    if getattr(args, "features_cache", None):
        bank = extract_to_store(model, train, args.features_cache, **kw)
        queries = extract_to_store(model, test, args.features_cache, **kw)
        x_train, y_train = bank, torch.from_numpy(bank.labels())
        x_test, y_test = queries.memmap(), torch.from_numpy(queries.labels())
        info["features_cache"] = str(bank.directory)
    else:
        x_train, y_train = extract_features(model, train, cache_dir=args.cache_dir, **kw)
        x_test, y_test = extract_features(model, test, cache_dir=args.cache_dir, **kw)
    info["extract_s"] = time.perf_counter() - start
    info["skipped"] = {"train": len(train) - len(y_train), "test": len(test) - len(y_test)}
    return x_train, y_train, x_test, y_test, info


def _run(main: Any, argv: Sequence[str] | None) -> int:
    try:
        return main(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.stderr.write(f"error: {msg}\n")  # one write: processes' lines never interleave
        return 2


# ------------------------------------------------------------------------------ knn
KNN_DATA_DEFAULT = (
    "default: the run's own eval set, from config.yaml in the run directory: eval.dataset or "
    "data.dataset, its root (--root overrides it), eval.train_split/test_split, or with "
    "data.holdout the held-out training images against the rest; --train-split/--test-split "
    "apply to --data only"
)


def _knn_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unimix knn",
        description="Weighted k-NN top-1/top-5 of frozen features (DINO's protocol), on any "
        "device; under `accelerate launch` / `torchrun` each process extracts its share.",
    )
    _add_model_args(p)
    _add_data_args(p, KNN_DATA_DEFAULT)
    p.add_argument(
        "--k", type=int, nargs="+", default=[10, 20, 100, 200],
        help="neighbour counts, one report row each (default: 10 20 100 200)",
    )  # fmt: skip
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
    p.add_argument("--out", help=_report_help("knn"))
    return p


def _knn_rows(args: argparse.Namespace, result: dict[str, Any], ks: list[int], search_s: float):
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


def _knn(argv: Sequence[str] | None) -> int:
    args = _knn_parser().parse_args(argv)
    from .knn import approximate_agreement, knn_evaluate
    from .report import check_report_path, format_table, write_report
    from .run_eval_set import RUN_CONFIG, find_run_config

    if args.out is not None:
        check_report_path(args.out)  # before the work, not after
    if args.data is None:
        args.run_config = find_run_config(args.checkpoint)
        if args.run_config is None:
            raise ValueError(
                f"{args.checkpoint}: no {RUN_CONFIG} of a pretraining run here to take the eval "
                "set from; pass --data"
            )

    device, rank, _ = _placement(args)
    model, meta = load_model(args.checkpoint, args.which)
    x_train, y_train, x_test, y_test, info = _features(args, model, meta, device)
    ks = sorted({k for k in args.k if k <= len(y_train)})
    if not ks:
        raise ValueError(f"--k {args.k}: every k exceeds the bank size {len(y_train)}")
    if len(ks) < len(set(args.k)) and rank == 0:
        skipped = sorted(set(args.k) - set(ks))
        print(
            f"warning: skipping k={skipped}: larger than the bank ({len(y_train)})", file=sys.stderr
        )
    search = {"index": args.index, "backend": args.backend, "device": device,
              "nlist": args.nlist, "nprobe": args.nprobe}  # fmt: skip
    start = time.perf_counter()
    result = knn_evaluate(x_train, y_train, x_test, y_test, ks=ks, temperature=args.temperature,
                          return_predictions=args.predictions, **search)  # fmt: skip
    search_s = time.perf_counter() - start
    if result["index"] != "exact":
        result["agreement_with_exact"] = approximate_agreement(
            x_train, y_train, x_test, max(ks), args.temperature, **search
        )
    if rank != 0:  # every process holds the same result; one reports it
        return 0
    rows = _knn_rows(args, result, ks, search_s)
    print(format_table(rows, ["dataset", "bank", "queries", "k", "top-1", "top-5", "time_s"]))
    if "agreement_with_exact" in result:
        print(
            f"{result['index']} index agrees with exact search on "
            f"{100 * result['agreement_with_exact']:.2f}%"
        )
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
    print(f"wrote {write_report(_report_path(args, 'knn', meta), report)}")
    return 0


def main_knn(argv: Sequence[str] | None = None) -> int:
    """``unimix knn``: see ``unimix knn --help``."""
    return _run(_knn, argv)


# ------------------------------------------------------------------------------ linear
def _linear(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="unimix linear",
        description="Linear probe on frozen features: an lr grid trained in one pass, the best "
        "lr picked on a validation split of the train set, top-1/top-5 on the test set.",
    )
    _add_model_args(p)
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=100, help="probe epochs (default: 100)")
    p.add_argument("--lrs", type=float, nargs="+", help="learning rates (default: a log grid)")
    p.add_argument(
        "--probe-batch-size", type=int, default=1024, help="probe minibatch (default: 1024)"
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.1,
        help="share of the train features held out to choose the lr (default: 0.1)",
    )  # fmt: skip
    p.add_argument(
        "--weight-decay", type=float, default=0.0, help="probe weight decay (default: 0)"
    )
    p.add_argument("--out", help=_report_help("linear"))
    args = p.parse_args(argv)
    from .linear_probe import linear_probe
    from .report import check_report_path, format_table, write_report

    if args.out is not None:
        check_report_path(args.out)  # before the work, not after

    device, rank, _ = _placement(args)
    model, meta = load_model(args.checkpoint, args.which)
    x_train, y_train, x_test, y_test, info = _features(args, model, meta, device)
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
    print(f"wrote {write_report(_report_path(args, 'linear', meta), report)}")
    return 0


def main_linear(argv: Sequence[str] | None = None) -> int:
    """``unimix linear``: see ``unimix linear --help``."""
    return _run(_linear, argv)


# ------------------------------------------------------------------------------ export
def main_export(argv: Sequence[str] | None = None) -> int:
    """``unimix export``: see ``unimix export --help`` (:mod:`unimix.eval.export_cli`)."""
    from .export_cli import export_command

    return _run(export_command, argv)
