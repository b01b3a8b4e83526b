"""The package's shape, as the README's "Layout" section promises it: checked from the code itself.

* no import cycle among the modules, counting imports inside functions;
* a folder imports only from the folders listed above it in the README (and the single
  modules at the top of the package);
* SQL on the store is written only in the store's modules, ``data/store*.py`` (a ratchet: the
  few modules still holding some are listed, and the list may only shrink);
* no function is longer than 50 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sentirefine"
# Bottom to top, as in the README; a folder may import from the folders before it.
FOLDERS = ("files", "data", "models", "ensemble", "integrations", "pretrain", "reporting", "pipeline")
SINGLE_MODULES = {"config", "errors", "logs", "faults", "figures"}
TOP = {"cli", "__main__", "serving", "demo"}  # the command line and the old serving path sit above everything
SQL_CALL = re.compile(r"\.(execute|executemany|executescript)\(|\bselect_in\(|read_sql")


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``path`` imports, anywhere in it (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules and name.startswith("sentirefine."):
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sentirefine"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_modules():
    assert _cycles(_graph()) == []


def test_each_folder_imports_only_from_those_below_it():
    rank = {name: i for i, name in enumerate(FOLDERS)}
    wrong = []
    for module, targets in _graph().items():
        src = _part(module)
        for target in targets:
            dst = _part(target)
            if dst == src or dst in SINGLE_MODULES or src in TOP:
                continue
            # A single module may use files/ only: the config reads its YAML file like any user file.
            allowed = dst == "files" if src in SINGLE_MODULES else src in rank and rank.get(dst, len(rank)) < rank[src]
            if not allowed:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_sql_on_the_store_is_written_in_the_store_modules_only():
    outside = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        # sqlbatch runs the SQL it is given; the LLM cache is its own database, not the store
        if rel.startswith("data/store") or rel in ("data/sqlbatch.py", "integrations/llm/cache.py"):
            continue
        if SQL_CALL.search(path.read_text(encoding="utf-8")):
            outside.add(rel)
    assert sorted(outside) == [], "SQL on the store belongs in data/store*.py (callers get typed rows)"


def test_no_function_is_longer_than_50_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 50:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == []
