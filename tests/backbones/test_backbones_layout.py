"""The backbones package reads as one house: its own modules imported relatively, module
docstrings that state a contract (design notes live in docs/backbones.md), short files and
functions, no formatter overrides and no compatibility code for our own unpublished checkpoints."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "backbones"
FILES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_the_package_has_files() -> None:
    assert len(FILES) > 20 and PACKAGE / "registry.py" in FILES


def _absolute_imports_of_unimix(tree: ast.AST) -> list[int]:
    """Lines of ``import unimix...`` / ``from unimix... import`` (module level or in functions)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] == "unimix" for name in names):
            lines.append(node.lineno)
    return lines


def test_the_import_check_sees_both_forms() -> None:
    source = (
        "import unimix.data\ndef f():\n    from unimix.config import x\nfrom ..mixers import y\n"
    )
    assert _absolute_imports_of_unimix(ast.parse(source)) == [1, 3]


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_own_modules_are_imported_relatively(path: Path) -> None:
    assert not _absolute_imports_of_unimix(ast.parse(path.read_text()))


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_short_docstrings_files_and_functions(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source)
    assert len(source.splitlines()) <= 400
    assert len((ast.get_docstring(tree, clean=False) or "").splitlines()) <= 15
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_no_residue(path: Path) -> None:
    # a measured speed-up in a comment goes stale: numbers live in docs/ and results/
    residue = r"BRIEF|fmt: (?:skip|off)|legacy|\d\s*[×x]\s+(?:faster|slower)"
    assert not re.findall(residue, path.read_text())
