"""``unimix export --format hf``: timm's ``save_for_hf`` folder that
``timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)`` loads with the run's
weights and normalisation; the model card; ``--push-to-hub`` wiring (no network: timm's
``push_to_hf_hub`` is replaced); ``--output DIR/``; no absolute path in any written file;
``hubconf.py`` through ``torch.hub.load(..., source="local")``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from test_eval_features import _fake_checkpoint

from unimix.backbones import PRESETS
from unimix.eval import eval_transform
from unimix.eval.export_cli import build_parser as _export_parser
from unimix.eval.export_cli import main as main_export

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]  # not ImageNet's: the round trip must carry them
TINY_RUN = {
    "data": {
        "dataset": "synthetic",
        "num_samples": 64,
        "image_size": 16,
        "batch_size": 16,
        "num_workers": 0,
        "mean": MEAN,
        "std": STD,
    },
    "augment": {"global_size": 16, "local_size": 8, "num_local": 0},
    "model": {
        "backbone": "poolformer_nano",
        "head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    },
    "optim": {"warmup_epochs": 0},
    "epochs": 1,
    "max_steps": 2,
    "threads": 1,
    "checkpoint": {"every_steps": 0, "keep_last": 1},
    "logging": {"every_steps": 1, "progress_bar": False},
    "eval": {"knn_at_end": True, "num_train": 48, "num_test": 16, "k": 5},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-step DINO run of poolformer_nano (checkpoint, config.yaml, knn.json)."""
    root = tmp_path_factory.mktemp("hf_run")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_RUN, "output_dir": str(root / "run")}))
    cmd = [sys.executable, "-m", "unimix.cli", "pretrain", "-c", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def _no_absolute_paths(folder: Path, tmp: Path) -> None:
    """No written text names the temporary folder, no JSON string value starts with '/'."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    for path in folder.iterdir():
        if path.suffix in (".json", ".md"):
            text = path.read_text()
            assert str(tmp) not in text and str(tmp.resolve()) not in text, path.name
        if path.suffix == ".json":
            assert not [s for s in strings(json.loads(path.read_text())) if s.startswith("/")]


@pytest.mark.slow
def test_hf_export_round_trip_through_timm_local_dir(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exported"
    assert main_export([str(run), "--format", "hf", "--output", str(out)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    # the reference: the run's teacher backbone file, loaded into a fresh preset by hand
    (ckpt,) = (run / "checkpoints").iterdir()
    reference = timm.create_model("unimix_poolformer_nano", num_classes=0).eval()
    reference.load_state_dict(load_file(ckpt / "teacher_backbone.safetensors"))

    model = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
    assert list(model.pretrained_cfg["mean"]) == MEAN and list(model.pretrained_cfg["std"]) == STD
    config = timm.data.resolve_data_config({}, model=model)
    assert list(config["mean"]) == MEAN and list(config["std"]) == STD
    assert config["input_size"] == (3, 16, 16)
    # timm's transform from that config equals unimix's eval transform on a 16-px image
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    want = eval_transform(16, MEAN, STD)(image)
    torch.testing.assert_close(timm.data.create_transform(**config)(image), want)

    # timm's config layout: architecture, no head, the run's kwargs
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "unimix_poolformer_nano" and cfg["num_classes"] == 0
    assert cfg["num_features"] == reference.num_features == 256
    # the model card: the run's k-NN number, how to load, the licence
    card = (out / "README.md").read_text()
    knn = json.loads((run / "knn.json").read_text())
    assert f"{knn['trained']:.2f}%" in card and "license: apache-2.0" in card
    assert 'timm.create_model("local-dir:' in card and "torch.hub.load(" in card
    assert "Steps:** 2" in card and "synthetic" in card
    _no_absolute_paths(out, tmp_path)
    _no_absolute_paths(out, run)

    # features_only from the export: the teacher's stage maps
    features = timm.create_model(f"local-dir:{out}", pretrained=True, features_only=True).eval()
    with torch.no_grad():
        maps = features(x)
        expected = reference.forward_intermediates(x, intermediates_only=True)
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as the trainer lays it out (poolformer_nano, 16 px, mean 0.5 / std 0.25)."""
    ckpt, model = _fake_checkpoint(tmp_path / "run")
    return ckpt, model


def test_push_to_hub_goes_through_timms_push_to_hf_hub(
    checkpoint: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        timm.models, "push_to_hf_hub", lambda model, repo, **kw: calls.append((model, repo, kw))
    )
    ckpt, model = checkpoint
    argv = [str(ckpt), "--format", "hf", "--output", str(tmp_path / "hf"), "--push-to-hub"]
    assert main_export([*argv, "user/unimix-test"]) == 0
    ((pushed, repo, kwargs),) = calls
    assert repo == "user/unimix-test" and kwargs["safe_serialization"] is True
    assert list(kwargs["data_config"]["mean"]) == [0.5] * 3
    assert kwargs["model_card"]["license"] == "apache-2.0"
    assert "hf-hub:user/unimix-test" in kwargs["model_card"]["usage"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(pushed.eval()(x), model(x))
    assert "pushed to https://huggingface.co/user/unimix-test" in capsys.readouterr().out

    def offline(*args: Any, **kwargs: Any) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore details")

    monkeypatch.setattr(timm.models, "push_to_hf_hub", offline)
    assert main_export([*argv, "user/unimix-test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --push-to-hub user/unimix-test: upload failed")
    assert err.count("\n") == 1
    # only with --format hf
    assert main_export([str(ckpt), "-o", str(tmp_path / "x"), "--push-to-hub", "u/r"]) == 2
    assert "--push-to-hub: needs --format hf" in capsys.readouterr().err


def test_output_with_trailing_separator_is_a_folder(
    checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    for fmt, suffix in (("safetensors", ".safetensors"), ("torchscript", ".pt")):
        assert main_export([str(ckpt), "--format", fmt, "--output", "exports/"]) == 0
        assert (tmp_path / "exports" / f"extractor{suffix}").is_file()
        assert not (tmp_path / f"exports{suffix}").exists()
        side = json.loads((tmp_path / "exports" / f"extractor{suffix}.json").read_text())
        assert side["source"] == "checkpoints/step_00000007/teacher_backbone.safetensors"
    _no_absolute_paths(tmp_path / "exports", tmp_path)
    # hf into a folder that does not exist yet, then a file where a folder is needed
    assert main_export([str(ckpt), "--format", "hf", "--output", "new/hf"]) == 0
    assert (tmp_path / "new" / "hf" / "model.safetensors").is_file()
    _no_absolute_paths(tmp_path / "new" / "hf", tmp_path)
    assert main_export([str(ckpt), "--format", "hf", "--output", "exports/extractor.pt"]) == 2
    # from an exported safetensors extractor (its sidecar's relative source names no run here:
    # the card must not read the working directory's reports); a TorchScript file has no timm model
    (tmp_path / "knn.json").write_text(json.dumps({"trained": 99.99, "k": 5, "dataset": "cwd"}))
    assert main_export(["exports/extractor.safetensors", "--format", "hf", "-o", "st_hf"]) == 0
    assert "99.99" not in (tmp_path / "st_hf" / "README.md").read_text()
    assert main_export(["exports/extractor.pt", "--format", "hf", "--output", "pt_hf"]) == 2


def test_torch_hub_loads_presets_and_exports_from_the_checkout(
    checkpoint: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = torch.hub.load(str(REPO), "poolformer_nano", source="local").eval()
    torch.manual_seed(0)
    reference = timm.create_model("unimix_poolformer_nano", num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))  # same init, headless
    # every preset is an entry point (torch.hub.list reads GitHub repos only: import it here)
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert set(PRESETS) <= set(hubconf.__all__) and hubconf.dependencies == ["torch", "timm"]

    ckpt, trained = checkpoint
    assert main_export([str(ckpt), "--format", "hf", "--output", str(tmp_path / "hf")]) == 0
    loaded = torch.hub.load(str(REPO), "from_export", str(tmp_path / "hf"), source="local")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), trained(x), atol=1e-5, rtol=1e-5)
    assert list(loaded.pretrained_cfg["mean"]) == [0.5] * 3


def test_every_export_option_has_help_text() -> None:
    parser = _export_parser()
    ours = {"format", "output", "push_to_hub", "image_size"}  # the export command's own options
    options = [a for a in parser._actions if a.dest in ours]
    assert len(options) == len(ours)
    for action in options:
        assert action.help, f"{action.option_strings} has no help text"
    text = parser.format_help()
    assert "push_to_hf_hub" in text and "hf" in text and "'/'" in text
