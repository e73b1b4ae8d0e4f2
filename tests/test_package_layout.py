"""The whole package reads as one house: module docstrings that state a contract (design notes
live in docs/), files of at most 400 lines, functions of at most 60, no formatter overrides, no
references to documents outside the repository, no compatibility code for our own unpublished
checkpoints and no measured speed-ups in comments (numbers live in results/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from test_import_direction import REPO_ROOT, package_files

#: The package's files and the command-line scripts over it.
FILES = package_files() + sorted((REPO_ROOT / "scripts").glob("*.py"))
RESIDUE = r"BRIEF|fmt: (?:skip|off)|legacy|\d\s*[×x]\s+(?:faster|slower)"


def _name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def long_functions(source: str, limit: int = 60) -> list[str]:
    """``name: N lines`` for every function (methods and nested ones too) longer than ``limit``."""
    return [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_every_package_folder_is_covered() -> None:
    folders = {p.relative_to(REPO_ROOT).parts[0] for p in FILES}
    assert {"ssl", "eval", "data", "backbones", "config", "checkpoint", "bench", "viz"} <= folders
    assert REPO_ROOT / "ssl" / "engine" / "trainer.py" in FILES
    assert REPO_ROOT / "scripts" / "bench_train.py" in FILES


def test_the_function_check_counts_lines() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    assert long_functions(f"def short():\n{body}\n") == ["short: 61 lines"]
    assert long_functions(f"class A:\n    def f(self):\n    {body[:40]}\n") == []


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_short_docstrings_files_and_functions(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= 400, "over 400 lines"
    docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
    assert len(docstring.splitlines()) <= 15, "module docstring over 15 lines"
    assert long_functions(source) == []


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_no_residue(path: Path) -> None:
    assert re.findall(RESIDUE, path.read_text()) == []
