"""The run table of :class:`~richviz.widgets.Compare`: one row per run, a checkbox that toggles it.

Each row: a checkbox (clicking it selects or deselects the run), the run's colour and dash, its
name, the hyper-parameters that vary, the final test accuracy, D_LR and boundary
magnification, and, for a run that is not compared, the one-line reason (its checkbox
disabled). In group-by mode a column names each run's group in the group's colour. Sorting
by any column reorders the rows (missing values last). All rows share one layout and one
style object: 200 rows build in a fraction of a second.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets
from ipywidgets.widgets.widget_bool import CheckboxStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from richviz.compare import FINAL_COLUMNS, RunColors, RunEntry, Style, run_table, sort_table
from richviz.widgets import export

__all__ = ["TABLE_ORDER", "RunTable", "swatch_html"]

TABLE_ORDER = "table order"  #: the sort choice that keeps the runs as given
_NAME_W, _PARAM_W, _VALUE_W, _GROUP_W = 170, 72, 100, 110


def swatch_html(style: Style, width: int = 24) -> str:
    """A short line sample in the run's colour, dash and marker (inline SVG)."""
    dash = export.DASHES.get(style.dash, ())
    dash_attr = f' stroke-dasharray="{",".join(f"{d:g}" for d in dash)}"' if dash else ""
    c = html.escape(style.color)
    mark = ""
    if style.marker == "circle":
        mark = f'<circle cx="{width / 2:g}" cy="5" r="3" fill="{c}"/>'
    elif style.marker:
        mark = f'<rect x="{width / 2 - 3:g}" y="2" width="6" height="6" fill="{c}"/>'
    return (
        f'<svg width="{width}" height="10" style="vertical-align:middle">'
        f'<line x1="1" y1="5" x2="{width - 1}" y2="5" stroke="{c}" stroke-width="2.5"'
        f"{dash_attr}/>{mark}</svg>"
    )


def _cell(text: str, width: int, title: str = "", color: str = "") -> str:
    tip = f' title="{html.escape(title)}"' if title else ""
    tint = f"color:{html.escape(color)};" if color else ""
    return (
        f'<span{tip} style="display:inline-block;width:{width}px;overflow:hidden;'
        f'text-overflow:ellipsis;white-space:nowrap;vertical-align:middle;{tint}">'
        f"{html.escape(text)}</span>"
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else format(v, ".3g")
    return str(v)


class RunTable(widgets.VBox):
    """Rows of runs with checkboxes (see the module docstring).

    Attributes
    ----------
    selected : List of Unicode
        Names of the checked runs, in the order they were checked.
    sort_by : Unicode
        Column the rows are sorted by (:data:`TABLE_ORDER`, ``name``, a hyper-parameter or a
        final value's key).
    descending : Bool
        Sort order.
    checkboxes : dict
        Run name -> its ``widgets.Checkbox`` (clicking it toggles the run).
    cells : dict
        Run name -> the ``widgets.HTML`` of its row's cells.
    """

    selected = traitlets.List(traitlets.Unicode(), help="names of the checked runs")
    sort_by = traitlets.Unicode(TABLE_ORDER, help="column the rows are sorted by")
    descending = traitlets.Bool(False, help="sort from the largest value down")

    def __init__(
        self,
        entries: Sequence[RunEntry],
        colors: RunColors,
        params: Sequence[str],
        height: str = "260px",
        **kwargs: Any,
    ):
        self.entries = list(entries)
        self.colors = colors
        self.params = list(params)
        self.groups: dict[str, tuple[str, str]] = {}  # name -> (group label, colour)
        self._syncing = False
        box_style, cell_style = CheckboxStyle(), HTMLStyle()
        box_layout = widgets.Layout(width="22px", margin="0 4px 0 0")
        cell_layout = widgets.Layout(margin="0")
        self.checkboxes: dict[str, widgets.Checkbox] = {}
        self.cells: dict[str, widgets.HTML] = {}
        for e in self.entries:
            box = widgets.Checkbox(
                value=False, indent=False, disabled=not e.usable, layout=box_layout,
                style=box_style, description_allow_html=False,
            )  # fmt: skip
            cell = widgets.HTML(layout=cell_layout, style=cell_style)
            box.observe(lambda c, name=e.name: self._on_box(name, c["new"]), names="value")
            self.checkboxes[e.name], self.cells[e.name] = box, cell
        self.header = widgets.HTML()
        columns = [TABLE_ORDER, "name", *self.params, *(k for k, _ in FINAL_COLUMNS)]
        self.sort_menu = widgets.Dropdown(
            options=columns, value=TABLE_ORDER, description="sort", layout={"width": "230px"}
        )
        self.order_button = widgets.ToggleButton(
            value=False, description="descending", layout={"width": "110px"}
        )
        # one grid of [checkbox, cells] pairs (no box per row: a third fewer widgets to build)
        self.rows_box = widgets.GridBox(
            [],
            layout=widgets.Layout(
                grid_template_columns="26px auto", align_items="center", max_height=height,
                overflow="auto", grid_gap="0px 0px",
            ),
        )  # fmt: skip
        super().__init__(
            [widgets.HBox([self.sort_menu, self.order_button]), self.header, self.rows_box],
            **kwargs,
        )
        traitlets.link((self.sort_menu, "value"), (self, "sort_by"))
        traitlets.link((self.order_button, "value"), (self, "descending"))
        self.observe(self._on_sort, names=["sort_by", "descending"])
        self.observe(self._on_selected, names="selected")
        self.refresh()
        self._on_sort({})

    # ---------------------------------------------------------------- content

    def _header_html(self) -> str:
        cells = [_cell("", 28), _cell("run", _NAME_W)]
        if self.groups:
            cells.append(_cell("group", _GROUP_W))
        cells += [_cell(p, _PARAM_W, p) for p in self.params]
        cells += [_cell(title, _VALUE_W, key) for key, title in FINAL_COLUMNS]
        return (
            '<div style="font-size:12px;font-weight:bold;padding-left:26px;'
            f'border-bottom:1px solid #ccc">{"".join(cells)}</div>'
        )

    def row_html(self, entry: RunEntry, row: Mapping[str, Any]) -> str:
        """The cells of one run's row (text escaped)."""
        cells = [swatch_html(self.colors.style(entry.name)), "&nbsp;"]
        cells.append(_cell(entry.name, _NAME_W, str(entry.path or entry.name)))
        if self.groups:
            label, color = self.groups.get(entry.name, ("", ""))
            cells.append(_cell(label, _GROUP_W, label, color))
        cells += [_cell(_fmt(row.get(p)), _PARAM_W) for p in self.params]
        cells += [_cell(_fmt(row.get(key)), _VALUE_W) for key, _ in FINAL_COLUMNS]
        if entry.error:
            cells.append(
                f'<span style="color:#b00020;white-space:nowrap">{html.escape(entry.error)}</span>'
            )
        elif entry.missing:
            cells.append(
                f'<span style="color:#666">{len(entry.missing)} checkpoints without metrics '
                "yet</span>"
            )
        return f'<div style="font-size:12px;white-space:nowrap">{"".join(cells)}</div>'

    def refresh(self) -> None:
        """Rewrite every row (after metrics arrived or the groups changed)."""
        self.table = {r["name"]: r for r in run_table(self.entries, self.params)}
        with self.hold_sync():
            self.header.value = self._header_html()
            for e in self.entries:
                value = self.row_html(e, self.table[e.name])
                if self.cells[e.name].value != value:
                    self.cells[e.name].value = value
                box = self.checkboxes[e.name]
                if box.disabled == e.usable:
                    box.disabled = not e.usable

    def set_groups(self, groups: Mapping[str, tuple[str, str]]) -> None:
        """Show each run's group (name -> (label, colour)); empty: no group column."""
        self.groups = dict(groups)
        self.refresh()

    # ---------------------------------------------------------------- events

    def _on_sort(self, change: dict) -> None:
        rows = list(self.table.values())
        if self.sort_by != TABLE_ORDER:
            rows = sort_table(rows, self.sort_by, self.descending)
        self._order = [r["name"] for r in rows]
        self.rows_box.children = [
            w for name in self._order for w in (self.checkboxes[name], self.cells[name])
        ]

    def _on_box(self, name: str, value: bool) -> None:
        if self._syncing:
            return
        names = [n for n in self.selected if n != name]
        self.selected = [*names, name] if value else names

    def _on_selected(self, change: dict) -> None:
        chosen = set(change["new"])
        self._syncing = True
        try:
            with self.hold_sync():
                for name, box in self.checkboxes.items():
                    if box.value != (name in chosen):
                        box.value = name in chosen
        finally:
            self._syncing = False

    @property
    def order(self) -> list[str]:
        """Run names in the order the rows are shown."""
        return list(self._order)

    def close(self) -> None:
        """Close every row's widgets, the controls and the table."""
        for w in [*self.checkboxes.values(), *self.cells.values()]:
            w.close()
        for w in (self.sort_menu, self.order_button, self.header, self.rows_box):
            w.close()
        super().close()
