"""The package's own import graph: no two modules import each other, directly or around a
circle (imports inside functions included), and every import of our own modules inside the
package is relative (``from ..eval import ...``, as timm writes it), so tools that resolve imports
from the checkout follow them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_import_direction import REPO_ROOT, ROOT, _module_name, _targets, package_files

#: Circles left to break, each a sorted tuple of modules; ssl/ is restructured separately
#: (issue 28 item 7). The test fails once one is gone, so that its entry goes too.
KNOWN_CIRCLES: set[tuple[str, ...]] = set()

#: torch.hub imports hubconf.py as a top-level module named ``hubconf``, outside the package:
#: a relative import cannot work there.
OUTSIDE_THE_PACKAGE = {"hubconf.py"}

#: Top-level folders whose imports are made relative separately (strict xfail: flip it then).
NOT_YET_RELATIVE: set[str] = set()
#: Files converted by their authors (the folder recipe's, issue 26); each must still hold an
#: absolute import, so that its entry goes once it is converted.
NOT_YET_RELATIVE_FILES: set[str] = set()


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the package's modules it imports, from ``{module: (source, is_package)}``
    (``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
    ``pkg``)."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        edges = set()
        for node in ast.walk(ast.parse(source, module)):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, module, is_package):
                names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
                hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in sources]
                edges.update(hits or ([target] if target in sources else []))
        graph[module] = edges - {module, ROOT}
    return graph


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        _module_name(path): (path.read_text(), path.name == "__init__.py")
        for path in package_files()
    }


def circles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules() -> None:
    found = circles(import_graph(package_sources()))
    assert found - KNOWN_CIRCLES == set(), f"import circles: {sorted(found - KNOWN_CIRCLES)}"
    assert KNOWN_CIRCLES - found == set(), "broken circles still listed in KNOWN_CIRCLES"


def test_the_circle_finder_sees_function_level_and_relative_imports() -> None:
    sources = {
        "unimix.eval": ("", True),
        "unimix.eval.a": ("from unimix.eval import b\n", False),
        "unimix.eval.b": ("def f():\n    from . import a\n", False),
        "unimix.eval.c": ("from .a import x\nfrom .. import __version__\n", False),
    }
    graph = import_graph(sources)
    assert graph["unimix.eval.c"] == {"unimix.eval.a"}
    assert circles(graph) == {("unimix.eval.a", "unimix.eval.b")}
    sources["unimix.eval.b"] = ("def f():\n    import torch\n", False)  # a circle no more
    assert circles(import_graph(sources)) == set()


def own_absolute_imports(source: str, filename: str) -> list[str]:
    """``file:line: import`` for each import of a ``unimix`` module written absolute."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        absolute = (
            isinstance(node, ast.ImportFrom)
            and not node.level
            and (node.module or "").split(".")[0] == ROOT
        ) or (
            isinstance(node, ast.Import) and any(a.name.split(".")[0] == ROOT for a in node.names)
        )
        if absolute:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def _top_level(path: Path) -> str:
    """``ssl`` for ``ssl/engine/trainer.py``, ``cli.py`` for the root's ``cli.py``."""
    return path.relative_to(REPO_ROOT).parts[0]


@pytest.mark.parametrize(
    "folder",
    [
        pytest.param(f, marks=pytest.mark.xfail(strict=True, reason="made relative separately"))
        if f in NOT_YET_RELATIVE
        else f
        for f in sorted({_top_level(p) for p in package_files()})
    ],
)
def test_imports_of_our_own_modules_are_relative(folder: str) -> None:
    found = []
    for path in package_files():
        rel = str(path.relative_to(REPO_ROOT))
        if _top_level(path) != folder or rel in OUTSIDE_THE_PACKAGE:
            continue
        absolute = own_absolute_imports(path.read_text(), rel)
        if rel in NOT_YET_RELATIVE_FILES:
            assert absolute, f"{rel}: all relative now; drop it from NOT_YET_RELATIVE_FILES"
        else:
            found += absolute
    assert found == [], "absolute imports of our own modules:\n" + "\n".join(found)


def test_the_relative_check_names_absolute_imports() -> None:
    source = "from unimix.data import x\nimport unimix.eval\nfrom ..data import y\nimport torch\n"
    assert own_absolute_imports(source, "eval/probe.py") == [
        "eval/probe.py:1: from unimix.data import x",
        "eval/probe.py:2: import unimix.eval",
    ]


def unresolved_imports(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """``module:line: target`` for each import of one of our modules that names no module or
    package of ``sources`` (a module moved or renamed without its importers following)."""
    known = set(sources)
    for module in sources:
        parts = module.split(".")
        known.update(".".join(parts[:i]) for i in range(1, len(parts)))  # namespace packages too
    found = []
    for module, (source, is_package) in sources.items():
        for node in ast.walk(ast.parse(source, module)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [
                    f"{module}:{node.lineno}: {target}"
                    for target in _targets(node, module, is_package)
                    if target not in known and target.rsplit(".", 1)[0] not in sources
                ]
    return found


def test_every_import_of_our_modules_resolves() -> None:
    assert unresolved_imports(package_sources()) == []


def test_the_resolution_check_names_a_moved_module() -> None:
    sources = {
        "unimix.ssl.engine": ("", True),
        "unimix.ssl.engine.launch": ("", False),
        "unimix.bench.speed": ("def f():\n    from ..ssl.launch import x\n", False),
        "unimix.bench.job": (
            "from ..ssl.engine.launch import x\nfrom ..ssl import engine\n",
            False,
        ),
    }
    assert unresolved_imports(sources) == ["unimix.bench.speed:2: unimix.ssl.launch"]
