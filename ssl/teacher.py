"""The EMA teacher: a frozen deep copy of the student, updated as θ_t ← m·θ_t + (1−m)·θ_s."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..checkpoint import unwrapped_key

__all__ = ["TeacherEMA", "make_teacher"]


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` (same initial weights, head included) that takes no gradients."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class TeacherEMA:
    """Moves ``teacher`` towards ``student``: every parameter ← m·teacher + (1 − m)·student.

    Parameters are paired by name once (what wrappers add is ignored on either side: DDP's
    ``module.`` and torch.compile's ``_orig_mod.``; a missing or extra name is an error) and updated in one fused multi-tensor
    ``lerp`` per step, instead of a Python loop over parameters. Buffers (BatchNorm running
    statistics) stay the teacher's own, as in the reference.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module) -> None:
        s_params = {unwrapped_key(k): p for k, p in student.named_parameters()}
        t_params = {unwrapped_key(k): p for k, p in teacher.named_parameters()}
        if set(s_params) != set(t_params):
            diff = sorted(set(s_params) ^ set(t_params))
            raise ValueError(f"teacher and student parameters differ: {', '.join(diff[:10])}")
        self.teacher_params = [t_params[k] for k in t_params]
        self.student_params = [s_params[k] for k in t_params]

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        if momentum >= 1.0:
            return
        sources = [
            p.detach().to(t.dtype)
            for t, p in zip(self.teacher_params, self.student_params, strict=True)
        ]
        torch._foreach_lerp_(self.teacher_params, sources, 1.0 - momentum)
