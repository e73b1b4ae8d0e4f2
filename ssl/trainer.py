"""DINO pretraining under Accelerate: :func:`pretrain` runs one whole job from a config.

``pretrain`` = build (:mod:`~unimix.ssl.run`) → fit loop (:mod:`~unimix.ssl.fit`) with its
callbacks (:mod:`~unimix.ssl.callbacks`: logging, checkpoints, online k-NN, time budget) →
the final checkpoint and k-NN (:mod:`~unimix.ssl.knn_monitor`).

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
import os
import time

from .callbacks import BudgetCallback, CheckpointCallback, KnnCallback, LogCallback
from .config import PretrainConfig
from .datasets import build_train_dataset
from .fit import Callback, fit
from .knn_monitor import final_knn, final_knn_line, online_knn
from .run import PretrainResult, Run, build_run
from .step import NonFiniteLossError

__all__ = ["NonFiniteLossError", "PretrainResult", "build_train_dataset", "pretrain"]


def _callbacks(run: Run) -> tuple[list[Callback], CheckpointCallback]:
    """Logging, checkpoints, online k-NN and the time budget, in the order they act."""
    cfg, monitor, step_fn = run.cfg, run.monitor, run.step_fn
    steps_per_epoch = run.plan.steps_per_epoch
    checkpoints = CheckpointCallback(cfg.checkpoint, run.save)
    callbacks: list[Callback] = [
        LogCallback(
            cfg.logging, monitor, step_fn.loss_fn, lambda: step_fn.last_koleo,
            cfg.model.head.out_dim, cfg.data.batch_size, steps_per_epoch, run.world,
        ),
        checkpoints,
        KnnCallback(
            cfg.eval, steps_per_epoch,
            lambda: online_knn(cfg, run.networks["teacher"], run.accelerator), monitor,
        ),
        BudgetCallback(cfg.max_minutes, run.accelerator, monitor),
    ]  # fmt: skip
    return callbacks, checkpoints


def _fit_and_save(run: Run, result: PretrainResult) -> None:
    """The fit loop, then the last step's checkpoint; the metrics sinks and the data workers
    are closed whatever happens."""
    callbacks, checkpoints = _callbacks(run)
    fit_start = time.perf_counter()
    try:
        fit(run, result, callbacks, lambda: checkpoints.latest)
        steps_run = result.steps - run.start_step
        fit_time = time.perf_counter() - fit_start
        result.images_per_s = steps_run * run.cfg.data.batch_size / max(fit_time, 1e-9)
        checkpoints.finish(result.steps, run.start_step)
        result.checkpoint = checkpoints.latest
        if result.checkpoint is None and run.resume_path is not None:
            result.checkpoint = run.resume_path
    finally:
        run.monitor.close()
        run.batches = None  # stops the DataLoader's workers


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
    run = build_run(cfg, resume)
    result = PretrainResult(output_dir=run.output_dir, steps=run.start_step, world_size=run.world)
    _fit_and_save(run, result)
    if cfg.eval.knn_at_end:
        student, teacher = run.networks["student"], run.networks["teacher"]
        result.knn = final_knn(cfg, teacher, student, run.accelerator)
        if result.knn is not None and run.accelerator.is_main_process:
            print(final_knn_line(result.knn))
            with open(run.output_dir / "knn.json", "w") as f:
                json.dump(result.knn, f, indent=1)
    result.wall_time_s = time.perf_counter() - start_time
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return result
