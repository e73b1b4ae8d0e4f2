"""One budgeted run and its evaluation: the unit every CIFAR benchmark schedules.

A job pretrains one method — ``ours`` (``unimix pretrain`` with a recipe and overrides) or
``lightly`` (:mod:`unimix.bench.peer_lightly`) — for a budget of source images and/or minutes,
with checkpoints at ``points`` even spacings, then evaluates every checkpoint like for like
(:func:`unimix.eval.compare_knn`): teacher (every point) and student (last point), k-NN top-1 at
``ks``, BatchNorm statistics as kept and re-estimated. The evaluation reads either the test set
(bank = the training set) or, with ``holdout``, a validation split carved from the training set
(bank = the other training images; the test set is not read). It writes ``result.json``.

Jobs run as separate processes (``python -m unimix.bench.worker``), so a scheduler can run two side
by side on one thread each — which is also how two methods get the same wall-clock fairly on a
machine whose speed drifts by the hour.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["JobSpec", "eval_sets", "job_command", "main", "untrained_floors"]


@dataclass
class JobSpec:
    """What one job runs. ``overrides`` are ``unimix pretrain`` KEY=VALUE pairs (ours only)."""

    method: str  # "ours" | "lightly"
    out: str
    data: str
    backbone: str
    seed: int = 0
    images: int | None = None
    minutes: float | None = None
    recipe: str = "cifar10_nano"
    overrides: list[str] = field(default_factory=list)
    holdout: int = 0
    points: int = 4
    threads: int = 1
    bank_limit: int | None = None
    ks: tuple[int, ...] = (20, 200)
    temperature: float = 0.07
    bn_images: int = 2048
    #: image side of the k-NN evaluation (and its floors)
    eval_size: int = 32
    peer_optimizer: str = "sgd"
    #: fp32 or bf16 (autocast), both methods; the device is the accelerator when there is one
    precision: str = "fp32"
    #: DataLoader workers of each run (both methods)
    num_workers: int = 1
    #: ours: warm-ups (lr, teacher temperature, frozen last layer) not set in ``overrides`` are
    #: capped at this share of the budgeted epochs (a 30-epoch recipe's 2-epoch warm-up would
    #: fill most of a 5-epoch budget).
    warmup_share: float = 0.1


def job_command(spec: JobSpec) -> list[str]:
    """The command line that runs ``spec`` in a fresh interpreter."""
    return [sys.executable, "-m", "unimix.bench.worker", "--spec", json.dumps(asdict(spec))]


# ----------------------------------------------------------------------------- evaluation sets
def eval_sets(
    data: str,
    holdout: int,
    mean: Any,
    std: Any,
    size: int = 32,
    bank_limit: int | None = None,
) -> tuple[Any, Any, str]:
    """(bank, queries, description), transformed for evaluation at ``size`` px.

    ``holdout > 0``: bank = the training images pretraining used, queries = the ``holdout``
    held-out ones (:func:`unimix.data.split_holdout`); else bank = train, queries = test.
    ``bank_limit`` keeps a fixed random subset of the bank (cheaper evaluations in a search).
    """
    from ..data import DatasetSubset, build_dataset, split_holdout
    from ..eval import eval_transform

    transform = eval_transform(size, mean, std)
    cache = {"cache": True} if Path(data).is_dir() else {}  # decode a folder's images once
    train = build_dataset(data, "train", transform=transform, **cache)
    if holdout:
        bank, queries = split_holdout(train, holdout)
        what = f"{data}: {len(queries)} held-out training images"
    else:
        bank, queries = train, build_dataset(data, "test", transform=transform, **cache)
        what = f"{data}: test ({len(queries)} images)"
    if bank_limit is not None and bank_limit < len(bank):
        g = torch.Generator().manual_seed(0)
        bank = DatasetSubset(bank, torch.randperm(len(bank), generator=g)[:bank_limit].tolist())
    return bank, queries, f"{what}, bank {len(bank)} training images"


def untrained_floors(spec: JobSpec, mean: Any, std: Any) -> list[dict[str, Any]]:
    """Raw pixels and the backbone at its initial weights (seed ``spec.seed``), like for like."""
    from ..backbones import create_dino_backbone
    from ..eval import compare_knn

    bank, queries, _ = eval_sets(
        spec.data, spec.holdout, mean, std, size=spec.eval_size, bank_limit=spec.bank_limit
    )
    torch.manual_seed(spec.seed)
    untrained = create_dino_backbone(spec.backbone)
    return compare_knn(
        {"untrained": untrained},
        bank,
        queries,
        ks=spec.ks,
        temperature=spec.temperature,
        bn_images=spec.bn_images,
        seed=spec.seed,
    )


# ----------------------------------------------------------------------------- training
def _train_size(spec: JobSpec) -> int:
    from ..data import build_dataset

    return len(build_dataset(spec.data, "train")) - spec.holdout


def _ours_overrides(spec: JobSpec, out: Path, epochs: float, every: int) -> list[str]:
    return [
        f"data.dataset={spec.data}",
        f"data.holdout={spec.holdout}",
        f"model.backbone={spec.backbone}",
        f"seed={spec.seed}",
        f"threads={spec.threads}",
        f"precision={spec.precision}",
        f"data.num_workers={spec.num_workers}",
        "eval.knn_every_epochs=0",
        "eval.knn_at_end=false",
        "logging.progress_bar=false",
        *spec.overrides,
        f"epochs={epochs:.6f}",
        f"checkpoint.every_steps={every}",
        f"checkpoint.keep_last={spec.points + 2}",
        f"output_dir={out}",
    ]


_WARMUP_KEYS = (
    "optim.warmup_epochs",
    "dino.warmup_teacher_temp_epochs",
    "dino.freeze_last_layer_epochs",
)


def _capped_warmups(cfg: Any, spec: JobSpec, epochs: float) -> list[str]:
    from ..config import parse_overrides

    given = {key for key, _ in parse_overrides(spec.overrides)}
    cap = spec.warmup_share * epochs
    capped = []
    for key in _WARMUP_KEYS:
        section, name = key.split(".")
        if key not in given and getattr(getattr(cfg, section), name) > cap:
            capped.append(f"{key}={cap:.6f}")
    return capped


def _probe_rate(spec: JobSpec, out: Path) -> float:
    """Source images per second of ``ours`` on this machine now (6 steps; the first 2 dropped)."""
    from ..ssl.config import load_pretrain_config
    from ..ssl.engine.trainer import pretrain

    probe = out / "probe"
    cfg = load_pretrain_config(
        spec.recipe,
        _ours_overrides(spec, probe, 1.0, 0) + ["max_steps=6", "logging.every_steps=2"],
    )
    pretrain(cfg)
    rates = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines()]
    return [r["img_per_s"] for r in rates if "img_per_s" in r][-1]


def _run_ours(spec: JobSpec, out: Path) -> dict[str, Any]:
    from ..ssl.config import load_pretrain_config
    from ..ssl.engine.trainer import pretrain

    n = _train_size(spec)
    base = load_pretrain_config(spec.recipe, spec.overrides)
    batch = base.data.batch_size
    images = spec.images
    rate = None
    if images is None:  # a wall-clock budget: size the schedules from the measured rate
        rate = _probe_rate(spec, out)
        images = int(rate * 60 * spec.minutes)
    epochs = images / n
    steps = max(1, int(epochs * (n // batch)))
    every = max(1, math.ceil(steps / spec.points))
    overrides = _ours_overrides(spec, out / "run", epochs, every)
    overrides += _capped_warmups(base, spec, epochs)
    if spec.minutes is not None:
        overrides.append(f"max_minutes={spec.minutes}")
    cfg = load_pretrain_config(spec.recipe, overrides)
    result = pretrain(cfg, resume="auto")  # a job killed midway continues from its checkpoint
    return {
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "batch_size": batch,
        "epochs": epochs,
        "probe_img_per_s": rate,
        "img_per_s": result.images_per_s,
        "train_minutes": result.wall_time_s / 60,
        "checkpoints": out / "run" / "checkpoints",
    }


def _run_lightly(spec: JobSpec, out: Path) -> dict[str, Any]:
    from .peer_lightly import IMAGENET_MEAN, IMAGENET_STD
    from .peer_lightly import main as peer_main

    n = _train_size(spec)
    args = ["--data", spec.data, "--backbone", spec.backbone, "--seed", str(spec.seed)]
    args += ["--holdout", str(spec.holdout), "--points", str(spec.points)]
    args += ["--threads", str(spec.threads), "--optimizer", spec.peer_optimizer]
    args += ["--precision", spec.precision, "--num-workers", str(spec.num_workers)]
    args += ["--out", str(out / "run")]
    if spec.images is not None:
        args += ["--images", str(spec.images)]
    if spec.minutes is not None:
        args += ["--minutes", str(spec.minutes)]
        if spec.images is None:  # size the cosine from a probe, as for ours
            probe = out / "probe"
            peer_main([*args[:-1], str(probe), "--images", str(128 * 6), "--points", "1"])
            rate = _peer_rate(probe)
            args += ["--epochs", f"{rate * 60 * spec.minutes / n:.6f}"]
    start = time.perf_counter()
    peer_main(args)
    records = [
        json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    end = [r for r in records if r.get("event") == "end"][-1]
    return {
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "batch_size": 128,
        "img_per_s": end["step"] * 128 / max(end["elapsed_s"], 1e-9),
        "train_minutes": (time.perf_counter() - start) / 60,
        "checkpoints": out / "run" / "checkpoints",
    }


def _peer_rate(probe: Path) -> float:
    records = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines()]
    end = [r for r in records if r.get("event") == "end"][-1]
    return end["step"] * 128 / max(end["elapsed_s"], 1e-9)


# ----------------------------------------------------------------------------- evaluation
def evaluate_checkpoints(
    spec: JobSpec, checkpoints: Path, mean: Any, std: Any, batch_size: int
) -> list[dict[str, Any]]:
    """Every checkpoint's teacher (and the last one's student), like for like."""
    from ..checkpoint import list_checkpoints, read_trainer_state
    from ..eval import compare_knn, load_backbone

    bank, queries, _ = eval_sets(
        spec.data, spec.holdout, mean, std, size=spec.eval_size, bank_limit=spec.bank_limit
    )
    curve = []
    found = list_checkpoints(checkpoints)
    for i, ckpt in enumerate(found):
        state = read_trainer_state(ckpt)
        networks = {"teacher": load_backbone(ckpt, "teacher")[0]}
        if i == len(found) - 1:
            networks["student"] = load_backbone(ckpt, "student")[0]
        rows = compare_knn(
            networks,
            bank,
            queries,
            ks=spec.ks,
            temperature=spec.temperature,
            bn_images=spec.bn_images,
            raw_pixels=False,
            seed=spec.seed,
        )
        point = {
            "step": int(state["step"]),
            "images_seen": int(state["step"]) * batch_size,
            "elapsed_s": state.get("elapsed_s"),
            "rows": rows,
        }
        curve.append(point)
        print(f"  {ckpt.name}: {headline(rows)}", flush=True)
    return curve


def headline(rows: list[dict[str, Any]], network: str = "teacher", k: int = 20) -> float | None:
    """The like-for-like number of ``network``: BatchNorm recalibrated where there is BN."""
    from ..eval import like_for_like_top1

    return like_for_like_top1(rows, network, k)


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Train, evaluate, write ``<out>/result.json``; returns the result."""
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    trained = (_run_ours if spec.method == "ours" else _run_lightly)(spec, out)
    torch.set_num_threads(spec.threads)
    curve = evaluate_checkpoints(
        spec, trained.pop("checkpoints"), trained["mean"], trained["std"], trained["batch_size"]
    )
    bank, queries, description = eval_sets(
        spec.data,
        spec.holdout,
        trained["mean"],
        trained["std"],
        size=spec.eval_size,
        bank_limit=spec.bank_limit,
    )
    result = {
        "spec": asdict(spec),
        "evaluation": description,
        **trained,
        "curve": curve,
        "final_teacher": headline(curve[-1]["rows"]),
        "final_student": headline(curve[-1]["rows"], "student"),
        "machine": platform.platform(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="a JobSpec as JSON")
    args = p.parse_args(argv)
    fields = json.loads(args.spec)
    fields["ks"] = tuple(fields.get("ks", (20, 200)))
    run_job(JobSpec(**fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
