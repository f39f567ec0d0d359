"""The code's shape: the subpackages are layers and imports flow downwards only, no command module
imports another (they share only commands/records.py), no import cycles, no function over 60
lines; below the commands no function takes the whole config; the schemas (config.py) import no
module that runs; the report reads runs from their files, never through the loop. Read from the
source with `ast`; nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dfkd_cli"
MAX_LINES = 60
# The layers, top first: a module may import its own layer and the layers below it, never one
# above. cli and config (the schemas, which list every layer's valid names) sit on top; errors
# (the one exception type) and utils (files, random streams, run-time, run tables) at the bottom.
LAYERS = ["__main__", "cli", "usage", "config", "commands", "tracking", "report", "loop",
          "strategies", "teachers", "nets", "data", "utils", "errors"]
# What report and tracking may read of the loop: its vocabulary, never its machinery.
LOOP_PUBLIC = {"dfkd_cli.loop", "dfkd_cli.loop.selection", "dfkd_cli.loop.resume"}
# What the command modules share: the records they build from their config.
COMMANDS_SHARED = {"dfkd_cli.commands", "dfkd_cli.commands.records"}
# What the schemas (config.py) may import of these layers: vocabularies, never a module that runs.
SCHEMA_VOCABULARY = {"dfkd_cli.loop", "dfkd_cli.loop.selection", "dfkd_cli.loop.settings",
                     "dfkd_cli.strategies", "dfkd_cli.strategies.schemas",
                     "dfkd_cli.tracking", "dfkd_cli.tracking.objectives"}
RUNNING_LAYERS = ("commands", "tracking", "report", "loop", "strategies")
# The layers below the commands: their functions take records, values or one group of the config.
BELOW_COMMANDS = ("tracking", "report", "loop", "strategies", "teachers", "nets", "data", "utils")


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
    return [f"{a} -> {b}" for a, targets in edges.items() for b in sorted(targets)
            if layer(a) == "commands" and layer(b) == "commands" and b not in COMMANDS_SHARED
            and a not in COMMANDS_SHARED]


def schema_imports(edges: dict[str, set[str]]) -> list[str]:
    """Modules config.py imports from the layers that run things, beyond their vocabularies."""
    return [f"dfkd_cli.config -> {b}" for b in sorted(edges.get("dfkd_cli.config", ()))
            if layer(b) in RUNNING_LAYERS and b not in SCHEMA_VOCABULARY]


def report_reads_the_loop(edges: dict[str, set[str]]) -> list[str]:
    return [f"{a} -> {b}" for a, targets in edges.items() for b in sorted(targets)
            if layer(a) == "report" and layer(b) == "loop"]


def whole_config_parameters(trees: dict[str, ast.Module]) -> list[str]:
    """Functions below the commands with a parameter named `cfg` or typed DictConfig (the whole
    composed config), except Hydra's callback hooks (`on_*`), which Hydra calls with it."""
    found = []
    for name, tree in trees.items():
        if layer(name) not in BELOW_COMMANDS:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
                    node.name.startswith("on_"):
                continue
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                typed = arg.annotation is not None and "DictConfig" in ast.unparse(arg.annotation)
                if arg.arg == "cfg" or typed:
                    found.append(f"{name}.{node.name}({arg.arg})")
    return found


def layer(module: str) -> str:
    """dfkd_cli.nets.mlp -> nets; dfkd_cli.cli -> cli; dfkd_cli -> the package itself ('')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer into a higher one (and modules in no layer at all)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = [f"{a}: not in a layer" for a in edges if layer(a) and layer(a) not in rank]
    return bad + [f"{a} -> {b}" for a, targets in edges.items() for b in sorted(targets)
                  if layer(a) in rank and layer(b) in rank and rank[layer(b)] < rank[layer(a)]]


def loop_internals(edges: dict[str, set[str]]) -> list[str]:
    """report and tracking work from files and configs: they never import the loop's machinery."""
    return [f"{a} -> {b}" for a, targets in edges.items() for b in sorted(targets)
            if layer(a) in ("report", "tracking") and layer(b) == "loop" and b not in LOOP_PUBLIC]


def test_layers_import_downwards_only():
    assert upward_imports(imports(modules())) == []


def test_report_and_tracking_never_import_the_loops_internals():
    assert loop_internals(imports(modules())) == []


def test_no_command_imports_another():
    assert command_imports(imports(modules())) == []


def test_below_the_commands_no_function_takes_the_whole_config():
    assert whole_config_parameters(modules()) == []


def test_the_schemas_import_no_module_that_runs():
    assert schema_imports(imports(modules())) == []


def test_the_report_does_not_import_the_loop():
    assert report_reads_the_loop(imports(modules())) == []


def test_no_import_cycles():
    assert cycles(imports(modules())) == []


def test_no_function_over_sixty_lines():
    assert long_functions(modules()) == []


def test_the_checks_see_what_they_look_for(tmp_path):
    package = tmp_path / "dfkd_cli"
    for sub in ("commands", "nets", "data", "teachers", "report", "tracking", "loop", "extras"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "commands" / "probe.py").write_text("from dfkd_cli.commands import distill\n")
    (package / "commands" / "distill.py").write_text(
        "def run():\n    from dfkd_cli.commands.probe import x\n" + "    pass\n" * 60)
    (package / "nets" / "mlp.py").write_text("from dfkd_cli.teachers import spec\n")
    (package / "data" / "table.py").write_text("import dfkd_cli.commands.distill\n")
    (package / "teachers" / "spec.py").write_text("")
    (package / "loop" / "student_loop.py").write_text("")
    (package / "loop" / "resume.py").write_text("")
    (package / "report" / "gather.py").write_text(
        "from dfkd_cli.loop import resume, student_loop\n")
    (package / "tracking" / "search.py").write_text(
        "from dfkd_cli.loop.student_loop import x\nfrom omegaconf import DictConfig\n"
        "def objective(cfg, frame): pass\n"
        "def check(config: DictConfig): pass\n"
        "class Hook:\n    def on_multirun_end(self, config: DictConfig): pass\n")
    (package / "tracking" / "objectives.py").write_text("")
    (package / "commands" / "records.py").write_text("from dfkd_cli.loop import student_loop\n")
    (package / "commands" / "report.py").write_text("from dfkd_cli.commands import records\n"
                                                    "def main(cfg): pass\n")
    (package / "config.py").write_text("from dfkd_cli.tracking import objectives, search\n"
                                       "from dfkd_cli.loop import selection\n")
    (package / "extras" / "stray.py").write_text("")
    trees = modules(package)
    edges = imports(trees)
    assert sorted(command_imports(edges)) == ["dfkd_cli.commands.distill -> dfkd_cli.commands.probe",
                                              "dfkd_cli.commands.probe -> dfkd_cli.commands.distill"]
    assert whole_config_parameters(trees) == ["dfkd_cli.tracking.search.objective(cfg)",
                                              "dfkd_cli.tracking.search.check(config)"]
    assert schema_imports(edges) == ["dfkd_cli.config -> dfkd_cli.tracking.search"]
    assert report_reads_the_loop(edges) == ["dfkd_cli.report.gather -> dfkd_cli.loop",
                                            "dfkd_cli.report.gather -> dfkd_cli.loop.resume",
                                            "dfkd_cli.report.gather -> dfkd_cli.loop.student_loop"]
    assert cycles(edges)
    assert long_functions(trees) == ["dfkd_cli.commands.distill.run: 62 lines"]
    assert sorted(upward_imports(edges)) == [
        "dfkd_cli.data.table -> dfkd_cli.commands.distill",
        "dfkd_cli.extras.stray: not in a layer", "dfkd_cli.extras: not in a layer",
        "dfkd_cli.nets.mlp -> dfkd_cli.teachers", "dfkd_cli.nets.mlp -> dfkd_cli.teachers.spec"]
    assert sorted(loop_internals(edges)) == [
        "dfkd_cli.report.gather -> dfkd_cli.loop.student_loop",
        "dfkd_cli.tracking.search -> dfkd_cli.loop.student_loop"]
