"""No import cycles among the `helpline` modules, counting imports inside functions too.

A cycle hidden behind a function-level import still means two modules that each need the other:
neither can be read, tested or changed on its own, and the order they are first imported in decides
whether start-up works. Imports under `if TYPE_CHECKING:` never run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import helpline

PACKAGE = Path(helpline.__file__).parent


def modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of `package` by dotted name, with its file and whether it is a package."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _runs(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that can run: everywhere but under `if TYPE_CHECKING:`."""
    imports: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            imports += [item for branch in node.orelse for item in _runs(ast.Module(body=[branch], type_ignores=[]))]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        else:
            imports += _runs(node)
    return imports


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (at the top or inside a function)."""
    known = modules(package)
    root = package.name
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, (path, is_package) in known.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in _runs(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from package import module` imports the module; `from module import name`, the module.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            graph[name] |= {target for target in targets if target in known and target != name and target.split(".")[0] == root}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_helpline_has_no_import_cycles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and graph["helpline.api.calls"]  # the walk found the package and its imports
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(
        " <-> ".join(component) + " (" + ", ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component) + ")"
        for component in found)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def later():\n    from .sub import c\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import b\nfrom ..a import thing\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import e\n")
    (package / "e.py").write_text("from . import d\n")
    graph = import_graph(package)
    assert graph["pkg.sub.c"] == {"pkg.a"}  # the TYPE_CHECKING import does not count
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
