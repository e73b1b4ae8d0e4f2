"""The fit loop: one DINO step per iteration, then every callback in order, until the last step,
a callback asks to stop, or a stop signal (:mod:`~unimix.ssl.engine.interrupt`) was received."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from ..step import NonFiniteLossError
from .callbacks import StepReport
from .interrupt import StopRequest
from .monitor import MetricsWriteError
from .run import PretrainResult, Run

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
    stop: StopRequest | None = None,
) -> int | None:
    """Steps ``run.start_step`` → ``run.end_step``; ``result.losses`` / ``result.steps`` grow as
    they finish. Returns the signal the run stopped on (every process after the same step),
    None otherwise. A non-finite loss raises :class:`NonFiniteLossError`, a metrics file that
    cannot be written :class:`MetricsWriteError`, each naming ``last_checkpoint()``.
    """
    accum = run.cfg.optim.grad_accum_steps
    for step in range(run.start_step, run.end_step):
        step_start = time.perf_counter()
        values = run.schedules.at(step)
        micro_batches = (next(run.batches)["crops"] for _ in range(accum))
        try:
            out = run.step_fn.update(micro_batches, values, run.plan.local_batch, step)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}{_kept(last_checkpoint())}") from None
        step_s = time.perf_counter() - step_start  # data + step; the callbacks' time is not in it
        result.losses.append(out.loss)
        result.steps = step + 1
        run.monitor.advance()
        report = StepReport(
            step + 1, run.end_step, out.loss, values, out.teacher_out, step_s, out.terms
        )
        done = False
        try:
            for callback in callbacks:  # every callback sees every step, in order
                done = callback.on_step(report) or done
        except MetricsWriteError as err:
            raise MetricsWriteError(f"{err}{_kept(last_checkpoint())}") from None
        signum = stop.agreed(run.accelerator) if stop is not None else None
        if signum is not None:
            return signum
        if done:
            break
    return None


def _kept(checkpoint: Path | None) -> str:
    return f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
