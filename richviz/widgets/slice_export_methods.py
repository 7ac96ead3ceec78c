"""The slice viewer's files: the view on screen written as PNG or SVG, the heatmap alone, the
run as an animation.

A mixin of :class:`richviz.widgets.slice_viewer.SliceViewer` (it uses the viewer's frame, slice
context, file-name box, status line and progress bar). The drawing itself is headless:
:func:`.slice_export.draw_slice` on an :class:`richviz.widgets.export.Canvas`, and
:func:`.slice_animation.save_animation` (imported on first use) for a GIF or MP4. Every file is
written atomically (:mod:`richviz.atomic`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from richviz.atomic import atomic_write_bytes
from richviz.errors import ArgumentError
from richviz.widgets import export, rendering
from richviz.widgets.slice_export import draw_slice, heatmap_rgba
from richviz.widgets.slice_records import Frame, SliceContext

__all__ = ["SliceExport"]


class SliceExport:
    """Mixin: ``heatmap_png``, ``export_heatmap``, ``canvas``, ``save_png``, ``save_svg`` and
    ``save_animation`` of the slice viewer."""

    frame: Frame | None
    _ctx: SliceContext | None
    _source: Any
    _fields: Any
    _user_slice: Any
    _version: int

    def heatmap_png(self, scale: int = 1) -> bytes:
        """The heatmap on screen as PNG bytes (headless; ``scale``: pixel enlargement factor)."""
        if self.frame is None:
            raise ValueError("no field has been computed yet")
        return rendering.encode_png(rendering.upscale(heatmap_rgba(self.frame), scale))

    def export_heatmap(self, path: str | os.PathLike | None = None, scale: int = 4) -> Path:
        """Write :meth:`heatmap_png` to ``path`` (default ``<file box>-step<step>-heatmap.png``)."""
        step = self.frame.step if self.frame else self.step
        path = export.export_path(path, self.export_name.value, "-heatmap.png", step)
        out = atomic_write_bytes(self.heatmap_png(scale), path)
        self._status(f"heatmap written to {out}")
        return out

    def canvas(
        self, canvas: export.Canvas | None = None, x0: float = 0.0, y0: float = 0.0
    ) -> export.Canvas:
        """Draw the view (title, heatmap, ellipses, boundary, points, anchors, axes, colour
        bar with ticks and label, legend) on an :class:`export.Canvas` at (x0, y0)."""
        if self.frame is None:
            raise ValueError("no field has been computed yet")
        return draw_slice(self.frame, self._ctx, canvas, x0, y0)

    def save_png(self, path: str | os.PathLike | None = None, scale: float = 2.0) -> Path:
        """Write the whole view (heatmap, colour bar, legend) as PNG on the server at ``scale``
        x resolution; default ``<file box>-step<step>.png``. The status line names the file."""
        out = export.write_canvas(self.canvas(), self._export_path(path, ".png"), "png", scale)
        self._status(f"view written to {out.resolve()}")
        return out

    def save_svg(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole view as SVG on the server; default ``<file box>-step<step>.svg``."""
        out = export.write_canvas(self.canvas(), self._export_path(path, ".svg"), "svg")
        self._status(f"view written to {out.resolve()}")
        return out

    def save_animation(self, path: str | os.PathLike, **kwargs: Any) -> Any:
        """Write the view over the run's checkpoints as a GIF or MP4 (the suffix decides).

        :func:`richviz.widgets.slice_animation.save_animation` with this viewer's slice, layer,
        resolution, heatmap (``show``: volume, class regions or entropy), ellipses and decision
        boundary, reusing its grid cache and model copies; ``kwargs`` (``fps``, ``duration``,
        ``curves``, ``scale``, ...) override. The progress bar follows the export; the status
        line names the file. Fixed ``color_limits`` carry over; relative, theory and full-space
        views are drawn plain. Returns the :class:`richviz.animation.Animation`.
        """
        from richviz.animation import SHOWS
        from richviz.animation.fields import KeyedStore
        from richviz.widgets.slice_animation import save_animation

        if self._source.run is None:
            raise ArgumentError("save_animation needs a run: a bare model has one step")
        show = {view: name for name, view in SHOWS.items()}.get(self.show)
        if "show" not in kwargs and show is None:
            raise ArgumentError(f"show={self.show!r} is not animated (volume, classes, entropy)")
        ctx, layer, res = self._ctx, self.layer, int(self.resolution)
        options: dict[str, Any] = dict(
            show=show, resolution=res, layer=layer, ellipses=self.ellipse_density,
            ellipse_mode=self.ellipse_mode, decision=bool(self.decision),
            color_limits=tuple(self.color_limits) or None,
            load=lambda step: self._source.load(step, self.device),
            progress=lambda done, total: self._set_progress(done / max(total, 1)),
        )  # fmt: skip
        options.update(kwargs)
        if ctx is not None and ctx.version == self._version:  # the viewer's slice ...
            options["context"] = ctx
            if (options["resolution"], options["layer"]) == (res, layer):  # ... and its grids
                version = ctx.version
                options["fields"] = KeyedStore(self._fields, lambda s: (version, s, layer, res))
        else:
            options["slice"] = self._user_slice
        anim = save_animation(self._source.run, path, **options)
        self._status(f"animation ({anim.frames} frames) written to {anim.path.resolve()}")
        return anim

    def _export_path(self, path: str | os.PathLike | None, suffix: str) -> Path:
        """``path``, or ``<file box>-step<step><suffix>`` for the step on screen."""
        step = self.frame.step if self.frame else self.step
        return export.export_path(path, self.export_name.value, suffix, step)
