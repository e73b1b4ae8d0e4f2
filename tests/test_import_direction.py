"""Imports run one way: every import of a ``unimix`` module, at module level or inside a function,
absolute (``unimix.x``) or relative (``..x``), points to the same package or a lower layer.

Layers, bottom to top (a package may import its own modules and any strictly lower layer)::

    0  unimix.config                      generic config loading
    1  unimix.data, unimix.backbones      datasets; mixers, skeleton, presets, create_dino_backbone
    2  unimix.checkpoint                  checkpoint format: names, manifest, weights
    3  unimix.eval                        frozen-feature evaluation and export
    4  unimix.ssl                         DINO pretraining
    5  unimix.bench, unimix.cli, unimix.viz   tools and entry points

The root package ``unimix`` (``__init__.py``: ``__version__`` and the timm preset registration)
is not a layer: ``from unimix import __version__`` is allowed anywhere, and its own import of
``unimix.backbones`` is not checked. Also: no ``except ImportError`` may guard an import of our own
modules (it would hide a wiring fault).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "unimix.config": 0,
    "unimix.data": 1,
    "unimix.backbones": 1,
    "unimix.checkpoint": 2,
    "unimix.eval": 3,
    "unimix.ssl": 4,
    "unimix.bench": 5,
    "unimix.cli": 5,
    "unimix.viz": 5,
    "unimix.hubconf": 5,  # torch.hub entry points (hubconf.py at the repository root)
}
ROOT = "unimix"


def _package_dirs() -> dict[str, str]:
    """``{"unimix.ssl": "ssl", ...}`` from pyproject's ``[tool.setuptools.package-dir]``."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    dirs = dict(re.findall(r'^"([\w.]+)"\s*=\s*"([^"]+)"', section, flags=re.M))
    return {name: path for name, path in dirs.items() if name != ROOT}


def _module_name(path: Path) -> str:
    """Dotted name of a package file: ``ssl/engine/trainer.py`` → ``unimix.ssl.engine.trainer``."""
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    by_dir = {folder: name for name, folder in _package_dirs().items()}
    parts = list(rel.parts)
    if len(parts) > 1 and parts[0] in by_dir:
        parts = by_dir[parts[0]].split(".") + parts[1:]
    else:
        parts = [ROOT, *parts]
    return ".".join(parts).removesuffix(".__init__")


def package_files() -> list[Path]:
    """Every .py file of the package: root modules and each subpackage's folder, recursively."""
    files = sorted(REPO_ROOT.glob("*.py"))
    for folder in _package_dirs().values():
        files += sorted((REPO_ROOT / folder).rglob("*.py"))
    return sorted(set(files))  # nested package dirs are listed under their parent too


def unit_of(module: str) -> str:
    """The layered unit a dotted module belongs to (``unimix.ssl.engine.trainer`` → ``unimix.ssl``)."""
    parts = module.split(".")
    if parts[0] != ROOT:
        return ""
    return ".".join(parts[:2]) if len(parts) > 1 else ROOT


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute dotted names an ``import`` / ``from ... import`` node reaches inside unimix."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == ROOT]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    if stem.split(".")[0] != ROOT:
        return []
    if stem == ROOT:  # from unimix import config / __version__
        return [f"{ROOT}.{a.name}" if f"{ROOT}.{a.name}" in LAYERS else ROOT for a in node.names]
    if node.level and not node.module:  # from . import x: x is a module of that package
        return [f"{stem}.{alias.name}" for alias in node.names]
    return [stem]


def _line_number(problem: str) -> int:
    return int(problem.split(":")[1])


def upward_imports(source: str, module: str, filename: str, is_package: bool = False) -> list[str]:
    """One line per import of ``source`` (module ``module``) that reaches a higher layer or a
    sibling package of the same layer: ``file:line: import text -> target``."""
    unit = unit_of(module)
    layer = LAYERS[unit]
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for target in _targets(node, module, is_package):
            other = unit_of(target)
            if other in (ROOT, unit):
                continue
            if other not in LAYERS:
                found.append(f"{filename}:{node.lineno}: {target} is in no layer (add it)")
            elif LAYERS[other] >= layer:
                text = lines[node.lineno - 1].strip()
                found.append(
                    f"{filename}:{node.lineno}: `{text}` imports {other} (layer "
                    f"{LAYERS[other]}) from {unit} (layer {layer})"
                )
    return sorted(found, key=_line_number)


def guarded_own_imports(
    source: str, module: str, filename: str, is_package: bool = False
) -> list[str]:
    """Imports of unimix modules inside a ``try`` whose handler catches ImportError."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Try):
            continue
        caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
        if "ImportError" not in caught and "ModuleNotFoundError" not in caught:
            continue
        for stmt in node.body:
            for inner in ast.walk(stmt):
                if isinstance(inner, (ast.Import, ast.ImportFrom)) and _targets(
                    inner, module, is_package
                ):
                    found.append(
                        f"{filename}:{inner.lineno}: {ast.unparse(inner)} under except {caught}"
                    )
    return sorted(found, key=_line_number)


def _check_all(check) -> list[str]:
    problems = []
    for path in package_files():
        if path == REPO_ROOT / "__init__.py":
            continue  # the root facade: __version__ and preset registration, not a layer
        module, is_package = _module_name(path), path.name == "__init__.py"
        rel = str(path.relative_to(REPO_ROOT))
        problems += check(path.read_text(), module, rel, is_package)
    return problems


def test_every_package_folder_has_a_layer() -> None:
    units = {unit_of(_module_name(p)) for p in package_files()} - {ROOT}
    assert "unimix.__init__" not in units
    assert units <= set(LAYERS), f"units without a layer: {sorted(units - set(LAYERS))}"
    assert {"unimix.ssl", "unimix.eval", "unimix.checkpoint"} <= units


def test_no_import_reaches_a_higher_layer() -> None:
    problems = _check_all(upward_imports)
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_import_of_our_own_code_is_guarded_by_except_import_error() -> None:
    problems = _check_all(guarded_own_imports)
    assert not problems, "guarded imports of unimix modules:\n" + "\n".join(problems)


# --------------------------------------------------------------- the checker catches what it must
EVAL_SOURCE = """
import torch
from unimix.data import build_dataset
from unimix.checkpoint import load_backbone
from . import knn
from .features import eval_transform


def load():
    from unimix.ssl.model import DINOModel
    from ..ssl import trainer
    from .. import bench
    return DINOModel
"""


def test_the_checker_names_each_upward_import_with_its_line() -> None:
    problems = upward_imports(EVAL_SOURCE, "unimix.eval.cli", "eval/cli.py")
    assert problems == [
        "eval/cli.py:10: `from unimix.ssl.model import DINOModel` imports unimix.ssl (layer 4) "
        "from unimix.eval (layer 3)",
        "eval/cli.py:11: `from ..ssl import trainer` imports unimix.ssl (layer 4) "
        "from unimix.eval (layer 3)",
        "eval/cli.py:12: `from .. import bench` imports unimix.bench (layer 5) "
        "from unimix.eval (layer 3)",
    ]


@pytest.mark.parametrize(
    ("source", "module", "is_package", "bad"),
    [
        ("from unimix.data import build_dataset", "unimix.backbones.models.skeleton", False, True),
        ("from ...data import x", "unimix.backbones.models.skeleton", False, True),
        ("from ..mixers import MIXERS", "unimix.backbones.models.skeleton", False, False),
        ("from .knn import knn_search", "unimix.eval", True, False),
        ("import unimix.viz.cli", "unimix.cli", False, True),  # a sibling of the top layer
        ("from .config import load_config", "unimix.cli", False, False),
        ("from unimix import __version__", "unimix.eval.export", False, False),
        ("from unimix import eval", "unimix.data.build", False, True),
    ],
)
def test_relative_and_absolute_imports_resolve_to_their_layer(
    source: str, module: str, is_package: bool, bad: bool
) -> None:
    assert bool(upward_imports(source, module, "x.py", is_package)) == bad


def test_the_guard_check_catches_our_imports_only() -> None:
    source = (
        "try:\n    from unimix.backbones import create_backbone\nexcept ImportError:\n    pass\n"
        "try:\n    import onnx\nexcept ImportError:\n    onnx = None\n"
    )
    assert guarded_own_imports(source, "unimix.ssl.model", "ssl/model.py") == [
        "ssl/model.py:2: from unimix.backbones import create_backbone under except ImportError"
    ]
