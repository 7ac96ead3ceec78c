"""Import structure: every module imports alone, the import graph is acyclic, layers hold."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import richviz

ROOT = Path(richviz.__file__).parent
MODULES = sorted(
    ["richviz"] + [m.name for m in pkgutil.walk_packages(richviz.__path__, prefix="richviz.")]
)
NUMERICS = ("richviz.metrics", "richviz.geometry", "richviz.theory")


def _path(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    pkg = ROOT / rel / "__init__.py"
    return pkg if pkg.exists() else ROOT / rel.with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _module_level_imports(name: str) -> set[str]:
    """Modules imported when ``name`` is executed (module level, outside TYPE_CHECKING)."""
    tree = ast.parse(_path(name).read_text())
    is_pkg = _path(name).name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = {f"{mod}.{a.name}" for a in node.names} & set(MODULES)
                found.update(subs)  # `from pkg import submodule` imports the submodule
                # ... and needs only pkg's __init__ started, which it is for an ancestor package
                if len(subs) < len(node.names) or not name.startswith(mod + "."):
                    found.add(mod)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    return {m: {d for d in _module_level_imports(m) if d in MODULES and d != m} for m in MODULES}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (found := dfs(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := dfs(m)):
            return found
    return None


def test_graph_sees_known_edges():
    g = _graph()
    assert "richviz.runs.storage" in g["richviz.runs.analysis"]
    assert "richviz.metrics" in g["richviz.runs.analysis"]
    assert "richviz.activations" in g["richviz.theory"]
    assert len(MODULES) > 30


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_is_acyclic():
    assert _find_cycle(_graph()) is None


def _transitive(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for v in graph[todo.pop()] - seen:
            seen.add(v)
            todo.append(v)
    return seen


def test_storage_imports_no_numerics():
    g = _graph()
    for start in ("richviz.runs", "richviz.runs.storage", "richviz.runs.manifest"):
        reach = _transitive(g, start) | {start}
        assert not [m for m in reach if m.startswith(NUMERICS)], start
        assert not [m for m in reach if "torch.func" in _module_level_imports(m)], start


def test_core_imports_no_widgets():
    g = _graph()
    for m in MODULES:
        if not m.startswith(("richviz.widgets", "richviz.cli")) and m != "richviz.__main__":
            assert not [d for d in _transitive(g, m) if d.startswith("richviz.widgets")], m


def test_every_module_imports_alone():
    """Each module in a clean richviz namespace (sys.modules cleared), one interpreter."""
    code = f"""
import importlib, json, sys
import torch  # shared by all: only richviz's own modules are re-imported
failures = {{}}
for name in {MODULES!r}:
    if name == "richviz.__main__":
        continue
    for key in [k for k in sys.modules if k == "richviz" or k.startswith("richviz.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps(failures))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


def test_storage_alone_loads_no_numerics():
    code = (
        "import json, sys, richviz.runs; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('richviz'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "richviz.runs.storage" in loaded
    assert not [m for m in loaded if m.startswith(NUMERICS)]
