"""The code's shape (issue 17): no command module imports another, no import cycles, no function
over 60 lines. Read from the source with `ast`; nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dfkd_cli"
COMMANDS = {"distill", "train_teacher", "probe", "report", "export", "evaluate"}
MAX_LINES = 60


def modules(root: Path = PACKAGE) -> dict[str, ast.Module]:
    """Module name (dfkd_cli.x, a package by its __init__) -> its syntax tree."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in it (a function's import too)."""
    edges: dict[str, set[str]] = {}
    for name, tree in trees.items():
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        edges[name] = {m for m in found if m in trees and m != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def long_functions(trees: dict[str, ast.Module]) -> list[str]:
    return [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for name, tree in trees.items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]


def command_imports(edges: dict[str, set[str]]) -> list[str]:
    short = {name: name.rpartition(".")[2] for name in edges}
    return [f"{a} -> {b}" for a, targets in edges.items() for b in sorted(targets)
            if short[a] in COMMANDS and short[b] in COMMANDS]


def test_no_command_imports_another():
    assert command_imports(imports(modules())) == []


def test_no_import_cycles():
    assert cycles(imports(modules())) == []


def test_no_function_over_sixty_lines():
    assert long_functions(modules()) == []


def test_the_checks_see_what_they_look_for(tmp_path):
    package = tmp_path / "dfkd_cli"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text("from dfkd_cli import distill\n")
    (package / "distill.py").write_text(
        "def run():\n    from dfkd_cli.probe import x\n" + "    pass\n" * 60)
    trees = modules(package)
    edges = imports(trees)
    assert sorted(command_imports(edges)) == ["dfkd_cli.distill -> dfkd_cli.probe",
                                              "dfkd_cli.probe -> dfkd_cli.distill"]
    assert cycles(edges)
    assert long_functions(trees) == ["dfkd_cli.distill.run: 62 lines"]
