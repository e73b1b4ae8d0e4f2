"""unimix.config: presets, YAML files and dotted overrides, validated with one-line errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from unimix.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = field(default=5e-4, metadata={"gt": 0})
    epochs: int = field(default=10, metadata={"ge": 1})
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Data:
    name: str = "synthetic"
    root: str | None = None
    crop_sizes: list[int] = field(default_factory=lambda: [32, 16], metadata={"gt": 0})
    precision: Literal["no", "bf16", "fp16"] = "no"
    shuffle: bool = True


@dataclass
class Cfg:
    seed: int = 0
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)


PRESETS = {"small": {"optim": {"lr": 1e-3, "epochs": 2}}}


def test_defaults_preset_and_overrides_layer_in_order():
    cfg = load_config(Cfg, "small", ["optim.epochs=5", "data.crop_sizes=[64, 32]"], PRESETS)
    assert cfg.optim.lr == 1e-3  # from the preset
    assert cfg.optim.epochs == 5  # override beats preset
    assert cfg.data.crop_sizes == [64, 32]
    assert cfg.optim.betas == (0.9, 0.999)  # default


def test_yaml_file_and_yaml11_float_strings(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-3\ndata:\n  root: null\n  shuffle: false\n")
    cfg = load_config(Cfg, path, ["data.root=/tmp/x", "optim.lr=2e-4"])
    assert cfg.optim.lr == pytest.approx(2e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.data.root == "/tmp/x" and cfg.data.shuffle is False


def test_round_trip_through_yaml(tmp_path: Path):
    cfg = load_config(Cfg, "small", ["data.precision=bf16"], PRESETS)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Cfg, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("optim.lr=abc", "config key 'optim.lr': expected float, got 'abc'"),
        ("optim.lr=-1", "config key 'optim.lr': expected a value > 0, got -1"),
        ("optim.epochs=1.5", "config key 'optim.epochs': expected int"),
        ("data.precision=fp8", "config key 'data.precision': expected one of 'no', 'bf16', 'fp16'"),
        ("data.crop_sizes=[32, 0]", "config key 'data.crop_sizes': expected a value > 0, got 0"),
        ("data.crop_sizes=32", "config key 'data.crop_sizes': expected list"),
        ("optim.betas=[0.9]", "config key 'optim.betas': expected 2 values, got 1"),
        ("data.shuffle=maybe", "config key 'data.shuffle': expected bool"),
        ("optim=3", "optim: expected a section"),
        ("lr", "override 'lr': expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key_in_one_line(override: str, expected: str):
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, None, [override])
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_errors_say_where_the_value_came_from(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"optim.epochs.*>= 1.*bad.yaml"):
        load_config(Cfg, path)
    with pytest.raises(ConfigError, match=r"optim.epochs.*command line"):
        load_config(Cfg, path, ["optim.epochs=-3"])


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        load_config(Cfg, None, ["optim.lrr=1"])


def test_bad_sources(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a preset .*choices: small"):
        load_config(Cfg, "nope", presets=PRESETS)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+"):
        load_config(Cfg, broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Cfg, listy)


def test_yaml_is_loaded_safely(tmp_path: Path):
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(Cfg, path)


def test_cli_unknown_command_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "unimix.cli", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr
