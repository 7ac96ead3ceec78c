"""The public API surface: every public module declares ``__all__`` and every name exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import richviz


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


#: the widgets need ipywidgets and bqplot (a GPU machine may have PyTorch only)
WIDGETS = _importable("ipywidgets") and _importable("bqplot")
MODULES = sorted(
    {
        m.name
        for m in pkgutil.walk_packages(richviz.__path__, prefix="richviz.", onerror=lambda n: None)
        if not m.name.rsplit(".", 1)[-1].startswith("_")
    }
    | {"richviz", "richviz.widgets"}
)


def test_every_public_module_is_listed():
    expected = {"richviz.activations", "richviz.geometry", "richviz.runs.storage"}
    if WIDGETS:
        expected.add("richviz.widgets.slice_viewer")
    assert expected <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name):
    if name.startswith("richviz.widgets") and not WIDGETS:
        pytest.skip("richviz.widgets needs ipywidgets and bqplot")
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    assert isinstance(names, list) and names, f"{name} has no __all__"
    assert len(set(names)) == len(names), f"{name}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names missing attributes: {missing}"
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # noqa: S102 - the star import itself
    assert set(names) <= set(namespace)
