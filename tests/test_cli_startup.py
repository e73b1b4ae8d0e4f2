"""``unimix --help`` is fast: ``import unimix`` / ``unimix.cli`` load neither torch nor timm, yet
``timm.create_model("unimix_<preset>")`` works after ``import unimix`` whichever comes first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unimix.cli import SUBCOMMANDS, main

REPO_ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path | None = None) -> str:
    """stdout of ``python -c code`` in a fresh interpreter (fails with its stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _import_seconds(module: str) -> float:
    """Seconds ``import module`` takes in a fresh interpreter, timed inside it."""
    code = f"import time\nt = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)"
    return float(_python(code, cwd=REPO_ROOT).split()[-1])


def test_import_of_the_cli_is_a_fraction_of_importing_torch() -> None:
    # a ratio, not seconds: both are timed on the same (possibly loaded) machine, back to back
    cli, torch = _import_seconds("unimix.cli"), _import_seconds("torch")
    assert cli / torch < 0.25, f"import unimix.cli {cli:.3f} s vs import torch {torch:.3f} s"


def test_import_of_the_cli_loads_no_heavy_module() -> None:
    heavy = ("torch", "timm", "torchvision", "accelerate", "numpy", "faiss")
    code = f"import sys, unimix, unimix.cli, unimix.ssl\nprint([m for m in {heavy} if m in sys.modules])"
    assert _python(code, cwd=REPO_ROOT).strip() == "[]"


@pytest.mark.parametrize("how", ["python -m unimix.cli", "unimix"])
def test_help_imports_no_heavy_module(how: str) -> None:
    # -X importtime (PYTHONPROFILEIMPORTTIME) lists every module the process imported
    script = Path(sys.executable).with_name("unimix")
    if how == "unimix" and not script.is_file():
        pytest.skip(f"no console script at {script}")
    args = [sys.executable, "-m", "unimix.cli"] if how != "unimix" else [str(script)]
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([*args, "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "usage: unimix" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "unimix.cli" in imported or "unimix" in imported
    assert not imported & {"torch", "timm", "numpy"}


@pytest.mark.parametrize("order", ["unimix first", "timm first"])
def test_presets_are_registered_with_timm_after_import_unimix(order: str) -> None:
    imports = "import unimix, timm" if order == "unimix first" else "import timm, unimix"
    code = (
        f"{imports}\nimport torch\n"
        "model = timm.create_model('unimix_poolformer_nano', num_classes=0)\n"
        "print(model(torch.zeros(1, 3, 32, 32)).shape[-1], model.num_features)"
    )
    width, num_features = _python(code).split()
    assert width == num_features  # a headless backbone: [B, num_features]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_still_answers_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # each subcommand module imports what it needs itself (nothing comes from `import unimix`)
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert f"unimix {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_subcommand_help_imports_no_torch(command: str) -> None:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "unimix.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0 and f"usage: unimix {command}" in proc.stdout, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "unimix" in imported  # the package, then unimix.cli as __main__
    assert not imported & {"torch", "timm", "numpy", "faiss", "accelerate"}
