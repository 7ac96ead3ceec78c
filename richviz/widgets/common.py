"""Helpers every widget shares: the device choice, the step rule, opening a run, status lines,
the export row, thumbnails, layer labels.

Device checks build on the one check of the core (:func:`richviz.devices.check_device`); a
refused choice becomes a ``traitlets.TraitError`` (the widget keeps its old value).

The step rule (:class:`Step`, the ``step`` trait of every widget over a run): an int >= 0 that
is not a readable checkpoint step snaps to the nearest one (ties: the earlier); bools,
non-integers, NaN, infinities and negative numbers are refused with a ``TraitError`` naming
the trait, as is every step of a widget without readable checkpoints.

ipywidgets is imported only by :func:`export_row`: the headless rooms that import this module
(slice records, the slice export, animation pages) load no widget library.
"""

from __future__ import annotations

import bisect
import html
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import traitlets
from torch import nn

from richviz import devices
from richviz.features import LOGITS, PENULTIMATE, eval_mode, feature_map
from richviz.widgets import rendering

if TYPE_CHECKING:
    import ipywidgets

__all__ = [
    "DEVICES",
    "Step",
    "as_run",
    "check_device",
    "error_line",
    "export_row",
    "layer_labels",
    "nearest_step",
    "status_html",
    "thumbnail_png",
]

#: the device choices of a widget (``"auto"``: CUDA where available, else CPU)
DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> str:
    """A widget device choice, one of :data:`DEVICES`; ``"cuda"`` only where CUDA is available.

    Checked by :func:`richviz.devices.check_device`; its one-line error becomes a
    ``traitlets.TraitError``. Returns ``device`` unchanged.
    """
    if device not in DEVICES:
        raise traitlets.TraitError(f"device={device!r} must be one of {list(DEVICES)}")
    try:
        devices.check_device(device)
    except ValueError as exc:
        raise traitlets.TraitError(f"{exc}; use 'auto' or 'cpu'") from None
    return device


def nearest_step(step: int, steps: Sequence[int]) -> int:
    """The step of ``steps`` (ascending, not empty) nearest to ``step``; ties: the earlier."""
    i = bisect.bisect_left(steps, step)
    if i == len(steps):
        return int(steps[-1])
    if i == 0 or steps[i] == step:
        return int(steps[i])
    before, after = steps[i - 1], steps[i]
    return int(before if step - before <= after - step else after)


class Step(traitlets.Int):
    """The ``step`` trait of a widget over a run: snaps to the nearest readable checkpoint.

    The owner says which steps it can show through ``_checkpoint_steps() -> list[int]``
    (ascending). A value is first checked as a ``traitlets.Int`` with ``min=0`` (integer-valued
    numbers such as ``4.0`` or ``numpy.int64(4)`` count as ints; ``2.5``, NaN, infinities and
    negative numbers are refused), bools are refused, and then it snaps with
    :func:`nearest_step`; a widget without steps refuses every value. Every route in (trait
    set, constructor, ``traitlets.link``, slider) goes through here, so linked widgets over the
    same run agree.
    """

    def __init__(self, default_value: int = 0, **kwargs: Any):
        super().__init__(default_value, min=0, **kwargs)

    def subclass_init(self, cls: type) -> None:
        traitlets.TraitType.subclass_init(self, cls)  # opt in to instance_init (Int opts out)

    def instance_init(self, obj: Any) -> None:
        # the default is stored as it is, not validated on the first read: a widget without
        # checkpoints has a step (0) that reads fine, while every step set on it is refused
        obj._trait_values.setdefault(self.name, self.default_value)
        super().instance_init(obj)

    def validate(self, obj: Any, value: Any) -> int:
        if isinstance(value, (bool, np.bool_)):
            raise traitlets.TraitError(
                f"{self.name}={value!r} must be an int >= 0 (a checkpoint step), not a bool"
            )
        value = super().validate(obj, value)
        steps = obj._checkpoint_steps()
        if not steps:
            raise traitlets.TraitError(
                f"{self.name}={value}: there is no readable checkpoint to show"
            )
        return nearest_step(value, steps)


def as_run(run: Any, *, str_folders_only: bool = False) -> Any:
    """``run`` itself, or the run opened from a folder path (``str`` or ``os.PathLike``) by
    :meth:`richviz.runs.Run.open`, which raises a one-line ``RunError`` for a folder that is
    not a run. ``str_folders_only``: a ``str`` that names no existing folder is returned as it
    is (for callers that also take other things and refuse a plain string themselves)."""
    if str_folders_only and isinstance(run, str) and not os.path.isdir(run):
        return run
    if isinstance(run, (str, os.PathLike)):
        from richviz.runs import Run  # here: importing the widgets loads no checkpoint module

        return Run.open(run)
    return run


def status_html(message: str, kind: str = "info") -> str:
    """One status line as HTML (``kind``: info, busy, error); the message is escaped."""
    colour = {"error": "#b00020", "busy": "#555", "info": "#333"}.get(kind, "#333")
    text = html.escape(" ".join(str(message).split()))
    return f'<span style="color:{colour};font-size:12px">{text}</span>'


def error_line(exc: BaseException) -> str:
    """An exception as one line: ``TypeName: message``."""
    msg = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {msg}"


#: one export button: (label, callback) or (label, callback, CSS width; default 70px)
ExportButton = tuple[str, Callable[[], Any]] | tuple[str, Callable[[], Any], str]


def export_row(
    name: str,
    buttons: Sequence[ExportButton],
    status: ipywidgets.HTML,
    name_width: str = "220px",
) -> tuple[ipywidgets.Text, list[ipywidgets.Button], ipywidgets.HBox]:
    """A widget's export row: a file-name box, then one button per export.

    Parameters
    ----------
    name
        The file box's first value (a file name without suffix; the callbacks read the box).
    buttons
        ``(label, callback)`` or ``(label, callback, width)`` per button, in order; a click
        calls ``callback()``, which writes its file and its own status line on success.
    status
        The widget's status line: a callback that raises puts its one-line error
        (:func:`error_line`) there instead, so a button never breaks the widget.
    name_width
        CSS width of the file box.

    Returns
    -------
    (text, buttons, row)
        The file box (``description="file"``), the buttons in order, and the HBox holding them.

    Examples
    --------
    >>> import ipywidgets as widgets
    >>> status = widgets.HTML()
    >>> def fail():
    ...     raise ValueError("nothing to write")
    >>> name, (ok, bad), row = export_row("out", [("PNG", lambda: None), ("CSV", fail)], status)
    >>> bad.click()
    >>> "ValueError: nothing to write" in status.value
    True
    """
    import ipywidgets as widgets  # here, see the module docstring

    def guarded(callback: Callable[[], Any]) -> Callable[[Any], None]:
        def click(_button: Any) -> None:
            try:
                callback()
            except Exception as exc:  # a button must never break the widget
                status.value = status_html(error_line(exc), "error")

        return click

    text = widgets.Text(value=name, description="file", layout={"width": name_width})
    made = []
    for label, callback, *width in buttons:
        button = widgets.Button(description=label, layout={"width": width[0] if width else "70px"})
        button.on_click(guarded(callback))
        made.append(button)
    return text, made, widgets.HBox([text, *made])


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


def _layer_widths(model: nn.Module, names: list[str], shape: tuple[int, ...]) -> dict[str, int]:
    """Features per input of each named layer (and the pseudo-layers), from one forward pass
    on a zero input with hooks; layers that cannot be measured are left out."""
    modules = dict(model.named_modules())
    widths: dict[str, int] = {}

    def hook(name: str):
        def record(_module: nn.Module, _inputs: Any, out: Any) -> None:  # returns None:
            if isinstance(out, torch.Tensor):  # a hook's return value replaces the output
                widths.setdefault(name, int(out[0].numel()))

        return record

    hooks = [modules[n].register_forward_hook(hook(n)) for n in names if n in modules]
    try:
        x = torch.zeros(
            (1, *shape), dtype=devices.module_dtype(model), device=devices.module_device(model)
        )
        with torch.no_grad(), eval_mode(model):
            out = model(x)
            widths.setdefault(LOGITS, int(out[0].numel()))
            widths.setdefault(PENULTIMATE, int(feature_map(model, PENULTIMATE)(x)[0].numel()))
    except Exception:
        pass
    finally:
        for h in hooks:
            h.remove()
    return widths


def layer_labels(model: nn.Module, names: list[str], source: Any = None) -> dict[str, str]:
    """Menu labels of a model's layers: ``"2: Tanh (256)"`` (name, module type, width).

    The width is the number of features the layer outputs per input, measured by one forward
    pass on a zero input (hooks; ``source.input_shape(model)`` gives its shape); the
    pseudo-layers read ``"penultimate (64)"``, ``"logits (2)"``. A layer that cannot be
    measured is labelled by its name and type.
    """
    modules = dict(model.named_modules())
    try:
        shape = source.input_shape(model) if source is not None else None
    except Exception:
        shape = None
    widths = _layer_widths(model, names, shape) if shape is not None else {}
    labels = {}
    for name in names:
        width = f" ({widths[name]})" if widths.get(name) else ""
        if name in modules:
            labels[name] = f"{name}: {type(modules[name]).__name__}{width}"
        else:
            labels[name] = f"{name}{width}"
    return labels
