"""DINO pretraining under Accelerate: :func:`pretrain` runs one whole job from a config.

``pretrain`` = build (:mod:`~unimix.ssl.engine.run`) → fit loop (:mod:`~unimix.ssl.engine.fit`)
over DINO steps (:mod:`~unimix.ssl.step`) with its callbacks (:mod:`~unimix.ssl.engine.callbacks`:
logging, checkpoints, online k-NN, time budget) → the final checkpoint and k-NN
(:mod:`~unimix.ssl.engine.knn_eval`).

Runs the same on one CPU, one GPU, several processes (``accelerate launch --multi_gpu
--num_processes N`` or ``torchrun --nproc_per_node N``; gloo on CPUs) or several nodes: the
data each step sees, the loss and the centre are those of the global batch whatever N is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from ...config import load_config, to_dict
from ...data.user_datasets import check_image_dataset
from ..config import RECIPES, PretrainConfig, check_consistency
from ..folder_recipe import size_from_data
from ..step import NonFiniteLossError
from .callbacks import BudgetCallback, CheckpointCallback, KnnCallback, LogCallback
from .datasets import build_train_dataset, check_eval_dataset
from .fit import Callback, fit
from .interrupt import RunInterrupted, StopRequest
from .knn_eval import final_knn, final_knn_line, final_knn_metrics, online_knn
from .run import PretrainResult, Run, build_run
from .run_lock import release_output_dir

__all__ = [
    "NonFiniteLossError",
    "PretrainResult",
    "RunInterrupted",
    "build_train_dataset",
    "pretrain",
    "resolve_config",
]

logger = logging.getLogger("unimix.ssl")


def _callbacks(
    run: Run, eval_dataset: tuple[Dataset, Dataset] | None = None
) -> tuple[list[Callback], CheckpointCallback]:
    """Logging, checkpoints, online k-NN (on ``eval_dataset`` when given) and the time budget,
    in the order they act."""
    cfg, monitor, step_fn = run.cfg, run.monitor, run.step_fn
    steps_per_epoch = run.plan.steps_per_epoch
    checkpoints = CheckpointCallback(cfg.checkpoint, run.save)
    callbacks: list[Callback] = [
        LogCallback(
            cfg.logging,
            monitor,
            step_fn.loss_fn,
            cfg.model.head.out_dim,
            cfg.data.batch_size,
            steps_per_epoch,
            run.world,
        ),
        checkpoints,
        KnnCallback(
            cfg.eval,
            steps_per_epoch,
            lambda: online_knn(cfg, run.networks["teacher"], run.accelerator, eval_dataset),
            monitor,
        ),
        BudgetCallback(cfg.max_minutes, run.accelerator, monitor),
    ]
    return callbacks, checkpoints


def _final_knn(
    run: Run, result: PretrainResult, eval_dataset: tuple[Dataset, Dataset] | None
) -> None:
    """The final k-NN (every process computes it): printed, written to ``knn.json`` (with its
    step) and logged at the last step, so that metrics.jsonl and every tracker (TensorBoard,
    W&B's run summary, MLflow) hold it too."""
    student, teacher = run.networks["student"], run.networks["teacher"]
    result.knn = final_knn(run.cfg, teacher, student, run.accelerator, eval_dataset)
    if result.knn is None or not run.accelerator.is_main_process:
        return
    result.knn["step"] = result.steps
    print(final_knn_line(result.knn))
    with open(run.output_dir / "knn.json", "w") as f:
        json.dump(result.knn, f, indent=1)
    run.monitor.log({"step": result.steps, **final_knn_metrics(result.knn)})


def _fit_and_save(
    run: Run,
    result: PretrainResult,
    eval_dataset: tuple[Dataset, Dataset] | None = None,
    stop: StopRequest | None = None,
) -> int | None:
    """The fit loop, the last step's checkpoint, then the final k-NN (``eval.knn_at_end``);
    the metrics sinks and the data workers are closed whatever happens. Returns the signal
    the run stopped on (``stop``; its step is checkpointed, the final k-NN left out), or None.
    """
    callbacks, checkpoints = _callbacks(run, eval_dataset)
    fit_start = time.perf_counter()
    try:
        signum = fit(run, result, callbacks, lambda: checkpoints.latest or run.resume_path, stop)
        steps_run = result.steps - run.start_step
        fit_time = time.perf_counter() - fit_start
        result.images_per_s = steps_run * run.cfg.data.batch_size / max(fit_time, 1e-9)
        checkpoints.finish(result.steps, run.start_step)
        result.checkpoint = checkpoints.latest
        if result.checkpoint is None and run.resume_path is not None:
            result.checkpoint = run.resume_path
        if signum is None and stop is not None:  # a signal during the last checkpoint
            signum = stop.agreed(run.accelerator)
        if signum is not None:
            signame = signal.Signals(signum).name
            run.monitor.log({"event": "interrupted", "signal": signame, "step": result.steps})
        elif run.cfg.eval.knn_at_end:  # before the sinks close: the trackers get it too
            run.batches = None  # the training loader's workers are done
            _final_knn(run, result, eval_dataset)
    finally:
        run.monitor.close()
        run.batches = None  # stops the DataLoader's workers
    return signum


def resolve_config(
    config: PretrainConfig | str | os.PathLike,
    overrides: Sequence[str] = (),
    own_dataset: bool = False,
    images: Any = None,
) -> PretrainConfig:
    """A validated config from a :class:`PretrainConfig` object, a recipe name (see
    :data:`~unimix.ssl.config.RECIPES`) or a YAML path, with dotted ``key=value`` overrides
    (``own_dataset``: the caller brings the training images; ``data.dataset`` may be unset;
    ``images``: those images, which ``size_from_data`` then inspects).

    Raises:
        ConfigError: one line naming the key at fault (an object is validated like a file).
    """
    if isinstance(config, PretrainConfig):
        # round trip through the loader: a hand-built object gets the same checks as a file
        cfg = load_config(PretrainConfig, "config", overrides, presets={"config": to_dict(config)})
    elif isinstance(config, str | os.PathLike):
        cfg = load_config(PretrainConfig, config, overrides, presets=RECIPES)
        if cfg.size_from_data:
            cfg = size_from_data(cfg, config, overrides, presets=RECIPES, images=images)
    else:
        raise TypeError(
            f"config: expected a PretrainConfig, a recipe name or a YAML path, got "
            f"{type(config).__name__}"
        )
    check_consistency(cfg, own_dataset)
    return cfg


def _own_data_config(cfg: PretrainConfig, own_eval: bool) -> PretrainConfig:
    """The config of a run on the caller's own images: it names no training set (the saved
    ``config.yaml`` must not point at images the run never read) and holds none out; without
    a labeled set (``eval_dataset`` or ``eval.dataset``) the k-NN, which would otherwise read
    the config's training set, is switched off, saying so."""
    data = dataclasses.replace(cfg.data, dataset=None, holdout=0)
    evaluation = cfg.eval
    knn = evaluation.knn_at_end or evaluation.knn_every_epochs > 0
    if knn and not own_eval and evaluation.dataset is None:
        logger.warning(
            "k-NN off: a run on your own dataset needs labeled images for it: pass "
            "eval_dataset=(bank, queries) or set eval.dataset"
        )
        evaluation = dataclasses.replace(evaluation, knn_at_end=False, knn_every_epochs=0.0)
    return dataclasses.replace(cfg, data=data, eval=evaluation)


def pretrain(
    config: PretrainConfig | str | os.PathLike,
    dataset: Any = None,
    eval_dataset: tuple[Dataset, Dataset] | None = None,
    *,
    resume: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> PretrainResult:
    """Run DINO pretraining in this process (or in each process of a launcher); returns a
    :class:`PretrainResult` (steps, losses, last checkpoint, final k-NN).

    Args:
        config: a :class:`PretrainConfig`, a recipe name (``"quickstart"``) or a YAML path.
        dataset: ``None`` (the config's ``data.dataset``) or any map-style dataset yielding PIL
            images, ``[H, W, 3]`` uint8 arrays or ``(image, label)`` pairs (labels unused); the
            config's ``data`` section still sets batch size, mean/std and workers
            (``data.holdout`` is not applied to it).
        eval_dataset: ``None`` (the config's k-NN set, see
            :func:`~unimix.ssl.engine.datasets.knn_datasets`) or a ``(bank, queries)`` pair of
            labeled datasets yielding ``(image, int label)`` for the online / final k-NN.
        resume: ``None`` (start fresh; an output dir that already holds checkpoints is an
            error), ``"auto"`` (newest valid checkpoint in ``cfg.output_dir`` if any, else fresh;
            damaged ones are skipped with a warning) or a checkpoint directory.
        overrides: dotted ``key=value`` strings applied to ``config`` (``["max_steps=5"]``).

    Raises:
        ConfigError: a bad config key or value (one line naming it).
        TypeError: ``dataset`` / ``eval_dataset`` is not usable (one line naming it).
        NonFiniteLossError: the loss became NaN/inf (the message names the step).
        RunInterrupted: SIGTERM or SIGINT (Ctrl-C) was received: the step in progress was
            finished and checkpointed (every process at the same step); ``resume="auto"``
            continues the run exactly. The same signal again stops at once, without a checkpoint.
        RunLockedError: another run is using ``output_dir`` (one line naming its pid and host).
        ValueError / FileNotFoundError: bad data, backbone or checkpoint (key mismatches listed).
    """
    start_time = time.perf_counter()
    cfg = resolve_config(config, overrides, own_dataset=dataset is not None, images=dataset)
    if dataset is not None:
        check_image_dataset(dataset, "dataset")
        cfg = _own_data_config(cfg, own_eval=eval_dataset is not None)
    if eval_dataset is not None:
        eval_dataset = check_eval_dataset(eval_dataset)
    # the signal handlers before the data loader forks its workers (they inherit them)
    with StopRequest() as stop:
        try:
            run = build_run(cfg, resume, dataset, own_eval=eval_dataset is not None)
            result = PretrainResult(
                output_dir=run.output_dir, steps=run.start_step, world_size=run.world
            )
            signum = _fit_and_save(run, result, eval_dataset, stop)
            result.wall_time_s = time.perf_counter() - start_time
        finally:  # unlock before the last barrier: on a stop torchrun kills ranks still running
            release_output_dir(cfg.output_dir)
        run.accelerator.wait_for_everyone()
        run.accelerator.end_training()
    if signum is not None:
        raise RunInterrupted(
            signum, result.steps, run.end_step, result.checkpoint, run.accelerator.is_main_process
        )
    return result
