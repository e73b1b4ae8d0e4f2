"""The DINO loss: cross-entropy from the centred, sharpened teacher to the student, and the centre.

For teacher views ``t_i`` (the two global crops) and student views ``s_v`` (all crops)::

    P_i = softmax((t_i − c) / τ_t)          log Q_v = log_softmax(s_v / τ_s)
    loss = mean over pairs (i, v), v ≠ i, of mean over the batch of  −Σ_k P_i[k] · log Q_v[k]
    c ← m·c + (1 − m)·mean over every process's batch and both teacher views of t

Written here rather than reusing lightly's ``DINOLoss`` because that one schedules τ_t per
epoch and moves the centre inside every ``forward`` call, so with gradient accumulation each
micro-batch would move it; here τ_t is passed per step and the centre is accumulated over the
micro-batches of an optimizer step, all-reduced once (only when a process group exists) and
applied once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOLoss", "teacher_entropies"]


class DINOLoss(nn.Module):
    """DINO self-distillation loss with a running centre (buffer ``center`` ``[1, out_dim]``).

    Args:
        out_dim: prototypes K.
        student_temp: τ_s.
        center_momentum: m of the centre's EMA.
    """

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        self._pending_sum: torch.Tensor | None = None
        self._pending_count = 0

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float
    ) -> torch.Tensor:
        """Loss for ``student`` ``[V, B, K]`` and ``teacher`` ``[T, B, K]`` (T ≤ V; teacher view i
        and student view i are the same crop). Returns a scalar; float32 whatever the inputs."""
        n_teacher, n_student = teacher.shape[0], student.shape[0]
        teacher, student = _at_least_fp32(teacher), _at_least_fp32(student)
        probs = F.softmax(
            (teacher - self.center.to(teacher.dtype)) / teacher_temp, dim=-1
        )  # [T, B, K]
        log_q = F.log_softmax(student / self.student_temp, dim=-1)  # [V, B, K]
        # cross[i, v] = mean_b −Σ_k P_i · log Q_v, every pair in one contraction.
        cross = -torch.einsum("ibk,vbk->iv", probs, log_q) / teacher.shape[1]
        same_view = torch.eye(n_teacher, n_student, dtype=torch.bool, device=cross.device)
        n_pairs = n_teacher * n_student - min(n_teacher, n_student)  # the eye's ones, on the host
        return cross.masked_fill(same_view, 0.0).sum() / n_pairs

    @torch.no_grad()
    def accumulate_center(self, teacher: torch.Tensor) -> None:
        """Add this micro-batch's teacher outputs ``[T, B, K]`` to the pending centre update."""
        batch_sum = _at_least_fp32(teacher).sum(dim=(0, 1)).to(self.center.dtype)
        self._pending_sum = (
            batch_sum if self._pending_sum is None else self._pending_sum + batch_sum
        )
        self._pending_count += teacher.shape[0] * teacher.shape[1]

    @torch.no_grad()
    def apply_center_update(self) -> None:
        """c ← m·c + (1−m)·(mean of all pending teacher outputs over all processes)."""
        if self._pending_sum is None:
            return
        total = torch.cat([self._pending_sum, self._pending_sum.new_tensor([self._pending_count])])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(total)
        batch_center = (total[:-1] / total[-1]).unsqueeze(0)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)
        self._pending_sum, self._pending_count = None, 0


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


@torch.no_grad()
def teacher_entropies(
    teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float
) -> tuple[float, float]:
    """(mean per-sample entropy, entropy of the batch-mean distribution) of the teacher targets.

    ``teacher`` ``[T, B, K]``. Both are in nats, between 0 and log K. Collapse shows as the two
    becoming equal (every sample gets the same distribution): either both near log K (uniform)
    or both near 0 (one prototype wins everything).
    """
    probs = F.softmax((teacher.float() - center) / teacher_temp, dim=-1).flatten(0, 1)
    per_sample = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
    mean = probs.mean(0)
    of_mean = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    return float(per_sample), float(of_mean)
