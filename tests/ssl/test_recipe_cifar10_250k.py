"""The ``cifar10_250k`` recipe is the configuration whose numbers ``results/`` reports: the
``cifar10_nano`` recipe with the overrides recorded in ``results/recipes/cifar10_250k_race.json``
(``scripts/bench_cifar.py --images 250000`` on 50,000 images: 5 epochs), 1,950 steps of 128."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from unimix.ssl.config import load_pretrain_config
from unimix.ssl.schedules import Schedules

RESULT = Path(__file__).resolve().parents[2] / "results" / "recipes" / "cifar10_250k_race.json"
#: what shapes training; the k-NN, checkpoints and output folder are the run's own business
TRAINING = ("data", "augment", "model", "dino", "optim", "epochs", "precision")


def _training(cfg: object) -> dict:
    values = dataclasses.asdict(cfg)
    values["data"] = {k: v for k, v in values["data"].items() if k not in ("dataset", "cache")}
    return {key: values[key] for key in TRAINING}


def test_the_recipe_is_the_measured_configuration() -> None:
    spec = json.loads(RESULT.read_text())["spec"]
    assert spec["images"] == 250_000 and spec["recipe"] == "cifar10_nano"
    measured = load_pretrain_config(spec["recipe"], [*spec["overrides"], "epochs=5"])
    shipped = load_pretrain_config("cifar10_250k", [])
    assert _training(shipped) == _training(measured)
    # 50,000 training images in batches of 128: 390 steps an epoch (the last part-batch is
    # dropped), 1,950 in all, as the measured runs logged
    assert Schedules(shipped, 50_000 // 128).total_steps == 1950
    assert shipped.eval.knn_every_epochs == 1 and shipped.eval.knn_at_end
