"""The slice viewer's records and settings: what a request asks for, what a computed grid holds
and what a frame on screen shows, plus the menus and sizes the viewer offers.

Plain dataclasses and constants (no widgets), shared by the viewer's scheduling
(:mod:`.slice_viewer`), its composition of a frame (:mod:`.slice_compose`), its figure
(:mod:`.slice_figure`) and its exports (:mod:`.slice_export`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from richviz.errors import ArgumentError, NonFiniteError
from richviz.widgets.common import DEVICES

__all__ = [
    "COLORBAR_TICKS",
    "COLORBAR_WIDTH",
    "COLOR_RANGES",
    "DEVICES",
    "ELLIPSE_MODES",
    "EMPHASIS_COLOR",
    "FIGURE_MARGIN",
    "FIGURE_SIZE",
    "FieldRecord",
    "Frame",
    "FrameRequest",
    "MAX_ELLIPSE_DENSITY",
    "MAX_POINTS",
    "MAX_RESOLUTION",
    "RESOLUTIONS",
    "SHOW_MODES",
    "SliceContext",
    "THEORY_COLOR",
    "THEORY_MODES",
    "VOLUME_MODES",
    "check_color_limits",
    "slice_points",
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
#: near-boundary ellipses: a colour no class uses (classes: Okabe-Ito, rendering.CLASS_PALETTE)
EMPHASIS_COLOR = "#ff00ff"
THEORY_COLOR = "#ffffff"
MAX_RESOLUTION = 1024  # grid points per side: 1024**2 points, ~50 MB of float64 metric
MAX_ELLIPSE_DENSITY = 64
MAX_POINTS = 2000
FIGURE_SIZE = 420  # px, the square slice figure
FIGURE_MARGIN = {"top": 35, "bottom": 45, "left": 55, "right": 25}  # left+right == top+bottom
COLORBAR_WIDTH = 92  # px, the colour bar figure beside it
COLORBAR_TICKS = 5  # at most this many round ticks on the colour bar


@dataclass
class FieldRecord:
    """One computed grid: the numbers of a :class:`richviz.views.SliceFrame` as numpy arrays,
    plus what is computed on demand (full-space volume, curvature, ellipses)."""

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
class SliceContext:
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
class FrameRequest:
    """The settings one frame is computed for (a snapshot of the viewer's traits)."""

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
    #: colour limits given from outside (``SliceViewer.color_limits``), or None
    fixed: tuple[float, float] | None = None

    @property
    def fixed_limits(self) -> tuple[float, float] | None:
        """The outside colour limits where they apply (the plain log10 volume element on the
        slice: not relative, not minus the theory, not full space), else None."""
        plain = (
            self.show == "volume"
            and self.volume == "slice"
            and not self.relative
            and self.theory != "difference"
        )
        return self.fixed if plain else None


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


def check_color_limits(value: Any, name: str = "color_limits") -> tuple[float, float] | None:
    """``value`` as fixed colour limits ``(lo, hi)``: two finite numbers with lo < hi; None or
    an empty sequence for none. One-line :class:`richviz.errors.ArgumentError` otherwise."""
    from richviz.validation import check_number

    if value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        raise ArgumentError(f"{name}={value!r} must be two numbers (lo, hi) or None") from None
    if not items:
        return None
    if len(items) != 2:
        raise ArgumentError(f"{name}={value!r} must be two numbers (lo, hi) or None")
    try:
        lo, hi = (check_number(v, name) for v in items)
    except (ArgumentError, NonFiniteError):
        raise ArgumentError(f"{name}={value!r} must be two finite numbers (lo, hi)") from None
    if not lo < hi:
        raise ArgumentError(f"{name}={value!r}: the low limit must be below the high one")
    return lo, hi


def slice_points(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` points, evenly spread (deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)
