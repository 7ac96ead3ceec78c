"""The Playground's settings as traits and controls, built from the config's one table.

Every bound, choice and help line comes from :data:`richviz.live.FIELDS`; nothing here
repeats a number. :func:`setting_trait` makes a setting's trait and :func:`check_setting`
is its validator (the config's own check, as a ``TraitError`` naming the trait, so a refused
value leaves the trait unchanged); :func:`build_controls` makes the control widgets and
links each to its trait.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as widgets
import traitlets

from richviz.errors import ConfigError
from richviz.live import CONFIG_FIELDS, FIELDS, VIEW_FIELDS

__all__ = [
    "ALPHA_PLAIN",
    "CONFIG_TRAITS",
    "SETTINGS",
    "VIEW_TRAITS",
    "RealNumber",
    "build_controls",
    "check_setting",
    "control_bounds",
    "setting_trait",
]

ALPHA_PLAIN = 0.0
"""The ``alpha`` trait's value for the plain network (the config's ``alpha=None``)."""
CONFIG_TRAITS = tuple(CONFIG_FIELDS)
VIEW_TRAITS = tuple(VIEW_FIELDS)
SETTINGS = CONFIG_TRAITS + VIEW_TRAITS
#: the controls' labels and a step for the number boxes
_LABELS = {
    "n": "points",
    "alpha": "alpha (0: plain)",
    "optimizer": "optimiser",
    "batch_size": "batch",
    "view": "show",
    "resolution": "grid",
    "ellipse_density": "ellipses",
    "steps_per_click": "steps/Step",
}
_STEPS = {"noise": 0.05, "lr": 0.01}
_VIEW_LABELS = {"volume": "log10 volume", "classes": "class regions", "entropy": "entropy"}


class RealNumber(traitlets.Float):
    """A ``Float`` trait that refuses bools (``Float`` would take ``True`` as 1.0)."""

    def validate(self, obj: Any, value: Any) -> Any:
        if isinstance(value, bool):
            self.error(obj, value)
        return super().validate(obj, value)


def setting_trait(name: str) -> traitlets.TraitType:
    """The trait of the setting ``name``: its type, default and help from :data:`FIELDS`
    (bounds are checked by :func:`check_setting`)."""
    field = FIELDS[name]
    if field.choices is not None:
        return traitlets.Enum(field.choices, field.default, help=field.help)
    if field.kind is int:
        return traitlets.Int(field.default, help=field.help)
    default = ALPHA_PLAIN if field.default is None else field.default
    return RealNumber(default, help=field.help)


def check_setting(name: str, value: Any) -> Any:
    """``value`` for the trait ``name`` checked by the config's table; ``TraitError`` (one
    line, naming the trait) if refused. ``alpha = 0`` stands for the plain network."""
    if name == "alpha" and value == ALPHA_PLAIN:
        return ALPHA_PLAIN
    try:
        return FIELDS[name].check(name, value)
    except ConfigError as exc:
        raise traitlets.TraitError(str(exc)) from None


def control_bounds(name: str) -> tuple[float, float]:
    """(min, max) for a bounded control of the setting ``name``: the table's bounds, with an
    open end moved to the nearest representable value inside (``alpha``'s min is 0)."""
    field = FIELDS[name]
    low, high = field.low, field.high
    if field.kind is float:
        if field.open_low:
            low = math.nextafter(low, math.inf)
        if field.open_high:
            high = math.nextafter(high, -math.inf)
    if name == "alpha":
        low = ALPHA_PLAIN
    return low, high


def _control(name: str) -> widgets.ValueWidget:
    field = FIELDS[name]
    kw: dict[str, Any] = {
        "description": _LABELS.get(name, name),
        "style": {"description_width": "initial"},
    }
    if field.choices is not None:
        options = [(_VIEW_LABELS[c], c) for c in field.choices] if name == "view" else field.choices
        return widgets.Dropdown(options=list(options), **kw)
    low, high = control_bounds(name)
    if name == "ellipse_density":
        return widgets.IntSlider(min=low, max=high, **kw)
    if field.kind is int:
        return widgets.BoundedIntText(min=low, max=high, **kw)
    return widgets.BoundedFloatText(min=low, max=high, step=_STEPS.get(name), **kw)


def build_controls(owner: traitlets.HasTraits) -> dict[str, widgets.ValueWidget]:
    """A control per setting except ``click_class`` (a class picker of its own), each set to
    and linked with ``owner``'s trait of the same name."""
    controls = {}
    for name in SETTINGS:
        if name == "click_class":
            continue
        control = _control(name)
        control.layout = widgets.Layout(width="150px")
        control.value = getattr(owner, name)
        widgets.link((control, "value"), (owner, name))
        controls[name] = control
    controls["data"].layout.width = controls["view"].layout.width = "170px"
    controls["alpha"].layout.width = "200px"
    controls["ellipse_density"].layout.width = "240px"
    return controls
