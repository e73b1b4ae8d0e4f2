"""The Python API: ``unimix.pretrain(config, dataset=..., eval_dataset=...)`` trains in this
process on a user's own map-style dataset, refuses unusable ones in one line, and the example
of docs/python_api.md runs as written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import unimix
from unimix.ssl import PretrainConfig, load_pretrain_config

REPO_ROOT = Path(__file__).resolve().parents[1]

#: A 1-block ViT at 16 px: a step takes milliseconds.
TINY = [
    "data.batch_size=8",
    "data.num_workers=0",
    "augment.global_size=16",
    "augment.local_size=8",
    "augment.num_local=1",
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2,"
    " mlp_ratio: 2, dynamic_img_size: true}",
    "model.head={out_dim: 32, hidden_dim: 16, bottleneck_dim: 8}",
    "optim.warmup_epochs=0",
    "epochs=2",
    "threads=1",
    "checkpoint.every_steps=0",
    "logging.progress_bar=false",
]


class Recorded(Dataset):
    """``n`` random 20-px RGB PIL images with labels ``i % 2``; records every index read."""

    def __init__(self, n: int, seed: int = 0, labeled: bool = True) -> None:
        self.n, self.seed, self.labeled, self.reads = n, seed, labeled, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.reads.append(int(i))
        pixels = np.random.default_rng([self.seed, i]).integers(0, 256, (20, 20, 3), np.uint8)
        image = Image.fromarray(pixels)
        return (image, i % 2) if self.labeled else image


def _config(tmp_path: Path, *extra: str) -> PretrainConfig:
    return load_pretrain_config(None, [*TINY, f"output_dir={tmp_path / 'run'}", *extra])


def test_pretrain_trains_on_a_users_dataset(tmp_path: Path) -> None:
    data = Recorded(40, labeled=False)
    result = unimix.pretrain(_config(tmp_path), dataset=data, overrides=["max_steps=3"])
    assert result.steps == 3 and len(result.losses) == 3
    assert all(math.isfinite(loss) for loss in result.losses)
    assert result.checkpoint is not None and result.checkpoint.is_dir()
    assert any(result.checkpoint.iterdir())
    # item 0 once when checked, then each step read one batch of 8 distinct images of ours
    training = data.reads[1:]
    assert data.reads[0] == 0 and len(training) == 3 * 8
    assert all(len(set(training[s : s + 8])) == 8 for s in range(0, 24, 8))
    assert set(training) <= set(range(40))
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "batch_size: 8" in saved  # the config object (with its overrides) is the run's


def test_pretrain_knn_runs_on_the_given_eval_dataset(tmp_path: Path) -> None:
    bank, queries = Recorded(12, seed=1), Recorded(6, seed=2)
    cfg = _config(tmp_path, "max_steps=1", "eval.knn_at_end=true", "eval.k=3")
    result = unimix.pretrain(cfg, dataset=Recorded(16), eval_dataset=(bank, queries))
    assert result.knn is not None
    assert result.knn["dataset"] == "eval_dataset: 6 queries (bank: 12 images)"
    assert set(bank.reads) == set(range(12)) and set(queries.reads) == set(range(6))


def test_a_recipe_without_data_takes_your_dataset_and_names_no_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ``folder`` recipe requires data.dataset on the command line; with ``dataset=`` it
    trains on the caller's images, its saved config names no training set and no held-out
    split, and its k-NN (which would read the config's data) is switched off, saying so."""
    import yaml

    from unimix.eval.knn_cli import main as main_knn

    run = tmp_path / "run"
    overrides = [*TINY, f"output_dir={run}", "max_steps=1", "data.holdout=4"]
    with caplog.at_level("WARNING", logger="unimix.ssl"):
        result = unimix.pretrain("folder", dataset=Recorded(16), overrides=overrides)
    assert result.steps == 1 and result.knn is None
    assert any(r.getMessage().startswith("k-NN off: ") for r in caplog.records)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["dataset"] is None and saved["data"]["holdout"] == 0
    assert not saved["eval"]["knn_at_end"] and saved["eval"]["knn_every_epochs"] == 0
    assert main_knn([str(run)]) == 2  # `unimix knn RUN` asks for --data instead of guessing


class Tensors(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return torch.zeros(3, 8, 8), 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": Tensors()}, r"dataset\[0\]: expected a PIL image.*got Tensor \[3, 8, 8\]"),
        ({"dataset": [1, 2]}, r"dataset\[0\]: expected a PIL image.*got int"),
        ({"dataset": 3}, r"dataset: expected a map-style Dataset.*got int"),
        ({"eval_dataset": Recorded(4)}, r"eval_dataset: expected a \(bank, queries\) pair"),
        (
            {"eval_dataset": (Recorded(4), Recorded(4, labeled=False))},
            r"eval_dataset queries\[0\]: expected an \(image, integer label\) pair",
        ),
    ],
)
def test_unusable_datasets_are_refused_in_one_line(
    kwargs: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match=message) as err:
        unimix.pretrain(_config(tmp_path), **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_config_may_be_a_recipe_name_or_a_yaml_path(tmp_path: Path) -> None:
    from unimix.config import ConfigError, save_config
    from unimix.ssl.engine.trainer import resolve_config

    named = resolve_config("quickstart", ["seed=3"])
    assert named.model.backbone == "poolformer_nano" and named.seed == 3
    save_config(named, tmp_path / "mine.yaml")
    assert resolve_config(tmp_path / "mine.yaml") == named
    assert resolve_config(named, ["epochs=1"]).epochs == 1
    with pytest.raises(ConfigError, match="optim.base_lr"):
        resolve_config(PretrainConfig(), ["optim.base_lr=-1"])
    with pytest.raises(TypeError, match="config: expected a PretrainConfig"):
        resolve_config(42)


@pytest.mark.slow
def test_the_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO_ROOT / "docs" / "python_api.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs_example__"}
    exec(compile(code, "docs/python_api.md", "exec"), namespace)
    result = namespace["result"]
    assert result.steps == 2 and result.knn is not None
    assert not Path(result.output_dir).exists()  # written in a temporary directory
