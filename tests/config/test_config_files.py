"""Hostile config files and values (issue 25, items 4, 5, 8, 16, 20): each refused at config
read time in one line naming the file or key, exit 2, and a finished run in the output dir is
left byte for byte as it was, every checkpoint still loading."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from run_snapshot import PRETRAIN, assert_run_intact, finished_run, run_cli, snapshot

from unimix.config import MAX_EXPANDED_NODES, ConfigError, load_config
from unimix.ssl.config import PretrainConfig, load_pretrain_config
from unimix.ssl.pretrain_cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("finished"))


def _refused(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> str:
    """``unimix pretrain args`` (in this process) exits 2 with one ``error:`` line."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _config_of(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


# ---------------------------------------------------------------- item 4: output_dir= (empty)
@pytest.mark.parametrize("args", [["output_dir="], ["output_dir=  "], ["-o", ""]])
def test_empty_output_dir_is_a_config_error(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    # It used to mean "the current directory": here, a finished run's own folder.
    before = snapshot(run)
    monkeypatch.chdir(run)
    _refused(
        capsys,
        ["-c", str(run / "config.yaml"), "--resume", "auto", *args],
        "config key 'output_dir'",
        "non-empty",
    )
    assert_run_intact(run, before)


# ------------------------------------------------------- item 5: std > 0, every float finite
@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("data.std=[0,0,0]", "data.std", "expected a value > 0, got 0.0"),
        ("data.std=[0.2,-0.1,0.2]", "data.std", "expected a value > 0, got -0.1"),
        ("optim.base_lr=inf", "optim.base_lr", "expected a finite number, got inf"),
        ("optim.base_lr=.inf", "optim.base_lr", "expected a finite number, got inf"),
        ("optim.min_lr=nan", "optim.min_lr", "expected a finite number, got nan"),
        ("dino.teacher_temp=-.inf", "dino.teacher_temp", "expected a finite number, got -inf"),
        (
            "augment.global_scale=[0.4, .nan]",
            "augment.global_scale[1]",
            "expected a finite number, got nan",
        ),
        (
            "model.backbone_kwargs.drop_path_rate=.nan",
            "model.backbone_kwargs.drop_path_rate",
            "expected a finite number, got nan",
        ),
    ],
)
def test_zero_std_and_non_finite_numbers_are_refused_at_load(
    run: Path, capsys: pytest.CaptureFixture[str], override: str, key: str, expected: str
) -> None:
    before = snapshot(run)
    _refused(
        capsys,
        ["-c", str(run / "config.yaml"), "-o", str(run), "--resume", "auto", override],
        f"config key '{key}': {expected} ",
    )
    assert_run_intact(run, before)


def test_non_finite_number_in_a_yaml_file_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "lr.yaml"
    path.write_text("optim:\n  base_lr: .inf\n")
    with pytest.raises(ConfigError, match=rf"^config key 'optim.base_lr': .*finite.*{path}"):
        load_pretrain_config(str(path))
    # the std checked item by item: the reference is the schema's rule (each > 0)
    cfg = load_pretrain_config("quickstart", ["data.std=[0.5,0.25,1e-6]"])
    assert cfg.data.std == (0.5, 0.25, 1e-6)


# ------------------------------------------------------------------- item 8: YAML alias bomb
def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A flow mapping of ``levels`` anchors, each a list of ``width`` aliases of the previous:
    width**levels values in a few hundred bytes."""
    items = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        items.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "{" + ", ".join(items) + "}"


@pytest.mark.slow
def test_alias_bomb_is_refused_fast_at_read_time(run: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"model:\n  backbone_kwargs: {_alias_bomb()}\n")
    assert len(bomb.read_bytes()) < 1000 and 1000 * MAX_EXPANDED_NODES < 9**9
    before = snapshot(run)
    start = time.monotonic()
    # the old behaviour hung (memory growing ~20 MB/s): the timeout turns that into a failure
    done = run_cli(
        [*PRETRAIN[1:], "-c", str(bomb), "-o", str(run), "--resume", "auto"], 60, memory=4 * 2**30
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: config file "), (
        done.stderr
    )
    assert str(bomb) in done.stderr and "alias" in done.stderr
    assert time.monotonic() - start < 30
    # the same bomb as an override value
    args = [
        "-c",
        str(run / "config.yaml"),
        "-o",
        str(run),
        "--resume",
        "auto",
        f"model.backbone_kwargs={_alias_bomb()}",
    ]
    done = run_cli([*PRETRAIN[1:], *args], 60, memory=4 * 2**30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert "override model.backbone_kwargs=" in done.stderr and "alias" in done.stderr
    assert_run_intact(run, before)


def test_anchors_within_the_cap_still_work_and_each_alias_is_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "model:\n  backbone_kwargs: {a: &m {x: 1, y: [1, 2]}, b: *m}\n"
        "optim:\n  <<: &lr {base_lr: 0.001, min_lr: 0.0}\n  base_lr: 0.002\n"
    )
    cfg = load_pretrain_config(str(path), ["model.backbone_kwargs.a.x=3"])
    # the override changed a only (PyYAML shares one dict between an anchor and its aliases)
    assert cfg.model.backbone_kwargs == {"a": {"x": 3, "y": [1, 2]}, "b": {"x": 1, "y": [1, 2]}}
    assert (cfg.optim.base_lr, cfg.optim.min_lr) == (0.002, 0.0)  # merge key, then its override


def test_recursive_alias_and_deep_nesting_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "self.yaml"
    path.write_text("model:\n  backbone_kwargs: &k {again: *k}\n")
    with pytest.raises(ConfigError, match=rf"^config file {path} line 2: an alias inside"):
        load_pretrain_config(str(path))
    path.write_text("seed: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match=rf"^config file {path}: nested too deeply"):
        load_pretrain_config(str(path))


# ----------------------------------------------------------- item 16: a non-UTF-8 config file
def test_non_utf8_config_is_one_line_naming_the_file(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("# réglages de Zoé\nseed: 0\n".encode("latin-1"))
    before = snapshot(run)
    _refused(
        capsys,
        ["-c", str(latin), "-o", str(run), "--resume", "auto"],
        f"config file {latin}: not UTF-8",
        "0xe9",
    )
    assert_run_intact(run, before)
    # UTF-8, with or without a byte-order mark, reads
    for text in ("# réglages\nseed: 3\n", "\ufeffseed: 3\n"):
        latin.write_bytes(text.encode("utf-8"))
        assert load_pretrain_config(str(latin)).seed == 3


def test_config_that_is_no_file_or_too_big_is_one_line(tmp_path: Path) -> None:
    # /dev/zero was read until memory ran out: in a process of its own, capped at 4 GiB
    code = "from unimix.ssl.config import load_pretrain_config as L; L('/dev/zero')"
    done = run_cli(["-c", code], timeout=60, memory=4 * 2**30)
    assert done.returncode == 1 and "MemoryError" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1].startswith(
        "unimix.config.ConfigError: config file /dev/zero: over 4 MiB, not a config file"
    )
    with pytest.raises(ConfigError, match=rf"^config file {tmp_path}: cannot read"):
        load_config(PretrainConfig, tmp_path)  # a folder


# -------------------------------------------------------------- item 20: a duplicate YAML key
def test_duplicate_key_is_one_line_naming_it(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("optim:\n  base_lr: 0.001\n  min_lr: 0.0\n  base_lr: 0.1\n")
    before = snapshot(run)
    _refused(
        capsys,
        ["-c", str(dup), "-o", str(run), "--resume", "auto"],
        f"config file {dup} line 4: duplicate key 'optim.base_lr'",
    )
    dup.write_text("model:\n  backbone_kwargs:\n    depth: 1\n    depth: 12\n")
    _refused(
        capsys, ["-c", str(dup), "-o", str(run)], "duplicate key 'model.backbone_kwargs.depth'"
    )
    _refused(
        capsys,
        ["-c", "quickstart", "-o", str(run), "model.backbone_kwargs={a: 1, a: 2}"],
        "duplicate key 'model.backbone_kwargs.a'",
    )
    assert_run_intact(run, before)
    # the same key in two different mappings is no duplicate
    dup.write_text("optim:\n  base_lr: 0.001\neval:\n  k: 5\ndino:\n  koleo_weight: 0.0\n")
    assert load_pretrain_config(str(dup)).eval.k == 5


# ------------------------------------------------------ item 16: an output_dir name too long
def test_output_dir_name_over_the_limit_is_refused_before_writing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run)
    parent = tmp_path / "parent"
    parent.mkdir()
    long_name = parent / ("r" * 256) / "run"
    _refused(
        capsys,
        ["-c", str(run / "config.yaml"), "-o", str(long_name)],
        "output_dir=",
        "is 256 bytes, over the 255-byte limit",
    )
    # multi-byte characters count in bytes: 128 'é' are 256 bytes
    _refused(
        capsys, ["-c", str(run / "config.yaml"), "-o", str(parent / ("é" * 128))], "is 256 bytes"
    )
    deep = parent / "/".join(["d" * 200] * 21)  # each name fine, the whole over PATH_MAX
    assert len(os.fsencode(str(deep))) > 4096
    _refused(capsys, ["-c", str(run / "config.yaml"), "-o", str(deep)], "path limit")
    assert list(parent.iterdir()) == []
    assert_run_intact(run, before)
    # 255 bytes is within the limit (the check is not off by one): the run is only checked
    from unimix.ssl.engine.preflight import preflight

    preflight(
        load_pretrain_config(str(run / "config.yaml"), [f"output_dir={parent / ('r' * 255)}"])
    )
    assert list(parent.iterdir()) == []
