"""Training monitor: progress bar, JSONL metrics, Accelerate's trackers and the collapse warning.

Only the main process writes or prints; other processes get a monitor that does nothing.
``metrics.jsonl`` is always written (one JSON object per logged step, each line in one write:
a write that fails, e.g. on a full disk, is cut back to the last whole line and raises
:class:`MetricsWriteError`, one line); the trackers the
Accelerator was made with (``logging.trackers``: TensorBoard, W&B, MLflow; see
:mod:`~unimix.ssl.engine.trackers`) get every numeric value of each record at its step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from tqdm.auto import tqdm

from .trackers import tracker_init_kwargs

__all__ = ["CollapseDetector", "MetricsWriteError", "Monitor", "ProgressTracker"]

logger = logging.getLogger("unimix.ssl")


class MetricsWriteError(OSError, ValueError):
    """``metrics.jsonl`` could not be written (disk full, read-only, ...); the file holds whole
    lines only. ``str(err)`` is one line naming the file (a ValueError too, as
    :class:`~unimix.checkpoint.CheckpointWriteError` is: the CLI reports it the same way)."""


def append_line(fd: int, line: bytes, path: Path) -> None:
    """Append ``line`` to the file open (``O_APPEND``) as ``fd``, all of it or nothing: a short
    write is continued, and a failed one truncates the file back to where the line began.

    Raises:
        MetricsWriteError: one line naming ``path`` and the OS error.
    """
    start = os.lseek(fd, 0, os.SEEK_END)
    done = 0
    try:
        while done < len(line):
            done += os.write(fd, line[done:])
    except OSError as err:
        with contextlib.suppress(OSError):  # no half line for the next reader to trip on
            os.ftruncate(fd, start)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            message = f"no space left on device while writing {path}"
        else:
            message = f"could not write {path} ({err.strerror or err})"
        raise MetricsWriteError(message) from None


class CollapseDetector:
    """Flags teacher outputs that carry no information about the input.

    DINO collapses in one of two ways: every sample gets the uniform distribution (per-sample
    entropy → log K) or the same one-hot distribution (entropy of the batch mean → 0). In both
    cases the entropy of the batch-mean distribution minus the mean per-sample entropy (an
    estimate of the mutual information between image and prototype) goes to 0. A warning is
    raised after ``patience`` consecutive checks with that gap below ``threshold``·log K.
    """

    def __init__(self, out_dim: int, patience: int, threshold: float = 0.01) -> None:
        self.limit = threshold * math.log(out_dim)
        self.patience = patience
        self.count = 0
        self.warned = False

    def check(self, per_sample: float, of_mean: float) -> str | None:
        """A warning message when collapse has lasted ``patience`` checks, else None."""
        self.count = self.count + 1 if of_mean - per_sample < self.limit else 0
        if self.count >= self.patience and not self.warned:
            self.warned = True
            kind = "uniform outputs" if of_mean > 0.5 * self.limit / 0.01 else "one prototype wins"
            return (
                f"teacher outputs look collapsed ({kind}: entropy {per_sample:.3f} per sample vs "
                f"{of_mean:.3f} of the batch mean, for {self.count} logged steps); consider a "
                "lower dino.teacher_temp, a higher dino.momentum_teacher or a smaller head.out_dim"
            )
        return None


class ProgressTracker:
    """Says once when a validation metric (higher is better) has stopped improving.

    ``update`` returns a warning the first time ``patience`` evaluations in a row have not beaten
    the best so far by at least ``min_delta``; otherwise None. ``patience`` 0 never warns.
    """

    def __init__(self, name: str, patience: int, min_delta: float = 0.5) -> None:
        self.name, self.patience, self.min_delta = name, patience, min_delta
        self.best: float | None = None
        self.best_step = 0
        self.stale = 0
        self.warned = False

    def update(self, step: int, value: float) -> str | None:
        if self.best is None or value >= self.best + self.min_delta:
            self.best, self.best_step, self.stale = value, step, 0
            return None
        if value > self.best:
            self.best, self.best_step = value, step
        self.stale += 1
        if self.patience and self.stale >= self.patience and not self.warned:
            self.warned = True
            return (
                f"{self.name} has not improved by {self.min_delta:g} points for {self.stale} "
                f"evaluations (best {self.best:.2f} at step {self.best_step}): the features have "
                "stopped improving, so more epochs are unlikely to help"
            )
        return None


class Monitor:
    """Progress bar + metrics sinks for one run (no-op on non-main processes).

    ``accelerator``: when it was made with ``log_with`` trackers, they are started here under
    ``project`` with ``config`` (flat ``{key: value}``) as the run's hyperparameters, fed by
    :meth:`log` and finished by :meth:`close`.
    """

    def __init__(
        self,
        output_dir: Path,
        total_steps: int,
        start_step: int,
        *,
        enabled: bool,
        progress_bar: bool = True,
        accelerator: Accelerator | None = None,
        project: str = "unimix",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.bar = None
        self.trackers = None  # the Accelerator whose trackers get the metrics
        self.metrics_fd: int | None = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = output_dir / "metrics.jsonl"
        _truncate_after(self.metrics_path, start_step)  # a resumed run rewrites what followed
        # unbuffered: each record reaches the file in one write, or not at all (append_line)
        self.metrics_fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if accelerator is not None and accelerator.log_with:
            self.trackers = accelerator
            kwargs = tracker_init_kwargs(output_dir, start_step)
            accelerator.init_trackers(project, config=config, init_kwargs=kwargs)
        if progress_bar:
            self.bar = tqdm(
                total=total_steps, initial=start_step, desc="dino", unit="step", dynamic_ncols=True
            )

    def info(self, message: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(message)

    def warn(self, message: str) -> None:
        if self.enabled:
            logger.warning(message)
            if self.bar is not None:
                self.bar.write(f"warning: {message}")

    def log(self, record: dict[str, Any]) -> None:
        """Write one metrics record (must contain ``step``)."""
        if not self.enabled:
            return
        append_line(self.metrics_fd, (json.dumps(record) + "\n").encode(), self.metrics_path)
        if self.trackers is not None:
            values = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float)}
            if values:
                self.trackers.log(values, step=record["step"])
        if self.bar is not None and "loss" in record:
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}",
                lr=f"{record['lr']:.2e}",
                m=f"{record['momentum']:.4f}",
                # per-sample / batch-mean teacher entropy: equal means collapsed
                H=f"{record.get('teacher_entropy', math.nan):.2f}/"
                f"{record.get('teacher_mean_entropy', math.nan):.2f}",
                img_s=f"{record.get('img_per_s', 0):.0f}",
                refresh=False,
            )

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        """Close the bar, the trackers and the metrics file; a tracker that cannot write its
        last events (a full disk) is one warning line, never an error over the run's own."""
        if self.metrics_fd is not None:
            os.close(self.metrics_fd)
            self.metrics_fd = None
        if self.bar is not None:
            self.bar.close()
        if self.trackers is not None:  # finished here, so a failed run keeps its events too
            for tracker in self.trackers.trackers:
                try:
                    tracker.finish()
                except OSError as err:
                    logger.warning("could not close the %s tracker: %s", tracker.name, err)
            self.trackers.trackers.clear()
            self.trackers = None


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = []
    original = path.read_text()
    for line in original.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if record.get("step", -1) <= step:
            kept.append(line)
    text = "".join(k + "\n" for k in kept)
    if text == original:
        return
    tmp = path.with_name(f".{path.name}.tmp")  # replaced whole: a failed write loses no line
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise MetricsWriteError(f"could not rewrite {path} ({err.strerror or err})") from None


def now() -> float:
    return time.perf_counter()
