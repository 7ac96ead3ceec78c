"""The slice viewer's grids: computed through :mod:`richviz.views` under the process-wide
compute lock, cached per (slice, step, layer, resolution), with progress and cancellation.

A mixin of :class:`richviz.widgets.slice_viewer.SliceViewer` (it uses the viewer's source,
caches, progress bar and status line); every number comes from :mod:`richviz.views`, imported
when first needed so that importing the widgets loads no numerics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from richviz.compute_lock import COMPUTE
from richviz.errors import DataError
from richviz.widgets.slice_records import FieldRecord, FrameRequest, SliceContext
from richviz.widgets.tasks import Job

__all__ = ["SliceFields"]


class SliceFields:
    """Mixin: the viewer's grids (one :func:`richviz.views.slice_frame` pass each), on-demand
    extras (full-space volume, curvature, ellipses), the theory and the run's colour range."""

    _source: Any
    _fields: Any
    _previews: Any
    _theory_cache: Any
    _range_cache: Any
    theory_params: dict[str, Any] | None
    compute_count: int

    def _field(
        self, job: Job, req: FrameRequest, step: int, res: int, ctx: SliceContext
    ) -> FieldRecord:
        """The grid of ``step`` at ``res`` (cached): one pass for metric and logits, then what
        the request needs on demand (full-space volume, curvature, ellipses)."""
        from richviz import views

        key = (req.version, step, req.layer, res)
        cache = self._fields if res == req.resolution else self._previews
        fld = cache.get(key)
        if fld is None:
            model = self._source.load(step, req.device)
            job.check()
            self._set_layer_options(model)
            self.progress.value = 0.0
            report = job.progress_callback(self._set_progress)
            if COMPUTE.waiting_for_others():
                self._status(f"step {step}: waiting for the metrics computation…", "busy")
            with COMPUTE.hold():
                job.check()
                frame = views.slice_frame(
                    model, ctx.slice, resolution=res, layer=req.layer, progress=report
                )
                self.compute_count += 1
            fld = FieldRecord(
                frame.u,
                frame.v,
                frame.log10_volume,
                frame.margin,
                frame.boundary,
                frame.field,
                entropy=frame.entropy,
                predicted=frame.predicted,
            )
            cache.put(key, fld)
            self.progress.value = 1.0
        if req.volume == "full" and fld.full_log10 is None:
            fld.full_log10, fld.full_k = self._full_volume(job, req, step, res, ctx)
        if req.show == "curvature" and fld.curvature is None:
            fld.curvature = self._curvature(job, req, step, res, ctx)
        self._ellipses(fld, req)
        return fld

    def _curvature(
        self, job: Job, req: FrameRequest, step: int, res: int, ctx: SliceContext
    ) -> np.ndarray:
        """Scalar curvature R = 2K of the pulled-back metric on the grid (float64)."""
        from richviz import views

        if not ctx.two_d:
            raise DataError("show='curvature' needs 2-D inputs (the metric on the input plane)")
        model = self._source.load(step, req.device)
        self._status(f"step {step}: curvature on a {res}×{res} grid…", "busy")
        with COMPUTE.hold():
            job.check()
            return views.curvature_values(model, ctx.slice, res, req.layer)

    def _run_limits(
        self, job: Job | None, req: FrameRequest, ctx: SliceContext
    ) -> tuple[float, float] | None:
        """One colour range for the whole run (:func:`richviz.views.run_color_limits` of every
        step's ``views.RANGE_RESOLUTION``² field; minus step 0 for relative views, minus the
        theory for the difference view; symmetric about 0 for both). ``job`` None: the cached
        range only.

        None where a run range does not apply (a bare model, per-step colours, colour limits
        fixed from outside, the full-space volume, curvature; class regions and entropy have
        fixed ranges of their own).
        """
        from richviz import views

        if (
            req.color_range != "run"
            or req.fixed_limits is not None
            or self._source.run is None
            or req.volume != "slice"
            or req.show != "volume"
        ):
            return None
        difference = req.theory == "difference" and not req.relative
        key = (req.version, req.layer, req.relative, difference)
        cached = self._range_cache.get(key)
        if cached is not None or job is None:
            return cached
        theory = None
        if difference:
            theory = self._theory(job, req, views.RANGE_RESOLUTION, ctx)
            if theory is None:
                return None
        self._status("fixing the colour range over the run…", "busy")
        fields = []
        for step in self._source.steps:
            job.check()
            model = self._source.load(step, req.device)
            with COMPUTE.hold():
                fields.append(
                    views.log10_volume_field(model, ctx.slice, views.RANGE_RESOLUTION, req.layer)
                )
        limits = views.run_color_limits(fields, relative=req.relative, theory=theory)
        self._range_cache.put(key, limits)
        return limits

    def _full_volume(
        self, job: Job, req: FrameRequest, step: int, res: int, ctx: SliceContext
    ) -> tuple[np.ndarray, int]:
        """Effective log10 volume of the whole input space at the grid points
        (:func:`richviz.views.full_space_volume`) and the k used."""
        from richviz import views

        model = self._source.load(step, req.device)
        self._status(
            f"step {step}: full-space volume (top-{views.FULL_K} singular values)…", "busy"
        )
        self.progress.value = 0.0
        with COMPUTE.hold():
            return views.full_space_volume(
                model,
                ctx.slice,
                res,
                req.layer,
                k=views.FULL_K,
                progress=job.progress_callback(self._set_progress),
            )

    def _ellipses(self, fld: FieldRecord, req: FrameRequest) -> None:
        from richviz import views

        if req.density <= 0 or (req.density, req.mode) in fld.ellipses:
            return
        fld.ellipses[(req.density, req.mode)] = views.frame_ellipses(
            fld.metric_field, fld.margin, density=req.density, mode=req.mode, band=views.NEAR_BAND
        )

    def _set_progress(self, value: float) -> None:
        self.progress.value = float(value)

    def _theory(
        self, job: Job, req: FrameRequest, res: int, ctx: SliceContext
    ) -> np.ndarray | None:
        """log10 of the infinite-width volume element at initialisation on the slice grid.

        None when no theory describes the model; :attr:`theory_note` then says why.
        """
        from richviz import views

        key = (req.version, req.layer, res)
        cached = self._theory_cache.get(key)
        if cached is None:
            params = self.theory_params
            model = None if params else self._source.load(self._source.steps[0], req.device)
            job.check()
            with COMPUTE.hold():
                cached = views.theory_overlay(
                    ctx.slice, res, params=params, model=model, layer=req.layer
                )
            self._theory_cache.put(key, cached)
        out, self.theory_note, self.theory_used = cached
        return out
