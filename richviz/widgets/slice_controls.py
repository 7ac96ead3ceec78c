"""The slice viewer's controls: pickers linked both ways to its traits, the step slider, the
anchor boxes of an image plane, the progress bar, status line and export buttons.

A mixin of :class:`richviz.widgets.slice_viewer.SliceViewer`: controls set traits, traits set
controls (``_controls_sync`` breaks the loop); all work goes through the traits.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import traitlets
from torch import nn

from richviz.features import LOGITS, PENULTIMATE, layer_names
from richviz.widgets import keyboard
from richviz.widgets.common import error_line, export_row, layer_labels, status_html
from richviz.widgets.slice_records import (
    COLOR_RANGES,
    ELLIPSE_MODES,
    RESOLUTIONS,
    SHOW_MODES,
    THEORY_MODES,
    VOLUME_MODES,
)

__all__ = ["SliceControls"]

_STYLE = {"description_width": "initial"}


class SliceControls:
    """Mixin: builds ``self.controls`` (pickers, step row, anchor row), ``self.footer``
    (progress, status, export) and ``self.legend``/``self.thumbnails``, and keeps pickers and
    traits in step."""

    _controls_sync: bool
    _layers_known: bool
    _source: Any

    def _build_pickers(self) -> None:
        self.layer_picker = widgets.Dropdown(
            options=[PENULTIMATE], value=PENULTIMATE, description="layer", style=_STYLE
        )
        self.resolution_picker = widgets.Dropdown(
            options=list(RESOLUTIONS), value=96, description="res", style=_STYLE
        )
        self.density_slider = widgets.IntSlider(
            value=12, min=0, max=32, description="ellipses", style=_STYLE
        )
        self.mode_picker = widgets.Dropdown(
            options=ELLIPSE_MODES, value="stretch", description="ellipse", style=_STYLE
        )
        self.relative_box = widgets.Checkbox(
            value=False,
            description="relative to step 0",
            indent=False,
            layout={"width": "145px"},
            disabled=self._source.run is None,
        )
        self.volume_picker = widgets.Dropdown(
            options=VOLUME_MODES, value="slice", description="volume", style=_STYLE
        )
        self.lock_box = widgets.Checkbox(
            value=False, description="lock", indent=False, layout={"width": "70px"}
        )
        self.show_picker = widgets.Dropdown(
            options=SHOW_MODES, value="volume", description="show", style=_STYLE
        )
        self.range_picker = widgets.Dropdown(options=COLOR_RANGES, value="run", style=_STYLE)
        self.theory_picker = widgets.Dropdown(
            options=THEORY_MODES, value="off", description="theory at init", style=_STYLE
        )
        for w in (self.layer_picker, self.show_picker, self.theory_picker, self.volume_picker):
            w.layout.width = "255px"
        for w in (self.mode_picker, self.range_picker):
            w.layout.width = "160px"
        self.resolution_picker.layout.width = "115px"
        self.density_slider.layout.width = "255px"

    def _build_anchor_row(self) -> None:
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

    def _build_footer(self) -> None:
        self.progress = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="field", layout={"width": "260px"}
        )
        self.status = widgets.HTML(value=status_html("starting…"))
        exports = [
            ("PNG", self.save_png),
            ("SVG", self.save_svg),
            ("heatmap PNG", self.export_heatmap, "110px"),
        ]
        self.export_name, buttons, export_box = export_row("richviz-slice", exports, self.status)
        self.png_button, self.svg_button, self.heatmap_button = buttons
        self.footer = widgets.VBox([widgets.HBox([self.progress, self.status]), export_box])

    def _build_step_row(self, steps: list[int], wanted: bool) -> None:
        # A step slider (and Play) of its own when the viewer stands alone on a run. Keys: a
        # focused slider handle moves with the arrows, Home/End (ipywidgets' own); the Play/Pause
        # toggle with Space/Enter; over the figure or this row, the keys of keyboard.KEYS.
        options = [(str(s), s) for s in steps] or [("–", 0)]
        self.step_slider = widgets.SelectionSlider(
            options=options, description="step", continuous_update=True,
            tooltip="checkpoint step: ArrowLeft/ArrowRight, Home/End",
            layout={"width": "400px"},
        )  # fmt: skip
        self.step_play = widgets.Play(
            value=len(options) - 1, min=0, max=max(len(options) - 1, 0), interval=500,
            description="play the checkpoints", tooltip="play the checkpoints",
        )  # fmt: skip
        self.step_play.add_class(keyboard.TOGGLED_PLAY_CLASS)  # its ▶ is the toggle's
        self.play_toggle = keyboard.play_toggle("Play/Pause the checkpoints (Space or k)")
        traitlets.link((self.step_play, "value"), (self.step_slider, "index"))
        traitlets.link((self.step_play, "playing"), (self.play_toggle, "value"))
        self.step_slider.observe(self._on_step_slider, names="value")
        self.observe(self._on_step_trait, names=["step"])
        self.step_row = widgets.HBox(
            [self.step_play, self.play_toggle, self.step_slider],
            layout={"display": "flex" if wanted else "none"},
        )

    def _build_keys(self) -> None:
        """Keys over the figure and the step row (see :mod:`richviz.widgets.keyboard`)."""
        self.step_row.add_class(keyboard.FOCUS_CLASS)
        self.figure.add_class(keyboard.FOCUS_CLASS)
        self.focus_css = keyboard.focus_style()
        self.key_control = keyboard.KeyControl(
            [self.figure, self.step_row],
            {name: (lambda name=name: self.press(name)) for name in keyboard.ACTIONS},
            on_error=self._key_error,
        )

    def _key_error(self, exc: Exception) -> None:
        self.status.value = status_html(error_line(exc), "error")  # a key never breaks the view

    def press(self, action: str) -> None:
        """Do what a key does (:data:`richviz.widgets.keyboard.ACTIONS`): move the step slider
        (``previous``, ``next``, ``first``, ``last``) or toggle Play (``toggle_play``)."""
        if action == "toggle_play":
            self.step_play.playing = not self.step_play.playing
            return
        count = len(self.step_slider.options)
        self.step_slider.index = keyboard.step_index(action, self.step_slider.index or 0, count)

    def close(self) -> None:
        """Close the key listeners, then the viewer (safe after a failed ``__init__``)."""
        keys = getattr(self, "key_control", None)
        if keys is not None:
            keys.close()
        super().close()  # type: ignore[misc]

    def _build_controls(self, steps: list[int], step_slider: bool) -> None:
        """All controls; ``step_slider``: show the viewer's own step row."""
        self._build_pickers()
        self._build_anchor_row()
        self._build_footer()
        self._build_step_row(steps, step_slider)
        self._build_keys()
        self.legend = widgets.HTML(value="", layout={"min_height": "20px"})
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
                self.focus_css,
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
        """Fill the layer menu from the model once (labels with module types and widths)."""
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

    def _apply_anchor_pickers(self) -> None:
        self.anchors = [int(p.value) for p in self.anchor_pickers]
