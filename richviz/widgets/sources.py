"""What a widget looks at: a training run, or one bare model with optional data.

:class:`ModelSource` gives both the same small interface (``steps``, ``load(step)``,
``data()``), so the slice viewer does not care which one it was given. Loads go through one
lock per run, because the browser, viewer and metrics panel load from different threads.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from richviz.compute_lock import COMPUTE
from richviz.devices import best_device, module_device
from richviz.errors import ArgumentTypeError, DataError

__all__ = [
    "device_arg",
    "is_run",
    "load_model",
    "ModelSource",
    "run_lock",
]

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def run_lock(run: Any) -> threading.RLock:
    """The lock serialising model loads of ``run`` across the widgets' threads."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(run)
        if lock is None:
            lock = _LOCKS[run] = threading.RLock()
        return lock


def load_model(run: Any, step: int, device: str | torch.device | None = None) -> nn.Module:
    """``run.load(step, device)`` under the run's lock (``Run.load`` keeps an unlocked LRU).

    ``run.metrics()`` may load from its own thread without this lock; a ``KeyError`` from the
    run's LRU racing with it is retried once.
    """
    with run_lock(run):
        try:
            return run.load(step, device=device)
        except KeyError:
            return run.load(step, device=device)


def is_run(obj: Any) -> bool:
    """True for a :class:`richviz.checkpoints.Run` (or anything shaped like one)."""
    return hasattr(obj, "checkpoints") and hasattr(obj, "load") and hasattr(obj, "steps")


def device_arg(device: str | None) -> str | None:
    """Widget device choice (``"auto"`` / ``"cpu"`` / ``"cuda"``) as a ``load`` argument."""
    return None if device in (None, "", "auto") else device


class ModelSource:
    """A run or a single model, seen through ``steps`` / ``load(step)`` / ``data()``.

    ``data()`` returns ``(x, y)`` inputs and integer labels used to place the slice and draw
    points (a run's test split; or the ``data=`` given with a bare model), or ``None``.
    """

    COPIES = 6

    def __init__(self, model_or_run: Any, data: tuple[Any, Any] | None = None):
        self.run = model_or_run if is_run(model_or_run) else None
        if self.run is None and not isinstance(model_or_run, nn.Module):
            raise ArgumentTypeError(
                "model_or_run must be a torch.nn.Module or a richviz.checkpoints.Run, "
                f"got {type(model_or_run).__name__}"
            )
        self.model = None if self.run is not None else model_or_run
        self._copies: OrderedDict[tuple[int, str | None], nn.Module] = OrderedDict()
        self._copies_lock = threading.Lock()
        self._data = _as_xy(data) if data is not None else None
        self._data_loaded = data is not None
        self._data_lock = threading.Lock()

    @property
    def steps(self) -> list[int]:
        """Readable steps (``[0]`` for a bare model)."""
        return list(self.run.steps) if self.run is not None else [0]

    def load(self, step: int, device: str | None = None) -> nn.Module:
        """The model at ``step`` on ``device`` (a bare model ignores ``step``).

        For a run this is a private copy of the run's cached model: feature maps hook into
        modules, and the metrics panel may run the run's own model object in another thread
        at the same time. The last ``COPIES`` copies are kept. A bare model is used as it is
        on its own device (``"auto"``) or there already; else a copy on ``device``, made
        again when the model's weights change in place (training).
        """
        if self.run is None:
            return self._bare_on(device_arg(device))
        key = (int(step), device_arg(device))
        with self._copies_lock:
            if key in self._copies:
                self._copies.move_to_end(key)
                return self._copies[key]
        model = load_model(self.run, step, device_arg(device))
        # under the compute lock: a metrics pass in another thread hooks into this same object
        # (feature maps), and a copy made meanwhile would carry its hooks (taken before the
        # run's lock, the order every holder of the compute lock that loads a model takes)
        with COMPUTE.hold(), run_lock(self.run):
            model = copy.deepcopy(model).eval()
        with self._copies_lock:
            self._copies[key] = model
            while len(self._copies) > self.COPIES:
                self._copies.popitem(last=False)
        return model

    def _bare_on(self, device: str | None) -> nn.Module:
        model = self.model.eval()
        if device is None:
            return model
        dev = best_device(device)
        here = module_device(model)
        if here.type == dev.type and (dev.index is None or here.index == dev.index):
            return model
        tensors = [*model.parameters(), *model.buffers()]
        key = (-1, f"{dev}:{tuple(t._version for t in tensors)}")
        with self._copies_lock:
            if key in self._copies:
                return self._copies[key]
            for k in [k for k in self._copies if k[0] == -1]:  # stale copies of old weights
                del self._copies[k]
        moved = copy.deepcopy(model).to(dev).eval()
        with self._copies_lock:
            self._copies[key] = moved
        return moved

    def data(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(x, y)``: the run's test split, or the data given with the model, or None."""
        if self._data_loaded:
            return self._data
        # the viewer's job and a GeometryRow's range job ask at once: one loads, the other waits
        # (flagging "loaded" before the data is in would hand the second one None)
        with self._data_lock:
            if not self._data_loaded:
                ds = None
                if self.run is not None:
                    try:
                        ds = self.run.data()
                    except DataError:
                        ds = None
                if ds is not None:
                    self._data = (ds.x_test, ds.y_test)
                self._data_loaded = True
        return self._data

    def input_shape(self, model: nn.Module | None = None) -> tuple[int, ...] | None:
        """Input shape from the data, else from the model's first Linear (flat inputs)."""
        data = self.data()
        if data is not None:
            return tuple(data[0].shape[1:])
        model = model if model is not None else self.model
        for m in model.modules() if model is not None else ():
            if isinstance(m, nn.Linear):
                return (m.in_features,)
            if isinstance(m, nn.Conv2d):
                return None
        return None


def _as_xy(data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``data=(x, y)``, ``x`` alone, or a Dataset -> ``(x float tensor, y long tensor or None)``."""
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.float()
    if x.ndim < 2 or len(x) == 0:
        raise DataError(
            f"data: x must have shape (N, *input_shape) with N >= 1, got {tuple(x.shape)}"
        )
    if y is not None:
        y = torch.as_tensor(y).long().reshape(-1)
        if len(y) != len(x):
            raise DataError(f"data: x has {len(x)} rows but y has {len(y)}")
    return x, y
