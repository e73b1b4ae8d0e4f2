"""The objective's terms are first-class: a new regulariser is one entry of ``TERMS`` and reaches
the step's gradient, ``metrics.jsonl`` and the trackers with no change to the step, the trainer
or the callbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_dino_train import _metrics, _write_config

from unimix.ssl import objective
from unimix.ssl.loss import DINOLoss
from unimix.ssl.objective import Objective, ObjectiveInputs, Term
from unimix.ssl.pretrain_cli import main

STEPS = ["max_steps=3", "checkpoint.every_steps=0", "logging.every_steps=1"]


def _inputs(batch: int = 4, views: int = 4, dim: int = 8, out_dim: int = 16) -> ObjectiveInputs:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(views, batch, out_dim, generator=g)
    teacher = torch.randn(2, batch, out_dim, generator=g)
    features = torch.randn(views * batch, dim, generator=g)
    return ObjectiveInputs(student, teacher, features, batch, 0.04)


def test_total_is_the_dino_loss_plus_each_weighted_term() -> None:
    x = _inputs()
    mean_sq = Term(lambda cfg: 1.0, lambda x: x.features.pow(2).mean())
    first_logit = Term(lambda cfg: 1.0, lambda x: x.student_out[0, 0, 0], needs_features=False)
    total, terms = Objective(DINOLoss(16), {"sq": (0.5, mean_sq), "first": (2.0, first_logit)})(x)
    # the reference: DINO's loss by its formula, every pair (teacher i, student v != i)
    probs = torch.softmax(x.teacher_out / 0.04, -1)
    log_q = torch.log_softmax(x.student_out / 0.1, -1)
    pairs = [-(probs[i] * log_q[v]).sum(-1).mean() for i in range(2) for v in range(4) if v != i]
    dino = torch.stack(pairs).mean()
    assert list(terms) == ["dino", "sq", "first"]
    torch.testing.assert_close(terms["dino"], dino)
    torch.testing.assert_close(terms["sq"], x.features.pow(2).mean())
    expected = dino + 0.5 * x.features.pow(2).mean() + 2.0 * x.student_out[0, 0, 0]
    torch.testing.assert_close(total, expected)


def test_a_zero_weight_leaves_the_term_and_the_features_out() -> None:
    from unimix.ssl.config import load_pretrain_config

    cfg = load_pretrain_config("quickstart", ["dino.koleo_weight=0"])
    built = objective.build_objective(cfg, DINOLoss(16))
    assert built.terms == {} and not built.needs_features
    cfg = load_pretrain_config("quickstart", ["dino.koleo_weight=0.3"])
    built = objective.build_objective(cfg, DINOLoss(16))
    assert list(built.terms) == ["koleo"] and built.terms["koleo"][0] == 0.3


def test_a_new_term_reaches_metrics_and_trackers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test-only term, added in one place: its value is constant (2.5) and its gradient zero,
    so the DINO loss stays what a run without it logs, step for step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _write_config(tmp_path, logging={"progress_bar": False})
    base = tmp_path / "base"
    assert main(["-c", str(config), "-o", str(base), *STEPS]) == 0
    probe = Term(lambda cfg: 0.5, lambda x: x.student_out.sum() * 0 + 2.5, needs_features=False)
    monkeypatch.setitem(objective.TERMS, "probe", probe)
    out = tmp_path / "probe"
    args = ["-c", str(config), "-o", str(out), *STEPS, "logging.trackers=[tensorboard]"]
    assert main(args) == 0
    logged = [r for r in _metrics(out) if "loss" in r]
    assert [r["probe"] for r in logged] == [2.5, 2.5, 2.5]
    assert [r["loss"] for r in logged] == [r["loss"] for r in _metrics(base) if "loss" in r]
    scalars = EventAccumulator(str(out / "tensorboard" / "unimix")).Reload()
    assert [(p.step, p.value) for p in scalars.Scalars("probe")] == [(1, 2.5), (2, 2.5), (3, 2.5)]
