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
from safetensors.torch import load_file, save_file
from torch import nn

from unimix.config import save_config

from .checkpoint import (
    CheckpointError,
    check_keys,
    find_resume_checkpoint,
    list_checkpoints,
    verify_checkpoint,
    write_checkpoint,
)
from .config import PretrainConfig
from .loader import BatchPlan, MultiCropBatches, make_loader
from .loss import DINOLoss, teacher_entropies
from .model import DINOModel, create_dino_backbone
from .monitor import CollapseDetector, Monitor
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


def build_train_dataset(cfg: PretrainConfig) -> torch.utils.data.Dataset:
    """The training set named by ``cfg.data`` (images in memory or on disk, untransformed)."""
    from unimix.data import DATASET_NAMES, build_dataset

    d = cfg.data
    options: dict[str, Any] = {}
    if d.dataset.lower() == "synthetic":
        options.update(num_samples=d.num_samples, image_size=d.image_size, seed=cfg.seed)
    elif d.root is not None:
        options["root"] = d.root
    if d.cache and d.dataset.lower() not in DATASET_NAMES:  # a folder (the others are in RAM)
        options["cache"] = True
    return build_dataset(d.dataset, d.split, download=d.download, **options)


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
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if is_main else logging.ERROR)
    logger.propagate = False


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

    resume_path = _resolve_resume(resume, output_dir)

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

    # Model weights are ours to save (clean keys, process-count independent); Accelerate keeps
    # the optimizer, the grad scaler and every process's RNG states.
    accelerator.register_save_state_pre_hook(lambda models, weights, _dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, _dir: models.clear())

    start_step = 0
    if resume_path is not None:
        start_step = _load_checkpoint(resume_path, accelerator, unwrapped, teacher, loss_fn)
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
    result = PretrainResult(output_dir=output_dir, steps=start_step, world_size=world)
    last_saved: int | None = None
    window_start, window_images = time.perf_counter(), 0
    run_start = time.perf_counter()

    def save(step_done: int, epoch: int) -> None:
        nonlocal last_saved
        result.checkpoint = _save_checkpoint(
            cfg, ckpt_root, step_done, epoch, accelerator, unwrapped, teacher, loss_fn, plan
        )
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
                    "teacher_entropy": h_sample,
                    "teacher_mean_entropy": h_mean,
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
            knn_every = cfg.eval.knn_every_epochs
            if (
                knn_every
                and step_done % (knn_every * plan.steps_per_epoch) == 0
                and step_done < end_step
            ):
                top1 = _online_knn(cfg, teacher, accelerator)
                if top1 is not None:
                    monitor.log({"step": step_done, "knn_top1": top1})
                    monitor.info(f"step {step_done}: teacher k-NN top-1 {top1:.2f}%")
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
        result.knn = _final_knn(cfg, teacher, accelerator)
        if result.knn is not None and is_main:
            k = result.knn["k"]
            print(
                f"k-NN top-1 (k={k}, T={cfg.eval.temperature}) on {result.knn['dataset']}: "
                f"trained teacher {result.knn['trained']:.2f}% vs same backbone untrained "
                f"{result.knn['untrained']:.2f}% (margin {result.knn['trained'] - result.knn['untrained']:+.2f} points)"
            )
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


# ------------------------------------------------------------------------------ checkpoints
def _resolve_resume(resume: str | os.PathLike | None, output_dir: Path) -> Path | None:
    if resume is None:
        existing = list_checkpoints(output_dir / "checkpoints")
        if existing:
            raise ValueError(
                f"output dir {output_dir} already holds checkpoints (newest {existing[-1].name}); "
                "pass --resume auto to continue it or choose another --output-dir"
            )
        return None
    if os.fspath(resume) == "auto":
        return find_resume_checkpoint(output_dir)
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint directory")
    try:
        verify_checkpoint(path)
    except CheckpointError as err:
        raise ValueError(f"--resume {path}: {err}") from None
    return path


def _clean_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _save_checkpoint(
    cfg: PretrainConfig,
    root: Path,
    step: int,
    epoch: int,
    accelerator: Accelerator,
    student: DINOModel,
    teacher: DINOModel,
    loss_fn: DINOLoss,
    plan: BatchPlan,
) -> Path:
    def write_files(tmp: Path) -> None:
        accelerator.save_state(str(tmp), safe_serialization=True)
        if not accelerator.is_main_process:
            return
        save_file(_clean_state(student), str(tmp / "student.safetensors"))
        save_file(_clean_state(teacher), str(tmp / "teacher.safetensors"))
        save_file({"center": loss_fn.center.detach().cpu()}, str(tmp / "dino_state.safetensors"))
        save_file(_clean_state(teacher.backbone), str(tmp / "teacher_backbone.safetensors"))
        save_file(_clean_state(student.backbone), str(tmp / "student_backbone.safetensors"))
        meta = {
            "backbone": cfg.model.backbone,
            "backbone_kwargs": cfg.model.backbone_kwargs,
            "num_features": int(student.backbone.num_features),
            "image_size": cfg.augment.global_size,
            "mean": list(cfg.data.mean),
            "std": list(cfg.data.std),
            "step": step,
        }
        (tmp / "backbone.json").write_text(json.dumps(meta, indent=1))

    state = {
        "step": step,
        "epoch": epoch,
        "world_size": accelerator.num_processes,
        "steps_per_epoch": plan.steps_per_epoch,
        "batch_size": cfg.data.batch_size,
        "seed": cfg.seed,
    }
    return write_checkpoint(
        root,
        step,
        write_files,
        state,
        is_main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        keep_last=cfg.checkpoint.keep_last,
    )


def _load_checkpoint(
    path: Path, accelerator: Accelerator, student: DINOModel, teacher: DINOModel, loss_fn: DINOLoss
) -> int:
    """Restore everything from checkpoint ``path``; returns the step to continue from."""
    state = verify_checkpoint(path)
    for name, module in (("student", student), ("teacher", teacher)):
        file = path / f"{name}.safetensors"
        check_keys(module.state_dict().keys(), file, name)
        module.load_state_dict(load_file(str(file), device=str(accelerator.device)), strict=True)
    center = load_file(str(path / "dino_state.safetensors"))["center"]
    if center.shape != loss_fn.center.shape:
        raise ValueError(
            f"{path}: centre has shape {tuple(center.shape)}, this run's head.out_dim needs "
            f"{tuple(loss_fn.center.shape)}"
        )
    loss_fn.center.copy_(center)
    accelerator.load_state(str(path))
    if state.get("world_size") != accelerator.num_processes:
        logger.warning(
            "resuming a %s-process checkpoint with %s processes: data order and losses are "
            "unchanged, random states of dropout/drop-path are not restored exactly",
            state.get("world_size"),
            accelerator.num_processes,
        )
    return int(state["step"])


# ------------------------------------------------------------------------------ evaluation
def _knn_datasets(cfg: PretrainConfig):  # -> tuple[Dataset, Dataset, str] | None
    from unimix.data import build_dataset
    from unimix.eval import eval_transform

    e = cfg.eval
    name = e.dataset or cfg.data.dataset
    transform = eval_transform(cfg.augment.global_size, cfg.data.mean, cfg.data.std)
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


def _knn_top1(cfg: PretrainConfig, backbone: nn.Module, train, test, device: torch.device) -> float:
    from unimix.eval import extract_features, knn_evaluate

    was_training = backbone.training
    backbone.eval()
    try:
        kw = {"batch_size": cfg.eval.batch_size, "device": device, "progress": False}
        train_x, train_y = extract_features(backbone, train, **kw)
        test_x, test_y = extract_features(backbone, test, **kw)
    finally:
        backbone.train(was_training)
    k = min(cfg.eval.k, len(train_y))
    result = knn_evaluate(
        train_x, train_y, test_x, test_y, ks=(k,), temperature=cfg.eval.temperature
    )
    return float(result["top1"][k])


def _online_knn(cfg: PretrainConfig, teacher: DINOModel, accelerator: Accelerator) -> float | None:
    top1 = None
    if accelerator.is_main_process:
        try:
            train, test, _ = _knn_datasets(cfg)
        except ImportError:
            logger.warning("online k-NN skipped: unimix.eval is not available")
        else:
            top1 = _knn_top1(cfg, teacher.backbone, train, test, accelerator.device)
            disable_stochastic_layers(teacher)  # _knn_top1 put the backbone back in train mode
    accelerator.wait_for_everyone()
    return top1


def _final_knn(
    cfg: PretrainConfig, teacher: DINOModel, accelerator: Accelerator
) -> dict[str, Any] | None:
    """k-NN top-1 of the trained teacher and of the same backbone at its initial weights (with
    BatchNorm statistics from training images, see :func:`unimix.eval.calibrate_batchnorm`)."""
    if not accelerator.is_main_process:
        return None
    try:
        train, test, description = _knn_datasets(cfg)
    except ImportError:
        logger.warning("final k-NN skipped: unimix.eval is not available")
        return None
    trained = _knn_top1(cfg, teacher.backbone, train, test, accelerator.device)
    set_seed(cfg.seed)  # the student's backbone was the first thing built from this seed
    untrained_backbone = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    untrained_backbone.to(accelerator.device)
    from unimix.eval import calibrate_batchnorm  # importable: _knn_datasets needed unimix.eval

    # BatchNorm statistics from training images, so the margin is what training learned
    calibrate_batchnorm(untrained_backbone, train, seed=cfg.seed)
    untrained = _knn_top1(cfg, untrained_backbone, train, test, accelerator.device)
    return {
        "trained": trained,
        "untrained": untrained,
        "k": min(cfg.eval.k, len(train)),
        "temperature": cfg.eval.temperature,
        "dataset": description,
    }
