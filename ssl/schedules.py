"""Per-step schedules (lr, weight decay, teacher momentum, teacher temperature, frozen last layer).

All are numpy arrays with one value per optimizer step of the whole run, computed from the
config alone (as the reference's ``cosine_scheduler``), so a resumed run needs only its step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import PretrainConfig

__all__ = ["Schedules", "cosine_schedule"]


def cosine_schedule(
    start: float, end: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """``[total_steps]``: linear ``warmup_start → start`` over ``warmup_steps``, then a half-cosine
    ``start → end`` over the remaining steps (value at step s of the cosine part:
    ``end + (start − end)·(1 + cos(π·s/n))/2``)."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(warmup_start, start, warmup_steps, endpoint=False)
    n = total_steps - warmup_steps
    steps = np.arange(n)
    cosine = end + 0.5 * (start - end) * (1 + np.cos(np.pi * steps / max(n, 1)))
    return np.concatenate([warmup, cosine])


@dataclass(frozen=True)
class StepValues:
    lr: float
    weight_decay: float
    momentum: float
    teacher_temp: float
    freeze_last_layer: bool


class Schedules:
    """Every schedule of a run, indexed by optimizer step (0-based).

    Args:
        cfg: the run's config.
        steps_per_epoch: optimizer steps per epoch (``len(dataset) // batch_size``).
    """

    def __init__(self, cfg: PretrainConfig, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = max(1, round(cfg.epochs * steps_per_epoch))

        def steps(epochs: float) -> int:
            return round(epochs * steps_per_epoch)

        o, d = cfg.optim, cfg.dino
        self.peak_lr = o.base_lr * cfg.data.batch_size / 256
        total = self.total_steps
        self.lr = cosine_schedule(self.peak_lr, o.min_lr, total, steps(o.warmup_epochs))
        self.weight_decay = cosine_schedule(o.weight_decay, o.weight_decay_end, total)
        self.momentum = cosine_schedule(d.momentum_teacher, d.momentum_teacher_end, total)
        warm = min(steps(d.warmup_teacher_temp_epochs), total)
        self.teacher_temp = np.concatenate(
            [
                np.linspace(d.warmup_teacher_temp, d.teacher_temp, warm, endpoint=False),
                np.full(total - warm, d.teacher_temp),
            ]
        )
        self.freeze_last_layer_steps = steps(d.freeze_last_layer_epochs)

    def at(self, step: int) -> StepValues:
        """Values for optimizer step ``step`` (clamped to the last step for capped/extra steps)."""
        s = min(step, self.total_steps - 1)
        return StepValues(
            lr=float(self.lr[s]),
            weight_decay=float(self.weight_decay[s]),
            momentum=float(self.momentum[s]),
            teacher_temp=float(self.teacher_temp[s]),
            freeze_last_layer=step < self.freeze_last_layer_steps,
        )
