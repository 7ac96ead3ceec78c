"""The slice viewer's background work: what one request for a frame schedules, and in what order.

A mixin of :class:`richviz.widgets.slice_viewer.SliceViewer`. For a :class:`FrameRequest` it

- renders at once, on the calling thread, when the slice, the grids, the theory and the run's
  colour range are all cached (:meth:`SliceJobs._render_cached`);
- otherwise runs a job on the viewer's worker thread: the slice and what depends on it only
  (points, anchors; built once per slice version), the run-wide colour range, then the coarse
  field first (unless the full one is cached) and the full one, each composed into a frame
  and handed to the figure;
- leaves stale work behind: a newer request cancels the job (generation counter, checked
  between steps), a stale job's frames are dropped and its errors not reported.

Every grid comes from :class:`.slice_fields.SliceFields` (under the process-wide compute
lock); a frame's colour range is fixed from outside, locked, run-wide or the values' own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from richviz.widgets import rendering
from richviz.widgets.common import error_line
from richviz.widgets.slice_compose import compose_frame
from richviz.widgets.slice_context import build_context
from richviz.widgets.slice_records import FieldRecord, Frame, FrameRequest, SliceContext
from richviz.widgets.tasks import Cancelled, Job

__all__ = ["SliceJobs"]


class SliceJobs:
    """Mixin: a frame request rendered from the caches at once, or computed in the background
    (slice context, run colour range, coarse field first, then the full one; stale work
    cancelled)."""

    _source: Any
    _fields: Any
    _theory_cache: Any
    _ctx: SliceContext | None
    _apply_lock: Any
    _locked_limits: dict[str, tuple[float, float]]
    _user_slice: Any
    _margin: float
    coarse_resolution: int
    theory_note: str
    theory_used: dict[str, Any] | None

    def _job(self, job: Job, req: FrameRequest) -> None:
        """The background work for ``req``: context, run range, coarse then full frame."""
        with self._apply_lock:  # a refresh drawing from the cache may have cancelled it already
            if job.stale:
                return
            self.busy = True
            self.progress.bar_style = "info"
        try:
            ctx = self._context(job, req)
            self._run_limits(job, req, ctx)
            plan = [req.resolution]
            coarse = min(self.coarse_resolution, req.resolution)
            if coarse < req.resolution and not self._have(req, req.resolution):
                plan = [coarse, req.resolution]
            for res in plan:
                with self._apply_lock:  # a stale job never overwrites a newer frame's status
                    job.check()
                    self._status(f"step {req.step}: computing {res}×{res} field…", "busy")
                fld = self._field(job, req, req.step, res, ctx)
                base = (
                    self._field(job, req, self._source.steps[0], res, ctx) if req.relative else None
                )
                theory = self._theory(job, req, res, ctx) if req.theory != "off" else None
                job.check()
                frame = self._compose(req, res, fld, base, theory)
                self._apply(job.generation, frame, ctx)
            self.progress.bar_style = "success"
        except Cancelled:
            return
        except Exception as exc:
            with self._apply_lock:
                if not job.stale:
                    self._status(f"step {req.step}: {error_line(exc)}", "error")
                    self.progress.bar_style = "danger"
        finally:
            if not job.stale:
                self.busy = False

    def _have(self, req: FrameRequest, res: int) -> bool:
        """Whether the grids ``req`` needs at ``res`` are cached (with its extras)."""
        keys = [(req.version, req.step, req.layer, res)]
        if req.relative:
            keys.append((req.version, self._source.steps[0], req.layer, res))
        if (
            req.show == "curvature"
            and getattr(self._fields.get(keys[0]), "curvature", None) is None
        ):
            return False
        if req.volume == "full":
            return all(getattr(self._fields.get(k), "full_log10", None) is not None for k in keys)
        return all(k in self._fields for k in keys)

    def _render_cached(self, req: FrameRequest, generation: int) -> bool:
        """Render synchronously when slice, fields and theory are all cached."""
        ctx = self._ctx
        if ctx is None or ctx.version != req.version or not self._have(req, req.resolution):
            return False
        if (
            req.color_range == "run"
            and req.fixed_limits is None
            and self._source.run is not None
            and req.show == "volume"
            and req.volume == "slice"
            and self._run_limits(None, req, ctx) is None
        ):
            return False
        fld = self._fields.get((req.version, req.step, req.layer, req.resolution))
        base = None
        if req.relative:
            base = self._fields.get((req.version, self._source.steps[0], req.layer, req.resolution))
        theory = None
        if req.theory != "off":
            cached = self._theory_cache.get((req.version, req.layer, req.resolution))
            if cached is None:
                return False
            theory, self.theory_note, self.theory_used = cached
        if (req.density, req.mode) not in fld.ellipses and req.density > 0:
            return False
        frame = self._compose(req, req.resolution, fld, base, theory)
        self._apply(generation, frame, ctx)
        self.busy = False
        return True

    def _context(self, job: Job, req: FrameRequest) -> SliceContext:
        """The slice and what depends on it only (points, anchors), built once per version."""
        ctx = self._ctx
        if ctx is not None and ctx.version == req.version:
            return ctx
        model = self._source.load(req.step, req.device)
        self._set_layer_options(model)
        data = self._source.data()
        x, y = data if data is not None else (None, None)
        shape = tuple(x.shape[1:]) if x is not None else self._source.input_shape(model)
        ctx = build_context(
            req.version, shape, x, y, slice=self._user_slice, margin=self._margin,
            anchors=list(self.anchors),
        )  # fmt: skip
        job.check()
        self._ctx = ctx
        self._apply_context(ctx, x if not ctx.two_d else None)
        return ctx

    def _compose(
        self,
        req: FrameRequest,
        res: int,
        fld: FieldRecord,
        base: FieldRecord | None,
        theory: np.ndarray | None,
    ) -> Frame:
        """The frame of ``req`` at ``res`` from its grids (:func:`.slice_compose.compose_frame`)."""
        return compose_frame(
            req,
            res,
            fld,
            base,
            theory,
            first_step=self._source.steps[0] if self._source.steps else 0,
            limits=lambda cmap, values: self._color_limits(req, cmap, values),
            num_classes=lambda: self._num_classes(fld),
            theory_note=self.theory_note,
        )

    def _color_limits(
        self, req: FrameRequest, cmap: str, values: np.ndarray
    ) -> tuple[float, float]:
        """The colour range of a volume heatmap: fixed from outside, locked, run-wide, or the
        values' own."""
        if req.fixed_limits is not None:
            return req.fixed_limits
        limits = self._locked_limits.get(cmap) if req.lock else None
        if limits is None and not req.lock:
            limits = self._run_limits(None, req, self._ctx) if self._ctx else None
        if limits is None:
            limits = rendering.color_limits(values, symmetric=cmap == "diverging")
            if req.lock:
                self._locked_limits[cmap] = limits
        return limits

    def _num_classes(self, fld: FieldRecord) -> int:
        """Classes in the legend and colour bar: predicted on the grid or labelled, at least 2."""
        data = self._source.data()
        n = int(fld.predicted.max()) + 1 if fld.predicted is not None and fld.predicted.size else 2
        if data is not None and data[1] is not None and len(data[1]):
            n = max(n, int(data[1].max()) + 1)
        return max(n, 2)
