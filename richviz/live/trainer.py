"""Live training for the Playground: a background trainer writing an ordinary run.

:class:`LiveTrainer` trains the model a :class:`~richviz.live.config.PlaygroundConfig`
describes on a background thread: :meth:`~LiveTrainer.start` returns at once,
:meth:`~LiveTrainer.pause` stops between two steps, :meth:`~LiveTrainer.step` runs exactly
``n`` steps and :meth:`~LiveTrainer.reset` restores the initial weights of the seed bit for
bit. As it trains it writes checkpoints at log-spaced steps (about ``checkpoints_per_decade``
per factor of ten, see :func:`log_spaced`, plus one whenever training pauses) into an
ordinary run folder through :class:`richviz.runs.RunWriter`, so ``Run.open``, the Explorer,
the CLI and the metrics cache work on it afterwards; a run is marked complete when its
trajectory ends (:meth:`~LiveTrainer.reset`, :meth:`~LiveTrainer.close`). It publishes the
newest :class:`LiveState` (step, loss, a CPU copy of the weights) for viewers and never waits
for them.

Lazy vs rich: with ``alpha`` set the model is ``alpha * (f(x) - f0(x))`` and the learning
rate is ``lr / alpha**2`` for SGD (``lr / alpha`` for Adam), as in :mod:`richviz.train`.
"""

from __future__ import annotations

import atexit
import math
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from richviz import datasets
from richviz.architectures import build_model
from richviz.devices import best_device
from richviz.errors import ArgumentError, ArgumentTypeError, ConfigError, DataError
from richviz.live.config import MOMENTUM, PlaygroundConfig

if TYPE_CHECKING:  # richviz.widgets imports this module: keep the checkpoint code unloaded
    from richviz.runs import Run, RunWriter

__all__ = ["LiveState", "LiveTrainer", "log_spaced"]

# --------------------------------------------------------------------------- checkpoints


def log_spaced(step: int, per_decade: int = 10) -> bool:
    """True when ``step`` is a log-spaced checkpoint step: 0 or ``round(10**(k / per_decade))``
    for some integer k >= 0 (all of 0..10 at ``per_decade = 10``, then 13, 16, 20, 25, ...)."""
    if per_decade < 1:
        raise ArgumentError(f"per_decade={per_decade} must be >= 1")
    if step <= 0:
        return step == 0
    k = per_decade * math.log10(step)
    return any(
        round(10 ** (j / per_decade)) == step for j in (math.floor(k), math.ceil(k)) if j >= 0
    )


# --------------------------------------------------------------------------- the trainer


@dataclass(frozen=True)
class LiveState:
    """What a trainer published last.

    step : steps taken; loss : the last mini-batch loss (nan at step 0); weights : a CPU copy
    of the model's state dict (do not modify); trajectory : increases on every reset or data
    change; running : whether the trainer was running freely; error : why it stopped, if it
    failed.
    """

    step: int
    loss: float
    weights: dict[str, torch.Tensor]
    trajectory: int
    running: bool
    time: float
    error: str | None = None


#: every trainer not yet closed, stopped at interpreter exit (see :func:`_close_at_exit`)
_OPEN_TRAINERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Stop open trainers before the interpreter tears down: a daemon thread still inside torch's
    C++ code at teardown aborts the process ("terminate called without an active exception")."""
    for obj in list(_OPEN_TRAINERS):
        obj.close(timeout=5.0)


class LiveTrainer:
    """Trains the model of a :class:`PlaygroundConfig` on a background thread.

    Parameters
    ----------
    config : the recipe.
    root : folder for the runs (one subfolder ``run-000``, ``run-001``, ... per trajectory,
        created when training first steps); default a new temporary folder.
    data : an already loaded data set to use instead of ``config.dataset()``.
    checkpoints_per_decade : checkpoints at the steps where :func:`log_spaced` holds.
    publish_hz : weights are copied for viewers at most this often while running freely
        (None: after every step); always after :meth:`step` and when pausing.

    All control methods are thread-safe and may be called from any thread. Model, optimiser
    and data are only touched on the trainer thread (or while it is idle), between steps.
    Listeners added with :meth:`add_listener` are called on the trainer thread with each
    published :class:`LiveState`; they must return quickly.
    """

    def __init__(
        self,
        config: PlaygroundConfig,
        root: str | os.PathLike | None = None,
        *,
        data: datasets.Dataset | None = None,
        checkpoints_per_decade: int = 10,
        publish_hz: float | None = 60.0,
    ):
        if not isinstance(config, PlaygroundConfig):
            raise ArgumentTypeError(
                f"config must be a PlaygroundConfig, got {type(config).__name__}"
            )
        try:
            self.device = best_device(None if config.device == "auto" else config.device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.config = config
        self.per_decade = int(checkpoints_per_decade)
        self.publish_hz = publish_hz
        self.root = (
            Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="richviz-playground-"))
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_model(config.architecture())
        self.model = model.to(self.device).train()
        self._initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._data: datasets.Dataset | None = None
        self._set_data(data if data is not None else config.dataset())

        self._cv = threading.Condition()
        self._free = False  # running until paused
        self._budget = 0  # steps still to run for step(n)
        self._busy = False  # the trainer thread is inside a step
        self._closed = False
        _OPEN_TRAINERS.add(self)
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[LiveState], None]] = []
        self._checkpoint_listeners: list[Callable[[LiveState], None]] = []
        self._trajectory = 0
        self._eval_model: nn.Module | None = None
        self._eval_lock = threading.Lock()
        self.error: BaseException | None = None
        self._reset_trajectory(new=False)

    # ---- data and optimiser (trainer thread or idle)

    def _set_data(self, data: datasets.Dataset | None) -> None:
        if data is not None:
            if tuple(data.x_train.shape[1:]) != (2,):
                raise DataError(f"data: the Playground needs 2-D inputs, got {data.input_shape}")
            top = int(data.y_train.max()) if len(data.y_train) else -1
            if top >= self.config.num_classes:
                raise DataError(
                    f"data: label {top} needs {top + 1} classes, the network has "
                    f"{self.config.num_classes}"
                )
            self._x = data.x_train.to(self.device)
            self._y = data.y_train.to(self.device)
        self._data = data

    @property
    def data(self) -> datasets.Dataset | None:
        """The training data (None: no points yet)."""
        return self._data

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.config.effective_lr
        if self.config.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr)
        momentum = MOMENTUM if self.config.optimizer == "momentum" else 0.0
        return torch.optim.SGD(params, lr=lr, momentum=momentum)

    def _reset_trajectory(self, new: bool = True) -> None:
        self.model.load_state_dict(self._initial)
        self._opt = self._make_optimizer()
        self._gen = torch.Generator().manual_seed(self.config.seed)
        self._order: torch.Tensor | None = None
        self._pos = 0
        self._step = 0
        self._loss = math.nan
        self._writer: RunWriter | None = None
        self._saved: set[int] = set()
        self._t0 = time.perf_counter()
        if new:
            self._trajectory += 1
        self._publish(force=True)

    # ---- public state

    @property
    def step_count(self) -> int:
        """Steps taken in the current trajectory."""
        return self._step

    @property
    def state(self) -> LiveState:
        """The newest published :class:`LiveState`."""
        return self._state

    @property
    def running(self) -> bool:
        """True while the trainer runs freely or has steps queued."""
        return self._free or self._budget > 0 or self._busy

    @property
    def run_path(self) -> Path | None:
        """The current trajectory's run folder (None until training first steps)."""
        return self._writer.path if self._writer is not None else None

    def open_run(self) -> Run:
        """The current run as a :class:`richviz.runs.Run` (checkpoints written so far)."""
        from richviz.runs import Run

        if self._writer is None:
            raise ValueError("no run yet: start() or step() first")
        return Run.open(self._writer.path)

    def add_listener(self, fn: Callable[[LiveState], None]) -> None:
        """Call ``fn(state)`` on the trainer thread after each publication."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[LiveState], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)
        if fn in self._checkpoint_listeners:
            self._checkpoint_listeners.remove(fn)

    def add_checkpoint_listener(self, fn: Callable[[LiveState], None]) -> None:
        """Call ``fn(state)`` on the trainer thread after each checkpoint is written (at the
        log-spaced steps of the run; ``state.weights`` a CPU copy of that step's weights)."""
        self._checkpoint_listeners.append(fn)

    @torch.no_grad()
    def evaluate(self, split: str = "train") -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of the newest published weights on the ``"train"``
        or ``"test"`` split, computed on a CPU copy of the model (never waits for training;
        when the trainer is idle the published weights are the model's)."""
        if split not in ("train", "test"):
            raise ArgumentError(f"split={split!r} must be 'train' or 'test'")
        data = self._data
        if data is None:
            return math.nan, math.nan
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        with self._eval_lock:
            if self._eval_model is None:
                self._eval_model = build_model(self.config.architecture())
            self._eval_model.load_state_dict(self._state.weights)
            return _evaluate(self._eval_model, x, y)

    # ---- control

    def start(self) -> None:
        """Train until :meth:`pause` (returns at once). ``DataError`` without data."""
        self._need_data()
        with self._cv:
            self._check_open()
            self.error = None
            self._free = True
            self._ensure_thread()
            self._cv.notify_all()

    def pause(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Stop after the current step (checkpoint + publication follow). Returns at once
        unless ``wait``; then True once the trainer is idle (False on timeout)."""
        with self._cv:
            self._free = False
            self._budget = 0
            self._cv.notify_all()
            if wait:
                return self._wait_idle_locked(timeout)
        return True

    def step(self, n: int = 1, wait: bool = True, timeout: float | None = None) -> int:
        """Pause free running, then run exactly ``n`` more steps; with ``wait`` block until
        they are done and return the step count (else return at once)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArgumentError(f"n={n!r} must be a positive integer")
        self._need_data()
        with self._cv:
            self._check_open()
            self._free = False
            self._wait_idle_locked(timeout)
            self.error = None
            self._budget = n
            self._ensure_thread()
            self._cv.notify_all()
            if wait:
                self._wait_idle_locked(timeout)
            return self._step

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the trainer is idle (not running freely, nothing queued)."""
        with self._cv:
            return self._wait_idle_locked(timeout)

    def reset(self) -> None:
        """Pause, then restore exactly the initial weights of the seed, a fresh optimiser and
        mini-batch order, and step 0; the old run is marked complete and the next training
        writes a new run folder."""
        with self._cv:
            self._free = False
            self._budget = 0
            self._wait_idle_locked(None)
            self._end_run()
            self.error = None
            self._reset_trajectory()

    def set_data(self, data: datasets.Dataset | PlaygroundConfig) -> None:
        """Swap the training data between two steps, keeping weights and optimiser state.

        ``data``: a Dataset or a ``points`` config (whose points are used). The run's manifest
        records the new data set and the step of the change.
        """
        if isinstance(data, PlaygroundConfig):
            if data.num_classes != self.config.num_classes:
                raise DataError(
                    f"data: {data.num_classes} classes, the network has {self.config.num_classes}"
                    " (change classes and reset)"
                )
            config, data = data, data.dataset()
        else:
            config = self.config
        with self._cv:
            was_free = self._free
            self._free = False
            self._budget = 0
            self._wait_idle_locked(None)
            self._set_data(data)
            self.config = config
            self._order, self._pos = None, 0
            if self._writer is not None:
                from richviz.runs import atomic_write_json

                m = self._writer.manifest
                m["data"] = self.config.data_spec()
                m["playground"] = self.config.to_dict()
                m.setdefault("data_changes", []).append(self._step)
                atomic_write_json(m, self._writer.path / "run.json")
            self._publish(force=True)
            if was_free and data is not None:
                self._free = True
                self._cv.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread (after its current step), write a final checkpoint and mark the run
        complete."""
        with self._cv:
            if self._closed:
                return
            self._free = False
            self._budget = 0
            self._wait_idle_locked(timeout)
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._end_run()

    def __enter__(self) -> LiveTrainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals

    def _need_data(self) -> None:
        if self._data is None or len(self._data.x_train) == 0:
            raise DataError("data: no points yet (add points by clicking, or pick a data set)")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this LiveTrainer is closed")

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name="richviz-live-trainer", daemon=True
            )
            self._thread.start()

    def _idle(self) -> bool:
        return not self._free and self._budget == 0 and not self._busy

    def _wait_idle_locked(self, timeout: float | None) -> bool:
        if threading.current_thread() is self._thread:
            return self._idle()
        return self._cv.wait_for(self._idle, timeout=timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._free or self._budget > 0)
                if self._closed:
                    return
                self._busy = True
                if self._budget > 0:
                    self._budget -= 1
            last = False
            try:
                self._train_step()
                last = True
            except BaseException as exc:  # report, stop, keep the thread usable
                self.error = exc
                with self._cv:
                    self._free, self._budget = False, 0
            with self._cv:
                idle_next = not self._free and self._budget == 0
            try:
                if idle_next or not last:
                    self._checkpoint_now()
                self._publish(force=idle_next or not last)
            except BaseException as exc:
                self.error = exc
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def _train_step(self) -> None:
        if self._writer is None:
            self._open_writer()
        if self._step in self._saved or log_spaced(self._step, self.per_decade):
            self._checkpoint(self._step)
        n = len(self._x)
        bs = min(self.config.batch_size, n)
        if bs == n:
            xb, yb = self._x, self._y
        else:
            if self._order is None or self._pos + bs > n:
                self._order, self._pos = torch.randperm(n, generator=self._gen), 0
            idx = self._order[self._pos : self._pos + bs].to(self.device)
            self._pos += bs
            xb, yb = self._x[idx], self._y[idx]
        self.model.train()
        self._opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(xb), yb)
        loss.backward()
        self._opt.step()
        self._loss = float(loss.detach())
        self._step += 1
        if log_spaced(self._step, self.per_decade):
            self._checkpoint(self._step)

    def _open_writer(self) -> None:
        from richviz.runs import RunWriter

        self.root.mkdir(parents=True, exist_ok=True)
        i = 0
        while (self.root / f"run-{i:03d}").exists():
            i += 1
        cfg = self.config
        manifest = {
            "preset": "playground",
            "description": f"Playground: {cfg.data}, 2-{'-'.join([str(cfg.width)] * cfg.depth)}-"
            f"{cfg.num_classes} {cfg.activation} MLP, {cfg.optimizer} lr {cfg.lr:g}",
            "architecture": cfg.architecture(),
            "data": cfg.data_spec(),
            "seed": cfg.seed,
            "hparams": {
                "loss": "ce",
                "optimizer": cfg.optimizer,
                "lr": cfg.lr,
                "effective_lr": cfg.effective_lr,
                "momentum": MOMENTUM if cfg.optimizer == "momentum" else 0.0,
                "batch_size": cfg.batch_size,
            },
            "device": str(self.device),
            "torch": torch.__version__,
            "playground": cfg.to_dict(),
        }
        self._writer = RunWriter(self.root / f"run-{i:03d}", manifest)

    def _checkpoint(self, step: int) -> None:
        if self._writer is None or step in self._saved:
            return
        tl, ta = _evaluate(self.model, self._x, self._y)
        xt, yt = self._data.x_test.to(self.device), self._data.y_test.to(self.device)
        vl, va = _evaluate(self.model, xt, yt)
        n = len(self._x)
        meta = {
            "epoch": step * min(self.config.batch_size, n) / n,
            "train_loss": tl,
            "train_acc": ta,
            "test_loss": vl,
            "test_acc": va,
            "time": time.perf_counter() - self._t0,
        }
        self._writer.save(step, self.model, meta)
        self._saved.add(step)
        if self._checkpoint_listeners:
            state = LiveState(
                step=step,
                loss=self._loss,
                weights=self._cpu_weights(),
                trajectory=self._trajectory,
                running=self._free or self._budget > 0,
                time=time.perf_counter(),
            )
            for fn in list(self._checkpoint_listeners):
                fn(state)

    def _checkpoint_now(self) -> None:
        if self._writer is not None and self._data is not None:
            self._checkpoint(self._step)

    def _end_run(self) -> None:
        """The trajectory ends: a final checkpoint, and its run marked complete."""
        self._checkpoint_now()
        if self._writer is not None:
            self._writer.finish()

    def _cpu_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the model's state dict (what a published state carries)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _publish(self, force: bool = False) -> None:
        now = time.perf_counter()
        last = getattr(self, "_published_at", -math.inf)
        if not force and self.publish_hz and now - last < 1.0 / self.publish_hz:
            return
        self._published_at = now
        weights = self._cpu_weights()
        err = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        self._state = LiveState(
            step=self._step,
            loss=self._loss,
            weights=weights,
            trajectory=self._trajectory,
            running=self._free or self._budget > 0,
            time=now,
            error=err,
        )
        for fn in list(getattr(self, "_listeners", ())):
            fn(self._state)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    if len(x) == 0:
        return math.nan, math.nan
    was = model.training
    model.eval()
    out = model(x)
    model.train(was)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())
