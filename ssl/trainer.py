"""DINO pretraining under Accelerate: :func:`pretrain` runs one whole job from a config.

One optimizer step: for each of ``grad_accum_steps`` micro-batches, the teacher scores the two
global crops, the student scores every crop (one backbone pass per resolution), the DINO loss
is backpropagated; then the last layer's gradients are dropped while it is frozen, gradients
are clipped, AdamW steps with this step's lr and weight decay, the centre moves once over the
global batch, and the teacher moves towards the student with this step's momentum.

Runs the same on one CPU, one GPU, several processes (``accelerate launch --multi_gpu
--num_processes N`` or ``torchrun --nproc_per_node N``; gloo on CPUs) or several nodes: the
data each step sees, the loss and the centre are those of the global batch whatever N is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from torch import nn

from unimix.backbones import create_dino_backbone
from unimix.config import save_config

from .checkpoint import resolve_resume, restore_training_checkpoint, save_training_checkpoint
from .config import PretrainConfig
from .loader import BatchPlan, MultiCropBatches, make_loader
from .loss import teacher_entropies
from .model import DINOModel
from .monitor import CollapseDetector, Monitor, ProgressTracker
from .multicrop import MultiCropAugment
from .schedules import Schedules
from .step import DINOStep, NonFiniteLossError, disable_stochastic_layers

__all__ = ["NonFiniteLossError", "PretrainResult", "build_train_dataset", "pretrain"]

logger = logging.getLogger("unimix.ssl")


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns (on every process)."""

    output_dir: Path
    steps: int  # optimizer steps done in total (including those before a resume)
    world_size: int
    losses: list[float] = field(default_factory=list)  # global-batch loss of each step run here
    checkpoint: Path | None = None  # the last checkpoint written
    knn: dict[str, float] | None = None  # {"trained": top1, "untrained": top1, "k": k} at the end
    wall_time_s: float = 0.0
    images_per_s: float = 0.0  # source images per second over the steps run here


def build_train_dataset(
    cfg: PretrainConfig, transform: Any = None, holdout: bool = True
) -> torch.utils.data.Dataset:
    """The training set named by ``cfg.data``, minus its ``data.holdout`` held-out images
    (``holdout=False``: all of them); untransformed unless ``transform`` is given."""
    from unimix.data import DATASET_NAMES, build_dataset, split_holdout

    d = cfg.data
    options: dict[str, Any] = {}
    if d.dataset.lower() == "synthetic":
        options.update(num_samples=d.num_samples, image_size=d.image_size, seed=cfg.seed)
    elif d.root is not None:
        options["root"] = d.root
    if d.cache and transform is None and d.dataset.lower() not in DATASET_NAMES:
        options["cache"] = True  # a folder (the others are in RAM)
    dataset = build_dataset(d.dataset, d.split, download=d.download, transform=transform, **options)
    if holdout and d.holdout:
        if d.holdout >= len(dataset):
            raise ValueError(
                f"data.holdout={d.holdout}: the training set {d.dataset!r} has only "
                f"{len(dataset)} images"
            )
        dataset = split_holdout(dataset, d.holdout)[0]
    return dataset


def _cpu_threads_per_process() -> int:
    """The cores this machine lends us, shared evenly by the processes on this node.

    ``accelerate launch`` on a machine without GPU exports ``OMP_NUM_THREADS=1`` unless told
    ``--num_cpu_threads_per_process``, which leaves all but one core idle (half the speed on 2
    cores); ``threads=N`` in the config overrides this.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // max(1, local_world))


def _has_accelerator() -> bool:
    # On a machine without GPU, Accelerator() under a multi-process launcher (accelerate launch
    # --multi_gpu, torchrun) reports one process although every rank joined a gloo group;
    # cpu=True makes it the MULTI_CPU setup it really is.
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def _configure_logging(is_main: bool) -> None:
    for name in ("unimix.ssl", "unimix.checkpoint"):
        log = logging.getLogger(name)
        if log.handlers:
            continue
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO if is_main else logging.ERROR)
        log.propagate = False


def pretrain(cfg: PretrainConfig, resume: str | os.PathLike | None = None) -> PretrainResult:
    """Run DINO pretraining as configured; returns a :class:`PretrainResult`.

    Args:
        cfg: the run's config (see :mod:`unimix.ssl.config`).
        resume: ``None`` (start fresh; an output dir that already holds checkpoints is an
            error), ``"auto"`` (newest valid checkpoint in ``cfg.output_dir`` if any, else fresh;
            damaged ones are skipped with a warning) or a checkpoint directory.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the message names the step).
        ValueError / FileNotFoundError: bad data, backbone or checkpoint (key mismatches listed).
    """
    start_time = time.perf_counter()
    accelerator = Accelerator(mixed_precision=cfg.precision, cpu=not _has_accelerator())
    threads = cfg.threads or (_cpu_threads_per_process() if accelerator.device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    is_main = accelerator.is_main_process
    _configure_logging(is_main)
    device = accelerator.device
    world = accelerator.num_processes
    output_dir = Path(cfg.output_dir)
    ckpt_root = output_dir / "checkpoints"

    resume_path = resolve_resume(resume, output_dir)

    dataset = build_train_dataset(cfg)
    accum = cfg.optim.grad_accum_steps
    plan = BatchPlan(
        len(dataset), cfg.data.batch_size, accum, world, accelerator.process_index, cfg.seed
    )
    schedules = Schedules(cfg, plan.steps_per_epoch)
    end_step = (
        schedules.total_steps
        if cfg.max_steps is None
        else min(cfg.max_steps, schedules.total_steps)
    )

    step_fn = DINOStep(cfg, accelerator)
    student, teacher, loss_fn = step_fn.student, step_fn.teacher, step_fn.loss_fn
    unwrapped = accelerator.unwrap_model(student)
    networks = {"student": unwrapped, "teacher": teacher}

    # Model weights are ours to save (clean keys, process-count independent); Accelerate keeps
    # the optimizer, the grad scaler and every process's RNG states.
    accelerator.register_save_state_pre_hook(lambda models, weights, _dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, _dir: models.clear())

    start_step = 0
    if resume_path is not None:
        start_step = restore_training_checkpoint(resume_path, accelerator, networks, loss_fn)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")

    monitor = Monitor(
        output_dir,
        end_step,
        start_step,
        enabled=is_main,
        progress_bar=cfg.logging.progress_bar,
        tensorboard=cfg.logging.tensorboard,
    )
    n_params = sum(p.numel() for p in unwrapped.backbone.parameters())
    monitor.info(
        f"unimix pretrain: world size {world} ({accelerator.distributed_type.value}, {device}), "
        f"backbone {cfg.model.backbone} ({n_params / 1e6:.2f} M params), {len(dataset)} images, "
        f"global batch {cfg.data.batch_size} = {world} process(es) × {accum} accumulation × "
        f"{plan.local_batch}, steps {start_step}→{end_step} of {schedules.total_steps} "
        f"({plan.steps_per_epoch}/epoch), peak lr {schedules.peak_lr:.3g}, precision {cfg.precision}, "
        f"{torch.get_num_threads()} thread(s) per process"
        + (f", resumed from {resume_path}" if resume_path else "")
    )
    monitor.log({"event": "start", "step": start_step, "world_size": world, "device": str(device)})

    augment = MultiCropAugment(cfg.augment, cfg.data.mean, cfg.data.std, cfg.seed)
    batches = MultiCropBatches(dataset, plan, augment, end_step * accum)
    loader = make_loader(batches, start_step * accum, cfg.data.num_workers, seed=cfg.seed)
    batch_iter = iter(loader)

    collapse = CollapseDetector(cfg.model.head.out_dim, cfg.logging.collapse_patience)
    knn_every = round(cfg.eval.knn_every_epochs * plan.steps_per_epoch)
    if cfg.eval.knn_every_epochs and not knn_every:
        knn_every = 1
    knn_progress = ProgressTracker(
        "teacher k-NN top-1", cfg.eval.knn_patience, cfg.eval.knn_min_delta
    )
    result = PretrainResult(output_dir=output_dir, steps=start_step, world_size=world)
    last_saved: int | None = None
    backbone_meta = {
        "backbone": cfg.model.backbone,
        "backbone_kwargs": cfg.model.backbone_kwargs,
        "num_features": int(unwrapped.backbone.num_features),
        "image_size": cfg.augment.global_size,
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
    }
    window_start, window_images = time.perf_counter(), 0
    run_start = time.perf_counter()

    def save(step_done: int, epoch: int) -> None:
        nonlocal last_saved
        state = {
            "step": step_done,
            "epoch": epoch,
            "world_size": accelerator.num_processes,
            "steps_per_epoch": plan.steps_per_epoch,
            "batch_size": cfg.data.batch_size,
            "seed": cfg.seed,
        }
        result.checkpoint = save_training_checkpoint(
            ckpt_root, step_done, accelerator, networks, loss_fn, backbone_meta, state,
            cfg.checkpoint.keep_last,
        )  # fmt: skip
        last_saved = step_done

    try:
        for step in range(start_step, end_step):
            values = schedules.at(step)
            micro_batches = (next(batch_iter)["crops"] for _ in range(accum))
            try:
                global_loss, teacher_out = step_fn(micro_batches, values, plan.local_batch, step)
            except NonFiniteLossError as err:
                kept = (
                    f"; the last good checkpoint is {result.checkpoint}"
                    if result.checkpoint
                    else ""
                )
                raise NonFiniteLossError(f"{err}{kept}") from None
            step_done = step + 1
            epoch = step_done // plan.steps_per_epoch
            result.losses.append(global_loss)
            result.steps = step_done
            window_images += cfg.data.batch_size
            monitor.advance()
            if step_done % cfg.logging.every_steps == 0 or step_done == end_step:
                elapsed = time.perf_counter() - window_start
                h_sample, h_mean = teacher_entropies(
                    teacher_out, loss_fn.center, values.teacher_temp
                )
                record = {
                    "step": step_done,
                    "epoch": step_done / plan.steps_per_epoch,
                    "loss": global_loss,
                    "lr": values.lr,
                    "weight_decay": values.weight_decay,
                    "momentum": values.momentum,
                    "teacher_temp": values.teacher_temp,
                    # collapse diagnostics: the gap (≈ mutual information between image and
                    # prototype) is what collapse, uniform or one-hot, takes to 0
                    "teacher_entropy": h_sample,
                    "teacher_mean_entropy": h_mean,
                    "teacher_entropy_gap": h_mean - h_sample,
                    **({"koleo": step_fn.last_koleo} if step_fn.last_koleo is not None else {}),
                    "img_per_s": window_images / max(elapsed, 1e-9),
                    "elapsed_s": time.perf_counter() - run_start,
                    "world_size": world,
                }
                monitor.log(record)
                warning = collapse.check(h_sample, h_mean)
                if warning:
                    monitor.warn(warning)
                window_start, window_images = time.perf_counter(), 0
            every = cfg.checkpoint.every_steps
            if every and step_done % every == 0 and step_done < end_step:
                save(step_done, epoch)
            if knn_every and step_done % knn_every == 0 and step_done < end_step:
                top1 = _online_knn(cfg, teacher, accelerator)
                if top1 is not None:
                    monitor.log({"step": step_done, "knn_top1": top1})
                    monitor.info(f"step {step_done}: teacher k-NN top-1 {top1:.2f}%")
                    stalled = knn_progress.update(step_done, top1)
                    if stalled:
                        monitor.warn(stalled)
            if cfg.max_minutes is not None and _budget_spent(
                cfg.max_minutes, run_start, accelerator
            ):
                monitor.info(
                    f"stopping at step {step_done}: max_minutes={cfg.max_minutes:g} reached"
                )
                elapsed_s = time.perf_counter() - run_start
                monitor.log({"event": "budget", "step": step_done, "elapsed_s": elapsed_s})
                break
        run_time = time.perf_counter() - run_start
        steps_run = result.steps - start_step
        result.images_per_s = steps_run * cfg.data.batch_size / max(run_time, 1e-9)
        if last_saved != result.steps and result.steps > start_step:
            save(result.steps, result.steps // plan.steps_per_epoch)
        elif result.checkpoint is None and resume_path is not None:
            result.checkpoint = resume_path
    finally:
        monitor.close()
        del batch_iter

    if cfg.eval.knn_at_end:
        result.knn = _final_knn(cfg, teacher, unwrapped, accelerator)
        if result.knn is not None and is_main:
            print(_final_knn_line(result.knn))
            with open(output_dir / "knn.json", "w") as f:
                json.dump(result.knn, f, indent=1)
    result.wall_time_s = time.perf_counter() - start_time
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _budget_spent(max_minutes: float, run_start: float, accelerator: Accelerator) -> bool:
    """Whether the wall-clock budget is used up; the main process's clock decides for all, so
    every process stops at the same step."""
    spent = torch.tensor(
        float(time.perf_counter() - run_start >= 60 * max_minutes), device=accelerator.device
    )
    if accelerator.num_processes > 1:
        spent = broadcast(spent, from_process=0)
    return bool(spent.item())


# ------------------------------------------------------------------------------ evaluation
def _knn_datasets(cfg: PretrainConfig):  # -> tuple[Dataset, Dataset, str]
    """(bank, queries, description) of the run's k-NN, transformed for evaluation.

    With ``data.holdout > 0``: bank = the training images pretraining used, queries = the
    held-out ones (a validation k-NN; the test split is not read).
    """
    from unimix.data import build_dataset, split_holdout
    from unimix.eval import eval_transform

    e = cfg.eval
    transform = eval_transform(cfg.augment.global_size, cfg.data.mean, cfg.data.std)
    if cfg.data.holdout:
        full = build_train_dataset(cfg, transform=transform, holdout=False)
        bank, held = split_holdout(full, cfg.data.holdout)
        description = (
            f"{cfg.data.dataset} {cfg.data.split}: {len(held)} held-out images "
            f"(bank: the other {len(bank)})"
        )
        return bank, held, description
    name = e.dataset or cfg.data.dataset
    options: dict[str, Any] = {}
    if name.lower() == "synthetic":
        options["image_size"] = cfg.data.image_size
        options["seed"] = cfg.seed
    elif (e.root or cfg.data.root) is not None:
        options["root"] = e.root or cfg.data.root
    if name.lower() == "synthetic":
        train = build_dataset(
            name, e.train_split, transform=transform, num_samples=e.num_train, **options
        )
        test = build_dataset(
            name, e.test_split, transform=transform, num_samples=e.num_test, **options
        )
    else:
        train = build_dataset(name, e.train_split, transform=transform, **options)
        test = build_dataset(name, e.test_split, transform=transform, **options)
    return train, test, f"{name} {e.test_split} (bank: {e.train_split}, {len(train)} images)"


def _knn_rows(
    cfg: PretrainConfig,
    networks: dict[str, nn.Module],
    train,
    test,
    device: torch.device,
    *,
    bn_images: int = 0,
    raw_pixels: bool = False,
) -> list[dict[str, Any]]:
    from unimix.eval import compare_knn

    return compare_knn(
        networks, train, test, ks=(min(cfg.eval.k, len(train)),),
        temperature=cfg.eval.temperature, bn_images=bn_images, raw_pixels=raw_pixels,
        seed=cfg.seed, batch_size=cfg.eval.batch_size, device=device,
    )  # fmt: skip


def _online_knn(cfg: PretrainConfig, teacher: DINOModel, accelerator: Accelerator) -> float | None:
    top1 = None
    if accelerator.is_main_process:
        train, test, _ = _knn_datasets(cfg)
        rows = _knn_rows(cfg, {"teacher": teacher.backbone}, train, test, accelerator.device)
        top1 = next(iter(v for k, v in rows[0].items() if k.startswith("top1@")))
        disable_stochastic_layers(teacher)  # extraction put the backbone back in train mode
    accelerator.wait_for_everyone()
    return top1


#: Clean images that re-estimate BatchNorm statistics before the final k-NN (every network).
FINAL_BN_IMAGES = 2048
#: Largest image side at which the final k-NN also reports the raw-pixel floor.
RAW_PIXEL_MAX_SIZE = 64


def _final_knn(
    cfg: PretrainConfig, teacher: DINOModel, student: DINOModel, accelerator: Accelerator
) -> dict[str, Any] | None:
    """k-NN top-1 of the trained teacher, the trained student and the same backbone at its
    initial weights, like for like (:func:`unimix.eval.compare_knn`): one bank, one set of
    queries, and BatchNorm statistics re-estimated on the same clean bank images for every
    BatchNorm network (the statistics each came with are reported too); with small images, the
    raw-pixel floor as well."""
    if not accelerator.is_main_process:
        return None
    train, test, description = _knn_datasets(cfg)
    set_seed(cfg.seed)  # the student's backbone was the first thing built from this seed
    untrained = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    untrained.to(accelerator.device)
    networks = {"teacher": teacher.backbone, "student": student.backbone, "untrained": untrained}
    rows = _knn_rows(
        cfg, networks, train, test, accelerator.device, bn_images=FINAL_BN_IMAGES,
        raw_pixels=cfg.augment.global_size <= RAW_PIXEL_MAX_SIZE,
    )  # fmt: skip
    disable_stochastic_layers(teacher)
    k = min(cfg.eval.k, len(train))

    from unimix.eval import like_for_like_top1

    def headline(name: str) -> float | None:
        return like_for_like_top1(rows, name, k)

    return {
        "trained": headline("teacher"),
        "student": headline("student"),
        "untrained": headline("untrained"),
        "raw_pixels": headline("raw_pixels"),
        "bn_images": FINAL_BN_IMAGES if any(r["bn"] != "none" for r in rows) else 0,
        "rows": rows,
        "k": k,
        "temperature": cfg.eval.temperature,
        "dataset": description,
    }


def _final_knn_line(knn: dict[str, Any]) -> str:
    """The run's last line: trained teacher (and student) against untrained and raw pixels."""
    trained, untrained = knn["trained"], knn["untrained"]
    line = (
        f"k-NN top-1 (k={knn['k']}, T={knn['temperature']}) on {knn['dataset']}: trained teacher "
        f"{trained:.2f}% (student {knn['student']:.2f}%) vs same backbone untrained "
        f"{untrained:.2f}% (margin {trained - untrained:+.2f} points)"
    )
    if knn.get("raw_pixels") is not None:
        line += f"; raw pixels {knn['raw_pixels']:.2f}%"
    if knn.get("bn_images"):
        kept = {r["network"]: r[f"top1@{knn['k']}"] for r in knn["rows"] if r["bn"] == "kept"}
        line += (
            f" [BatchNorm statistics re-estimated on {knn['bn_images']} clean bank images for "
            f"every network; as kept: teacher {kept['teacher']:.2f}%, untrained "
            f"{kept['untrained']:.2f}%]"
        )
    return line
