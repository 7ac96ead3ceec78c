"""Import structure: every module imports alone, the import graph is acyclic, layers hold.

Two graphs are read from the source with :mod:`ast`, never by importing:

- the *full* graph: every ``import`` / ``from ... import`` anywhere in a module (module level,
  inside functions, methods, classes, ``try`` and ``if`` blocks). A circle through an import
  inside a function is still a circle: the two modules cannot be understood, tested or moved
  apart. Only imports under ``if TYPE_CHECKING:`` are left out: they never run, and they are
  the one standard way to name a type from a module that must not be imported at run time.
- the *load* graph: the imports that run when a module is executed (module level, outside
  ``TYPE_CHECKING``), i.e. what ``import richviz.x`` loads.

``from pkg import name`` is an edge to the submodule ``pkg.name`` when that is a module, and to
``pkg`` itself when some imported name is not a submodule or ``pkg`` is not a package the
importer lives in (an importer's own ancestor packages are already being initialised). ``import
a.b.c`` is an edge to ``a.b.c`` and to the packages on the way that are not ancestors of the
importer, since importing it runs their ``__init__``.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import richviz

ROOT = Path(richviz.__file__).parent
MODULES = sorted(
    ["richviz"] + [m.name for m in pkgutil.walk_packages(richviz.__path__, prefix="richviz.")]
)
# the numerical core: pure functions on tensors, headless (no widget import at any level)
NUMERICS = ("richviz.metrics", "richviz.geometry", "richviz.theory")
CORE = (*NUMERICS, "richviz.features", "richviz.activations", "richviz.probe")
# what drawing in a notebook needs; none of it may be reachable from the numerical core
WIDGET_LIBRARIES = ("ipywidgets", "bqplot", "bqscales", "traitlets", "IPython", "ipykernel")
# modules allowed to import the widgets: the widgets themselves and the command line
WIDGET_USERS = ("richviz.widgets", "richviz.cli", "richviz.__main__")


def _path(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    pkg = ROOT / rel / "__init__.py"
    return pkg if pkg.exists() else ROOT / rel.with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _parents(mod: str) -> list[str]:
    """``"a.b.c"`` -> ``["a", "a.b"]``."""
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _targets(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Modules (richviz's or third-party, as written) that ``node`` in module ``name`` imports."""
    ancestors = set(_parents(name))
    if isinstance(node, ast.Import):
        found = set()
        for alias in node.names:
            found.add(alias.name)
            found.update(p for p in _parents(alias.name) if p not in ancestors)
        return found
    if node.level:
        is_pkg = _path(name).name == "__init__.py"
        base = (name if is_pkg else name.rpartition(".")[0]).split(".")
        base = base[: len(base) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    subs = {f"{mod}.{a.name}" for a in node.names} & set(MODULES)
    found = set(subs)  # `from pkg import submodule` imports the submodule ...
    # ... and needs only pkg's __init__ started, which it is for an ancestor package
    if len(subs) < len(node.names) or mod not in ancestors:
        found.add(mod)
    found.update(p for p in _parents(mod) if p not in ancestors)
    return found


def _import_nodes(name: str, *, nested: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of module ``name``: module level only, or (``nested``) all.

    Those under ``if TYPE_CHECKING:`` are left out either way (they never run).
    """
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
        elif nested or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for child in ast.iter_child_nodes(node):  # class bodies run at load time
                visit(child)

    visit(ast.parse(_path(name).read_text()))
    return found


def _imports(name: str, *, nested: bool) -> set[str]:
    """Modules that ``name`` imports (see :func:`_import_nodes`), itself left out."""
    found = {t for node in _import_nodes(name, nested=nested) for t in _targets(name, node)}
    found.discard(name)
    return found


def _graph(*, nested: bool = True) -> dict[str, set[str]]:
    """richviz's own import graph: all imports (default) or the module-level ones."""
    return {m: _imports(m, nested=nested) & set(MODULES) for m in MODULES}


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


def _where(importer: str, imported: str) -> list[str]:
    """``"file.py:LINE"`` of each import in ``importer`` that makes an edge to ``imported``."""
    rel = _path(importer).relative_to(ROOT.parent)
    return [
        f"{rel}:{node.lineno}"
        for node in _import_nodes(importer, nested=True)
        if imported in _targets(importer, node)
    ]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle in each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(u: str) -> None:
        index[u] = low[u] = len(index)
        stack.append(u)
        for v in sorted(graph[u]):
            if v not in index:
                connect(v)
                low[u] = min(low[u], low[v])
            elif v in stack:
                low[u] = min(low[u], index[v])
        if low[u] == index[u]:
            comp = set()
            while (w := stack.pop()) != u:
                comp.add(w)
            comp.add(u)
            if len(comp) > 1:
                components.append(comp)

    for m in sorted(graph):
        if m not in index:
            connect(m)
    return sorted(_find_cycle({m: graph[m] & comp for m in comp}) for comp in components)


def _transitive(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for v in graph[todo.pop()] - seen:
            seen.add(v)
            todo.append(v)
    return seen


# ---- the readers


def test_graph_sees_known_edges():
    g = _graph(nested=False)
    assert "richviz.runs.storage" in g["richviz.runs.analysis"]
    assert "richviz.metrics" in g["richviz.runs.analysis"]
    assert "richviz.activations" in g["richviz.theory"]
    assert len(MODULES) > 30
    full = _graph()
    assert all(g[m] <= full[m] for m in MODULES)  # every module-level edge is in the full graph


def _edges(source: str, name: str) -> set[str]:
    """Edges that the imports in ``source`` make when read as (non-package) module ``name``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_targets(name, node))
    return found


def test_reader_sees_imports_at_every_level(tmp_path, monkeypatch):
    src = """
from typing import TYPE_CHECKING
import richviz.runs.storage
if TYPE_CHECKING:
    from richviz.widgets import explorer
else:
    import richviz.errors
try:
    from richviz import atomic
except ImportError:
    from . import devices
def f():
    from richviz.runs import analysis
    class C:
        def g(self):
            import richviz.metrics as m
            return [__import__ for _ in ()]
    return lambda: C
class K:
    from richviz import geometry
"""
    mod = tmp_path / "richviz" / "fake.py"
    mod.parent.mkdir()
    mod.write_text(src)
    monkeypatch.setitem(globals(), "ROOT", tmp_path / "richviz")
    full = _imports("richviz.fake", nested=True) & set(MODULES)
    top = _imports("richviz.fake", nested=False) & set(MODULES)
    assert top == {"richviz.runs", "richviz.runs.storage", "richviz.errors", "richviz.atomic",
                   "richviz.devices", "richviz.geometry"}  # fmt: skip
    assert full == top | {"richviz.runs.analysis", "richviz.metrics"}
    assert "richviz.widgets.explorer" not in full  # TYPE_CHECKING only: never runs
    # `from .. import geometry` in a module one level down: the richviz.geometry package
    assert "richviz.geometry" in _edges("from .. import geometry", "richviz.runs.storage")


def test_from_package_import_name_resolves_to_the_submodule():
    # a submodule: an edge to it; the package the importer lives in is already running
    assert _edges("from . import storage", "richviz.runs.analysis") == {"richviz.runs.storage"}
    assert _edges("from richviz.runs import storage", "richviz.runs.analysis") == {
        "richviz.runs.storage"
    }
    # from another package: its __init__ runs too
    assert _edges("from richviz.runs import storage", "richviz.metrics") == {
        "richviz.runs",
        "richviz.runs.storage",
    }
    # a name that is not a submodule: an edge to the package that defines it
    assert _edges("from richviz.runs import Run", "richviz.metrics") >= {"richviz.runs"}
    assert "richviz.runs.Run" not in _edges("from richviz.runs import Run", "richviz.metrics")


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    # every circle is named, one per tangle
    two = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "x": {"y"}, "y": {"z"}, "z": {"x", "c"}}
    assert _cycles(two) == [["a", "b", "a"], ["x", "y", "z", "x"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_cycle_finder_sees_a_circle_through_a_function_level_import(tmp_path, monkeypatch):
    pkg = tmp_path / "richviz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from richviz import b\n")
    (pkg / "b.py").write_text("def f():\n    from richviz import a\n    return a\n")
    monkeypatch.setitem(globals(), "ROOT", pkg)
    monkeypatch.setitem(globals(), "MODULES", ["richviz", "richviz.a", "richviz.b"])
    g = _graph()
    top = _graph(nested=False)
    assert _find_cycle(g) == ["richviz.a", "richviz.b", "richviz.a"]
    assert _find_cycle(top) is None  # what a module-level reader would see


# ---- the rules


def test_import_graph_is_acyclic():
    """No circle at any level, imports inside functions included (TYPE_CHECKING excepted)."""
    cycles = _cycles(_graph())
    lines = []
    for cycle in cycles:
        lines.append("import cycle: " + " -> ".join(cycle))
        lines += [f"  {a} -> {b} at {', '.join(_where(a, b))}" for a, b in pairwise(cycle)]
    assert not cycles, "\n".join(lines)


def test_storage_imports_no_numerics():
    g = _graph(nested=False)  # what loading storage runs; the full graph is held acyclic above
    for start in ("richviz.runs", "richviz.runs.storage", "richviz.runs.manifest"):
        reach = _transitive(g, start) | {start}
        assert not [m for m in reach if m.startswith(NUMERICS)], start
        assert not [m for m in reach if "torch.func" in _imports(m, nested=False)], start


def test_core_imports_no_widgets():
    """Nothing outside the widgets and the CLI reaches richviz.widgets, at any level."""
    g = _graph()
    for m in MODULES:
        if not m.startswith(WIDGET_USERS):
            bad = sorted(d for d in _transitive(g, m) if d.startswith("richviz.widgets"))
            assert not bad, f"{m} reaches {bad}"


def test_numerical_core_imports_no_widget_library():
    """The numerical core, and every richviz module it reaches, imports no widget library."""
    g = _graph()
    for start in [m for m in MODULES if m.startswith(CORE)]:
        for m in sorted(_transitive(g, start) | {start}):
            libs = sorted(i for i in _imports(m, nested=True) if i.startswith(WIDGET_LIBRARIES))
            assert not libs, f"{start} reaches {m}, which imports {libs}"


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


def _loaded_after(imports: str) -> list[str]:
    code = (
        f"import json, sys; {imports}; "
        "print(json.dumps(sorted(m.split('.')[0] if not m.startswith('richviz') else m "
        "for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_storage_alone_loads_no_numerics():
    loaded = _loaded_after("import richviz.runs")
    assert "richviz.runs.storage" in loaded
    assert not [m for m in loaded if m.startswith(NUMERICS)]


def test_numerical_core_alone_loads_no_widgets():
    core = sorted(m for m in MODULES if m.startswith(CORE))
    loaded = _loaded_after("; ".join(f"import {m}" for m in core))
    assert set(core) <= set(loaded)
    assert not [m for m in loaded if m.startswith(("richviz.widgets", *WIDGET_LIBRARIES))]
