"""The Playground's point editing: training points added by a click or a call, while training.

:class:`PointEditing` is a mixin of :class:`richviz.widgets.playground.Playground`: a point of
the click class joins the trainer's data (generated data become the user's points, ``data =
"points"``), the probe follows the newest points, and the figure and the point counts show
them. It uses the Playground's ``trainer``, ``slice_figure``, ``points_label``, ``_lock``,
``_points``, ``_probe``, ``_slice``, ``_suspend``, ``_status`` and ``redraw``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from richviz import datasets
from richviz.errors import ArgumentError
from richviz.widgets import rendering
from richviz.widgets.common import error_line

if TYPE_CHECKING:
    import threading

    import ipywidgets as widgets

    from richviz.live import LiveTrainer
    from richviz.widgets.playground_figure import SliceFigure

__all__ = ["PROBE_SIZE", "PointEditing"]

PROBE_SIZE = 500  #: training points the live metrics are computed on, at most


class PointEditing:
    """Adding training points to a running Playground (:meth:`add_point`, clicks)."""

    trainer: LiveTrainer | None
    slice_figure: SliceFigure
    points_label: widgets.HTML
    _lock: threading.RLock
    _points: tuple[np.ndarray, np.ndarray]

    def add_point(self, x1: float, x2: float, label: int | None = None) -> None:
        """Add a training point of class ``label`` (default ``click_class``) while training
        goes on; generated data become the user's points (data = "points")."""
        label = self.click_class if label is None else int(label)
        trainer = self.trainer
        c = trainer.config.num_classes
        if not 0 <= label < c:
            raise ArgumentError(
                f"class {label}: the network has {c} classes (raise 'classes', which resets it)"
            )
        if not (math.isfinite(x1) and math.isfinite(x2)):
            raise ArgumentError(f"point ({x1}, {x2}) is not finite")
        data = trainer.data
        xs = data.x_train.double().numpy() if data is not None else np.zeros((0, 2))
        ys = data.y_train.numpy() if data is not None else np.zeros(0, np.int64)
        xs = np.vstack([xs, [[x1, x2]]])
        ys = np.append(ys, label)
        config = dataclasses.replace(trainer.config, classes=c).with_points(xs, ys)
        trainer.set_data(config)
        self._points = (xs, ys)
        self._suspend = True
        try:
            self.data, self.classes = "points", c
        finally:
            self._suspend = False
        with self._lock:
            if self._probe is None:
                from richviz.geometry import Slice

                self._slice = self._slice or Slice.square(torch.zeros(2), 1.5)
            self._probe = (trainer.data.x_train[-PROBE_SIZE:], trainer.data.y_train[-PROBE_SIZE:])
        self._show_points(trainer.data)
        self.redraw()

    def _on_click(self, x1: float, x2: float) -> None:
        """A click on the figure at input coordinates (x1, x2) (see :class:`SliceFigure`)."""
        try:
            self.add_point(x1, x2)
        except Exception as exc:  # a click must never break the widget: say why in the status
            self._status(error_line(exc), "error")

    def _show_points(self, data: datasets.Dataset | None) -> None:
        """Draw ``data``'s training points on the figure and count them per class."""
        if data is None or len(data.x_train) == 0:
            x, y = np.zeros((0, 2)), np.zeros(0, np.int64)
        else:
            x, y = data.x_train.double().numpy(), data.y_train.numpy()
        classes = self.trainer.config.num_classes
        self.slice_figure.show_points(x, y, classes)
        counts = np.bincount(y, minlength=classes) if len(y) else []
        parts = " · ".join(
            f'<span style="color:{rendering.class_color(k)}">■</span> {int(m)}'
            for k, m in enumerate(counts)
        )
        self.points_label.value = (
            f'<span style="font-size:12px">points: {len(y)}'
            f"{' (' + parts + ')' if parts else ''}</span>"
        )
