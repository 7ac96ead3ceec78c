"""Jupyter widgets over the numerical core: browse checkpoints, view slices, plot metrics.

``CheckpointBrowser``, ``SliceViewer``, ``MetricsPanel`` and ``Explorer`` are ipywidgets
containers with a ``step`` trait, linked with ``traitlets.link`` in :class:`Explorer`.
``SweepView`` plots many runs, one point each, and opens a clicked run in an Explorer;
``Compare`` overlays the curves of many runs (a run table, one shared cursor, groups).
``Playground`` trains a small network live and draws it as it learns.
Importing this package loads no model and computes nothing.

Every number a widget shows comes from the headless core (:mod:`richviz.views` for a slice's
frame); the widgets schedule that work and draw. Helpers they share live in :mod:`.common`;
the slice viewer's rooms are :mod:`.slice_records`, :mod:`.slice_context`, :mod:`.slice_fields`,
:mod:`.slice_compose`, :mod:`.slice_figure`, :mod:`.slice_controls`, :mod:`.slice_jobs`,
:mod:`.slice_export_methods` and :mod:`.slice_export`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from richviz.widgets.browser import CheckpointBrowser
    from richviz.widgets.compare import Compare
    from richviz.widgets.explorer import Explorer
    from richviz.widgets.metrics_panel import MetricsPanel
    from richviz.widgets.playground import Playground
    from richviz.widgets.slice_viewer import SliceViewer
    from richviz.widgets.sweep_view import SweepView

# Each widget is imported on first use (PEP 562): the quick start's Explorer does not load the
# Playground's live trainer, Compare or SweepView (a few hundred ms of the first cell).
_HOMES = {
    "CheckpointBrowser": "browser",
    "Compare": "compare",
    "Explorer": "explorer",
    "MetricsPanel": "metrics_panel",
    "Playground": "playground",
    "SliceViewer": "slice_viewer",
    "SweepView": "sweep_view",
}

__all__ = [
    "CheckpointBrowser",
    "Compare",
    "Explorer",
    "MetricsPanel",
    "Playground",
    "SliceViewer",
    "SweepView",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
