"""Playground: TensorFlow Playground's experience for real PyTorch models, with geometry.

Pick the data (five 2-D toys, Gaussian blobs with up to six classes, your own arrays or CSV,
or points clicked onto the figure), the network (width, depth, activation, output scale
alpha between rich and lazy) and the optimiser; press Start. A :class:`richviz.live.LiveTrainer`
trains on a background thread and writes an ordinary run (log-spaced checkpoints), while a
:class:`richviz.live.FrameLoop` redraws the newest weights at a bounded frame rate (frames are
skipped, never queued): the log10 volume element of the pulled-back metric, its ellipses,
the decision boundary, the class regions and the data
(:mod:`~richviz.widgets.playground_figure`), plus a metrics strip that grows as it trains
(:mod:`~richviz.widgets.playground_strip`, its rows included). The settings' traits and
controls come from the config's one table (:mod:`~richviz.widgets.playground_controls`);
points clicked or added are :mod:`~richviz.widgets.playground_points`'s. The UI thread only
flips flags.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import traitlets

from richviz import datasets
from richviz.architectures import build_model
from richviz.atomic import atomic_write_text
from richviz.compute_lock import COMPUTE
from richviz.errors import ArgumentError, ConfigError, RichvizError
from richviz.live import VIEWS, FrameLoop, LiveState, LiveTrainer, PlaygroundConfig, compute_view
from richviz.widgets import keyboard, rendering
from richviz.widgets.common import error_line, status_html
from richviz.widgets.playground_controls import (
    ALPHA_PLAIN,
    CONFIG_TRAITS,
    SETTINGS,
    VIEW_TRAITS,
    build_controls,
    check_setting,
    setting_trait,
)
from richviz.widgets.playground_figure import LiveFrame, SliceFigure, render_frame
from richviz.widgets.playground_points import PROBE_SIZE, PointEditing
from richviz.widgets.playground_strip import STRIP, MetricsStrip

__all__ = ["STRIP", "Playground", "VIEWS"]

#: the keys' actions the Playground has (see :meth:`Playground.press`)
KEY_ACTIONS = ("toggle_play", "next", "first")


class Playground(PointEditing, widgets.VBox):
    """Live training of a small MLP on 2-D data with the geometry views of richviz.

    Parameters
    ----------
    config : a :class:`richviz.live.PlaygroundConfig` (default: two moons); keyword arguments
        named like its fields override it (``Playground(data="blobs", classes=4)``).
    points : optional ``(x, y)``: train on these (N, 2) inputs and (N,) labels.
    csv : optional path of a CSV file (two input columns and a label column).
    root : folder for the runs written while training (default: a temporary folder).
    view, resolution, ellipse_density, fps, steps_per_click, click_class : see Attributes.

    A setting out of its bounds, NaN, inf or of the wrong type raises a one-line
    ``ConfigError`` naming it here, and a ``TraitError`` naming it when set later (the trait
    keeps its value and the widget stays usable). The bounds are those of
    :data:`richviz.live.FIELDS`, the one table the config checks too.

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
    rows : the metrics strip's rows (``"step"`` and the live metrics), by step.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from richviz.widgets import Playground
    >>> folder = Path(tempfile.mkdtemp())
    >>> pg = Playground(data="xor", width=4, depth=1, device="cpu", root=folder / "runs")
    >>> pg.lr = 0.5
    >>> pg.lr = float("nan")
    Traceback (most recent call last):
    ...
    traitlets.traitlets.TraitError: lr=nan must be a finite number in (0, 100]
    >>> pg.lr
    0.5
    >>> text = pg.to_json(folder / "demo.json")
    >>> again = Playground.from_json(folder / "demo.json", root=folder / "again")
    >>> (again.data, again.width, again.lr) == ("xor", 4, 0.5)
    True
    >>> again.config == pg.config
    True
    >>> again.close()
    >>> pg.close()
    >>> import shutil
    >>> shutil.rmtree(folder)
    """

    data = setting_trait("data")
    n = setting_trait("n")
    noise = setting_trait("noise")
    classes = setting_trait("classes")
    width = setting_trait("width")
    depth = setting_trait("depth")
    activation = setting_trait("activation")
    alpha = setting_trait("alpha")
    lr = setting_trait("lr")
    batch_size = setting_trait("batch_size")
    optimizer = setting_trait("optimizer")
    seed = setting_trait("seed")
    device = setting_trait("device")
    view = setting_trait("view")
    resolution = setting_trait("resolution")
    ellipse_density = setting_trait("ellipse_density")
    fps = setting_trait("fps")
    steps_per_click = setting_trait("steps_per_click")
    click_class = setting_trait("click_class")
    drawn_step = traitlets.Int(-1, help="step of the frame on screen (-1: none yet)")
    running = traitlets.Bool(False, help="whether training runs")

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
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_TRAITS}
        if overrides.get("alpha", None) == ALPHA_PLAIN and not isinstance(overrides["alpha"], bool):
            overrides["alpha"] = None  # the trait's "plain network"
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
        self._suspend = True
        self._lock = threading.RLock()  # trainer swaps vs drawing
        self._points: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 2)), np.zeros(0, np.int64))
        self._slice = None
        self._probe = None
        self._view_model = None
        self._frames: FrameLoop | None = None
        self._build_views()
        self._build_controls()
        super().__init__(
            children=[
                self.controls,
                widgets.HBox(
                    [widgets.VBox([self.figure, self.legend, self._css, self.focus_css]), self.side]
                ),
                self.strip,
            ],
            **kwargs,
        )
        shown = dict(view=view, resolution=resolution, ellipse_density=ellipse_density, fps=fps)
        shown.update(steps_per_click=steps_per_click, click_class=click_class)
        try:
            with self.hold_trait_notifications():
                self._set_config_traits(config)
                for name, value in shown.items():
                    setattr(self, name, value)
        except traitlets.TraitError as exc:  # a view setting out of bounds: the config's words
            self.close()
            raise ConfigError(str(exc)) from None
        self._frames = FrameLoop(self._draw, fps=self.fps, on_error=self._on_draw_error)
        self._suspend = False
        self.observe(self._on_config_trait, names=list(CONFIG_TRAITS))
        self.observe(self._on_view_trait, names=list(VIEW_TRAITS))
        self.observe(lambda c: setattr(self._frames, "fps", c["new"]), names=["fps"])
        try:
            self._rebuild(config, strict=True)
        except BaseException:
            self.close()
            raise

    @traitlets.validate(*SETTINGS)
    def _check_setting(self, proposal: traitlets.Bunch) -> Any:
        """Every setting is checked by the config's table (one place for the bounds)."""
        return check_setting(proposal["trait"].name, proposal["value"])

    # ------------------------------------------------------------------ construction

    def _build_views(self) -> None:
        """The slice figure (heatmap, overlays, data, legend) and the metrics strip."""
        self.slice_figure = SliceFigure(self._on_click)
        f = self.slice_figure
        self.figure, self.legend, self._css = f.figure, f.legend, f.css
        self.image_mark, self.ellipse_mark = f.image_mark, f.ellipse_mark
        self.boundary_mark, self.points_mark = f.boundary_mark, f.points_mark
        self.metrics_strip = MetricsStrip()
        #: per strip chart (title), its :class:`richviz.widgets.charts.LineChart`
        self.strip_charts = self.metrics_strip.charts
        self.strip = self.metrics_strip.widget

    def _build_controls(self) -> None:
        c = self.control_widgets = build_controls(self)
        self.click_picker = widgets.ToggleButtons(
            options=[(str(k), k) for k in range(self.classes)],
            description="click adds class",
            style={"description_width": "initial", "button_width": "32px"},
        )
        self.click_picker.observe(self._picker_to_class, names="value")
        self.observe(self._class_to_picker, names=["click_class"])
        self.start_button = widgets.Button(
            description="Start", icon="play", button_style="success",
            tooltip="Start training (Space or k over the figure: Start/Pause)",
        )  # fmt: skip
        self.pause_button = widgets.Button(
            description="Pause", icon="pause", tooltip="Pause training (Space or k)"
        )
        self.step_button = widgets.Button(
            description="Step", icon="step-forward",
            tooltip="train steps/Step more steps (ArrowRight or l over the figure)",
        )  # fmt: skip
        self.reset_button = widgets.Button(
            description="Reset", icon="undo", tooltip="back to step 0 (Home over the figure)"
        )
        buttons = (
            (self.start_button, self.start),
            (self.pause_button, self.pause),
            (self.step_button, lambda: self.step(wait=False)),
            (self.reset_button, self.reset),
        )
        for b, fn in buttons:
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
                row([b for b, _ in buttons] + [self.status]),
            ]
        )
        side = [c[k] for k in ("view", "ellipse_density", "resolution", "fps")]
        self.side = widgets.VBox(
            [*side, self.click_picker, self.points_label], layout={"margin": "20px 0 0 8px"}
        )
        self.figure.add_class(keyboard.FOCUS_CLASS)
        self.controls.add_class(keyboard.FOCUS_CLASS)
        self.focus_css = keyboard.focus_style()
        self.key_control = keyboard.KeyControl(
            [self.figure],
            {name: (lambda name=name: self.press(name)) for name in KEY_ACTIONS},
            on_error=lambda exc: self._status(error_line(exc), "error"),
        )

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> PlaygroundConfig:
        """The configuration shown by the controls (and the clicked or loaded points)."""
        values = {k: getattr(self, k) for k in CONFIG_TRAITS}
        values["alpha"] = None if values["alpha"] == ALPHA_PLAIN else float(values["alpha"])
        if values["data"] == "points":
            values["x"], values["y"] = self._points
        return PlaygroundConfig(**values)

    def _set_config_traits(self, config: PlaygroundConfig) -> None:
        with self.hold_trait_notifications():
            for k in CONFIG_TRAITS:
                v = getattr(config, k)
                setattr(self, k, ALPHA_PLAIN if k == "alpha" and v is None else v)
        if config.data == "points":
            self._points = (
                np.asarray(config.x or np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2),
                np.asarray(config.y or (), dtype=np.int64),
            )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The configuration as JSON text; also written (atomically) to ``path`` if given."""
        text = self.config.to_json()
        if path is not None:
            atomic_write_text(text, path, parents=True)
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
        trainer.add_checkpoint_listener(self.metrics_strip.on_checkpoint)
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

    def toggle(self) -> None:
        """Pause if training runs, else start (the Space / ``k`` key)."""
        if self.trainer.running:
            self.pause()
            self._status("pausing…", "busy")
        else:
            self.start()

    def press(self, action: str) -> None:
        """Do what a key over the figure does: ``toggle_play`` (Space, ``k``): Start/Pause;
        ``next`` (ArrowRight, ``l``): Step; ``first`` (Home): Reset. Other actions of
        :data:`richviz.widgets.keyboard.ACTIONS` do nothing here (training has no way back)."""
        fn = {"toggle_play": self.toggle, "next": lambda: self.step(wait=False)}
        fn["first"] = self.reset
        if action not in keyboard.ACTIONS:
            raise ArgumentError(f"action={action!r} must be one of {keyboard.ACTIONS}")
        if action in fn:
            fn[action]()

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

    @property
    def rows(self) -> list[dict[str, float]]:
        """The metrics strip's rows (``"step"`` and the live metrics), by step."""
        return self.metrics_strip.rows

    @rows.setter
    def rows(self, rows: list[dict[str, float]]) -> None:
        self.metrics_strip.rows = rows

    def close(self) -> None:
        """Stop drawing and training (a final checkpoint is written), then close the widgets."""
        keys = getattr(self, "key_control", None)
        if keys is not None:
            keys.close()
        figure = getattr(self, "slice_figure", None)
        if figure is not None:
            figure.close()
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.close()
        if getattr(self, "trainer", None) is not None:
            self.trainer.close()
        super().close()

    # ------------------------------------------------------------------ drawing

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
        backfill = self.metrics_strip.checkpoint_rows(
            state, lambda ck: self._checkpoint_metrics(trainer, model, slc, res, probe, ck)
        )
        with self._lock:
            model.load_state_dict(state.weights)
        with COMPUTE.hold():
            view = compute_view(model, slc, res, probe)
        frame, ellipses = render_frame(view, mode, density, state.step, state.trajectory)
        with self._lock:
            if trainer is not self.trainer:
                return
            self.slice_figure.show(frame, ellipses)
            self.metrics_strip.append(
                state.step, view.metrics, backfill, trainer.config.num_classes
            )
            self.frame = frame
        self.drawn_step = state.step
        # from the state drawn, not the trainer's live flags: it publishes its last state of a
        # pause before it marks itself idle, and no later frame would correct a "running" read
        self.running = state.running
        m = view.metrics
        err = f" · stopped: {state.error}" if state.error else ""
        self._status(
            f"step {state.step} · loss {m['loss']:.4g} · accuracy {100 * m['acc']:.1f} % · "
            f"{'running' if self.running else 'paused'}{err}",
            "error" if state.error else "info",
        )

    def _checkpoint_metrics(
        self,
        trainer: LiveTrainer,
        model: torch.nn.Module,
        slc: Any,
        res: int,
        probe: Any,
        ck: LiveState,
    ) -> dict[str, float] | None:
        """A checkpoint's strip metrics, computed on the frame loop's thread like a frame's
        (None when ``trainer`` was replaced meanwhile)."""
        with self._lock:
            if trainer is not self.trainer:
                return None
            model.load_state_dict(ck.weights)
        with COMPUTE.hold():
            return compute_view(model, slc, res, probe).metrics

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
