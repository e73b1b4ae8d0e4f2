"""What happens after each optimizer step, one unit each, in this order: metrics and collapse
warnings (``logging``), checkpoints (``checkpoint``), the online k-NN (``eval``), the wall-clock
budget (``max_minutes``). Each gets its own config section; ``on_step`` returns True to stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from ..config import CheckpointConfig, EvalConfig, LoggingConfig
from ..loss import DINOLoss, teacher_entropies
from ..schedules import StepValues
from .monitor import CollapseDetector, Monitor, ProgressTracker
from .runtime import budget_spent

__all__ = [
    "BudgetCallback",
    "CheckpointCallback",
    "KnnCallback",
    "LogCallback",
    "StepReport",
]


@dataclass
class StepReport:
    """One finished optimizer step, as the callbacks see it."""

    step: int  # optimizer steps done, this one included
    end_step: int  # the run stops after this step
    loss: float  # global-batch loss
    values: StepValues  # lr, weight decay, momentum, teacher temperature of this step
    teacher_out: torch.Tensor  # [2, B, out_dim] teacher logits of the last micro-batch
    step_s: float = 0.0  # seconds of this step: its data and the update, no callback's work
    terms: dict[str, float] = field(default_factory=dict)  # the objective's terms, unweighted


class LogCallback:
    """Every ``logging.every_steps`` steps (and the last): one metrics record with the schedule
    values, teacher entropies (the collapse diagnostics), every term of the objective but DINO's
    own (logged as ``loss``) under its name, and throughput (``img_per_s``:
    images over the time spent in the steps themselves, so a k-NN or a checkpoint written
    between them does not count)."""

    def __init__(
        self,
        cfg: LoggingConfig,
        monitor: Monitor,
        loss_fn: DINOLoss,
        out_dim: int,
        batch_size: int,
        steps_per_epoch: int,
        world_size: int,
    ) -> None:
        self.cfg, self.monitor, self.loss_fn = cfg, monitor, loss_fn
        self.collapse = CollapseDetector(out_dim, cfg.collapse_patience)
        self.batch_size, self.steps_per_epoch, self.world_size = (
            batch_size,
            steps_per_epoch,
            world_size,
        )
        self.window_s, self.window_images = 0.0, 0
        self.run_start = time.perf_counter()

    def on_step(self, r: StepReport) -> bool:
        self.window_images += self.batch_size
        self.window_s += r.step_s
        if r.step % self.cfg.every_steps != 0 and r.step != r.end_step:
            return False
        v = r.values
        h_sample, h_mean = teacher_entropies(r.teacher_out, self.loss_fn.center, v.teacher_temp)
        record = {
            "step": r.step,
            "epoch": r.step / self.steps_per_epoch,
            "loss": r.loss,
            "lr": v.lr,
            "weight_decay": v.weight_decay,
            "momentum": v.momentum,
            "teacher_temp": v.teacher_temp,
            # collapse diagnostics: the gap (≈ mutual information between image and
            # prototype) is what collapse, uniform or one-hot, takes to 0
            "teacher_entropy": h_sample,
            "teacher_mean_entropy": h_mean,
            "teacher_entropy_gap": h_mean - h_sample,
            **{name: value for name, value in r.terms.items() if name != "dino"},
            "img_per_s": self.window_images / max(self.window_s, 1e-9),
            "elapsed_s": time.perf_counter() - self.run_start,
            "world_size": self.world_size,
        }
        self.monitor.log(record)
        warning = self.collapse.check(h_sample, h_mean)
        if warning:
            self.monitor.warn(warning)
        self.window_s, self.window_images = 0.0, 0
        return False


class CheckpointCallback:
    """A checkpoint every ``checkpoint.every_steps`` steps before the last; :meth:`finish` writes
    the last step's unless it is saved already."""

    def __init__(self, cfg: CheckpointConfig, save: Callable[[int], Path]) -> None:
        self.cfg, self.save = cfg, save
        self.latest: Path | None = None  # the last checkpoint written by this run
        self.last_saved: int | None = None

    def _save(self, step: int) -> None:
        self.latest = self.save(step)
        self.last_saved = step

    def on_step(self, r: StepReport) -> bool:
        every = self.cfg.every_steps
        if every and r.step % every == 0 and r.step < r.end_step:
            self._save(r.step)
        return False

    def finish(self, steps: int, start_step: int) -> None:
        """After the loop: save step ``steps`` if steps were run and it is not saved yet."""
        if self.last_saved != steps and steps > start_step:
            self._save(steps)


class KnnCallback:
    """The teacher's k-NN top-1 every ``eval.knn_every_epochs`` (before the last step), with a
    warning when it stops improving."""

    def __init__(
        self,
        cfg: EvalConfig,
        steps_per_epoch: int,
        knn: Callable[[], float | None],
        monitor: Monitor,
    ) -> None:
        self.every = round(cfg.knn_every_epochs * steps_per_epoch)
        if cfg.knn_every_epochs and not self.every:
            self.every = 1
        self.knn, self.monitor = knn, monitor
        self.progress = ProgressTracker("teacher k-NN top-1", cfg.knn_patience, cfg.knn_min_delta)

    def on_step(self, r: StepReport) -> bool:
        if not self.every or r.step % self.every != 0 or r.step >= r.end_step:
            return False
        top1 = self.knn()
        if top1 is not None:
            self.monitor.log({"step": r.step, "knn_top1": top1})
            self.monitor.info(f"step {r.step}: teacher k-NN top-1 {top1:.2f}%")
            stalled = self.progress.update(r.step, top1)
            if stalled:
                self.monitor.warn(stalled)
        return False


class BudgetCallback:
    """Stop once ``max_minutes`` of wall-clock time are spent (all processes at the same step)."""

    def __init__(self, max_minutes: float | None, accelerator: Accelerator, monitor: Monitor):
        self.max_minutes, self.accelerator, self.monitor = max_minutes, accelerator, monitor
        self.run_start = time.perf_counter()

    def on_step(self, r: StepReport) -> bool:
        if self.max_minutes is None or not budget_spent(
            self.max_minutes, self.run_start, self.accelerator
        ):
            return False
        self.monitor.info(f"stopping at step {r.step}: max_minutes={self.max_minutes:g} reached")
        elapsed_s = time.perf_counter() - self.run_start
        self.monitor.log({"event": "budget", "step": r.step, "elapsed_s": elapsed_s})
        return True
