"""Stopping a run cleanly on SIGTERM (what SLURM and Kubernetes send before a kill) or SIGINT
(Ctrl-C): the step in progress is finished, every process stops after the same step, a
checkpoint of that step is written and :class:`RunInterrupted` is raised (the CLI prints one
line with the ``--resume auto`` command and exits with 128 + the signal number).

The handler only records the signal: it runs between two Python bytecodes of the main thread,
where writing a file or printing could interleave with a write in progress. It is installed
before the data loader starts its workers, which inherit it (fork), so a Ctrl-C sent to the
whole process group does not kill them under the run. Receiving the signal puts the previous
handler back: the same signal again acts at once (KeyboardInterrupt, or the default kill).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import torch
from accelerate import Accelerator

__all__ = ["STOP_SIGNALS", "RunInterrupted", "StopRequest"]

#: The signals that stop a run after its current step.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):
    """The run stopped on a signal after step ``step`` (of ``end_step``) and saved
    ``checkpoint``; ``str(err)`` is one line. ``exit_code`` is 128 + the signal number."""

    def __init__(
        self, signum: int, step: int, end_step: int, checkpoint: Path | None, is_main: bool
    ) -> None:
        self.signum, self.step, self.end_step = signum, step, end_step
        self.checkpoint, self.is_main = checkpoint, is_main
        saved = f"checkpoint {checkpoint} written" if checkpoint else "no step run, nothing saved"
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step} of {end_step}: {saved}"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """The stop signals' handler for the length of a run (``with StopRequest() as stop:``).

    Only the main thread can install signal handlers: elsewhere this records nothing and the
    signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received by this process
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        previous = self._previous.pop(signum, None)
        if previous is not None:  # the same signal again stops at once
            signal.signal(signum, previous)

    def agreed(self, accelerator: Accelerator) -> int | None:
        """The signal every process stops on, or None to go on: with several processes a
        collective (every process calls it at the same step), so all stop after the same step
        whichever of them was signalled."""
        local = self.signum or 0
        if accelerator.num_processes > 1:
            flag = torch.tensor([local], device=accelerator.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            local = int(flag.item())
        return local or None
