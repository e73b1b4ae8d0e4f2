"""Building a pretraining run: every object the fit loop and its callbacks use, made in one
fixed order (the order random numbers are drawn in, which a bit-exact resume relies on)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ...checkpoint import CHECKPOINTS_DIR
from ...config import save_config
from ..config import PretrainConfig
from ..model import DINOModel
from ..multicrop import MultiCropAugment
from ..schedules import Schedules
from ..step import DINOStep
from .datasets import build_train_dataset
from .launch import LaunchSettings, check_launch, resolve_launch, world_origin
from .loader import BatchPlan, MultiCropBatches, jpeg_folder, make_loader, render_on
from .monitor import Monitor
from .preflight import preflight
from .preflight_holdout import holdout_notice
from .run_lock import hold_output_dir
from .runtime import configure_logging, device_origin, make_accelerator
from .shard_loader import ShardBatches, ShardPlan, make_stream_loader, resume_message, stream_plan
from .trackers import flat_config, use_run_stores
from .training_state import resolve_resume, restore_training_checkpoint, save_training_checkpoint

logger = logging.getLogger("unimix.ssl")

__all__ = ["PretrainResult", "Run", "build_run"]


@dataclass
class PretrainResult:
    """What :func:`~unimix.ssl.engine.trainer.pretrain` returns (on every process)."""

    output_dir: Path
    steps: int  # optimizer steps done in total (including those before a resume)
    world_size: int
    losses: list[float] = field(default_factory=list)  # global-batch loss of each step run here
    checkpoint: Path | None = None  # the last checkpoint written
    knn: dict[str, float] | None = None  # {"trained": top1, "untrained": top1, "k": k} at the end
    wall_time_s: float = 0.0
    #: source images per second of the fit loop run here, its online k-NN and checkpoints
    #: included (metrics.jsonl's img_per_s counts the steps alone)
    images_per_s: float = 0.0


@dataclass
class Run:
    """One built pretraining run: steps ``start_step`` → ``end_step`` of ``schedules``."""

    cfg: PretrainConfig
    accelerator: Accelerator
    launch: LaunchSettings  # precision and compilation, with where each came from
    output_dir: Path
    resume_path: Path | None
    dataset: Any
    plan: BatchPlan
    schedules: Schedules
    step_fn: DINOStep
    networks: dict[str, DINOModel]  # "student" (unwrapped) and "teacher"
    start_step: int
    end_step: int
    monitor: Monitor | None = None
    batches: Iterator[dict[str, Any]] | None = None  # micro-batches of multi-crop views

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def save(self, step: int) -> Path:
        """Checkpoint the run after ``step`` optimizer steps (every process calls this)."""
        cfg, student = self.cfg, self.networks["student"]
        meta = {
            "backbone": cfg.model.backbone,
            "backbone_kwargs": cfg.model.backbone_kwargs,
            "num_features": int(student.backbone.num_features),
            "image_size": cfg.augment.global_size,
            "mean": list(cfg.data.mean),
            "std": list(cfg.data.std),
        }
        state = {
            "step": step,
            "epoch": step // self.plan.steps_per_epoch,
            "world_size": self.world,
            "steps_per_epoch": self.plan.steps_per_epoch,
            "batch_size": cfg.data.batch_size,
            "seed": cfg.seed,
        }
        return save_training_checkpoint(
            self.output_dir / CHECKPOINTS_DIR,
            step,
            self.accelerator,
            self.networks,
            self.step_fn.loss_fn,
            meta,
            state,
            cfg.checkpoint.keep_last,
        )


def _announce(run: Run) -> None:
    """The run's first line: world and device (and where they come from), backbone, data, batch,
    steps, schedule, precision and compilation (and where they come from), threads."""
    cfg, plan, acc = run.cfg, run.plan, run.accelerator
    n_params = sum(p.numel() for p in run.networks["student"].backbone.parameters())
    run.monitor.info(
        f"unimix pretrain: world size {run.world} ({acc.distributed_type.value}, "
        f"{world_origin(run.world)}), device {device_origin(acc)}, backbone "
        f"{cfg.model.backbone} ({n_params / 1e6:.2f} M params), {len(run.dataset)} images, global batch {cfg.data.batch_size} = {run.world} process(es) × "
        f"{cfg.optim.grad_accum_steps} accumulation × {plan.local_batch}, steps "
        f"{run.start_step}→{run.end_step} of {run.schedules.total_steps} "
        f"({plan.steps_per_epoch}/epoch), peak lr {run.schedules.peak_lr:.3g}, "
        f"{run.launch.describe()}, {_views_origin(run)}, "
        f"{torch.get_num_threads()} thread(s) per process"
        + (f", resumed from {run.resume_path}" if run.resume_path else "")
    )
    run.monitor.log(
        {
            "event": "start",
            "step": run.start_step,
            "world_size": run.world,
            "device": str(acc.device),
            "precision": run.launch.precision_name,
            "compile": run.launch.compile_backend,
            "views_rendered_by": _views_rendered_by(run),
        }
    )


def _views_rendered_by(run: Run) -> str:
    """``loader workers``, ``training process`` (on its device) or ``training process`` when
    there are no workers."""
    cfg = run.cfg
    if render_on_device(cfg, run.accelerator.device) or cfg.data.num_workers == 0:
        return "training process"
    return "loader workers"


def _views_origin(run: Run) -> str:
    """``views rendered on cuda:0 by the training process (augment.placement=auto)``."""
    by = _views_rendered_by(run)
    on_device = render_on_device(run.cfg, run.accelerator.device)
    where = run.accelerator.device if on_device else "cpu"
    return f"views rendered on {where} by the {by} (augment.placement={run.cfg.augment.placement})"


def render_on_device(cfg: PretrainConfig, device: torch.device) -> bool:
    """Whether the training process renders the views (``augment.placement``; ``auto``: on an
    accelerator, where batched crops cost little and CPU workers would starve it)."""
    if cfg.augment.placement == "auto":
        return device.type != "cpu"
    return cfg.augment.placement == "device"


def _decode_on_device(cfg: PretrainConfig, dataset: Any, on_device: bool) -> bool:
    """Whether JPEG files go undecoded to the training process (``data.decode=device``)."""
    if cfg.data.decode != "device":
        return False
    if not on_device:
        raise ValueError(
            "data.decode=device: the views are rendered in the loader workers here (no GPU, "
            "augment.placement=auto): set augment.placement=device, or data.decode=loader"
        )
    if not jpeg_folder(dataset):
        raise ValueError(
            "data.decode=device: reads the JPEG files of an image folder (data.cache=false); "
            f"{cfg.data.dataset or 'this dataset'} has none: set data.decode=loader"
        )
    return True


def _start_batches(run: Run) -> Iterator[dict[str, Any]]:
    """Micro-batches from ``start_step`` on: the same views whatever the process count and
    wherever they are rendered (for streaming shards: see :mod:`~unimix.ssl.engine.shard_loader`)."""
    cfg, accum = run.cfg, run.cfg.optim.grad_accum_steps
    augment = MultiCropAugment(cfg.augment, cfg.data.mean, cfg.data.std, cfg.seed)
    device = run.accelerator.device
    on_device = render_on_device(cfg, device)
    pin = device.type == "cuda" and cfg.data.num_workers > 0
    if isinstance(run.plan, ShardPlan):  # streaming: resumes at a shard boundary
        if cfg.eval.dataset is None and (cfg.eval.knn_every_epochs or cfg.eval.knn_at_end):
            raise ValueError(
                "eval.dataset: required for a k-NN when data.dataset is shards (streamed, "
                "no random access): name a labeled folder or dataset"
            )
        start = run.start_step * accum
        if run.resume_path is not None:
            run.monitor.info(resume_message(run.plan, start))
        shards, skipped = run.dataset.shards, run.dataset.skipped
        stream = ShardBatches(
            shards, run.plan, augment, start, run.end_step * accum, skipped, render=not on_device
        )
        items = iter(make_stream_loader(stream, cfg.data.num_workers, cfg.seed, pin))
    else:
        jpeg = _decode_on_device(cfg, run.dataset, on_device)
        batches = MultiCropBatches(
            run.dataset, run.plan, augment, run.end_step * accum, not on_device, jpeg
        )
        start = run.start_step * accum
        items = iter(make_loader(batches, start, cfg.data.num_workers, cfg.seed, pin))
    return render_on(items, augment, device) if on_device else items


def _launch_accelerator(cfg: PretrainConfig) -> tuple[LaunchSettings, Accelerator]:
    """The launch settings (precision, compilation) and the Accelerator built from them."""
    m = cfg.model
    launch = resolve_launch(
        cfg.precision, m.compile, m.compile_backend, compile_mode=m.compile_mode
    )
    accelerator = make_accelerator(launch, cfg.threads, cfg.logging.trackers, cfg.output_dir)
    configure_logging(accelerator.is_main_process)
    return launch, accelerator


def _batch_plan(cfg: PretrainConfig, dataset: Any, accelerator: Accelerator) -> BatchPlan:
    """Which micro-batches of ``dataset`` this process takes, step by step."""
    plan = BatchPlan(
        len(dataset),
        cfg.data.batch_size,
        cfg.optim.grad_accum_steps,
        accelerator.num_processes,
        accelerator.process_index,
        cfg.seed,
    )
    return stream_plan(dataset, plan, cfg.data.num_workers)  # shards: fewer steps per epoch


def _step_and_networks(
    cfg: PretrainConfig, accelerator: Accelerator
) -> tuple[DINOStep, dict[str, DINOModel]]:
    """The DINO step (student, teacher, loss, optimizer) and the networks a checkpoint holds."""
    step_fn = DINOStep(cfg, accelerator)
    # The plain student (no DDP, no torch.compile wrapper): clean keys for checkpoints.
    student = accelerator.unwrap_model(step_fn.student, keep_torch_compile=False)
    networks = {"student": student, "teacher": step_fn.teacher}
    # Model weights are ours to save (clean keys, process-count independent); Accelerate keeps
    # the optimizer, the grad scaler and every process's RNG states.
    accelerator.register_save_state_pre_hook(lambda models, weights, _dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, _dir: models.clear())
    return step_fn, networks


def _write_run_folder(cfg: PretrainConfig, output_dir: Path) -> None:
    """The output folder with the run's ``config.yaml`` and the trackers' stores (main process)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, output_dir / "config.yaml")
    use_run_stores(cfg.logging.trackers, output_dir)  # MLflow: <output_dir>/mlruns


def _monitor(run: Run) -> Monitor:
    """The run's progress bar and metrics sinks (a no-op off the main process)."""
    cfg, accelerator = run.cfg, run.accelerator
    return Monitor(
        run.output_dir,
        run.end_step,
        run.start_step,
        enabled=accelerator.is_main_process,
        progress_bar=cfg.logging.progress_bar,
        accelerator=accelerator,
        project=cfg.logging.project,
        config=flat_config(cfg),
    )


def build_run(
    cfg: PretrainConfig,
    resume: str | os.PathLike | None,
    dataset: Any = None,
    own_eval: bool = False,
) -> Run:
    """Accelerator, data plan, schedules, student/teacher/loss/optimizer, restored state (when
    resuming), metrics sinks and the micro-batch stream, in that order (``dataset``: the
    caller's own training images; ``own_eval``: the caller brings the k-NN sets)."""
    check_launch()
    preflight(cfg, resume, own_train=dataset is not None, own_eval=own_eval)  # what it will read
    launch, accelerator = _launch_accelerator(cfg)
    if accelerator.is_main_process and (notice := holdout_notice(cfg, own_eval)):
        logger.warning(notice)
    output_dir = Path(cfg.output_dir)
    hold_output_dir(output_dir, accelerator)  # before anything in it is read, moved or written
    resume_path = resolve_resume(resume, output_dir)
    dataset = build_train_dataset(cfg) if dataset is None else dataset  # a caller's own data
    _decode_on_device(cfg, dataset, render_on_device(cfg, accelerator.device))  # before writing
    plan = _batch_plan(cfg, dataset, accelerator)
    schedules = Schedules(cfg, plan.steps_per_epoch)
    end_step = schedules.total_steps
    if cfg.max_steps is not None:
        end_step = min(cfg.max_steps, schedules.total_steps)
    step_fn, networks = _step_and_networks(cfg, accelerator)
    start_step = 0
    if resume_path is not None:
        start_step = restore_training_checkpoint(
            resume_path, accelerator, networks, step_fn.loss_fn
        )
    if accelerator.is_main_process:
        _write_run_folder(cfg, output_dir)
    run = Run(
        cfg,
        accelerator,
        launch,
        output_dir,
        resume_path,
        dataset,
        plan,
        schedules,
        step_fn,
        networks,
        start_step,
        end_step,
    )
    run.monitor = _monitor(run)
    _announce(run)
    run.batches = _start_batches(run)
    return run
