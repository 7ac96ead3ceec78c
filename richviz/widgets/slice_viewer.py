"""SliceViewer: the pulled-back volume element on a 2-D slice of input space.

A bqplot figure with equal scales shows, for the model at the current ``step``:

- a heatmap of log10 of the volume element (``bqplot.Image`` of a PNG coloured in Python),
  optionally relative to step 0 or minus the infinite-width theory at initialisation;
- metric ellipses (``Lines`` marks of NaN-separated paths; those near the decision boundary,
  i.e. among the 10 % smallest top-2 margins, in a second, brighter mark);
- the decision boundary (marching squares on the signed top-2 logit margin);
- the data points of a 2-D task coloured by class, or the three anchor inputs of an image
  plane (with thumbnails).

All numbers come from :mod:`richviz.geometry` / :mod:`richviz.theory`; this module only
schedules the work (a background thread, coarse field first, stale work cancelled) and
draws. Computed fields are cached per (slice, step, layer, resolution).
"""

from __future__ import annotations

import html
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
import torch
import traitlets
from torch import nn

from richviz.errors import DataError
from richviz.features import LOGITS, PENULTIMATE, layer_names
from richviz.widgets import export, rendering
from richviz.widgets.sources import ModelSource
from richviz.widgets.tasks import COMPUTE, BackgroundWork, Cancelled, Job, LRUCache, Worker

__all__ = [
    "COLOR_RANGES",
    "COLORBAR_TICKS",
    "COLORBAR_WIDTH",
    "DEVICES",
    "ELLIPSE_MODES",
    "EMPHASIS_COLOR",
    "FIGURE_MARGIN",
    "FIGURE_SIZE",
    "FULL_K",
    "layer_labels",
    "MAX_ELLIPSE_DENSITY",
    "MAX_POINTS",
    "MAX_RESOLUTION",
    "NEAR_BAND",
    "RANGE_RESOLUTION",
    "RESOLUTIONS",
    "SHOW_MODES",
    "THEORY_MODES",
    "VOLUME_MODES",
    "atomic_write_bytes",
    "check_device",
    "error_line",
    "Frame",
    "slice_points",
    "SliceViewer",
    "status_html",
    "thumbnail_png",
]

RESOLUTIONS = (16, 32, 48, 64, 96, 128, 192, 256)
THEORY_MODES = (("off", "off"), ("contours", "contours"), ("trained − theory", "difference"))
ELLIPSE_MODES = (("stretch", "stretch"), ("unit ball", "unit_ball"))
VOLUME_MODES = (("on the slice", "slice"), ("full space (top-k)", "full"))
SHOW_MODES = (
    ("log10 volume element", "volume"),
    ("class regions", "classes"),
    ("softmax entropy", "entropy"),
    ("curvature R = 2K (2-D)", "curvature"),
)
COLOR_RANGES = (("colours: whole run", "run"), ("colours: per step", "step"))
RANGE_RESOLUTION = 16  # grid points per side of the fields that fix a run's colour range
#: near-boundary ellipses: a colour no class uses (classes: Okabe-Ito, rendering.CLASS_PALETTE)
EMPHASIS_COLOR = "#ff00ff"
THEORY_COLOR = "#ffffff"
MAX_RESOLUTION = 1024  # grid points per side: 1024**2 points, ~50 MB of float64 metric
MAX_ELLIPSE_DENSITY = 64
DEVICES = ("auto", "cpu", "cuda")
FULL_K = 8  # singular values in the full-space effective volume (the paper uses 6-10)
MAX_POINTS = 2000
FIGURE_SIZE = 420  # px, the square slice figure
FIGURE_MARGIN = {"top": 35, "bottom": 45, "left": 55, "right": 25}  # left+right == top+bottom
COLORBAR_WIDTH = 92  # px, the colour bar figure beside it
COLORBAR_TICKS = 5  # at most this many round ticks on the colour bar
NEAR_BAND = 0.1  # ellipses at the 10 % of grid points with the smallest margin are highlighted


def check_device(device: str) -> str:
    """A widget device choice: ``"cuda"`` only where CUDA is available (TraitError otherwise)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise traitlets.TraitError("device='cuda' but CUDA is not available; use 'auto' or 'cpu'")
    return device


def status_html(message: str, kind: str = "info") -> str:
    """One status line as HTML (``kind``: info, busy, error)."""
    colour = {"error": "#b00020", "busy": "#555", "info": "#333"}.get(kind, "#333")
    text = html.escape(" ".join(str(message).split()))
    return f'<span style="color:{colour};font-size:12px">{text}</span>'


def error_line(exc: BaseException) -> str:
    """An exception as one line: ``TypeName: message``."""
    msg = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {msg}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@dataclass
class _Field:
    """One computed grid: numpy copies of the geometry results plus derived lines."""

    u: np.ndarray
    v: np.ndarray
    log10_volume: np.ndarray
    margin: np.ndarray
    boundary: tuple[np.ndarray, np.ndarray]
    metric_field: Any
    #: effective log10 volume of the full input space (top-k singular values), on demand
    full_log10: np.ndarray | None = None
    full_k: int = 0
    entropy: np.ndarray | None = None  #: softmax entropy, log base C
    predicted: np.ndarray | None = None  #: argmax class
    curvature: np.ndarray | None = None  #: scalar curvature R = 2K (2-D inputs), on demand
    #: (density, mode) -> ((xs, ys) away from the boundary, (xs, ys) near it)
    ellipses: dict[tuple[int, str], tuple[tuple[np.ndarray, np.ndarray], ...]] = field(
        default_factory=dict
    )


@dataclass
class _Context:
    """Everything that depends on the slice only."""

    version: int
    slice: Any
    two_d: bool
    points: np.ndarray | None = None  # (N, 2) slice coordinates of data points
    labels: np.ndarray | None = None
    anchors: np.ndarray | None = None  # (k, 2) slice coordinates of anchor inputs
    anchor_indices: list[int] = field(default_factory=list)
    anchor_labels: list[str] = field(default_factory=list)
    thumbnails: list[bytes] = field(default_factory=list)


@dataclass
class _Request:
    step: int
    layer: str
    resolution: int
    density: int
    mode: str
    relative: bool
    theory: str
    device: str
    version: int
    lock: bool = False
    volume: str = "slice"
    show: str = "volume"
    color_range: str = "run"
    decision: bool = True


@dataclass
class Frame:
    """What is on screen: the heatmap values and how they were coloured."""

    step: int
    layer: str
    resolution: int
    values: np.ndarray
    vmin: float
    vmax: float
    cmap: str
    label: str
    png: bytes
    extent: tuple[list[float], list[float]]
    ellipses: tuple[np.ndarray, np.ndarray]
    ellipses_near: tuple[np.ndarray, np.ndarray]
    boundary: tuple[np.ndarray, np.ndarray]
    theory_lines: tuple[np.ndarray, np.ndarray]
    bar_label: str = "log10 volume"  #: short label of the colour bar
    note: str = ""  #: e.g. why no theory overlay is drawn
    rgba: np.ndarray | None = None  #: the heatmap's pixels (row 0 at the top)
    theory_labels: tuple[np.ndarray, np.ndarray, list[str]] | None = None
    classes: int = 0  #: class count for the "classes" colour bar
    decision: bool = True  #: boundary and near-boundary emphasis drawn


def _numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=float)


def thumbnail_png(x: torch.Tensor, size: int = 64) -> bytes:
    """A small PNG of one input: (C, H, W) with C in {1, 3}, (H, W), or a flat square image."""
    a = x.detach().to("cpu", torch.float64).numpy()
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        a = a.reshape(side, side) if side * side == a.size else a.reshape(1, -1)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    lo, hi = np.nanmin(a), np.nanmax(a)
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    pixels = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    factor = max(1, size // max(pixels.shape[:2]))
    return rendering.encode_png(rendering.upscale(pixels, factor))


def layer_labels(model: nn.Module, names: list[str], source: Any = None) -> dict[str, str]:
    """Menu labels of a model's layers: ``"2: Tanh (256)"`` (name, module type, width).

    The width is the number of features the layer outputs per input, measured by one forward
    pass on a zero input (hooks); the pseudo-layers read ``"penultimate (64)"``,
    ``"logits (2)"``. A layer that cannot be measured is labelled by its name and type.
    """
    from richviz.features import feature_map

    modules = dict(model.named_modules())
    widths: dict[str, int] = {}
    hooks = []
    try:
        shape = source.input_shape(model) if source is not None else None
    except Exception:
        shape = None
    if shape is not None:

        def hook(name: str):
            def record(_module: nn.Module, _inputs: Any, out: Any) -> None:  # returns None:
                if isinstance(out, torch.Tensor):  # a hook's return value replaces the output
                    widths.setdefault(name, int(out[0].numel()))

            return record

        for name in names:
            if name in modules:
                hooks.append(modules[name].register_forward_hook(hook(name)))
        try:
            from richviz.devices import module_device, module_dtype

            x = torch.zeros((1, *shape), dtype=module_dtype(model), device=module_device(model))
            with torch.no_grad():
                from richviz.features import eval_mode

                with eval_mode(model):
                    out = model(x)
                    widths.setdefault(LOGITS, int(out[0].numel()))
                    widths.setdefault(
                        PENULTIMATE, int(feature_map(model, PENULTIMATE)(x)[0].numel())
                    )
        except Exception:
            pass
        finally:
            for h in hooks:
                h.remove()
    labels = {}
    for name in names:
        width = f" ({widths[name]})" if widths.get(name) else ""
        if name in modules:
            labels[name] = f"{name}: {type(modules[name]).__name__}{width}"
        else:
            labels[name] = f"{name}{width}"
    return labels


def _signed_margin_lines(
    margin: np.ndarray, predicted: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Decision boundary lines from the top-2 margin and predicted class.

    For each class c, ``+margin`` inside its region and ``-margin`` outside is zero exactly on
    the region's border, so its zero contour is that border (shared borders are found twice, at
    identical interpolated positions).
    """
    xs, ys = [np.array([])], [np.array([])]
    classes = np.unique(predicted)
    if len(classes) < 2:
        return np.array([]), np.array([])
    for c in classes:
        signed = np.where(predicted == c, margin, -margin)
        cx, cy = rendering.marching_squares(signed, u, v, 0.0)
        xs.append(cx)
        ys.append(cy)
        if len(classes) == 2:
            break
    return np.concatenate(xs), np.concatenate(ys)


class SliceViewer(BackgroundWork, widgets.VBox):
    """Heatmap of the log10 volume element on a slice, with ellipses and decision boundary.

    Parameters
    ----------
    model_or_run : an ``nn.Module`` or a :class:`richviz.checkpoints.Run`.
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
    step : Int >= 0, the checkpoint step shown.
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

    step = traitlets.Int(0, min=0, help="checkpoint step shown")
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
        **kwargs: Any,
    ):
        self._source = ModelSource(model_or_run, data)
        if decision is None:  # a random feature map's "classes" mean nothing
            decision = self._source.run is not None or (data is not None and data[1] is not None)
        self._step_slider_wanted = bool(step_slider) and self._source.run is not None
        if resolution < 2 or coarse_resolution < 2:
            raise ValueError(
                f"resolution={resolution} and coarse_resolution={coarse_resolution} must be >= 2"
            )
        if margin < 0:
            raise ValueError(f"margin={margin} must be >= 0")
        self._user_slice = slice
        self._margin = float(margin)
        self.coarse_resolution = int(coarse_resolution)
        self.theory_params = dict(theory_params) if theory_params else None
        self._fields = LRUCache(cache_size)  # full-resolution fields
        self._previews = LRUCache(16)  # coarse previews (not needed once the full one exists)
        self._theory_cache = LRUCache(8)
        #: why the theory overlay is missing ("" when drawn or off)
        self.theory_note = ""
        #: parameters of the last theory overlay computed (given or inferred), or None
        self.theory_used: dict[str, Any] | None = None
        self._ctx: _Context | None = None
        self._version = 0
        self._apply_lock = threading.RLock()
        if self._source.run is None:
            self._check_bare_model_inputs()
        self._worker = Worker("richviz-slice")
        self.compute_count = 0  #: number of fields computed (pullback_metric calls)
        self.frame: Frame | None = None  #: what is on screen
        self._locked_limits: dict[str, tuple[float, float]] = {}
        self._range_cache = LRUCache(16)  # run-wide colour ranges
        self._layer_labels: dict[str, str] = {}
        self._layers_known = False
        self._controls_sync = False

        steps = self._source.steps
        self._build_figure()
        self._build_controls(steps)
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
            if step is not None:
                self.step = int(step)
            elif steps:
                self.step = steps[-1]
        self.observe(
            self._on_request_change,
            names=[
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
            ],
        )
        self.observe(self._on_anchors, names=["anchors"])
        if steps:
            self.refresh()
        else:
            self._status("this run has no readable checkpoint", "error")

    # ------------------------------------------------------------------ construction

    def _check_bare_model_inputs(self) -> None:
        if self._user_slice is not None or self._source.data() is not None:
            return
        shape = self._source.input_shape()
        if shape != (2,):
            raise DataError(
                "SliceViewer(model): pass data=(x, y) (three inputs of different classes span the "
                "plane) or slice=Slice.plane(...) for a model whose inputs are not 2-D"
            )

    def _build_figure(self) -> None:
        self._image_widget = widgets.Image(
            value=rendering.encode_png(np.zeros((1, 1, 4), np.uint8)), format="png"
        )
        self._sx = bqplot.LinearScale(min=-1.0, max=1.0)
        self._sy = bqplot.LinearScale(min=-1.0, max=1.0)
        xy = {"x": self._sx, "y": self._sy}
        self.image_mark = bqplot.Image(image=self._image_widget, scales=xy, x=[-1, 1], y=[-1, 1])
        self.ellipse_mark = bqplot.Lines(
            x=[], y=[], scales=xy, colors=["white"], stroke_width=1.0, opacities=[0.85]
        )
        self.ellipse_near_mark = bqplot.Lines(
            x=[], y=[], scales=xy, colors=[EMPHASIS_COLOR], stroke_width=1.8
        )
        self.boundary_mark = bqplot.Lines(x=[], y=[], scales=xy, colors=["black"], stroke_width=2.0)
        self.theory_mark = bqplot.Lines(
            x=[], y=[], scales=xy, colors=[THEORY_COLOR], stroke_width=1.2, line_style="dashed"
        )
        # level labels of the theory contours
        self.theory_label_mark = bqplot.Label(
            x=[], y=[], text=[], scales=xy, colors=[THEORY_COLOR], default_size=11,
            font_weight="bold", align="middle",
        )  # fmt: skip
        # class colours (Okabe-Ito) filled, a dark rim so they read on any background
        self.points_mark = bqplot.Scatter(
            x=[], y=[], scales=xy, default_size=22, stroke="#202020", stroke_width=0.8,
            opacities=[0.95],
        )  # fmt: skip
        self.anchor_mark = bqplot.Scatter(
            x=[],
            y=[],
            scales=xy,
            marker="diamond",
            default_size=80,
            stroke="black",
            display_names=True,
        )
        self.axes = axes = [
            bqplot.Axis(scale=self._sx, label="u", grid_lines="none", tick_values=[]),
            bqplot.Axis(scale=self._sy, label="v", side="left", grid_lines="none", tick_values=[]),
        ]
        # bqplot applies the aspect ratio to the whole figure box (non-auto layout): a square
        # box with left + right == top + bottom margins gives a square plot area.
        margin = dict(FIGURE_MARGIN)
        self.figure = bqplot.Figure(
            marks=self._marks_for([]),
            axes=axes,
            min_aspect_ratio=1.0,
            max_aspect_ratio=1.0,
            padding_x=0.0,
            padding_y=0.0,
            title="log10 volume element",
            title_style={"font-size": "13px"},
            fig_margin=margin,
            layout=widgets.Layout(width=f"{FIGURE_SIZE}px", height=f"{FIGURE_SIZE}px"),
        )
        # The colour bar is a figure of its own beside the slice (a ColorAxis inside the slice
        # figure is drawn over the plot): a vertical gradient image on a linear value axis with
        # a few round ticks, its top and bottom aligned with the slice's plot area.
        self._cb_sx = bqplot.LinearScale(min=0.0, max=1.0)
        self._cb_sy = bqplot.LinearScale(min=0.0, max=1.0)
        self._colorbar_cmap = "viridis"
        self.colorbar_mark = bqplot.Image(
            image=widgets.Image(value=self._colorbar_png("viridis"), format="png"),
            scales={"x": self._cb_sx, "y": self._cb_sy},
            x=[0.0, 1.0],
            y=[0.0, 1.0],
        )
        ticks = rendering.nice_ticks(0.0, 1.0, COLORBAR_TICKS)
        self.color_axis = bqplot.Axis(
            scale=self._cb_sy,
            side="right",
            grid_lines="none",
            tick_values=ticks,
            tick_format=rendering.tick_format(ticks),
            label="log10 volume",
            label_offset="48px",
            tick_style={"font-size": "11px"},
        )
        self.colorbar = bqplot.Figure(
            marks=[self.colorbar_mark],
            axes=[self.color_axis],
            padding_x=0.0,
            padding_y=0.0,
            fig_margin={"top": margin["top"], "bottom": margin["bottom"], "left": 4, "right": 62},
            layout=widgets.Layout(
                width=f"{COLORBAR_WIDTH}px", height=f"{FIGURE_SIZE}px", flex="0 0 auto"
            ),
        )
        self.figure.layout.flex = "0 0 auto"

    @property
    def _line_marks(self) -> list[bqplot.Lines]:
        return [self.ellipse_mark, self.ellipse_near_mark, self.theory_mark, self.boundary_mark]

    def _marks_for(self, lines: list[bqplot.Lines]) -> list[bqplot.Mark]:
        """Figure marks in drawing order with the given (non-empty) Lines marks."""
        ordered = [m for m in self._line_marks if m in lines]
        labels = [self.theory_label_mark] if len(self.theory_label_mark.x) else []
        return [self.image_mark, *ordered, *labels, self.points_mark, self.anchor_mark]

    @staticmethod
    def _colorbar_png(cmap: str) -> bytes:
        return rendering.encode_png(rendering.colorbar_rgba(cmap))

    def _draw_colorbar(self, frame: Frame) -> None:
        """Colour bar for ``frame``: gradient (or class swatches), range, round ticks, label."""
        key = f"classes{frame.classes}" if frame.cmap == "classes" else frame.cmap
        if key != self._colorbar_cmap:
            old = self.colorbar_mark.image  # bqplot redraws on a new image widget only
            self.colorbar_mark.image = widgets.Image(
                value=rendering.encode_png(_colorbar_pixels(frame)), format="png"
            )
            old.close()
            self._colorbar_cmap = key
        with self._cb_sy.hold_sync():
            self._cb_sy.min, self._cb_sy.max = frame.vmin, frame.vmax
        self.colorbar_mark.y = [frame.vmin, frame.vmax]
        ticks = (
            np.arange(frame.classes, dtype=float)
            if frame.cmap == "classes"
            else rendering.nice_ticks(frame.vmin, frame.vmax, COLORBAR_TICKS)
        )
        # Format first, in its own message: bqplot redraws the axis on new tick values and
        # would label them with the old format if both changed in one update.
        self.color_axis.tick_format = rendering.tick_format(ticks)
        self.color_axis.tick_values = ticks
        self.color_axis.label = frame.bar_label

    def _build_controls(self, steps: list[int]) -> None:
        style = {"description_width": "initial"}
        self.layer_picker = widgets.Dropdown(
            options=[PENULTIMATE], value=PENULTIMATE, description="layer", style=style
        )
        self.resolution_picker = widgets.Dropdown(
            options=list(RESOLUTIONS), value=96, description="res", style=style
        )
        self.density_slider = widgets.IntSlider(
            value=12, min=0, max=32, description="ellipses", style=style
        )
        self.mode_picker = widgets.Dropdown(
            options=ELLIPSE_MODES, value="stretch", description="ellipse", style=style
        )
        self.relative_box = widgets.Checkbox(
            value=False,
            description="relative to step 0",
            indent=False,
            layout={"width": "145px"},
            disabled=self._source.run is None,
        )
        self.volume_picker = widgets.Dropdown(
            options=VOLUME_MODES, value="slice", description="volume", style=style
        )
        self.lock_box = widgets.Checkbox(
            value=False, description="lock", indent=False, layout={"width": "70px"}
        )
        self.show_picker = widgets.Dropdown(
            options=SHOW_MODES, value="volume", description="show", style=style
        )
        self.range_picker = widgets.Dropdown(options=COLOR_RANGES, value="run", style=style)
        self.legend = widgets.HTML(value="", layout={"min_height": "20px"})
        self.theory_picker = widgets.Dropdown(
            options=THEORY_MODES, value="off", description="theory at init", style=style
        )
        for w in (self.layer_picker, self.show_picker, self.theory_picker, self.volume_picker):
            w.layout.width = "255px"
        for w in (self.mode_picker, self.range_picker):
            w.layout.width = "160px"
        self.resolution_picker.layout.width = "115px"
        self.density_slider.layout.width = "255px"
        # A short description with ipywidgets' default label width (80 px) would squeeze the
        # number box to nothing in a narrow widget: size the label to its text.
        self.anchor_pickers = [
            widgets.BoundedIntText(
                value=0,
                min=0,
                max=0,
                description=name,
                style={"description_width": "initial"},
                layout={"width": "120px", "margin": "2px 12px 2px 0"},
            )
            for name in ("A", "B", "C")
        ]
        self.anchor_button = widgets.Button(description="new plane", layout={"width": "100px"})
        self.anchor_button.on_click(lambda _b: self._apply_anchor_pickers())
        self.anchor_row = widgets.HBox(
            [*self.anchor_pickers, self.anchor_button], layout={"display": "none"}
        )
        self.progress = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="field", layout={"width": "260px"}
        )
        self.status = widgets.HTML(value=status_html("starting…"))
        self.export_name = widgets.Text(
            value="richviz-slice", description="file", layout={"width": "220px"}
        )
        self.png_button = widgets.Button(description="PNG", layout={"width": "70px"})
        self.svg_button = widgets.Button(description="SVG", layout={"width": "70px"})
        self.heatmap_button = widgets.Button(description="heatmap PNG", layout={"width": "110px"})
        self.png_button.on_click(lambda _b: self._guard(self.save_png))
        self.svg_button.on_click(lambda _b: self._guard(self.save_svg))
        self.heatmap_button.on_click(lambda _b: self._guard(self.export_heatmap))
        self.thumbnails = widgets.HBox([])

        for picker, name in (
            (self.layer_picker, "layer"),
            (self.resolution_picker, "resolution"),
            (self.density_slider, "ellipse_density"),
            (self.mode_picker, "ellipse_mode"),
            (self.relative_box, "relative"),
            (self.theory_picker, "theory"),
            (self.lock_box, "lock_colors"),
            (self.volume_picker, "volume"),
            (self.show_picker, "show"),
            (self.range_picker, "color_range"),
        ):
            picker.observe(self._control_to_trait(name), names="value")
            self.observe(self._trait_to_control(picker), names=[name])

        # A step slider (and Play) of its own when the viewer stands alone on a run.
        options = [(str(s), s) for s in steps] or [("–", 0)]
        self.step_slider = widgets.SelectionSlider(
            options=options, description="step", continuous_update=True,
            layout={"width": "400px"},
        )  # fmt: skip
        self.step_play = widgets.Play(
            value=len(options) - 1, min=0, max=max(len(options) - 1, 0), interval=500
        )
        traitlets.link((self.step_play, "value"), (self.step_slider, "index"))
        self.step_slider.observe(self._on_step_slider, names="value")
        self.observe(self._on_step_trait, names=["step"])
        self.step_row = widgets.HBox(
            [self.step_play, self.step_slider],
            layout={"display": "flex" if self._step_slider_wanted else "none"},
        )
        self.controls = widgets.VBox(
            [
                self.step_row,
                widgets.HBox([self.layer_picker, self.show_picker]),
                widgets.HBox([self.theory_picker, self.volume_picker]),
                widgets.HBox([self.density_slider, self.mode_picker]),
                widgets.HBox(
                    [self.range_picker, self.resolution_picker, self.relative_box, self.lock_box]
                ),
                self.anchor_row,
            ]
        )
        self.footer = widgets.VBox(
            [
                widgets.HBox([self.progress, self.status]),
                widgets.HBox(
                    [self.export_name, self.png_button, self.svg_button, self.heatmap_button]
                ),
            ]
        )

    def _on_step_slider(self, change: dict) -> None:
        if change["new"] is not None and self._source.steps and self.step != change["new"]:
            self.step = change["new"]

    def _on_step_trait(self, change: dict) -> None:
        if change["new"] in self._source.steps and self.step_slider.value != change["new"]:
            self.step_slider.value = change["new"]

    def _control_to_trait(self, name: str):
        def handler(change: dict) -> None:
            if not self._controls_sync:
                setattr(self, name, change["new"])

        return handler

    def _trait_to_control(self, picker: widgets.ValueWidget):
        def handler(change: dict) -> None:
            new = change["new"]
            self._controls_sync = True
            try:
                if isinstance(picker, widgets.Dropdown):
                    values = [o[1] if isinstance(o, tuple) else o for o in picker.options]
                    if new not in values:
                        options = list(picker.options) + [new]
                        if all(isinstance(v, (int, float)) for v in options):
                            options = sorted(options)
                        picker.options = options
                picker.value = new
            finally:
                self._controls_sync = False

        return handler

    def _set_layer_options(self, model: nn.Module) -> None:
        if self._layers_known:
            return
        try:
            names = layer_names(model)
        except Exception:
            names = [PENULTIMATE, LOGITS]
        if self.layer not in names:
            names.append(self.layer)
        self._layer_labels = layer_labels(model, names, self._source)
        self._controls_sync = True
        try:
            self.layer_picker.options = [(self._layer_labels.get(n, n), n) for n in names]
            self.layer_picker.value = self.layer
        finally:
            self._controls_sync = False
        self._layers_known = True

    # ------------------------------------------------------------------ public API

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
        req = _Request(
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
        )
        generation = self._worker.cancel()
        if self._render_cached(req, generation):
            return
        self._worker.submit(self._job, req)

    def heatmap_png(self, scale: int = 1) -> bytes:
        """The heatmap on screen as PNG bytes (headless; ``scale``: pixel enlargement factor)."""
        if self.frame is None:
            raise ValueError("no field has been computed yet")
        rgba = self.frame.rgba
        if rgba is None:
            rgba = rendering.field_to_rgba(
                self.frame.values, self.frame.vmin, self.frame.vmax, self.frame.cmap
            )
        return rendering.encode_png(rendering.upscale(rgba, scale))

    def export_heatmap(self, path: str | os.PathLike | None = None, scale: int = 4) -> Path:
        """Write :meth:`heatmap_png` to ``path`` (default ``<file box>-step<step>-heatmap.png``)."""
        if path is None:
            step = self.frame.step if self.frame else self.step
            path = f"{self.export_name.value}-step{step}-heatmap.png"
        out = atomic_write_bytes(path, self.heatmap_png(scale))
        self._status(f"heatmap written to {out}")
        return out

    def canvas(self, canvas: export.Canvas | None = None, x0: float = 0.0,
               y0: float = 0.0) -> export.Canvas:  # fmt: skip
        """Draw the view (title, heatmap, ellipses, boundary, points, anchors, axes, colour
        bar with ticks and label, legend) on an :class:`export.Canvas` at (x0, y0)."""
        frame = self.frame
        if frame is None:
            raise ValueError("no field has been computed yet")
        m = FIGURE_MARGIN
        size = 400.0
        width, height = m["left"] + size + 110, m["top"] + size + m["bottom"] + 44
        if canvas is None:
            canvas = export.Canvas(width, height)
        px, py = x0 + m["left"], y0 + m["top"]
        (u0, u1), (v0, v1) = frame.extent
        (a0, a1), (b0, b1) = rendering.square_limits((u0, u1), (v0, v1))

        def tx(u: Any) -> np.ndarray:
            return px + (np.asarray(u, float) - a0) / (a1 - a0) * size

        def ty(v: Any) -> np.ndarray:
            return py + (1 - (np.asarray(v, float) - b0) / (b1 - b0)) * size

        canvas.text(x0 + m["left"] + size / 2, y0 + 20, f"{frame.label} · step {frame.step}",
                    size=13, anchor="middle")  # fmt: skip
        ix0, ix1, iy0, iy1 = float(tx(u0)), float(tx(u1)), float(ty(v1)), float(ty(v0))
        rgba = frame.rgba
        if rgba is None:
            rgba = rendering.field_to_rgba(frame.values, frame.vmin, frame.vmax, frame.cmap)
        canvas.image(rgba, ix0, iy0, ix1 - ix0, iy1 - iy0)
        ellipse_colour = "#ffffff" if frame.cmap == "viridis" else "#404040"
        for (xs, ys), colour, w, dash in (
            (frame.ellipses, ellipse_colour, 1.0, "solid"),
            (frame.ellipses_near, EMPHASIS_COLOR, 1.8, "solid"),
            (frame.theory_lines, THEORY_COLOR, 1.2, "dashed"),
            (frame.boundary, "#000000", 2.0, "solid"),
        ):
            if len(xs):
                canvas.polyline(tx(xs), ty(ys), colour, width=w, dash=dash)
        if frame.theory_labels is not None:
            for x, y, t in zip(*frame.theory_labels, strict=True):
                canvas.text(float(tx(x)), float(ty(y)), t, size=11, anchor="middle",
                            color=THEORY_COLOR, weight="bold")  # fmt: skip
        ctx = self._ctx
        if ctx is not None and ctx.points is not None:
            labels = ctx.labels if ctx.labels is not None else np.zeros(len(ctx.points), int)
            for (x, y), c in zip(ctx.points, labels, strict=True):
                colour = rendering.class_color(c) if ctx.labels is not None else "#444444"
                canvas.marker(float(tx(x)), float(ty(y)), "circle", 5.0, colour, "#202020")
        if ctx is not None and ctx.anchors is not None:
            for (x, y), name in zip(ctx.anchors, "ABC", strict=False):
                canvas.marker(float(tx(x)), float(ty(y)), "diamond", 10.0, "#ffffff", "#000000")
                canvas.text(float(tx(x)) + 8, float(ty(y)) - 6, name, size=12, weight="bold")
        canvas.rect(px, py, size, size, stroke="#888")
        for axis, (lo, hi) in (("u", (a0, a1)), ("v", (b0, b1))):
            ticks = rendering.nice_ticks(lo, hi, 5)
            texts = (
                rendering.format_ticks(ticks, rendering.tick_format(ticks)) if len(ticks) else []
            )
            for t, text in zip(ticks, texts, strict=True):
                if axis == "u":
                    x = float(tx(t))
                    canvas.polyline([x, x], [py + size, py + size + 4], "#444")
                    canvas.text(x, py + size + 16, text, size=10, anchor="middle")
                else:
                    y = float(ty(t))
                    canvas.polyline([px - 4, px], [y, y], "#444")
                    canvas.text(px - 7, y + 3.5, text, size=10, anchor="end")
        canvas.text(px + size / 2, py + size + 32, "u", size=11, anchor="middle")
        canvas.text(px - 40, py + size / 2, "v", size=11, anchor="middle")
        # colour bar
        bx = px + size + 14
        canvas.image(_colorbar_pixels(frame), bx, py, 14, size)
        canvas.rect(bx, py, 14, size, stroke="#888")
        if frame.cmap == "classes":
            ticks = np.arange(frame.classes, dtype=float)
            texts = [str(int(t)) for t in ticks]
        else:
            ticks = rendering.nice_ticks(frame.vmin, frame.vmax, COLORBAR_TICKS)
            texts = (
                rendering.format_ticks(ticks, rendering.tick_format(ticks)) if len(ticks) else []
            )
        for t, text in zip(ticks, texts, strict=True):
            y = py + (1 - (t - frame.vmin) / (frame.vmax - frame.vmin)) * size
            canvas.polyline([bx + 14, bx + 18], [y, y], "#444")
            canvas.text(bx + 21, y + 3.5, text, size=10)
        canvas.text(bx + 70, py + size / 2, frame.bar_label, size=11, anchor="middle", rotate=90)
        # legend below
        lx, ly = px, py + size + 50
        for kind, colour, label in self._legend_entries(frame):
            if kind == "point":
                canvas.marker(lx + 6, ly - 4, "circle", 8.0, colour, "#202020")
                lx += 14
            else:
                if colour == THEORY_COLOR:
                    canvas.polyline([lx, lx + 20], [ly - 4, ly - 4], "#888", width=4)
                canvas.polyline([lx, lx + 20], [ly - 4, ly - 4], colour, width=2,
                                dash="dashed" if kind == "dash" else "solid")  # fmt: skip
                lx += 24
            canvas.text(lx, ly, label, size=10)
            lx += 7 * len(label) + 14
        return canvas

    def save_png(self, path: str | os.PathLike | None = None, scale: float = 2.0) -> Path:
        """Write the whole view (heatmap, colour bar, legend) as PNG on the server at ``scale``
        x resolution; default ``<file box>-step<step>.png``. The status line names the file."""
        path = self._export_path(path, ".png")
        out = atomic_write_bytes(path, export.to_png(self.canvas(), scale))
        self._status(f"view written to {out.resolve()}")
        return out

    def save_svg(self, path: str | os.PathLike | None = None) -> Path:
        """Write the whole view as SVG on the server; default ``<file box>-step<step>.svg``."""
        path = self._export_path(path, ".svg")
        out = atomic_write_bytes(path, export.to_svg(self.canvas()).encode())
        self._status(f"view written to {out.resolve()}")
        return out

    def _export_path(self, path: str | os.PathLike | None, suffix: str) -> Path:
        if path is not None:
            return Path(path)
        step = self.frame.step if self.frame else self.step
        return Path(f"{self.export_name.value}-step{step}{suffix}")

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

    def _apply_anchor_pickers(self) -> None:
        self.anchors = [int(p.value) for p in self.anchor_pickers]

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as exc:  # a button must never break the widget
            self._status(error_line(exc), "error")

    def _status(self, message: str, kind: str = "info") -> None:
        self.status.value = status_html(message, kind)

    # ------------------------------------------------------------------ background work

    def _job(self, job: Job, req: _Request) -> None:
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

    def _have(self, req: _Request, res: int) -> bool:
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

    def _render_cached(self, req: _Request, generation: int) -> bool:
        """Render synchronously when slice, fields and theory are all cached."""
        ctx = self._ctx
        if ctx is None or ctx.version != req.version or not self._have(req, req.resolution):
            return False
        if (
            req.color_range == "run"
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

    def _context(self, job: Job, req: _Request) -> _Context:
        ctx = self._ctx
        if ctx is not None and ctx.version == req.version:
            return ctx
        from richviz.geometry import Slice

        model = self._source.load(req.step, req.device)
        self._set_layer_options(model)
        data = self._source.data()
        x, y = data if data is not None else (None, None)
        shape = tuple(x.shape[1:]) if x is not None else self._source.input_shape(model)
        two_d = shape == (2,)
        ctx = _Context(version=req.version, slice=None, two_d=two_d)
        if self._user_slice is not None:
            ctx.slice = self._user_slice
        elif two_d:
            if x is not None:
                ctx.slice = Slice.covering(x, margin=self._margin)
            else:
                ctx.slice = Slice.square(torch.zeros(2), 1.0)
        else:
            if x is None:
                raise DataError("pass data=(x, y) or slice=... : an image slice needs three inputs")
            idx = self._anchor_indices(x, y)
            ctx.slice = Slice.plane(x[idx[0]], x[idx[1]], x[idx[2]])
            ctx.anchor_indices = list(idx)
            ctx.anchor_labels = [
                f"{'ABC'[k]} #{i}" + (f" (class {int(y[i])})" if y is not None else "")
                for k, i in enumerate(idx)
            ]
            ctx.thumbnails = [thumbnail_png(x[i]) for i in idx]
            ctx.anchors = _numpy(ctx.slice.to_uv(x[idx]))
        if x is not None and two_d:
            keep = slice_points(len(x), MAX_POINTS)
            ctx.points = _numpy(ctx.slice.to_uv(x[keep]))
            ctx.labels = y[keep].numpy() if y is not None else None
        job.check()
        self._ctx = ctx
        self._apply_context(ctx, x if not two_d else None)
        return ctx

    def _anchor_indices(self, x: torch.Tensor, y: torch.Tensor | None) -> list[int]:
        n = len(x)
        if len(self.anchors) == 3:
            bad = [i for i in self.anchors if not 0 <= i < n]
            if bad:
                raise ValueError(f"anchors={list(self.anchors)}: indices must lie in [0, {n - 1}]")
            return list(self.anchors)
        idx: list[int] = []
        if y is not None:
            seen: set[int] = set()
            for i, label in enumerate(y.tolist()):
                if label not in seen:
                    seen.add(label)
                    idx.append(i)
                if len(idx) == 3:
                    break
        for i in range(n):
            if len(idx) == 3:
                break
            if i not in idx:
                idx.append(i)
        if len(idx) < 3:
            raise DataError(f"an image plane needs three inputs, the data has {n}")
        return idx

    def _field(self, job: Job, req: _Request, step: int, res: int, ctx: _Context) -> _Field:
        key = (req.version, step, req.layer, res)
        cache = self._fields if res == req.resolution else self._previews
        fld = cache.get(key)
        if fld is None:
            from richviz.features import feature_map
            from richviz.geometry import decision_field, pullback_metric

            model = self._source.load(step, req.device)
            job.check()
            self._set_layer_options(model)
            self.progress.value = 0.0
            report = job.progress_callback(self._set_progress)
            phi = feature_map(model, req.layer)
            if COMPUTE.waiting_for_others():
                self._status(f"step {step}: waiting for the metrics computation…", "busy")
            with COMPUTE.hold():
                job.check()
                mf = pullback_metric(phi, ctx.slice, resolution=res, progress=report)
                self.compute_count += 1
                job.check()
                dec = decision_field(model, ctx.slice, resolution=res)
            u, v = _numpy(mf.u), _numpy(mf.v)
            margin = _numpy(dec.margin)
            boundary = _signed_margin_lines(margin, dec.predicted.detach().cpu().numpy(), u, v)
            fld = _Field(u, v, _numpy(mf.log10_volume), margin, boundary, mf)
            fld.entropy = _numpy(dec.entropy)
            fld.predicted = dec.predicted.detach().cpu().numpy()
            cache.put(key, fld)
            self.progress.value = 1.0
        if req.volume == "full" and fld.full_log10 is None:
            fld.full_log10, fld.full_k = self._full_volume(job, req, step, res, ctx)
        if req.show == "curvature" and fld.curvature is None:
            fld.curvature = self._curvature(job, req, step, res, ctx)
        self._ellipses(fld, req)
        return fld

    def _curvature(self, job: Job, req: _Request, step: int, res: int, ctx: _Context) -> np.ndarray:
        """Scalar curvature R = 2K of the pulled-back metric on the grid (float64)."""
        if not ctx.two_d:
            raise DataError("show='curvature' needs 2-D inputs (the metric on the input plane)")
        from richviz.features import feature_map
        from richviz.geometry import scalar_curvature

        model = self._source.load(step, req.device)
        phi = feature_map(model, req.layer)
        self._status(f"step {step}: curvature on a {res}×{res} grid…", "busy")
        with COMPUTE.hold():
            job.check()
            out = scalar_curvature(phi, ctx.slice, resolution=res, dtype=torch.float64).scalar
        return _numpy(out)

    def _run_limits(
        self, job: Job | None, req: _Request, ctx: _Context
    ) -> tuple[float, float] | None:
        """One colour range for the whole run: the robust range (1st to 99th percentile) of
        every step's RANGE_RESOLUTION² field of what is shown (minus step 0 for relative views,
        minus the theory for the difference view; symmetric about 0 for both).

        None where a fixed range does not apply (a bare model, per-step colours, the full-space
        volume, curvature; class regions and entropy have fixed ranges of their own).
        """
        if (
            req.color_range != "run"
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
        from richviz.features import feature_map
        from richviz.geometry import pullback_metric

        theory = None
        if difference:
            theory = self._theory(job, req, RANGE_RESOLUTION, ctx)
            if theory is None:
                return None
        self._status("fixing the colour range over the run…", "busy")
        fields = []
        for step in self._source.steps:
            job.check()
            model = self._source.load(step, req.device)
            with COMPUTE.hold():
                mf = pullback_metric(
                    feature_map(model, req.layer), ctx.slice, resolution=RANGE_RESOLUTION
                )
            fields.append(_numpy(mf.log10_volume))
        values = np.stack(fields)
        if req.relative:
            values = values - values[0]
        elif theory is not None:
            values = values - theory
        limits = rendering.color_limits(values, symmetric=req.relative or difference)
        self._range_cache.put(key, limits)
        return limits

    def _full_volume(
        self, job: Job, req: _Request, step: int, res: int, ctx: _Context
    ) -> tuple[np.ndarray, int]:
        """Effective log10 volume of the whole input space at the grid points:
        the sum of log10 of the top-k singular values of J / sqrt(p), and k."""
        from richviz.devices import module_device, module_dtype
        from richviz.features import feature_map
        from richviz.geometry import effective_volume

        model = self._source.load(step, req.device)
        phi = feature_map(model, req.layer)
        points = ctx.slice.to_input(
            ctx.slice.grid_uv(res), dtype=module_dtype(model), device=module_device(model)
        )
        self._status(f"step {step}: full-space volume (top-{FULL_K} singular values)…", "busy")
        self.progress.value = 0.0
        out = []
        block = 256
        with COMPUTE.hold():
            with torch.no_grad():
                p = phi(points[:1]).shape[1]
            k = min(FULL_K, int(np.prod(ctx.slice.input_shape)), p)
            for start in range(0, len(points), block):
                job.check()
                _, logvol = effective_volume(phi, points[start : start + block], k=k)
                out.append(_numpy(logvol))
                self.progress.value = min(1.0, (start + block) / len(points))
        return np.concatenate(out).reshape(res, res), k

    def _ellipses(self, fld: _Field, req: _Request) -> None:
        if req.density <= 0 or (req.density, req.mode) in fld.ellipses:
            return
        from richviz.geometry import ellipse_sites, metric_ellipses

        density = min(req.density, len(fld.u))  # a coarse preview has fewer cells
        ell = metric_ellipses(fld.metric_field, density=density, mode=req.mode)
        xs, ys = ell.xs, ell.ys
        # Emphasis near the decision boundary: sites among the smallest NEAR_BAND of margins.
        rows, cols = ellipse_sites(fld.metric_field, density)
        finite = fld.margin[np.isfinite(fld.margin)]
        cut = np.quantile(finite, NEAR_BAND) if finite.size else -np.inf
        near = (fld.margin[np.ix_(rows, cols)] <= cut).reshape(-1)
        near_xy, far_xy = rendering.split_paths(_numpy(xs), _numpy(ys), near)
        fld.ellipses[(req.density, req.mode)] = (far_xy, near_xy)

    def _set_progress(self, value: float) -> None:
        self.progress.value = float(value)

    def _theory(self, job: Job, req: _Request, res: int, ctx: _Context) -> np.ndarray | None:
        """log10 of the infinite-width volume element at initialisation on the slice grid.

        None when no theory describes the model; :attr:`theory_note` then says why.
        """
        key = (req.version, req.layer, res)
        cached = self._theory_cache.get(key)
        if cached is None:
            from richviz.theory import NoTheoryError, infinite_width_field

            try:
                params = self.theory_params or self._infer_theory_params(req)
            except NoTheoryError as exc:
                cached = (None, f"no theory for this model ({exc})", None)
            else:
                job.check()
                with COMPUTE.hold():
                    out = _numpy(infinite_width_field(ctx.slice, res, **params).log10_volume)
                cached = (out, "", dict(params))
            self._theory_cache.put(key, cached)
        out, self.theory_note, self.theory_used = cached
        return out

    def _infer_theory_params(self, req: _Request) -> dict[str, Any]:
        """Activation and init scales of the first step's model (:func:`infer_theory_params`)."""
        from richviz.theory import infer_theory_params

        model = self._source.load(self._source.steps[0], req.device)
        return infer_theory_params(model, req.layer)

    # ------------------------------------------------------------------ drawing

    def _compose(
        self,
        req: _Request,
        res: int,
        fld: _Field,
        base: _Field | None,
        theory: np.ndarray | None,
    ) -> Frame:
        empty = (np.array([]), np.array([]))
        notes = []
        full = req.volume == "full"
        classes = 0
        if req.show == "classes":
            values = fld.predicted.astype(float)
            classes = int(self._num_classes(fld))
            vmin, vmax, cmap = -0.5, classes - 0.5, "classes"
            label, bar_label = "class regions (argmax)", "predicted class"
            rgba = rendering.class_regions_rgba(fld.predicted)
        elif req.show == "entropy":
            values = fld.entropy
            vmin, vmax, cmap = 0.0, 1.0, "viridis"
            label, bar_label = "softmax entropy (log base C)", "entropy"
            rgba = None
        elif req.show == "curvature":
            values = fld.curvature
            vmin, vmax = rendering.color_limits(values, symmetric=True, percentile=2.0)
            cmap, label, bar_label = "diverging", "scalar curvature R = 2K", "R = 2K (per step)"
            rgba = None
        else:
            values = fld.full_log10 if full else fld.log10_volume
            what = f"effective log10 volume (top {fld.full_k} s.v.)" if full else "log10 volume"
            cmap, label = "viridis", what if full else "log10 volume element"
            bar_label = "effective log10 volume" if full else "log10 volume"
            if base is not None:
                values = values - (base.full_log10 if full else base.log10_volume)
                cmap = "diverging"
                label = f"{what}: step {req.step} − step {self._source.steps[0]}"
                bar_label = f"Δ {bar_label} from step {self._source.steps[0]}"
            elif req.theory == "difference" and theory is not None:
                values = values - theory
                cmap, label = "diverging", "log10 vol − theory at init"
                bar_label = "log10 volume − theory"
            limits = self._locked_limits.get(cmap) if req.lock else None
            if limits is None and not req.lock:
                limits = self._run_limits(None, req, self._ctx) if self._ctx else None
            if limits is None:
                limits = rendering.color_limits(values, symmetric=cmap == "diverging")
                if req.lock:
                    self._locked_limits[cmap] = limits
            vmin, vmax = limits
            rgba = None
            raw = fld.full_log10 if full else fld.log10_volume
            finite = raw[np.isfinite(raw)]
            if finite.size and float(np.ptp(finite)) < 1e-6 * max(1.0, float(np.abs(finite).max())):
                notes.append(
                    f"layer {req.layer}: the volume element is constant on this slice "
                    "(an affine function of the input)"
                )
        if rgba is None:
            rgba = rendering.field_to_rgba(values, vmin, vmax, cmap)
        png = rendering.encode_png(rgba)
        far, near = fld.ellipses.get((req.density, req.mode), (empty, empty))
        if req.density <= 0:
            far, near = empty, empty
        elif not req.decision and len(near[0]):  # no emphasis without a decision boundary
            far = (np.concatenate([far[0], near[0]]), np.concatenate([far[1], near[1]]))
            near = empty
        theory_lines, theory_labels = empty, None
        if req.theory == "contours" and theory is not None:
            finite = theory[np.isfinite(theory)]
            levels = rendering.nice_ticks(float(finite.min()), float(finite.max()), 7)
            levels = levels[(levels > finite.min()) & (levels < finite.max())]
            theory_lines = rendering.contour_lines(theory, fld.u, fld.v, levels)
            theory_labels = _contour_labels(theory, fld.u, fld.v, levels)
        if req.theory != "off" and self.theory_note:
            notes.append(self.theory_note)
        return Frame(
            step=req.step,
            layer=req.layer,
            resolution=res,
            values=values,
            vmin=vmin,
            vmax=vmax,
            cmap=cmap,
            label=label,
            png=png,
            extent=rendering.image_extent(fld.u, fld.v),
            ellipses=far,
            ellipses_near=near,
            boundary=fld.boundary if req.decision else empty,
            theory_lines=theory_lines,
            bar_label=bar_label,
            note=" · ".join(notes),
            rgba=rgba,
            theory_labels=theory_labels,
            classes=classes,
            decision=req.decision,
        )

    def _num_classes(self, fld: _Field) -> int:
        data = self._source.data()
        n = int(fld.predicted.max()) + 1 if fld.predicted is not None and fld.predicted.size else 2
        if data is not None and data[1] is not None and len(data[1]):
            n = max(n, int(data[1].max()) + 1)
        return max(n, 2)

    def _apply(self, generation: int, frame: Frame, ctx: _Context) -> None:
        with self._apply_lock:
            if generation != self._worker.generation:
                return
            (u0, u1), (v0, v1) = frame.extent
            (x0, x1), (y0, y1) = rendering.square_limits((u0, u1), (v0, v1))
            with self._sx.hold_sync():
                self._sx.min, self._sx.max = x0, x1
            with self._sy.hold_sync():
                self._sy.min, self._sy.max = y0, y1
            for axis, (lo, hi) in zip(self.axes, ((x0, x1), (y0, y1)), strict=True):
                ticks = rendering.nice_ticks(lo, hi, 6)  # a few round ticks, never a crowd
                if len(axis.tick_values) != len(ticks) or not np.allclose(axis.tick_values, ticks):
                    axis.tick_format = rendering.tick_format(ticks)
                    axis.tick_values = ticks
            self._draw_colorbar(frame)
            self.figure.title = frame.label
            ellipse_colour = "white" if frame.cmap == "viridis" else "#404040"
            if list(self.ellipse_mark.colors) != [ellipse_colour]:
                self.ellipse_mark.colors = [ellipse_colour]  # contrast on light diverging colours
            # bqplot's Image view redraws on a new ``image`` widget, not on its value: swap it.
            old = self.image_mark.image
            self._image_widget = widgets.Image(value=frame.png, format="png")
            self.image_mark.image = self._image_widget
            old.close()
            with self.image_mark.hold_sync():
                self.image_mark.x = [u0, u1]
                self.image_mark.y = [v0, v1]
            tx, ty, texts = frame.theory_labels or (np.array([]), np.array([]), [])
            with self.theory_label_mark.hold_sync():
                self.theory_label_mark.x, self.theory_label_mark.y = tx, ty
                self.theory_label_mark.text = list(texts)
            for mark, (xs, ys) in (
                (self.ellipse_mark, frame.ellipses),
                (self.ellipse_near_mark, frame.ellipses_near),
                (self.boundary_mark, frame.boundary),
                (self.theory_mark, frame.theory_lines),
            ):
                if len(xs) and np.isnan(xs[-1]):
                    # bqplot puts a curve label at the last point: it must not be NaN
                    xs, ys = xs[:-1], ys[:-1]
                with mark.hold_sync():
                    mark.x, mark.y = xs, ys
            # Only non-empty Lines marks go into the figure: bqplot draws an empty one as an
            # invalid path and places its curve label at an undefined point.
            marks = self._marks_for([m for m in self._line_marks if len(m.x)])
            if marks != list(self.figure.marks):
                self.figure.marks = marks
            self.frame = frame
            self.legend.value = self._legend_html(frame)
            with self.hold_trait_notifications():
                self.shown_step = frame.step
                self.shown_resolution = frame.resolution
            done = "" if frame.resolution == self.resolution else " (coarse preview)"
            note = f" · {frame.note}" if frame.note else ""
            self._status(
                f"step {frame.step} · {frame.layer} · {frame.resolution}×{frame.resolution}{done}"
                f"{note}"
            )

    def _legend_entries(self, frame: Frame) -> list[tuple[str, str, str]]:
        """(kind, colour, label) of what the figure shows: classes, lines, ellipses."""
        entries = []
        ctx = self._ctx
        if ctx is not None and ctx.labels is not None and len(ctx.labels):
            for c in sorted({int(c) for c in ctx.labels}):
                entries.append(("point", rendering.class_color(c), f"class {c}"))
        if frame.decision and len(frame.boundary[0]):
            entries.append(("line", "#000000", "decision boundary"))
        if len(frame.ellipses_near[0]):
            entries.append(("line", EMPHASIS_COLOR, "ellipses near the boundary"))
        if len(frame.theory_lines[0]):
            entries.append(("dash", THEORY_COLOR, "theory at init (log10 vol)"))
        return entries

    def _legend_html(self, frame: Frame) -> str:
        items = []
        for kind, color, label in self._legend_entries(frame):
            c = html.escape(color)
            if kind == "point":
                sample = f'<circle cx="7" cy="6" r="4.5" fill="{c}" stroke="#202020"/>'
                width = 14
            else:
                dash = ' stroke-dasharray="4,3"' if kind == "dash" else ""
                outline = '<line x1="1" y1="6" x2="21" y2="6" stroke="#888" stroke-width="4"/>'
                sample = (outline if color == THEORY_COLOR else "") + (
                    f'<line x1="1" y1="6" x2="21" y2="6" stroke="{c}" stroke-width="2"{dash}/>'
                )
                width = 22
            items.append(
                '<span style="white-space:nowrap;margin-right:12px">'
                f'<svg width="{width}" height="12" style="vertical-align:middle">{sample}</svg> '
                f"{html.escape(label)}</span>"
            )
        return (
            '<div class="richviz-legend" style="font-size:11px;padding-left:50px">'
            f"{''.join(items)}</div>"
        )

    def _apply_context(self, ctx: _Context, x_images: torch.Tensor | None) -> None:
        with self._apply_lock:
            if ctx.points is not None:
                colors = (
                    [rendering.class_color(c) for c in ctx.labels]
                    if ctx.labels is not None
                    else ["#444444"]
                )
                with self.points_mark.hold_sync():
                    self.points_mark.x, self.points_mark.y = ctx.points[:, 0], ctx.points[:, 1]
                    self.points_mark.colors = colors
            if ctx.anchors is not None:
                with self.anchor_mark.hold_sync():
                    self.anchor_mark.x, self.anchor_mark.y = ctx.anchors[:, 0], ctx.anchors[:, 1]
                    self.anchor_mark.names = ["A", "B", "C"][: len(ctx.anchors)]
                    self.anchor_mark.colors = ["#ffffff"]
                self.thumbnails.children = [
                    widgets.VBox(
                        [
                            widgets.Image(value=png, format="png", width=64, height=64),
                            widgets.Label(label),
                        ],
                        layout={"margin": "0 16px 0 0", "align_items": "center"},
                    )
                    for png, label in zip(ctx.thumbnails, ctx.anchor_labels, strict=True)
                ]
                n = len(x_images) if x_images is not None else 0
                self._controls_sync = True
                try:
                    for picker, i in zip(self.anchor_pickers, ctx.anchor_indices, strict=False):
                        picker.max = max(n - 1, 0)
                        picker.value = i
                finally:
                    self._controls_sync = False
                self.anchor_row.layout.display = "flex"


def _colorbar_pixels(frame: Frame) -> np.ndarray:
    """The colour bar's image (bottom = vmin): a gradient, or one swatch per class."""
    if frame.cmap == "classes":
        return rendering.class_regions_rgba(np.arange(frame.classes).reshape(-1, 1))
    return rendering.colorbar_rgba(frame.cmap)


def _contour_labels(
    values: np.ndarray, u: np.ndarray, v: np.ndarray, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One label per contour level: the level's value at the middle point of its line."""
    xs, ys, texts = [], [], []
    ticks_fmt = rendering.tick_format(np.asarray(levels)) if len(levels) > 1 else ".2g"
    for level, text in zip(
        levels, rendering.format_ticks(np.asarray(levels), ticks_fmt), strict=True
    ):
        lx, ly = rendering.contour_lines(values, u, v, np.array([level]))
        ok = np.flatnonzero(np.isfinite(lx))
        if len(ok):
            i = ok[len(ok) // 2]
            xs.append(lx[i])
            ys.append(ly[i])
            texts.append(text)
    return np.array(xs), np.array(ys), texts


def slice_points(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` points, evenly spread (deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)
