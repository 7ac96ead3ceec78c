"""GeometryRow: the geometry of two to four runs side by side, on one shared colour range.

One :class:`~richviz.widgets.SliceViewer` per run, all on the same slice of input space (runs
on different input spaces are refused), all at one shared ``step`` (each viewer snaps it to
its own nearest checkpoint), all coloured on ONE range: the union of the runs' own ranges,

    [lo, hi] = [min_r lo_r, max_r hi_r],  (lo_r, hi_r) = views.run_color_limits(fields of run r)

where ``fields of run r`` are the log10 volume element of each of its checkpoints on the shared
slice (``views.RANGE_RESOLUTION`` points per side), so that equal colours mean equal volume
elements across runs *and* steps: "the rich run magnifies the boundary more" is visible
without reading numbers. One colour bar (with its numbers) states the range.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

from richviz.compute_lock import COMPUTE
from richviz.errors import ArgumentError
from richviz.features import PENULTIMATE
from richviz.widgets import export, rendering
from richviz.widgets.common import as_run, error_line, status_html
from richviz.widgets.slice_figure import colorbar_figure
from richviz.widgets.slice_records import COLORBAR_TICKS, FIGURE_MARGIN
from richviz.widgets.slice_viewer import SliceViewer
from richviz.widgets.tasks import BackgroundWork, Job, Worker

__all__ = ["FIGURE_SIZES", "MAX_RUNS", "MIN_RUNS", "GeometryRow", "input_space", "union_limits"]

MIN_RUNS, MAX_RUNS = 2, 4
#: the square slice figure's size (px) for 2, 3 and 4 runs side by side
FIGURE_SIZES = {2: 400, 3: 310, 4: 250}
_TITLE_HEIGHT = 24  # px, the run's name above its viewer


def input_space(run: Any) -> tuple[str, ...]:
    """What fixes a run's slice: its data set (name and arguments from the manifest), or, for a
    run without one, the shape and bytes of its test inputs. Runs with equal keys share a slice.
    """
    spec = (getattr(run, "manifest", None) or {}).get("data")
    if spec:
        return ("data", json.dumps(spec, sort_keys=True, default=str))
    try:
        x = run.data().x_test
    except Exception as exc:  # no data set at all: nothing to place a slice with
        return ("unknown", f"{getattr(run, 'path', run)}: {error_line(exc)}")
    import hashlib

    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return ("inputs", str(tuple(x.shape[1:])), digest)


def _describe(key: tuple[str, ...]) -> str:
    if key[0] == "data":
        spec = json.loads(key[1])
        kwargs = spec.get("kwargs") or {}
        args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        return f"{spec.get('name')}({args})"
    if key[0] == "inputs":
        return f"test inputs of shape {key[1]} (#{key[2]})"
    return key[1]


def union_limits(ranges: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The smallest interval holding every ``(lo, hi)`` of ``ranges``: (min lo, max hi)."""
    if not ranges:
        raise ArgumentError("union_limits needs at least one (lo, hi) range")
    return float(min(lo for lo, _ in ranges)), float(max(hi for _, hi in ranges))


def _unique_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        new, k = name, 2
        while new in out:
            new, k = f"{name} ({k})", k + 1
        out.append(new)
    return out


class GeometryRow(BackgroundWork, widgets.VBox):
    """Slice viewers of 2-4 runs side by side at a shared step, on one shared colour range.

    Parameters
    ----------
    runs : 2 to 4 :class:`richviz.runs.Run` objects or run folders, all on the same input space
        (same data set; else a one-line ``ArgumentError`` naming both).
    colors : one CSS colour per run (its colour in the comparison; default Okabe-Ito).
    step : the initial shared step (default: the smallest of the runs' last steps).
    names : display names (default: the run folders' names).
    **viewer_kwargs : passed to every :class:`SliceViewer` (``resolution``, ``layer``,
        ``ellipse_density``, ``device``, ...).

    Attributes
    ----------
    step : Int >= 0, the shared step; each viewer shows its own nearest checkpoint to it.
    color_limits : List ``[lo, hi]``, the shared colour range once computed (``[]`` before).
    ranges : dict name -> (lo, hi), each run's own range (their union is ``color_limits``).
    viewers : list of the :class:`SliceViewer` objects, in the order of ``runs``.
    ready : Bool, True once the shared range is set on every viewer.

    Examples
    --------
    >>> import os, tempfile
    >>> from richviz.train import train
    >>> from richviz.widgets.compare_geometry import GeometryRow
    >>> root = tempfile.mkdtemp()
    >>> runs = [train("xor", os.path.join(root, f"s{s}"), steps=4, seed=s, progress=False,
    ...               device="cpu") for s in (0, 1)]
    >>> row = GeometryRow(runs, resolution=16, coarse_resolution=16, ellipse_density=0)
    >>> row.wait()
    True
    >>> all(v.frame.vmin == row.color_limits[0] for v in row.viewers)
    True
    >>> row.close()
    """

    step = traitlets.Int(0, min=0, help="shared step (each viewer snaps to its checkpoints)")
    color_limits = traitlets.List(traitlets.Float(), help="shared colour range [lo, hi]")
    ready = traitlets.Bool(False, help="True once the shared colour range is on every viewer")
    wait_timeout = 300.0

    def __init__(
        self,
        runs: Sequence[Any],
        colors: Sequence[str] | None = None,
        step: int | None = None,
        names: Sequence[str] | None = None,
        **viewer_kwargs: Any,
    ):
        runs = [as_run(r, str_folders_only=True) for r in runs]
        if not MIN_RUNS <= len(runs) <= MAX_RUNS:
            raise ArgumentError(
                f"runs: GeometryRow shows {MIN_RUNS} to {MAX_RUNS} runs side by side, "
                f"got {len(runs)}"
            )
        names = _unique_names(
            [str(n) for n in names]
            if names is not None
            else [os.path.basename(str(r.path)) for r in runs]
        )
        if len(names) != len(runs):
            raise ArgumentError(f"names: {len(names)} names for {len(runs)} runs")
        colors = list(colors) if colors is not None else None
        if colors is None:
            colors = [
                rendering.CLASS_PALETTE[i % len(rendering.CLASS_PALETTE)] for i in range(len(runs))
            ]
        if len(colors) != len(runs):
            raise ArgumentError(f"colors: {len(colors)} colours for {len(runs)} runs")
        keys = [input_space(r) for r in runs]
        for name, key in zip(names[1:], keys[1:], strict=True):
            if key != keys[0]:
                raise ArgumentError(
                    f"runs: {names[0]!r} ({_describe(keys[0])}) and {name!r} ({_describe(key)}) "
                    "are on different input spaces; geometry side by side needs one slice"
                )
        for bad in ("color_limits", "step_slider", "color_range"):
            if bad in viewer_kwargs:
                raise ArgumentError(f"{bad}: set by GeometryRow, not a viewer option here")
        self.names = names
        self.colors = colors
        self.runs = runs
        self.ranges: dict[str, tuple[float, float]] = {}
        self.slice: Any = None  #: the shared slice (set by the background job)
        self._layer = viewer_kwargs.get("layer") or PENULTIMATE
        self._device = viewer_kwargs.get("device", "auto")
        self._worker = Worker("richviz-geometry-row")
        lasts = [r.steps[-1] for r in runs if r.steps]
        first = int(step) if step is not None else (min(lasts) if lasts else 0)
        size = FIGURE_SIZES[len(runs)]
        self.viewers: list[SliceViewer] = []
        try:
            for run in runs:
                # per-step colours until the shared range is in: no run range computed twice
                self.viewers.append(
                    SliceViewer(
                        run, step=first, step_slider=False, color_range="step", **viewer_kwargs
                    )
                )
        except BaseException:
            for v in self.viewers:
                v.close()
            raise
        self.titles = [widgets.HTML(layout={"height": f"{_TITLE_HEIGHT}px"}) for _ in runs]
        for v in self.viewers:
            v.controls.layout.display = "none"  # one step for all; the row's settings
            v.footer.children[1].layout.display = "none"  # per-viewer export row
            v.figure.layout.width = v.figure.layout.height = f"{size}px"
            v.colorbar.layout.height = f"{size}px"
            v.progress.layout.width = "110px"  # the footer must not widen the column
            v.observe(self._on_shown, names=["shown_step"])
        self._build_colorbar(size)
        self.progress = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="range", layout={"width": "260px"}
        )
        self.status = widgets.HTML(status_html("fixing one colour range over the runs…", "busy"))
        self.note = widgets.HTML()
        columns = [
            widgets.VBox([t, v], layout={"margin": "0 6px 0 0", "width": f"{size + 10}px"})
            for t, v in zip(self.titles, self.viewers, strict=True)
        ]
        spacer = widgets.HTML(layout={"height": f"{_TITLE_HEIGHT}px"})
        self.colorbar_box = widgets.VBox([spacer, self.colorbar], layout={"display": "none"})
        super().__init__(
            children=[
                widgets.HBox([*columns, self.colorbar_box]),
                self.note,
                widgets.HBox([self.progress, self.status]),
            ]
        )
        self.step = first
        self._draw_titles()
        self.observe(self._on_step, names=["step"])
        self._worker.submit(self._shared_range)

    # ------------------------------------------------------------------ the shared range

    def _build_colorbar(self, size: int) -> None:
        self.colorbar, self.colorbar_mark, self.color_axis = colorbar_figure(
            "log10 volume (shared)", size
        )
        self._cb_sy = self.color_axis.scale

    def run_range(self, index: int, job: Job | None = None) -> tuple[float, float] | None:
        """Run ``index``'s own colour range on the shared slice (None: no readable step)."""
        from richviz import views

        viewer = self.viewers[index]
        steps = viewer.source.steps
        if not steps:
            return None
        fields = []
        for step in steps:
            if job is not None:
                job.check()
            model = viewer.source.load(step, self._device)
            with COMPUTE.hold():
                fields.append(
                    views.log10_volume_field(model, self.slice, views.RANGE_RESOLUTION, self._layer)
                )
        return views.run_color_limits(fields)

    def _shared_range(self, job: Job) -> None:
        try:
            self.slice = self._shared_slice()
            ranges: dict[str, tuple[float, float]] = {}
            for i, name in enumerate(self.names):
                self.status.value = status_html(
                    f"colour range of {html.escape(name)} ({i + 1}/{len(self.names)})…", "busy"
                )
                limits = self.run_range(i, job)
                if limits is not None:
                    ranges[name] = limits
                self.progress.value = (i + 1) / len(self.names)
            if not ranges:
                self.status.value = status_html("no run has a readable checkpoint", "error")
                return
            self.ranges = ranges
            lo, hi = union_limits(list(ranges.values()))
            if not hi > lo:  # a constant field everywhere: widen so the range is valid
                lo, hi = lo - 0.5, hi + 0.5
            job.check()
            self._apply_limits(lo, hi)
        except Exception as exc:
            if not job.stale:
                self.status.value = status_html(error_line(exc), "error")
                self.progress.bar_style = "danger"

    def _shared_slice(self) -> Any:
        """The slice the viewers show, built as they build it from the first run's data."""
        from richviz.widgets.slice_context import build_context

        viewer = self.viewers[0]
        if viewer.slice is not None:
            return viewer.slice
        data = viewer.source.data()
        x, y = data if data is not None else (None, None)
        shape = tuple(x.shape[1:]) if x is not None else viewer.source.input_shape()
        ctx = build_context(
            0, shape, x, y, slice=viewer._user_slice, margin=viewer._margin,
            anchors=list(viewer.anchors),
        )  # fmt: skip
        return ctx.slice

    def _apply_limits(self, lo: float, hi: float) -> None:
        with self._cb_sy.hold_sync():
            self._cb_sy.min, self._cb_sy.max = lo, hi
        self.colorbar_mark.y = [lo, hi]
        ticks = rendering.nice_ticks(lo, hi, COLORBAR_TICKS)
        self.color_axis.tick_format = rendering.tick_format(ticks)
        self.color_axis.tick_values = ticks
        self.color_limits = [lo, hi]
        for v in self.viewers:
            v.color_limits = [lo, hi]
            v.colorbar.layout.display = "none"  # the row's one colour bar states the range
        self.colorbar_box.layout.display = "flex"
        each = ", ".join(
            f"{html.escape(n)} [{a:.2f}, {b:.2f}]" for n, (a, b) in self.ranges.items()
        )
        self.note.value = (
            '<div style="font-size:12px">One colour range for all '
            f"{len(self.viewers)} runs: log10 volume element from <b>{lo:.2f}</b> to "
            f"<b>{hi:.2f}</b>, the union of each run's range over its checkpoints ({each}).</div>"
        )
        self.status.value = status_html(f"shared colour range [{lo:.3g}, {hi:.3g}]")
        self.progress.bar_style = "success"
        self.ready = True

    # ------------------------------------------------------------------ the shared step

    def _on_step(self, change: dict) -> None:
        for v in self.viewers:
            try:
                v.step = int(change["new"])  # snapped to this run's nearest checkpoint
            except traitlets.TraitError as exc:
                v.status.value = status_html(error_line(exc), "error")
        self._draw_titles()

    def _on_shown(self, change: dict) -> None:
        self._draw_titles()

    def set_colors(self, colors: Sequence[str]) -> None:
        """Recolour the runs' titles (and exports): one CSS colour per run, in order.

        :class:`Compare` passes each run's group colour while its charts are grouped, so a
        view's swatch matches the curve it belongs to.
        """
        colors = [str(c) for c in colors]
        if len(colors) != len(self.runs):
            raise ArgumentError(f"colors: {len(colors)} colours for {len(self.runs)} runs")
        if colors != self.colors:
            self.colors = colors
            self._draw_titles()

    def _draw_titles(self) -> None:
        for title, name, color, v in zip(
            self.titles, self.names, self.colors, self.viewers, strict=True
        ):
            shown = f"step {v.step}"
            title.value = (
                '<div style="font-size:13px;white-space:nowrap">'
                f'<span style="color:{html.escape(color)};font-size:16px">■</span> '
                f"<b>{html.escape(name)}</b> · {shown}</div>"
            )

    # ------------------------------------------------------------------ export

    def canvas(
        self, canvas: export.Canvas | None = None, x0: float = 0.0, y0: float = 0.0
    ) -> export.Canvas:
        """Draw the row on an :class:`export.Canvas` at (x0, y0): each run's name (in its
        colour) over its view, the views side by side, and the one shared colour bar."""
        from richviz.widgets.slice_export import EXPORT_SIZE, draw_colorbar, draw_slice

        frames = [v.frame for v in self.viewers]
        if any(f is None for f in frames):
            raise ValueError("no field has been computed yet (call wait() first)")
        m = FIGURE_MARGIN
        view_w = m["left"] + EXPORT_SIZE + 20
        view_h = m["top"] + EXPORT_SIZE + m["bottom"] + 44
        if canvas is None:
            canvas = export.Canvas(view_w * len(frames) + 110, view_h + _TITLE_HEIGHT)
        for i, (v, name, color) in enumerate(
            zip(self.viewers, self.names, self.colors, strict=True)
        ):
            x = x0 + i * view_w
            canvas.rect(x + m["left"], y0 + 6, 12, 12, fill=color)
            canvas.text(x + m["left"] + 18, y0 + 16, f"{name} · step {v.frame.step}", size=13)
            draw_slice(v.frame, v._ctx, canvas, x, y0 + _TITLE_HEIGHT, colorbar=False)
        x = x0 + len(frames) * view_w
        draw_colorbar(canvas, frames[-1], x, y0 + _TITLE_HEIGHT + m["top"])
        return canvas

    def save_png(self, path: str | os.PathLike, scale: float = 2.0) -> Path:
        """Write :meth:`canvas` as PNG (atomic); the status line names the file."""
        out = export.write_canvas(self.canvas(), path, "png", scale)
        self.status.value = status_html(f"geometry written to {out.resolve()}")
        return out

    def save_svg(self, path: str | os.PathLike) -> Path:
        """Write :meth:`canvas` as SVG (atomic); the status line names the file."""
        out = export.write_canvas(self.canvas(), path, "svg")
        self.status.value = status_html(f"geometry written to {out.resolve()}")
        return out

    # ------------------------------------------------------------------ lifecycle

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the shared range and every viewer's frame are done; False on timeout."""
        ok = super().wait(timeout)
        for v in self.viewers:
            ok = v.wait(timeout) and ok
        return ok

    def close(self) -> None:
        """Close the viewers, stop background work and close the widgets."""
        for v in getattr(self, "viewers", []):
            v.close()
        super().close()
