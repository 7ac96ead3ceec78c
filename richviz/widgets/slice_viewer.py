"""SliceViewer: the pulled-back volume element on a 2-D slice of input space.

A bqplot figure with equal scales shows, for the model at the current ``step``:

- a heatmap of log10 of the volume element (``bqplot.Image`` of a PNG coloured in Python),
  optionally relative to step 0 or minus the infinite-width theory at initialisation;
- metric ellipses (``Lines`` marks of NaN-separated paths; those near the decision boundary,
  i.e. among the 10 % smallest top-2 margins, in a second, brighter mark);
- the decision boundary (marching squares on the signed top-2 logit margin);
- the data points of a 2-D task coloured by class, or the three anchor inputs of an image
  plane (with thumbnails).

All numbers come from :mod:`richviz.views` (one pass over the grid per frame). This module holds
the widget itself: its traits and their validators, the constructor, ``refresh`` (a request for
a frame) and the observers that ask for one. The rest lives in one module per idea:
:mod:`.slice_records` (requests, grids, frames, menus), :mod:`.slice_jobs` (the background work:
coarse field first, stale work cancelled, the run's colour range), :mod:`.slice_fields` (grids,
cached per slice, step, layer and resolution), :mod:`.slice_compose` (a frame from grids),
:mod:`.slice_figure` (the figure, drawing), :mod:`.slice_controls` (pickers and their links),
:mod:`.slice_export` (the view on a canvas) and :mod:`.slice_export_methods` (PNG, SVG and
animation files).
"""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as widgets
import traitlets
from torch import nn

from richviz.errors import ArgumentError, DataError
from richviz.features import PENULTIMATE
from richviz.widgets.common import (
    DEVICES,
    Step,
    as_run,
    check_device,
    error_line,
    layer_labels,
    status_html,
    thumbnail_png,
)
from richviz.widgets.slice_controls import SliceControls
from richviz.widgets.slice_export_methods import SliceExport
from richviz.widgets.slice_fields import SliceFields
from richviz.widgets.slice_figure import SliceFigure
from richviz.widgets.slice_jobs import SliceJobs
from richviz.widgets.slice_records import (
    COLOR_RANGES,
    COLORBAR_TICKS,
    COLORBAR_WIDTH,
    ELLIPSE_MODES,
    EMPHASIS_COLOR,
    FIGURE_MARGIN,
    FIGURE_SIZE,
    MAX_ELLIPSE_DENSITY,
    MAX_POINTS,
    MAX_RESOLUTION,
    RESOLUTIONS,
    SHOW_MODES,
    THEORY_COLOR,
    THEORY_MODES,
    VOLUME_MODES,
    Frame,
    FrameRequest,
    SliceContext,
    check_color_limits,
    slice_points,
)
from richviz.widgets.sources import ModelSource
from richviz.widgets.tasks import BackgroundWork, LRUCache, Worker

__all__ = [
    "COLOR_RANGES",
    "COLORBAR_TICKS",
    "COLORBAR_WIDTH",
    "DEVICES",
    "ELLIPSE_MODES",
    "EMPHASIS_COLOR",
    "FIGURE_MARGIN",
    "FIGURE_SIZE",
    "FULL_K",  # noqa: F822 - module __getattr__
    "layer_labels",
    "MAX_ELLIPSE_DENSITY",
    "MAX_POINTS",
    "MAX_RESOLUTION",
    "NEAR_BAND",  # noqa: F822 - module __getattr__
    "RANGE_RESOLUTION",  # noqa: F822 - module __getattr__
    "RESOLUTIONS",
    "SHOW_MODES",
    "THEORY_COLOR",
    "THEORY_MODES",
    "VOLUME_MODES",
    "check_device",
    "error_line",
    "Frame",
    "slice_points",
    "SliceViewer",
    "status_html",
    "thumbnail_png",
]


#: settings of the viewer's numbers, defined in :mod:`richviz.views` (read from there on first
#: access, so that importing the widgets loads no numerics)
_VIEW_SETTINGS = ("FULL_K", "NEAR_BAND", "RANGE_RESOLUTION")


def __getattr__(name: str) -> Any:
    if name in _VIEW_SETTINGS:
        from richviz import views

        return getattr(views, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the traits whose change asks for a new frame
_REQUEST_TRAITS = (
    "step",
    "layer",
    "resolution",
    "ellipse_density",
    "ellipse_mode",
    "relative",
    "theory",
    "device",
    "lock_colors",
    "volume",
    "show",
    "color_range",
    "decision",
    "color_limits",
)


# one mixin per idea, then BackgroundWork before the ipywidgets base (its close runs first)
class SliceViewer(
    SliceJobs,
    SliceFields,
    SliceFigure,
    SliceControls,
    SliceExport,
    BackgroundWork,
    widgets.VBox,
):
    """Heatmap of the log10 volume element on a slice, with ellipses and decision boundary.

    Parameters
    ----------
    model_or_run : an ``nn.Module``, a :class:`richviz.checkpoints.Run`, or a run folder
        (``os.PathLike``, or a ``str`` naming an existing folder; opened with ``Run.open``).
    data : optional ``(x, y)`` for a bare model (a run uses its test split): places the slice
        and draws the points (2-D) or picks the anchors (images).
    slice : a :class:`richviz.geometry.Slice`; default: ``Slice.square`` covering the data
        (2-D inputs, ``margin`` added) or ``Slice.plane`` through three test inputs of
        different classes (other inputs).
    step : initial step (a run's last readable step by default).
    layer : feature layer (``"penultimate"`` default; see ``richviz.features.layer_names``).
    resolution : grid points per side of the full-resolution field; ``coarse_resolution`` is
        shown first while the full field is computed.
    theory_params : ``dict(activation=..., weight_std=..., bias_std=...)`` for the
        infinite-width overlay; default: inferred from the first step's model by
        :func:`richviz.theory.infer_theory_params` (one-hidden-layer networks only; otherwise
        the status line says "no theory for this model (why)").

    Attributes
    ----------
    step : Int >= 0, the checkpoint step shown. A value that is not a readable checkpoint step
        snaps to the nearest one (ties: the earlier; a bare model has step 0 only); bools,
        non-integers, NaN and negative numbers raise ``traitlets.TraitError``.
    layer : Unicode, feature layer; once the model is loaded, one of its layer names.
    resolution : Int in [2, MAX_RESOLUTION], grid points per side of the full field.
    ellipse_density : Int in [0, MAX_ELLIPSE_DENSITY], ellipses per side (0: none).
    ellipse_mode : Enum ``"stretch"`` | ``"unit_ball"``.
    relative : Bool, show the change from the first step.
    theory : Enum ``"off"`` | ``"contours"`` | ``"difference"``.
    device : Enum ``"auto"`` | ``"cpu"`` | ``"cuda"`` (``"cuda"`` only where available).
    lock_colors : Bool, keep the colour range on screen while scrubbing (overrides
        ``color_range``).
    color_range : Enum ``"run"`` (default: one range for the whole run, from every step's
        16 x 16 field; symmetric about 0 for relative and difference views, so Play shows growth)
        | ``"step"`` (each step's own range).
    color_limits : List of two finite floats ``[lo, hi]`` (lo < hi), or ``[]`` (default): a
        colour range fixed from outside, e.g. one range shared by several viewers
        (:class:`richviz.widgets.compare_geometry.GeometryRow`). It overrides ``lock_colors`` and
        ``color_range`` for the plain log10 volume element on the slice (the relative,
        theory-difference and full-space views keep their own ranges).
    show : Enum ``"volume"`` (log10 volume element) | ``"classes"`` (argmax class regions) |
        ``"entropy"`` (softmax entropy, log base C, in [0, 1]) | ``"curvature"`` (scalar
        curvature R = 2K of the pulled-back metric; 2-D inputs only).
    decision : Bool, draw the decision boundary and emphasise the ellipses near it (default:
        when the classes mean something: a run, or data with labels).
    volume : Enum ``"slice"`` | ``"full"``.
    anchors : List of three distinct data indices spanning an image plane, or ``[]``.
    shown_step, shown_resolution : Int, what is on screen (read-only in spirit).
    busy : Bool, True while background work runs.

    A bad value raises ``traitlets.TraitError`` at once and leaves the widget as it was.
    """

    step = Step(help="checkpoint step shown (snapped to the nearest checkpoint)")
    layer = traitlets.Unicode(PENULTIMATE, help="feature layer")
    resolution = traitlets.Int(
        96, min=2, max=MAX_RESOLUTION, help="grid points per side (full resolution)"
    )
    ellipse_density = traitlets.Int(
        12, min=0, max=MAX_ELLIPSE_DENSITY, help="ellipses per side (0: none)"
    )
    ellipse_mode = traitlets.Enum(
        [v for _, v in ELLIPSE_MODES], "stretch", help="'stretch' or 'unit_ball'"
    )
    relative = traitlets.Bool(False, help="show log10 vol(step) - log10 vol(first step)")
    theory = traitlets.Enum(
        [v for _, v in THEORY_MODES],
        "off",
        help="infinite-width overlay: off, contours, difference",
    )
    device = traitlets.Enum(DEVICES, "auto", help="'auto', 'cpu' or 'cuda'")
    lock_colors = traitlets.Bool(False, help="keep the colour range fixed while scrubbing")
    color_range = traitlets.Enum(
        [v for _, v in COLOR_RANGES], "run", help="'run': one colour range; 'step': per step"
    )
    color_limits = traitlets.List(
        traitlets.Float(), help="fixed colour range [lo, hi] of the log10 volume, or []"
    )
    show = traitlets.Enum(
        [v for _, v in SHOW_MODES],
        "volume",
        help="heatmap: 'volume', 'classes', 'entropy' or 'curvature'",
    )
    decision = traitlets.Bool(True, help="draw the decision boundary and its emphasis")
    volume = traitlets.Enum(
        [v for _, v in VOLUME_MODES],
        "slice",
        help="'slice': volume of the 2x2 slice metric; 'full': effective volume of g",
    )
    anchors = traitlets.List(
        traitlets.Int(min=0), help="test-set indices of the plane's 3 inputs (or [])"
    )
    shown_step = traitlets.Int(-1, min=-1, help="step of the field on screen (-1: none yet)")
    shown_resolution = traitlets.Int(0, min=0, help="resolution of the field on screen")
    busy = traitlets.Bool(False, help="True while background work runs")

    @traitlets.validate("device")
    def _valid_device(self, proposal: dict) -> str:
        return check_device(proposal["value"])

    @traitlets.validate("color_limits")
    def _valid_color_limits(self, proposal: dict) -> list[float]:
        try:
            limits = check_color_limits(proposal["value"])
        except ArgumentError as exc:
            raise traitlets.TraitError(str(exc)) from None
        return list(limits) if limits else []

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        layer = proposal["value"]
        known = (
            [o[1] if isinstance(o, tuple) else o for o in self.layer_picker.options]
            if getattr(self, "_layers_known", False)
            else []
        )
        if not layer or (known and layer not in known):
            raise traitlets.TraitError(
                f"layer={layer!r} is not a layer of this model; choose one of {known}"
            )
        return layer

    @traitlets.validate("anchors")
    def _valid_anchors(self, proposal: dict) -> list[int]:
        anchors = list(proposal["value"])
        if anchors and (len(anchors) != 3 or len(set(anchors)) != 3):
            raise traitlets.TraitError(
                f"anchors={anchors} must be three distinct test-set indices (or [] to choose)"
            )
        data = self._source.data() if self._source._data_loaded else None
        if anchors and data is not None and max(anchors) >= len(data[0]):
            raise traitlets.TraitError(
                f"anchors={anchors}: indices must lie in [0, {len(data[0]) - 1}]"
            )
        return anchors

    def __init__(
        self,
        model_or_run: nn.Module | Any,
        data: tuple[Any, Any] | None = None,
        slice: Any = None,  # noqa: A002 - the public name in the API contract
        *,
        step: int | None = None,
        layer: str | None = None,
        resolution: int = 96,
        coarse_resolution: int = 32,
        ellipse_density: int = 12,
        anchors: list[int] | None = None,
        device: str = "auto",
        theory_params: dict[str, Any] | None = None,
        margin: float = 0.1,
        cache_size: int = 64,
        decision: bool | None = None,
        step_slider: bool = True,
        color_limits: tuple[float, float] | None = None,
        **kwargs: Any,
    ):
        model_or_run = as_run(model_or_run, str_folders_only=True)  # else a model's TypeError
        self._source = ModelSource(model_or_run, data)
        if decision is None:  # a random feature map's "classes" mean nothing
            decision = self._source.run is not None or (data is not None and data[1] is not None)
        self._step_slider_wanted = bool(step_slider) and self._source.run is not None
        if resolution < 2 or coarse_resolution < 2:
            raise ArgumentError(
                f"resolution={resolution} and coarse_resolution={coarse_resolution} must be >= 2"
            )
        if margin < 0:
            raise ArgumentError(f"margin={margin} must be >= 0")
        fixed = check_color_limits(color_limits)
        self._user_slice = slice
        self._margin = float(margin)
        self.coarse_resolution = int(coarse_resolution)
        self.theory_params = dict(theory_params) if theory_params else None
        if self._source.run is None:
            self._check_bare_model_inputs()
        self._init_state(cache_size)

        steps = self._source.steps
        self._build_figure()
        self._build_controls(steps, self._step_slider_wanted)
        super().__init__(
            children=[
                self.controls,
                widgets.HBox([self.figure, self.colorbar]),
                self.legend,
                self.thumbnails,
                self.footer,
            ],
            **kwargs,
        )
        self.decision = bool(decision)
        if self._source.model is not None:
            self._set_layer_options(self._source.model)
        with self.hold_trait_notifications():
            self.resolution = int(resolution)
            self.ellipse_density = int(ellipse_density)
            self.device = device
            if layer is not None:
                self.layer = layer
            if anchors is not None:
                self.anchors = [int(a) for a in anchors]
            if fixed is not None:
                self.color_limits = list(fixed)
            if step is not None:
                self.step = step  # snapped (or refused) by the Step trait
            elif steps:
                self.step = steps[-1]
        self.observe(self._on_request_change, names=list(_REQUEST_TRAITS))
        self.observe(self._on_anchors, names=["anchors"])
        if steps:
            self.refresh()
        else:
            self._status("this run has no readable checkpoint", "error")

    def _init_state(self, cache_size: int) -> None:
        self._fields = LRUCache(cache_size)  # full-resolution fields
        self._previews = LRUCache(16)  # coarse previews (not needed once the full one exists)
        self._theory_cache = LRUCache(8)
        #: why the theory overlay is missing ("" when drawn or off)
        self.theory_note = ""
        #: parameters of the last theory overlay computed (given or inferred), or None
        self.theory_used: dict[str, Any] | None = None
        self._ctx: SliceContext | None = None
        self._version = 0
        self._apply_lock = threading.RLock()
        self._worker = Worker("richviz-slice")
        self.compute_count = 0  #: number of fields computed (views.slice_frame calls)
        self.frame: Frame | None = None  #: what is on screen
        self._locked_limits: dict[str, tuple[float, float]] = {}
        self._range_cache = LRUCache(16)  # run-wide colour ranges
        self._layer_labels: dict[str, str] = {}
        self._layers_known = False
        self._controls_sync = False

    def _check_bare_model_inputs(self) -> None:
        if self._user_slice is not None or self._source.data() is not None:
            return
        shape = self._source.input_shape()
        if shape != (2,):
            raise DataError(
                "SliceViewer(model): pass data=(x, y) (three inputs of different classes span the "
                "plane) or slice=Slice.plane(...) for a model whose inputs are not 2-D"
            )

    # ------------------------------------------------------------------ public API

    def _checkpoint_steps(self) -> list[int]:
        """The steps ``step`` snaps to (see ``common.Step``); ``[0]`` for a bare model."""
        return self._source.steps

    @property
    def source(self) -> ModelSource:
        """The run or model being shown."""
        return self._source

    @property
    def slice(self) -> Any:
        """The current :class:`richviz.geometry.Slice` (None until first computed)."""
        return self._ctx.slice if self._ctx is not None else None

    @property
    def anchor_indices(self) -> list[int]:
        """Data indices of the image plane's anchors A, B, C (empty for 2-D inputs or before
        the slice is built); the index boxes show the same numbers."""
        return list(self._ctx.anchor_indices) if self._ctx is not None else []

    def refresh(self) -> None:
        """Show the field for the current settings: at once when cached, else in the background.

        Returns immediately; stale background work is cancelled (generation counter).
        """
        # one thread at a time from reading the settings to submitting: else a caller that read
        # the old settings could submit after one that read the new ones, and its frame would win
        with self._apply_lock:
            req = FrameRequest(
                step=self.step if self._source.run is not None else 0,
                layer=self.layer,
                resolution=int(self.resolution),
                density=int(self.ellipse_density),
                mode=self.ellipse_mode,
                relative=bool(self.relative) and self._source.run is not None,
                theory=self.theory,
                device=self.device,
                version=self._version,
                lock=bool(self.lock_colors),
                volume=self.volume,
                show=self.show,
                color_range=self.color_range,
                decision=bool(self.decision),
                fixed=tuple(self.color_limits) if self.color_limits else None,
            )
            generation = self._worker.cancel()
            if self._render_cached(req, generation):
                return
            self._worker.submit(self._job, req)

    # ------------------------------------------------------------------ observers

    def _on_request_change(self, change: dict) -> None:
        if change["name"] == "lock_colors":
            self._locked_limits = (
                {self.frame.cmap: (self.frame.vmin, self.frame.vmax)}
                if change["new"] and self.frame is not None
                else {}
            )
        if change["name"] == "relative" and change["new"] and self.theory == "difference":
            self.theory = "off"
            return
        if change["name"] == "theory" and change["new"] == "difference" and self.relative:
            self.relative = False
            return
        if change["name"] == "theory" and change["new"] == "difference" and self.volume == "full":
            self.volume = "slice"  # the theory is the volume element of the slice metric
            return
        if change["name"] == "volume" and change["new"] == "full" and self.theory == "difference":
            self.theory = "off"
            return
        self.refresh()

    def _on_anchors(self, change: dict) -> None:
        self._version += 1
        self._ctx = None
        self._controls_sync = True
        try:
            for picker, idx in zip(self.anchor_pickers, change["new"], strict=False):
                picker.value = min(max(idx, picker.min), picker.max) if picker.max else idx
        finally:
            self._controls_sync = False
        self.refresh()

    def _status(self, message: str, kind: str = "info") -> None:
        self.status.value = status_html(message, kind)
