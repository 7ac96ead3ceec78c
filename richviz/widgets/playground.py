"""Playground: TensorFlow Playground's experience for real PyTorch models, with geometry.

Pick the data (five 2-D toys, Gaussian blobs with up to six classes, your own arrays or CSV,
or points clicked onto the figure), the network (width, depth, activation, output scale
alpha between rich and lazy) and the optimiser; press Start. A :class:`richviz.live.LiveTrainer`
trains on a background thread and writes an ordinary run (log-spaced checkpoints), while a
:class:`richviz.live.FrameLoop` redraws the newest weights at a bounded frame rate (frames are
skipped, never queued): the log10 volume element of the pulled-back metric, its ellipses,
the decision boundary, the class regions and the data, plus a metrics strip that grows as it trains
(accuracy and loss; D_LR with its factors confinement and isotropy, and boundary magnification;
the neural-collapse statistics NC1-NC4). The UI thread only flips flags.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import threading
from pathlib import Path
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
import torch
import traitlets

from richviz import datasets
from richviz.architectures import build_model
from richviz.errors import RichvizError
from richviz.live import (
    ACTIVATIONS,
    DATA_SETS,
    DEVICES,
    MAX_CLASSES,
    OPTIMIZERS,
    FrameLoop,
    LiveState,
    LiveTrainer,
    LiveView,
    PlaygroundConfig,
    compute_view,
)
from richviz.widgets import charts, rendering
from richviz.widgets.metrics_panel import (
    BOUNDARY_SERIES,
    NC_SERIES,
    RICHNESS_SERIES,
    family_series,
)
from richviz.widgets.slice_viewer import atomic_write_bytes, error_line, status_html
from richviz.widgets.tasks import COMPUTE

__all__ = ["STRIP", "Playground", "VIEWS"]

VIEWS = ("volume", "classes", "entropy")
"""Backgrounds: log10 volume element, class regions, softmax entropy."""
FIGURE_SIZE = 440
FIGURE_MARGIN = {"top": 30, "bottom": 40, "left": 45, "right": 15}
STRIP_WIDTH, STRIP_HEIGHT = 300, 190
PROBE_SIZE = 500
MAX_ROWS = 4000
_CONFIG_TRAITS = tuple(
    f.name for f in dataclasses.fields(PlaygroundConfig) if f.name not in ("x", "y")
)
_VIEW_TRAITS = ("view", "resolution", "ellipse_density")
CLICK_THROUGH_CLASS = "richviz-click-through"
#: the figure's lines (``.curve``/``.line``: ellipses, boundaries) and dots (``.dot``: data)
#: ignore the pointer, so every click on the plot reaches the heatmap and adds a point
CLICK_THROUGH_CSS = (
    f"<style>.{CLICK_THROUGH_CLASS} .curve, .{CLICK_THROUGH_CLASS} .line, "
    f".{CLICK_THROUGH_CLASS} .dot {{ pointer-events: none; }}</style>"
)
#: the live metrics strip: (title, left series, right series, left log, right log, left range);
#: series are (metric key of :data:`richviz.live.VIEW_METRICS`, legend label)
STRIP = (
    ("performance", (("acc", "accuracy"),), (("loss", "loss"),), False, True, (0.0, 1.0)),
    ("richness", RICHNESS_SERIES, BOUNDARY_SERIES, False, False, (0.0, 1.0)),
    ("neural collapse", NC_SERIES, (), True, False, None),
)


@dataclasses.dataclass
class LiveFrame:
    """What is on screen: the state drawn, its numbers and the background image."""

    step: int
    trajectory: int
    view: LiveView
    mode: str
    png: bytes
    boundary: tuple[np.ndarray, np.ndarray]


class Playground(widgets.VBox):
    """Live training of a small MLP on 2-D data with the geometry views of richviz.

    Parameters
    ----------
    config : a :class:`richviz.live.PlaygroundConfig` (default: two moons); keyword arguments
        named like its fields override it (``Playground(data="blobs", classes=4)``).
    points : optional ``(x, y)``: train on these (N, 2) inputs and (N,) labels.
    csv : optional path of a CSV file (two input columns and a label column).
    root : folder for the runs written while training (default: a temporary folder).
    view, resolution, ellipse_density, fps, steps_per_click, click_class : see Attributes.

    Attributes
    ----------
    data, n, noise, classes, width, depth, activation, alpha, lr, batch_size, optimizer,
    seed, device : the configuration (``alpha = 0``: the plain network, else the output scale
        of ``alpha (f - f0)``); changing one starts a new network (step 0) and a new run.
    view : Enum ``"volume"`` (log10 volume element), ``"classes"`` (class regions) or
        ``"entropy"`` (softmax entropy); resolution : grid points per side (16..256);
    ellipse_density : ellipses per side (0: none); fps : frames per second at most;
    steps_per_click : steps taken by the Step button; click_class : class of clicked points;
    drawn_step : step of the frame on screen (-1: none yet); running : training runs.
    """

    data = traitlets.Enum(DATA_SETS, "moons")
    n = traitlets.Int(200, min=8, max=20000)
    noise = traitlets.Float(0.1, min=0.0, max=2.0)
    classes = traitlets.Int(2, min=2, max=MAX_CLASSES)
    width = traitlets.Int(16, min=1, max=1024)
    depth = traitlets.Int(2, min=1, max=8)
    activation = traitlets.Enum(ACTIVATIONS, "tanh")
    alpha = traitlets.Float(0.0, min=0.0, max=1e5, help="0: plain network")
    lr = traitlets.Float(0.1, min=1e-4, max=10.0)
    batch_size = traitlets.Int(32, min=1, max=100000)
    optimizer = traitlets.Enum(OPTIMIZERS, "momentum")
    seed = traitlets.Int(0, min=0, max=2**31 - 1)
    device = traitlets.Enum(DEVICES, "auto")
    view = traitlets.Enum(VIEWS, "volume")
    resolution = traitlets.Int(64, min=16, max=256)
    ellipse_density = traitlets.Int(10, min=0, max=32)
    fps = traitlets.Float(10.0, min=0.5, max=60.0)
    steps_per_click = traitlets.Int(10, min=1, max=100000)
    click_class = traitlets.Int(0, min=0, max=MAX_CLASSES - 1)
    drawn_step = traitlets.Int(-1)
    running = traitlets.Bool(False)

    def __init__(
        self,
        config: PlaygroundConfig | None = None,
        *,
        points: tuple[Any, Any] | None = None,
        csv: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        view: str = "volume",
        resolution: int = 64,
        ellipse_density: int = 10,
        fps: float = 10.0,
        steps_per_click: int = 10,
        click_class: int = 0,
        **kwargs: Any,
    ):
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_TRAITS}
        config = config if config is not None else PlaygroundConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        if csv is not None:
            points = datasets.read_csv(csv)
        if points is not None:
            config = config.with_points(*points)
        self.root = Path(root) if root is not None else None
        self.trainer: LiveTrainer | None = None
        self.frame: LiveFrame | None = None
        self.rows: list[dict[str, float]] = []
        #: checkpoint states waiting for their strip row (appended by the trainer thread)
        self._checkpoint_states: collections.deque[LiveState] = collections.deque(maxlen=MAX_ROWS)
        self._suspend = True
        self._lock = threading.RLock()  # trainer swaps vs drawing
        self._points: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 2)), np.zeros(0, np.int64))
        self._slice = None
        self._probe = None
        self._view_model = None
        self._build_figure()
        #: what the figure draws (HTML below it): classes, boundaries, ellipses
        self.legend = widgets.HTML(value=_legend_html([]))
        self._build_strip()
        self._build_controls()
        super().__init__(
            children=[
                self.controls,
                widgets.HBox([widgets.VBox([self.figure, self.legend, self._css]), self.side]),
                self.strip,
            ],
            **kwargs,
        )
        self._frames = FrameLoop(self._draw, fps=fps, on_error=self._on_draw_error)
        with self.hold_trait_notifications():
            self._set_config_traits(config)
            self.view, self.resolution = view, int(resolution)
            self.ellipse_density, self.fps = int(ellipse_density), float(fps)
            self.steps_per_click, self.click_class = int(steps_per_click), int(click_class)
        self._suspend = False
        self.observe(self._on_config_trait, names=list(_CONFIG_TRAITS))
        self.observe(self._on_view_trait, names=list(_VIEW_TRAITS))
        self.observe(lambda c: setattr(self._frames, "fps", c["new"]), names=["fps"])
        try:
            self._rebuild(config, strict=True)
        except BaseException:
            self._frames.close()
            raise

    # ------------------------------------------------------------------ construction

    def _build_figure(self) -> None:
        self._sx = bqplot.LinearScale(min=-1.0, max=1.0)
        self._sy = bqplot.LinearScale(min=-1.0, max=1.0)
        xy = {"x": self._sx, "y": self._sy}
        blank = rendering.encode_png(np.full((1, 1, 4), 255, np.uint8))
        self.image_mark = bqplot.Image(
            image=widgets.Image(value=blank, format="png"), scales=xy, x=[-1, 1], y=[-1, 1]
        )
        self.image_mark.on_element_click(self._on_image_click)
        nothing = {"x": [np.nan], "y": [np.nan]}
        self.ellipse_mark = bqplot.Lines(
            **nothing, scales=xy, colors=["white"], stroke_width=1.0, opacities=[0.8]
        )
        self.boundary_mark = bqplot.Lines(**nothing, scales=xy, colors=["black"], stroke_width=2)
        self.points_mark = bqplot.Scatter(
            x=[], y=[], scales=xy, default_size=28, stroke="white", stroke_width=0.8
        )
        axes = [
            bqplot.Axis(scale=self._sx, label="x1", grid_lines="none"),
            bqplot.Axis(scale=self._sy, label="x2", side="left", grid_lines="none"),
        ]
        # The overlays let clicks through to the heatmap (bqplot hit-tests its marks, so a
        # click on a boundary line, an ellipse or a data point would otherwise be lost).
        self._css = widgets.HTML(value=CLICK_THROUGH_CSS, layout=widgets.Layout(display="none"))
        # The marks are fixed from the start: a figure whose marks change after display
        # re-creates their views, and the heatmap's new view could lose its click handler.
        self.figure = bqplot.Figure(
            marks=[self.image_mark, self.ellipse_mark, self.boundary_mark, self.points_mark],
            axes=axes,
            min_aspect_ratio=1.0,
            max_aspect_ratio=1.0,
            padding_x=0.0,
            padding_y=0.0,
            fig_margin=dict(FIGURE_MARGIN),
            title="click to add a point",
            title_style={"font-size": "13px"},
            layout=widgets.Layout(width=f"{FIGURE_SIZE}px", height=f"{FIGURE_SIZE}px"),
        )
        self.figure.add_class(CLICK_THROUGH_CLASS)

    def _build_strip(self) -> None:
        """One :class:`richviz.widgets.charts.LineChart` per family of :data:`STRIP`."""
        #: per strip chart (title), its :class:`richviz.widgets.charts.LineChart`
        self.strip_charts: dict[str, charts.LineChart] = {
            title: charts.LineChart(
                title,
                x_label="step",
                x_log=False,
                y_log=left_log,
                right_log=right_log,
                right=bool(right),
                y_range=y_range,
                width=STRIP_WIDTH,
                height=STRIP_HEIGHT,
            )
            for title, _left, right, left_log, right_log, y_range in STRIP
        }
        self.strip = widgets.HBox([c.widget for c in self.strip_charts.values()])

    def _build_controls(self) -> None:
        style = {"description_width": "initial"}
        narrow = {"width": "150px"}
        c: dict[str, widgets.ValueWidget] = {
            "data": widgets.Dropdown(options=list(DATA_SETS), description="data", style=style),
            "n": widgets.BoundedIntText(min=8, max=20000, description="points", style=style),
            "noise": widgets.BoundedFloatText(
                min=0.0, max=2.0, step=0.05, description="noise", style=style
            ),
            "classes": widgets.BoundedIntText(
                min=2, max=MAX_CLASSES, description="classes", style=style
            ),
            "seed": widgets.BoundedIntText(min=0, max=2**31 - 1, description="seed", style=style),
            "width": widgets.BoundedIntText(min=1, max=1024, description="width", style=style),
            "depth": widgets.BoundedIntText(min=1, max=8, description="depth", style=style),
            "activation": widgets.Dropdown(
                options=list(ACTIVATIONS), description="activation", style=style
            ),
            "alpha": widgets.BoundedFloatText(
                min=0.0, max=1e5, description="alpha (0: plain)", style=style
            ),
            "device": widgets.Dropdown(options=list(DEVICES), description="device", style=style),
            "optimizer": widgets.Dropdown(
                options=list(OPTIMIZERS), description="optimiser", style=style
            ),
            "lr": widgets.BoundedFloatText(
                min=1e-4, max=10.0, step=0.01, description="lr", style=style
            ),
            "batch_size": widgets.BoundedIntText(
                min=1, max=100000, description="batch", style=style
            ),
            "view": widgets.Dropdown(
                options=[
                    ("log10 volume", "volume"),
                    ("class regions", "classes"),
                    ("entropy", "entropy"),
                ],
                description="show",
                style=style,
            ),
            "resolution": widgets.BoundedIntText(min=16, max=256, description="grid", style=style),
            "ellipse_density": widgets.IntSlider(
                min=0, max=32, description="ellipses", style=style
            ),
            "fps": widgets.BoundedFloatText(min=0.5, max=60.0, description="fps", style=style),
            "steps_per_click": widgets.BoundedIntText(
                min=1, max=100000, description="steps/Step", style=style
            ),
        }
        for name, control in c.items():
            control.layout = widgets.Layout(**narrow)
            control.value = getattr(self, name)
            widgets.link((control, "value"), (self, name))
        c["data"].layout.width = c["view"].layout.width = "170px"
        c["alpha"].layout.width = "200px"
        c["ellipse_density"].layout.width = "240px"
        self.control_widgets = c
        self.click_picker = widgets.ToggleButtons(
            options=[(str(k), k) for k in range(self.classes)],
            description="click adds class",
            style={"description_width": "initial", "button_width": "32px"},
        )
        self.click_picker.observe(self._picker_to_class, names="value")
        self.observe(self._class_to_picker, names=["click_class"])
        self.start_button = widgets.Button(description="Start", icon="play", button_style="success")
        self.pause_button = widgets.Button(description="Pause", icon="pause")
        self.step_button = widgets.Button(description="Step", icon="step-forward")
        self.reset_button = widgets.Button(description="Reset", icon="undo")
        for b, fn in (
            (self.start_button, self.start),
            (self.pause_button, self.pause),
            (self.step_button, lambda: self.step(wait=False)),
            (self.reset_button, self.reset),
        ):
            b.layout.width = "95px"
            b.on_click(lambda _b, fn=fn: self._guard(fn))
        self.status = widgets.HTML(value=status_html("ready"))
        self.points_label = widgets.HTML()
        row = widgets.HBox
        self.controls = widgets.VBox(
            [
                row([c[k] for k in ("data", "n", "noise", "classes", "seed")]),
                row([c[k] for k in ("width", "depth", "activation", "alpha", "device")]),
                row([c[k] for k in ("optimizer", "lr", "batch_size", "steps_per_click")]),
                row(
                    [
                        self.start_button,
                        self.pause_button,
                        self.step_button,
                        self.reset_button,
                        self.status,
                    ]
                ),
            ]
        )
        self.side = widgets.VBox(
            [
                c["view"],
                c["ellipse_density"],
                c["resolution"],
                c["fps"],
                self.click_picker,
                self.points_label,
            ],
            layout={"margin": "20px 0 0 8px"},
        )

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> PlaygroundConfig:
        """The configuration shown by the controls (and the clicked or loaded points)."""
        values = {k: getattr(self, k) for k in _CONFIG_TRAITS}
        values["alpha"] = None if values["alpha"] == 0 else float(values["alpha"])
        if values["data"] == "points":
            values["x"], values["y"] = self._points
        return PlaygroundConfig(**values)

    def _set_config_traits(self, config: PlaygroundConfig) -> None:
        with self.hold_trait_notifications():
            for k in _CONFIG_TRAITS:
                v = getattr(config, k)
                setattr(self, k, 0.0 if k == "alpha" and v is None else v)
        if config.data == "points":
            self._points = (
                np.asarray(config.x or np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2),
                np.asarray(config.y or (), dtype=np.int64),
            )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The configuration as JSON text; also written (atomically) to ``path`` if given."""
        text = self.config.to_json()
        if path is not None:
            atomic_write_bytes(path, text.encode("utf-8"))
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike, **kwargs: Any) -> Playground:
        """A Playground replaying a saved configuration (JSON text or a file's path): same
        data, network, hyper-parameters and seed, hence the same initial weights."""
        return cls(PlaygroundConfig.from_json(text_or_path), **kwargs)

    def set_data(self, x: Any, y: Any) -> None:
        """Train on the user's points ``x`` (N, 2), ``y`` (N,) (a new network at step 0)."""
        self._apply_config(self.config.with_points(x, y))

    def load_csv(self, path: str | os.PathLike, label_column: int = -1) -> None:
        """Train on a CSV file of two input columns and a label column (see
        :func:`richviz.datasets.read_csv`)."""
        self.set_data(*datasets.read_csv(path, label_column))

    def _apply_config(self, config: PlaygroundConfig) -> None:
        self._suspend = True
        try:
            self._set_config_traits(config)
        finally:
            self._suspend = False
        self._rebuild(config)

    def _on_config_trait(self, change: dict) -> None:
        if self._suspend:
            return
        try:
            config = self.config
        except RichvizError as exc:
            self._status(str(exc), "error")
            return
        self._rebuild(config)

    def _on_view_trait(self, change: dict) -> None:
        self.redraw()

    def _picker_to_class(self, change: dict) -> None:
        if change["new"] is not None:
            self.click_class = change["new"]

    def _class_to_picker(self, change: dict) -> None:
        if change["new"] in [v for _, v in self.click_picker.options]:
            self.click_picker.value = change["new"]

    def _set_click_classes(self, classes: int) -> None:
        """The class picker offers the network's classes (clicks of others are refused)."""
        options = [(str(k), k) for k in range(classes)]
        if list(self.click_picker.options) != options:
            self.click_picker.options = options
        value = self.click_class if self.click_class < classes else 0
        self.click_picker.value = value

    def _rebuild(self, config: PlaygroundConfig, strict: bool = False) -> None:
        """A new trainer for ``config`` (the old one pauses, checkpoints and stops). A config
        that cannot train raises when ``strict`` (construction), else keeps the old trainer
        and says why in the status line."""
        from richviz.geometry import Slice

        try:
            trainer = LiveTrainer(config, self.root)
        except (RichvizError, ValueError) as exc:
            if strict or self.trainer is None:
                raise
            self._status(f"{error_line(exc)} (still showing the previous network)", "error")
            return
        with self._lock:
            old, self.trainer = self.trainer, trainer
            if self.root is None:
                self.root = trainer.root
            data = trainer.data
            if data is not None and len(data.x_train):
                x_all = torch.cat([data.x_train, data.x_test])
                self._slice = Slice.covering(x_all, margin=0.1)
                self._probe = (data.x_train[:PROBE_SIZE], data.y_train[:PROBE_SIZE])
            else:
                self._slice = Slice.square(torch.zeros(2), 1.5)
                self._probe = None
            self._view_model = build_model(config.architecture()).eval()
            self.rows = []
        if old is not None:
            old.close()
        self._show_points(data)
        self._set_click_classes(config.num_classes)
        trainer.add_listener(self._on_state)
        trainer.add_checkpoint_listener(self._on_checkpoint)
        self.running = False
        self._frames.submit((trainer, trainer.state))

    # ------------------------------------------------------------------ training control

    def start(self) -> None:
        """Train until Pause (returns at once)."""
        self.trainer.start()
        self.running = True
        self._status("running…", "busy")

    def pause(self) -> None:
        """Stop after the current step (returns at once)."""
        self.trainer.pause()

    def step(self, n: int | None = None, wait: bool = True) -> int:
        """Run exactly ``n`` steps (default ``steps_per_click``); ``wait=False`` returns at once."""
        return self.trainer.step(int(n or self.steps_per_click), wait=wait)

    def reset(self) -> None:
        """Back to the initial weights of the seed, step 0 (the next training writes a new run)."""
        self.trainer.reset()
        with self._lock:
            self.rows = []
        self._frames.submit((self.trainer, self.trainer.state))

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until training is idle and the newest frame is drawn (for tests, scripts)."""
        ok = self.trainer.wait(timeout)
        return self._frames.wait(timeout) and ok

    def redraw(self) -> None:
        """Draw the newest state again (after a change of view settings)."""
        if self.trainer is not None:
            self._frames.submit((self.trainer, self.trainer.state))

    @property
    def frames(self) -> FrameLoop:
        """The drawing loop (``frames``, ``skipped`` counters)."""
        return self._frames

    def close(self) -> None:
        """Stop drawing and training (a final checkpoint is written), then close the widgets."""
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.close()
        if getattr(self, "trainer", None) is not None:
            self.trainer.close()
        super().close()

    # ------------------------------------------------------------------ points

    def add_point(self, x1: float, x2: float, label: int | None = None) -> None:
        """Add a training point of class ``label`` (default ``click_class``) while training
        goes on; generated data become the user's points (data = "points")."""
        label = self.click_class if label is None else int(label)
        trainer = self.trainer
        c = trainer.config.num_classes
        if not 0 <= label < c:
            raise ValueError(
                f"class {label}: the network has {c} classes (raise 'classes', which resets it)"
            )
        if not (math.isfinite(x1) and math.isfinite(x2)):
            raise ValueError(f"point ({x1}, {x2}) is not finite")
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

    def _on_image_click(self, _mark: Any, content: dict) -> None:
        data = content.get("data") or {}
        try:
            self.add_point(float(data["click_x"]), float(data["click_y"]))
        except (KeyError, TypeError, ValueError, RichvizError) as exc:
            self._status(error_line(exc), "error")

    def _show_points(self, data: datasets.Dataset | None) -> None:
        if data is None or len(data.x_train) == 0:
            x, y = np.zeros((0, 2)), np.zeros(0, np.int64)
        else:
            x, y = data.x_train.double().numpy(), data.y_train.numpy()
        with self.points_mark.hold_sync():
            self.points_mark.x, self.points_mark.y = x[:, 0], x[:, 1]
            self.points_mark.colors = [rendering.class_color(c) for c in y] or ["#444444"]
        counts = np.bincount(y, minlength=self.trainer.config.num_classes) if len(y) else []
        parts = " · ".join(
            f'<span style="color:{rendering.class_color(k)}">■</span> {int(m)}'
            for k, m in enumerate(counts)
        )
        self.legend.value = _legend_html(range(len(counts)))
        self.points_label.value = (
            f'<span style="font-size:12px">points: {len(y)}'
            f"{' (' + parts + ')' if parts else ''}</span>"
        )

    # ------------------------------------------------------------------ drawing

    def _on_checkpoint(self, state: LiveState) -> None:
        """Trainer thread: a checkpoint's weights, for a strip row drawn with the next frame
        (so the strip has a point at every log-spaced step, even when frames were skipped)."""
        self._checkpoint_states.append(state)

    def _on_state(self, state: LiveState) -> None:
        """Trainer thread: hand the state to the frame loop (never waits)."""
        self._frames.submit((self.trainer, state))

    def _draw(self, item: tuple[LiveTrainer, LiveState]) -> None:
        trainer, state = item
        with self._lock:
            if trainer is not self.trainer:
                return  # a state of a replaced trainer
            model, slc, probe = self._view_model, self._slice, self._probe
            model.load_state_dict(state.weights)
        mode, res, density = self.view, int(self.resolution), int(self.ellipse_density)
        backfill = self._checkpoint_rows(trainer, model, slc, res, probe, state)
        with self._lock:
            model.load_state_dict(state.weights)
        with COMPUTE.hold():
            view = compute_view(model, slc, res, probe)
        if mode == "classes":
            rgba = rendering.class_regions_rgba(view.predicted)
        elif mode == "entropy":
            rgba = rendering.field_to_rgba(view.entropy, 0.0, 1.0, "viridis")
        else:
            vmin, vmax = rendering.color_limits(view.log10_volume)
            rgba = rendering.field_to_rgba(view.log10_volume, vmin, vmax, "viridis")
        png = rendering.encode_png(rgba)
        boundary = rendering.decision_boundary_lines(view.margin, view.predicted, view.u, view.v)
        ellipses = (np.array([]), np.array([]))
        if density > 0:
            from richviz.geometry import metric_ellipses

            e = metric_ellipses(view.field, density=min(density, res))
            ellipses = (e.xs, e.ys)
        frame = LiveFrame(state.step, state.trajectory, view, mode, png, boundary)
        with self._lock:
            if trainer is not self.trainer:
                return
            self._apply(frame, ellipses)
            self._append_row(state, view, backfill)
            self.frame = frame
        self.drawn_step = state.step
        self.running = trainer.running
        m = view.metrics
        err = f" · stopped: {state.error}" if state.error else ""
        self._status(
            f"step {state.step} · loss {m['loss']:.4g} · accuracy {100 * m['acc']:.1f} % · "
            f"{'running' if self.running else 'paused'}{err}",
            "error" if state.error else "info",
        )

    def _apply(self, frame: LiveFrame, ellipses: tuple[np.ndarray, np.ndarray]) -> None:
        (u0, u1), (v0, v1) = rendering.image_extent(frame.view.u, frame.view.v)
        (x0, x1), (y0, y1) = rendering.square_limits((u0, u1), (v0, v1))
        if (self._sx.min, self._sx.max, self._sy.min, self._sy.max) != (x0, x1, y0, y1):
            with self._sx.hold_sync():
                self._sx.min, self._sx.max = x0, x1
            with self._sy.hold_sync():
                self._sy.min, self._sy.max = y0, y1
        old = self.image_mark.image  # bqplot redraws on a new image widget, not a new value
        self.image_mark.image = widgets.Image(value=frame.png, format="png")
        old.close()
        if list(self.image_mark.x) != [u0, u1] or list(self.image_mark.y) != [v0, v1]:
            with self.image_mark.hold_sync():
                self.image_mark.x, self.image_mark.y = [u0, u1], [v0, v1]
        light = frame.mode != "volume"
        self.ellipse_mark.colors = ["#333333" if light else "white"]
        self.points_mark.stroke = "#222222" if light else "white"
        for mark, (xs, ys) in ((self.ellipse_mark, ellipses), (self.boundary_mark, frame.boundary)):
            if len(xs) and np.isnan(xs[-1]):
                xs, ys = xs[:-1], ys[:-1]  # bqplot labels a curve at its last point
            if not len(xs):  # nothing to draw: one invisible point (never an empty mark)
                xs, ys = np.array([np.nan]), np.array([np.nan])
            with mark.hold_sync():
                mark.x, mark.y = xs, ys

    def _checkpoint_rows(
        self,
        trainer: LiveTrainer,
        model: torch.nn.Module,
        slc: Any,
        res: int,
        probe: Any,
        state: LiveState,
    ) -> list[dict[str, float]]:
        """Strip rows of the checkpoints written since the last row and before ``state``
        (this trajectory's only), computed on the frame loop's thread like a frame's."""
        last = self.rows[-1]["step"] if self.rows else -1.0
        rows = []
        while self._checkpoint_states:
            ck = self._checkpoint_states[0]
            if ck.trajectory == state.trajectory and ck.step >= state.step:
                break  # a later checkpoint: its row comes with a later frame
            self._checkpoint_states.popleft()
            if ck.trajectory != state.trajectory or ck.step <= last:
                continue  # another trajectory's, or a step the strip already has
            with self._lock:
                if trainer is not self.trainer:
                    return []
                model.load_state_dict(ck.weights)
            with COMPUTE.hold():
                metrics = compute_view(model, slc, res, probe).metrics
            rows.append({"step": float(ck.step), **metrics})
            last = ck.step
        return rows

    def _append_row(
        self, state: LiveState, view: LiveView, backfill: list[dict[str, float]] = ()
    ) -> None:
        row = {"step": float(state.step), **view.metrics}
        first = backfill[0]["step"] if backfill else row["step"]
        if self.rows and self.rows[-1]["step"] >= first:
            self.rows = [r for r in self.rows if r["step"] < first]
        self.rows.extend(backfill)
        self.rows.append(row)
        if len(self.rows) > MAX_ROWS:
            self.rows = self.rows[::2]
        self._draw_strip()

    def _draw_strip(self) -> None:
        steps = np.array([r["step"] for r in self.rows])
        classes = self.trainer.config.num_classes if self.trainer is not None else None
        for title, left, right, *_ in STRIP:
            series, note = family_series(self.rows, steps, left, right, classes)
            self.strip_charts[title].set_series(series, note=note)

    def class_region_png(self) -> bytes:
        """The class regions of the frame on screen as a PNG (whatever the view shows)."""
        if self.frame is None:
            raise ValueError("nothing drawn yet")
        return rendering.encode_png(rendering.class_regions_rgba(self.frame.view.predicted))

    # ------------------------------------------------------------------ status

    def _status(self, message: str, kind: str = "info") -> None:
        self.status.value = status_html(message, kind)

    def _on_draw_error(self, exc: BaseException) -> None:
        self._status(f"drawing failed: {error_line(exc)}", "error")

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # a button must never break the widget
            self._status(error_line(exc), "error")


def _legend_html(classes: Any) -> str:
    """The slice figure's legend: class dots, decision boundaries, ellipses."""
    dots = "".join(
        f'<span style="white-space:nowrap;margin-right:10px"><svg width="12" height="12" '
        f'style="vertical-align:middle"><circle cx="6" cy="6" r="4.5" '
        f'fill="{rendering.class_color(c)}" stroke="#202020"/></svg> class {int(c)}</span>'
        for c in classes
    )
    line = (
        '<span style="white-space:nowrap;margin-right:10px"><svg width="22" height="12" '
        'style="vertical-align:middle"><line x1="1" y1="6" x2="21" y2="6" stroke="{}" '
        'stroke-width="{}"/></svg> {}</span>'
    )
    return (
        '<div class="richviz-legend" style="font-size:11px;padding-left:40px">'
        f"{dots}{line.format('#000000', 2, 'decision boundaries')}"
        f"{line.format('#9a9a9a', 1, 'ellipses: how the features stretch a small disk')}</div>"
    )
