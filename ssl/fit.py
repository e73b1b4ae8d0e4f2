"""The fit loop: one DINO step per iteration, then every callback in order, until the last step
or a callback asks to stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from .callbacks import StepReport
from .run import PretrainResult, Run
from .step import NonFiniteLossError

__all__ = ["Callback", "fit"]


class Callback(Protocol):
    def on_step(self, report: StepReport) -> bool:
        """Act on a finished step; True stops the run after it."""
        ...


def fit(
    run: Run,
    result: PretrainResult,
    callbacks: Sequence[Callback],
    last_checkpoint: Callable[[], Path | None],
) -> None:
    """Steps ``run.start_step`` → ``run.end_step``; ``result.losses`` / ``result.steps`` grow as
    they finish. A non-finite loss raises :class:`NonFiniteLossError` naming ``last_checkpoint()``.
    """
    accum = run.cfg.optim.grad_accum_steps
    for step in range(run.start_step, run.end_step):
        step_start = time.perf_counter()
        values = run.schedules.at(step)
        micro_batches = (next(run.batches)["crops"] for _ in range(accum))
        try:
            loss, teacher_out = run.step_fn(micro_batches, values, run.plan.local_batch, step)
        except NonFiniteLossError as err:
            kept = last_checkpoint()
            kept_text = f"; the last good checkpoint is {kept}" if kept else ""
            raise NonFiniteLossError(f"{err}{kept_text}") from None
        step_s = time.perf_counter() - step_start  # data + step; the callbacks' time is not in it
        result.losses.append(loss)
        result.steps = step + 1
        run.monitor.advance()
        report = StepReport(step + 1, run.end_step, loss, values, teacher_out, step_s)
        stop = False
        for callback in callbacks:  # every callback sees every step, in order
            stop = callback.on_step(report) or stop
        if stop:
            break
