"""CheckpointBrowser: the checkpoints of a run, one per row; selecting one loads it.

Readable rows show step, test accuracy and loss (from the checkpoint metadata); unreadable
rows are marked with ✗ and, when selected, show their one-line error while the previously
loaded model stays loaded (and ``step`` keeps its value). Loading runs in the background.
"""

from __future__ import annotations

import html
import math
import threading
from typing import Any

import ipywidgets as widgets
import torch
import traitlets

from richviz.errors import ArgumentError
from richviz.widgets.common import DEVICES, Step, as_run, check_device, error_line, status_html
from richviz.widgets.sources import device_arg, load_model
from richviz.widgets.tasks import BackgroundWork, Job, Worker

__all__ = [
    "checkpoint_label",
    "CheckpointBrowser",
    "run_name",
]


def _fmt(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else format(v, spec)


def checkpoint_label(ck: Any) -> str:
    """One row of the list: ``step │ acc │ loss`` or ``step ✗ unreadable``."""
    if not ck.readable:
        return f"{ck.step:>8}  ✗ unreadable"
    meta = ck.meta or {}
    acc = meta.get("test_acc", meta.get("train_acc"))
    loss = meta.get("test_loss", meta.get("train_loss"))
    return f"{ck.step:>7}  acc {_fmt(acc, '.3f'):>5}  loss {_fmt(loss, '.3g'):>7}"


def run_name(run: Any) -> str:
    """The run's folder name as plain text (escape it before it enters HTML)."""
    path = getattr(run, "path", None)
    return str(getattr(path, "name", path))


def run_state_html(run: Any) -> str:
    """Small escaped line saying whether the run's training finished ("" when not recorded)."""
    complete = getattr(run, "complete", None)
    if complete is None:
        return ""
    text = "complete run" if complete else "incomplete run: training was stopped or is running"
    color = "#666" if complete else "#b35c00"
    return f'<span style="font-size: 11px; color: {color}">{html.escape(text)}</span>'


_MONO_CSS = "<style>.richviz-mono select { font-family: monospace; }</style>"


class CheckpointBrowser(BackgroundWork, widgets.VBox):
    """List of a run's checkpoints with a device choice; the selected one is loaded.

    Attributes
    ----------
    step : Int >= 0, the loaded checkpoint's step. A value that is not a readable checkpoint
        step snaps to the nearest one (ties: the earlier); bools, non-integers, NaN and negative
        numbers raise ``traitlets.TraitError``. A checkpoint that fails when loaded shows an
        error line and ``step`` goes back to the loaded one.
    device : Enum ``"auto"`` | ``"cpu"`` | ``"cuda"`` (``"cuda"`` only where available).
    selected_index : Int in [-1, number of rows - 1], the row selected in the list.
    model : the loaded ``nn.Module`` (plain attribute).
    checkpoint : its :class:`richviz.checkpoints.Checkpoint`; ``loaded_step`` /
        ``loaded_device`` say what is loaded.

    ``run`` is a :class:`richviz.runs.Run` or its folder (``str`` / ``os.PathLike``).
    :meth:`select` picks one row exactly (unreadable rows too) and refuses a step without one.
    A bad trait value raises ``traitlets.TraitError`` at once and leaves the widget as it was.
    Names from the run (folder, errors) are HTML-escaped before they are shown.
    """

    step = Step(help="step of the selected (loaded) checkpoint (snapped to the nearest one)")
    device = traitlets.Enum(DEVICES, "auto", help="'auto', 'cpu' or 'cuda'")
    selected_index = traitlets.Int(-1, min=-1, help="row selected in the list")

    @traitlets.validate("device")
    def _valid_device(self, proposal: dict) -> str:
        return check_device(proposal["value"])

    @traitlets.validate("selected_index")
    def _valid_index(self, proposal: dict) -> int:
        n = getattr(self, "_rows", 0)
        if proposal["value"] >= n:
            raise traitlets.TraitError(
                f"selected_index={proposal['value']} must be below the {n} rows of the list"
            )
        return proposal["value"]

    def __init__(self, run: Any, step: int | None = None, device: str = "auto", **kwargs: Any):
        run = as_run(run)
        self.run = run
        self.model: torch.nn.Module | None = None
        self.checkpoint: Any = None
        self.loaded_step: int | None = None
        self.loaded_device: str | None = None
        self.load_count = 0  #: number of models actually loaded by this browser
        self._lock = threading.RLock()
        self._worker = Worker("richviz-browser")
        self._syncing = False
        checkpoints = list(run.checkpoints)
        self._rows = len(checkpoints)  # duplicates of a step have rows of their own
        self._index: dict[int, int] = {}
        for i, ck in sorted(enumerate(checkpoints), key=lambda t: not t[1].readable):
            self._index.setdefault(ck.step, i)  # a step's readable row wins over a duplicate

        self.title = widgets.HTML(
            value=_MONO_CSS
            + f"<b>{html.escape(run_name(run))}</b> · {len(checkpoints)} checkpoints"
            f" ({sum(not c.readable for c in checkpoints)} unreadable)"
        )
        self.run_state = widgets.HTML(value=run_state_html(run))
        self.list = widgets.Select(
            options=[(checkpoint_label(ck), i) for i, ck in enumerate(checkpoints)],
            value=None,
            rows=min(14, max(4, len(checkpoints))),
            layout=widgets.Layout(width="330px"),
        )
        self.list.add_class("richviz-mono")
        options = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        self.device_picker = widgets.Dropdown(
            options=options, value=device if device in options else "auto", description="device"
        )
        self.device_picker.layout.width = "200px"
        self.info = widgets.HTML(value=status_html("no checkpoint loaded"))
        self.status = widgets.HTML(value="")
        kwargs.setdefault("layout", widgets.Layout(width="345px", min_width="345px"))
        super().__init__(
            children=[
                self.title,
                self.run_state,
                self.list,
                self.device_picker,
                self.info,
                self.status,
            ],
            **kwargs,
        )
        self.device = self.device_picker.value
        self.list.observe(self._on_select, names="value")
        self.device_picker.observe(lambda c: setattr(self, "device", c["new"]), names="value")
        self.observe(self._on_device, names="device")
        steps = run.steps
        initial = step if step is not None else (steps[-1] if steps else None)
        self.observe(self._on_step, names="step")
        if initial is not None:
            old = self.step
            self.step = initial  # snapped (or refused) by the Step trait
            if self.step == old:  # no change notification: load it here
                self._on_step({"new": self.step, "old": None})

    # ---------------------------------------------------------------- public

    def _checkpoint_steps(self) -> list[int]:
        """The steps ``step`` snaps to: the run's readable checkpoints (see :class:`Step`)."""
        return list(self.run.steps)

    def select(self, step: int) -> None:
        """Select the row of ``step`` as a user would (unreadable rows show their error)."""
        if step not in self._index:
            raise ArgumentError(f"step={step} is not a checkpoint of this run")
        self.list.value = self._index[step]

    # ---------------------------------------------------------------- observers

    def _on_select(self, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        ck = self.run.checkpoints[change["new"]]
        self.selected_index = change["new"]
        if not ck.readable:
            self._show_unreadable(ck)
            return
        self.step = ck.step

    def _show_unreadable(self, ck: Any) -> None:
        kept = f"; still showing step {self.loaded_step}" if self.loaded_step is not None else ""
        self.status.value = status_html(f"step {ck.step}: {ck.error}{kept}", "error")

    def _on_step(self, change: dict) -> None:
        step = change["new"]
        idx = self._index.get(step)
        if idx is not None:
            self._syncing = True
            try:
                self.list.value = idx
                self.selected_index = idx
            finally:
                self._syncing = False
        if idx is None:
            self.status.value = status_html(f"step {step} is not a checkpoint of this run", "error")
            return
        ck = self.run.checkpoints[idx]
        if not ck.readable:
            self._show_unreadable(ck)
            self._revert()
            return
        self._request_load(step)

    def _on_device(self, change: dict) -> None:
        if self.device_picker.value != change["new"]:
            self.device_picker.value = change["new"]
        if self.loaded_step is not None or self.step in self._index:
            self._request_load(self.step)

    def _revert(self) -> None:
        """Put ``step`` back on the loaded checkpoint (linked widgets follow)."""
        if self.loaded_step is not None and self.step != self.loaded_step:
            self.step = self.loaded_step

    # ---------------------------------------------------------------- loading

    def _request_load(self, step: int) -> None:
        self.info.value = status_html(f"loading step {step}…", "busy")
        self._worker.submit(self._load, step, self.device)

    def _load(self, job: Job, step: int, device: str) -> None:
        try:
            model = load_model(self.run, step, device_arg(device))
        except Exception as exc:
            if job.stale:
                return
            ck = self.run.checkpoints[self._index[step]]
            label = checkpoint_label(ck)
            options = list(self.list.options)
            idx = self._index[step]
            if options[idx][0] != label:
                self._syncing = True
                try:
                    options[idx] = (label, idx)
                    self.list.options = options
                    self.list.value = idx
                finally:
                    self._syncing = False
            kept = (
                f"; still showing step {self.loaded_step}" if self.loaded_step is not None else ""
            )
            self.status.value = status_html(f"step {step}: {error_line(exc)}{kept}", "error")
            self._revert()
            return
        if job.stale:
            return
        with self._lock:
            if model is not self.model:
                self.load_count += 1
            self.model = model
            self.checkpoint = self.run.checkpoints[self._index[step]]
            self.loaded_step = step
            dev = next(iter(model.parameters()), torch.empty(0)).device
            self.loaded_device = str(dev)
        self.info.value = status_html(f"loaded step {step} on {dev}")
        self.status.value = ""
