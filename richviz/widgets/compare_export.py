"""The Compare widget's export: the whole comparison on one canvas (run legend, every chart
shown with its cursor, the geometry row with its colour bar) as PNG or SVG, and the selected
runs' metric rows as CSV.

A mixin of :class:`richviz.widgets.compare.Compare`: it reads the widget's state (selection,
step, grouping, charts, geometry row) and writes files atomically, naming them in the status
line; the buttons that call it are the widget's export row (:func:`.common.export_row`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from richviz.atomic import atomic_write_bytes
from richviz.compare import comparison_csv
from richviz.widgets import export
from richviz.widgets.common import error_line, status_html

if TYPE_CHECKING:
    import ipywidgets

    from richviz.compare import RunColors
    from richviz.widgets import charts

__all__ = ["COLUMNS", "SPREAD_TEXT", "CompareExport"]

COLUMNS = 3  #: charts per row (on screen and on the canvas)
SPREAD_TEXT = (("std", "mean ± std"), ("minmax", "min … max"))  #: the band, in the title


def _paste(canvas: export.Canvas, other: export.Canvas, dx: float, dy: float) -> None:
    """Copy ``other``'s drawing onto ``canvas`` shifted by (dx, dy)."""
    for kind, op in other.ops:
        op = dict(op)
        if "box" in op:
            x, y, w, h = op["box"]
            op["box"] = (x + dx, y + dy, w, h)
        elif "xs" in op:
            op["xs"], op["ys"] = np.asarray(op["xs"]) + dx, np.asarray(op["ys"]) + dy
        else:
            op["x"], op["y"] = op["x"] + dx, op["y"] + dy
        canvas.ops.append((kind, op))


class CompareExport:
    """Mixin: :meth:`canvas`, :meth:`save_png`, :meth:`save_svg` and :meth:`save_csv` of a
    Compare widget (the default file name is ``<file box><suffix>``)."""

    charts: dict[str, charts.LineChart]
    colors: RunColors
    group_colors: RunColors
    geometry: Any
    export_name: ipywidgets.Text
    status: ipywidgets.HTML
    selected: list[str]
    step: int
    group_by: str
    spread: str
    _size: tuple[int, int]
    _export_note: str
    # and the widget's selected_entries(), groups() and cursor_x()

    def canvas(self) -> export.Canvas:
        """The whole comparison on one canvas: the run legend (colours and dashes), every chart
        shown (3 per row, the cursor in each) and the geometry row with its colour bar."""
        shown = [c for c in self.charts.values() if c.drawn]
        width, height = self._size
        cell_w = width + 10
        cell_h = max((c.height_with_legend() for c in shown), default=0.0)
        legend = self._legend_entries()
        per_row = max(1, (COLUMNS * cell_w - 20) // 180)
        head = 28 + 16 * max(1, -(-len(legend) // per_row))
        geometry = None
        self._export_note = ""
        if self.geometry is not None:
            try:
                geometry = self.geometry.canvas()
            except Exception as exc:  # e.g. its fields are still being computed
                self._export_note = f"; geometry left out ({error_line(exc)})"
        rows = -(-len(shown) // COLUMNS)
        total_w = max(COLUMNS * cell_w, geometry.width if geometry else 0)
        total_h = head + rows * cell_h + (geometry.height + 10 if geometry else 0)
        canvas = export.Canvas(total_w, total_h)
        title = f"{len(self.selected)} runs at step {self.step}"
        if self.group_by:
            title += f", grouped by {self.group_by} ({dict(SPREAD_TEXT)[self.spread]})"
        canvas.text(10, 18, title, size=13, weight="bold")
        for i, (label, color, dash, marker) in enumerate(legend):
            lx, ly = 14 + (i % per_row) * 180, 34 + 16 * (i // per_row)
            canvas.polyline([lx, lx + 22], [ly, ly], color, width=2.5, dash=dash)
            if marker:
                canvas.marker(lx + 11, ly, marker, 5, color)
            canvas.text(lx + 26, ly + 4, label, size=10)
        for i, chart in enumerate(shown):
            chart.canvas(canvas, (i % COLUMNS) * cell_w, head + (i // COLUMNS) * cell_h,
                         cursor=self.cursor_x())  # fmt: skip
        if geometry is not None:
            _paste(canvas, geometry, 0.0, head + rows * cell_h + 10)
        return canvas

    def _legend_entries(self) -> list[tuple[str, str, str, str | None]]:
        if self.group_by:
            out = []
            for label, members in self.groups():
                look = self.group_colors.style(label)
                runs = ", ".join(e.name for e in members)
                out.append((f"{label}: {runs}", look.color, look.dash, look.marker))
            return out
        return [
            (e.name, *(lambda s: (s.color, s.dash, s.marker))(self.colors.style(e.name)))
            for e in self.selected_entries()
        ]

    def _path(self, path: str | Path | None, suffix: str) -> Path:
        return export.export_path(path, self.export_name.value, suffix)

    def save_png(self, path: str | Path | None = None, scale: float = 2.0) -> Path:
        """Write the comparison (:meth:`canvas`) as PNG on the server; default
        ``<file box>.png``. The status line names the file."""
        out = export.write_canvas(self.canvas(), self._path(path, ".png"), "png", scale)
        self.status.value = status_html(f"comparison written to {out.resolve()}{self._export_note}")
        return out

    def save_svg(self, path: str | Path | None = None) -> Path:
        """Write the comparison as SVG on the server; default ``<file box>.svg``."""
        out = export.write_canvas(self.canvas(), self._path(path, ".svg"), "svg")
        self.status.value = status_html(f"comparison written to {out.resolve()}{self._export_note}")
        return out

    def save_csv(self, path: str | Path | None = None) -> Path:
        """Write every metric row of the selected runs with their hyper-parameters as CSV
        (atomically; :func:`richviz.compare.read_csv` reads it back)."""
        if not self.selected:
            raise ValueError("no run selected; nothing to write")
        text = comparison_csv(self.selected_entries())
        out = atomic_write_bytes(text.encode(), self._path(path, ".csv"))
        self.status.value = status_html(f"{len(self.selected)} runs written to {out.resolve()}")
        return out
