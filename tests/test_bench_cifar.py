"""scripts/bench_cifar.py fits a recipe's warm-ups into a short budgeted run."""

import argparse
import importlib.util
from pathlib import Path

import pytest

from unimix.ssl.config import load_pretrain_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_cifar.py"


@pytest.fixture(scope="module")
def bench_cifar():
    spec = importlib.util.spec_from_file_location("bench_cifar", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_warmups_capped_at_share_of_budget_unless_given(bench_cifar, capsys):
    # cifar10_nano warms the lr up for 2 epochs and freezes the last layer for 1; a 3-epoch
    # budget with share 0.1 allows 0.3 epochs of each. The teacher temperature warm-up (0 in the
    # recipe) is already within the cap and must not be touched.
    cfg = load_pretrain_config("cifar10_nano", [])
    assert (cfg.optim.warmup_epochs, cfg.dino.freeze_last_layer_epochs) == (2, 1)
    args = argparse.Namespace(warmup_share=0.1, overrides=["dino.freeze_last_layer_epochs=2"])
    out = bench_cifar._fit_warmups(cfg, args, epochs=3.0)
    assert out == ["optim.warmup_epochs=0.3000"]
    assert "optim.warmup_epochs: 2 → 0.300 epochs" in capsys.readouterr().out
