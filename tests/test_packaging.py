"""Packaging: ``ssl/`` never shadows the standard library (it has no ``__init__.py``: a namespace
package, reachable only as ``unimix.ssl``, whose public names ``import unimix`` installs), and
``unimix.*`` imports both from the editable install and from a regular (wheel) install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("backbones", "ssl", "eval", "data", "bench", "checkpoint", "viz")
# Folders that are never part of a build (and can be large or busy): skipped when copying.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "outputs", "runs"
)


def _python(code: str, cwd: Path, **env: str) -> str:
    """Run ``python -c code`` in a fresh interpreter; return its stdout (fail with stderr)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _shipped_subpackages() -> list[str]:
    """Subpackages with at least one module: an empty namespace folder ships nothing."""
    return [name for name in SUBPACKAGES if any((REPO_ROOT / name).glob("*.py"))]


STDLIB_SSL = Path(sysconfig.get_paths()["stdlib"]).resolve() / "ssl.py"


def test_stdlib_ssl_is_not_shadowed_from_the_repo_root() -> None:
    # `python -c` puts the repository root (cwd) first on sys.path, as `python -m pytest` does
    code = "import ssl, sys; ssl.create_default_context(); print(ssl.__file__, sys.path[0] == '')"
    path, cwd_first = _python(code, REPO_ROOT).split()
    assert cwd_first == "True"
    assert Path(path).resolve() == STDLIB_SSL
    assert not (REPO_ROOT / "ssl" / "__init__.py").exists()  # no regular package named ssl


def test_stdlib_users_of_ssl_import_from_the_repo_root() -> None:
    code = (
        "import urllib.request, http.client, ssl\n"
        "assert http.client.HTTPSConnection and urllib.request.HTTPSHandler\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "print(ssl.__file__, type(ctx).__module__)"
    )
    path, module = _python(code, REPO_ROOT).split()
    assert Path(path).resolve() == STDLIB_SSL and module == "ssl"


def test_unimix_ssl_exports_its_public_names() -> None:
    out = _python(
        "import sys\n"
        "import unimix.ssl\n"
        "light = 'torch' not in sys.modules\n"
        "from unimix.ssl import pretrain, PretrainConfig, PretrainResult, DINOLoss\n"
        "from unimix.ssl.engine import trainer\n"
        "import unimix\n"
        "assert pretrain is trainer.pretrain is unimix.pretrain\n"
        "assert all(hasattr(unimix.ssl, name) for name in unimix.ssl.__all__)\n"
        "print(light, *unimix.ssl.__path__)",
        REPO_ROOT,
    )
    light, path = out.split()
    assert light == "True"  # the names are imported on first use
    assert Path(path) == REPO_ROOT / "ssl"  # a namespace package over ssl/


@pytest.mark.parametrize("where", ["repo_root", "elsewhere"])
def test_editable_install_imports_every_subpackage(where: str, tmp_path: Path) -> None:
    cwd = REPO_ROOT if where == "repo_root" else tmp_path
    modules = ", ".join(f"unimix.{name}" for name in SUBPACKAGES)
    out = _python(f"import {modules}, unimix; print(unimix.__file__)", cwd)
    assert Path(out.strip()) == REPO_ROOT / "__init__.py"


def test_wheel_install_ships_unimix_only_and_imports(tmp_path: Path) -> None:
    # Build from a copy so that parallel runs never share build/ or *.egg-info in the checkout.
    source, wheels, site, run = (tmp_path / d for d in ("src", "wheels", "site", "run"))
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCE)
    run.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = wheels.glob("unimix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"unimix", wheel.name.split("-py")[0] + ".dist-info"}, top_level
    assert "unimix/__init__.py" in names and "unimix/data/__init__.py" in names
    assert "ssl/__init__.py" not in names and "unimix/ssl/__init__.py" not in names
    for path in sorted((REPO_ROOT / "ssl").glob("*.py")):
        assert f"unimix/ssl/{path.name}" in names
    for path in sorted((REPO_ROOT / "ssl" / "recipes").glob("*.yaml")):
        assert f"unimix/ssl/recipes/{path.name}" in names  # package data

    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    shipped = _shipped_subpackages()
    code = "\n".join(
        [
            "import ssl, unimix",
            *(f"import unimix.{name}" for name in shipped),
            "print(ssl.__file__)",
            "print(unimix.__file__)",
            *(f"print(*unimix.{name}.__path__, sep='\\n')" for name in shipped),
        ]
    )
    lines = _python(code, run, PYTHONPATH=str(site)).split()
    assert Path(lines[0]).resolve() == STDLIB_SSL
    for line in lines[1:]:  # unimix and every subpackage come from the installed wheel
        assert Path(line).resolve().is_relative_to(site.resolve()), line
