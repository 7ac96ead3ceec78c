"""Jupyter widgets over the numerical core: browse checkpoints, view slices, plot metrics.

``CheckpointBrowser``, ``SliceViewer``, ``MetricsPanel`` and ``Explorer`` are ipywidgets
containers with a ``step`` trait, linked with ``traitlets.link`` in :class:`Explorer`.
``SweepView`` plots many runs, one point each, and opens a clicked run in an Explorer.
``Playground`` trains a small network live and draws it as it learns.
Importing this package loads no model and computes nothing.
"""

from __future__ import annotations

from richviz.widgets.browser import CheckpointBrowser
from richviz.widgets.explorer import Explorer
from richviz.widgets.metrics_panel import MetricsPanel
from richviz.widgets.playground import Playground
from richviz.widgets.slice_viewer import SliceViewer
from richviz.widgets.sweep_view import SweepView

__all__ = [
    "CheckpointBrowser",
    "Explorer",
    "MetricsPanel",
    "Playground",
    "SliceViewer",
    "SweepView",
]
