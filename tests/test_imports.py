"""The package's import graph: no cycle, and two storeys. The library floor (shards, models, features,
losses, kernels, config, distributed, atomic, runs, ...) imports no application; the applications (train,
eval, catalogue) import only the floor, never each other; demo and cli, at the top, may import anything.
Deferred (function-level) imports count: a dependency hidden in a function is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import muser

ROOT = Path(muser.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    # A submodule importing its own package's __init__ (or an ancestor's) is how Python loads it anyway.
    return {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_real_imports():
    graph = _graph()
    assert "muser.train.launch" in graph["muser.train.trainer"]
    assert "muser.shards.manifest" in graph["muser.shards.reader"]
    assert "muser.train.validate" in graph["muser.train.trainer"]  # deferred into a function


def test_the_data_floor_does_not_import_the_model_floor():
    """shards/ reads and tokenises through callables it is given (the model's `tokenize`), so reading data
    never needs torch's model code or transformers."""
    graph = _graph()
    assert "muser.shards.reader" in graph
    assert not [
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.startswith("muser.shards")
        for target in targets
        if target.startswith("muser.models")
    ]


def test_no_import_cycle_in_the_package():
    assert _cycles(_graph()) == []


APPLICATIONS = ("muser.train", "muser.eval", "muser.catalogue")
# the package's lazy façade, the CLI (muser.cli, its command modules, the share commands) and the demo:
# above all
TOP = ("muser", "muser.cli", "muser.commands", "muser.share.cli", "muser.demo")


def _room(module: str) -> str | None:
    """The application a module belongs to, "top", or None for the library floor."""
    if module in TOP or module.startswith("muser.commands."):
        return "top"
    return next((app for app in APPLICATIONS if module == app or module.startswith(app + ".")), None)


def _violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for name, targets in sorted(graph.items()):
        room = _room(name)
        if room == "top":
            continue
        for target in sorted(targets):
            other = _room(target)
            if other is None or other == room:
                continue
            where = "the library floor" if room is None else room
            out.append(f"{name} ({where}) imports {target} ({other})")
    return out


def test_applications_stand_side_by_side_on_the_floor():
    assert _violations(_graph()) == []


def test_the_rule_sees_an_application_importing_another_and_the_floor_importing_one():
    graph = {
        "muser.catalogue.plan": {"muser.eval.tasks", "muser.shards.manifest"},
        "muser.train.validate": {"muser.features.tracks"},
        "muser.features.tracks": {"muser.train.data"},
        "muser.demo": {"muser.eval.runner"},
    }
    assert _violations(graph) == [
        "muser.catalogue.plan (muser.catalogue) imports muser.eval.tasks (muser.eval)",
        "muser.features.tracks (the library floor) imports muser.train.data (muser.train)",
    ]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
