"""DINO loss and centre against the paper's definition, written out with explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from unimix.ssl.loss import DINOLoss


def reference_loss(
    student: list[list[list[float]]], teacher, center, tau_s: float, tau_t: float
) -> float:
    """Caron et al. 2021, Alg. 1 / Eq. 3: for each global view i and each view v != i,
    H(P_t(x_i), P_s(x_v)) = -sum_k P_t[k] log P_s[k], averaged over the batch, then over pairs."""
    total, pairs = 0.0, 0
    n_views, batch, dim = len(student), len(student[0]), len(student[0][0])
    for i in range(len(teacher)):
        for v in range(n_views):
            if v == i:
                continue
            pair = 0.0
            for b in range(batch):
                t = [(teacher[i][b][k] - center[k]) / tau_t for k in range(dim)]
                t_max = max(t)
                t_exp = [math.exp(x - t_max) for x in t]
                p_t = [e / sum(t_exp) for e in t_exp]
                s = [student[v][b][k] / tau_s for k in range(dim)]
                s_max = max(s)
                log_z = s_max + math.log(sum(math.exp(x - s_max) for x in s))
                pair += -sum(p_t[k] * (s[k] - log_z) for k in range(dim))
            total += pair / batch
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_local", [0, 3])
def test_loss_and_center_match_the_paper(n_local: int) -> None:
    torch.manual_seed(0)
    batch, dim, tau_s, tau_t, m = 5, 7, 0.1, 0.04, 0.9
    loss_fn = DINOLoss(dim, student_temp=tau_s, center_momentum=m).double()
    center0 = torch.randn(dim, dtype=torch.float64)
    loss_fn.center.copy_(center0)
    student = torch.randn(2 + n_local, batch, dim, dtype=torch.float64)
    teacher = torch.randn(2, batch, dim, dtype=torch.float64)

    ours = loss_fn(student, teacher, tau_t).item()
    expected = reference_loss(student.tolist(), teacher.tolist(), center0.tolist(), tau_s, tau_t)
    assert ours == pytest.approx(expected, abs=1e-6)

    # Centre: c <- m c + (1 - m) * mean of the teacher outputs over both views and the batch.
    loss_fn.accumulate_center(teacher)
    loss_fn.apply_center_update()
    rows = [teacher[i, b].tolist() for i in range(2) for b in range(batch)]
    batch_mean = [sum(r[k] for r in rows) / len(rows) for k in range(dim)]
    expected_center = [m * center0[k].item() + (1 - m) * batch_mean[k] for k in range(dim)]
    assert loss_fn.center.squeeze(0).tolist() == pytest.approx(expected_center, abs=1e-6)


def test_accumulated_center_equals_one_big_batch() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(2, 4, 6), torch.randn(2, 2, 6)
    split, whole = DINOLoss(6), DINOLoss(6)
    split.accumulate_center(a)
    split.accumulate_center(b)
    split.apply_center_update()
    whole.accumulate_center(torch.cat([a, b], dim=1))
    whole.apply_center_update()
    torch.testing.assert_close(split.center, whole.center)
    expected = 0.1 * torch.cat([a, b], dim=1).mean(dim=(0, 1))
    torch.testing.assert_close(whole.center.squeeze(0), expected)


def test_loss_is_float32_under_low_precision_inputs() -> None:
    loss_fn = DINOLoss(8)
    out = loss_fn(torch.randn(4, 3, 8).bfloat16(), torch.randn(2, 3, 8).bfloat16(), 0.04)
    assert out.dtype == torch.float32 and torch.isfinite(out)
