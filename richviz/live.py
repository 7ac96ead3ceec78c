"""Live training for the Playground: a background trainer and a bounded-rate frame loop.

:class:`PlaygroundConfig` is a small JSON-serialisable recipe (data, network,
hyper-parameters, seed, device). :class:`LiveTrainer` trains the model it describes on a
background thread: :meth:`~LiveTrainer.start` returns at once, :meth:`~LiveTrainer.pause`
stops between two steps, :meth:`~LiveTrainer.step` runs exactly ``n`` steps and
:meth:`~LiveTrainer.reset` restores the initial weights of the seed bit for bit. As it trains
it writes checkpoints at log-spaced steps (about ``checkpoints_per_decade`` per factor of ten,
plus one whenever training pauses) into an ordinary run folder through
:class:`richviz.runs.RunWriter`, so ``Run.open``, the Explorer, the CLI and the metrics
cache work on it afterwards. It publishes the newest :class:`LiveState` (step, loss, a CPU
copy of the weights) for viewers and never waits for them.

:class:`FrameLoop` is the viewers' side: a thread that draws the newest submitted item at
most ``fps`` times a second; items that arrive faster replace each other (frames are
skipped, never queued). :func:`compute_view` computes what one frame shows (volume element,
decision field, boundary magnification, loss, accuracy, D_LR, NC1) for a model on a slice.

Lazy vs rich: with ``alpha`` set the model is ``alpha * (f(x) - f0(x))`` and the learning
rate is ``lr / alpha**2`` for SGD (``lr / alpha`` for Adam), as in :mod:`richviz.train`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from richviz import activations, datasets
from richviz.architectures import build_model
from richviz.devices import best_device
from richviz.errors import ConfigError, DataError
from richviz.metrics import NC_KEYS

if TYPE_CHECKING:  # richviz.widgets imports this module: keep the checkpoint code unloaded
    from richviz.runs import Run, RunWriter

__all__ = [
    "ACTIVATIONS",
    "DATA_SETS",
    "DEVICES",
    "MAX_CLASSES",
    "OPTIMIZERS",
    "FrameLoop",
    "LiveState",
    "LiveTrainer",
    "LiveView",
    "PlaygroundConfig",
    "VIEW_METRICS",
    "compute_view",
    "log_spaced",
]

DATA_SETS = ("moons", "circles", "xor", "spirals", "sinusoid", "blobs", "points")
"""Data choices: five 2-D toys, Gaussian blobs, and ``"points"`` (the user's own x, y)."""
BINARY = ("moons", "circles", "xor", "sinusoid")
OPTIMIZERS = ("sgd", "momentum", "adam")
"""``sgd``: plain SGD; ``momentum``: SGD with momentum 0.9; ``adam``: Adam."""
ACTIVATIONS = activations.MENU
"""Activation choices (:data:`richviz.activations.MENU`)."""
DEVICES = ("auto", "cpu", "cuda")
MAX_CLASSES = 6
MOMENTUM = 0.9
CONFIG_FORMAT = "richviz-playground"
CONFIG_VERSION = 1


# --------------------------------------------------------------------------- configuration


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class PlaygroundConfig:
    """Everything that determines a Playground demo; same config, same initial weights.

    Attributes
    ----------
    data : one of :data:`DATA_SETS`; ``"points"`` trains on ``x``, ``y``.
    n : number of generated points (train and test together).
    noise : the generator's noise (moons, circles, xor, spirals, blobs; sinusoid has none).
    classes : classes of ``blobs``, arms of ``spirals``, and at least the classes of
        ``points`` (clicks may add classes up to this); 2..:data:`MAX_CLASSES`.
    x, y : the user's points, ``(N, 2)`` and ``(N,)`` (``data == "points"`` only).
    width, depth : hidden layers ``[width] * depth`` of a ``2 -> ... -> C`` MLP.
    activation : one of :data:`ACTIVATIONS`.
    alpha : None for the plain network, else the output scale of ``alpha * (f - f0)``.
    lr, batch_size, optimizer : the learning rate (before the alpha scaling), mini-batch
        size (full batch when >= the training set) and one of :data:`OPTIMIZERS`.
    seed : initial weights, data and mini-batch order.
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """

    data: str = "moons"
    n: int = 200
    noise: float = 0.1
    classes: int = 2
    x: tuple[tuple[float, float], ...] | None = None
    y: tuple[int, ...] | None = None
    width: int = 16
    depth: int = 2
    activation: str = "tanh"
    alpha: float | None = None
    lr: float = 0.1
    batch_size: int = 32
    optimizer: str = "momentum"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check(self.data in DATA_SETS, f"data={self.data!r} must be one of {list(DATA_SETS)}")
        _check(
            isinstance(self.n, int) and 8 <= self.n <= 20000, f"n={self.n!r} must lie in [8, 20000]"
        )
        _check(
            isinstance(self.noise, (int, float)) and 0 <= self.noise <= 2,
            f"noise={self.noise!r} must lie in [0, 2]",
        )
        _check(
            isinstance(self.classes, int) and 2 <= self.classes <= MAX_CLASSES,
            f"classes={self.classes!r} must lie in [2, {MAX_CLASSES}]",
        )
        _check(
            isinstance(self.width, int) and 1 <= self.width <= 1024,
            f"width={self.width!r} must lie in [1, 1024]",
        )
        _check(
            isinstance(self.depth, int) and 1 <= self.depth <= 8,
            f"depth={self.depth!r} must lie in [1, 8]",
        )
        _check(
            self.activation in ACTIVATIONS,
            f"activation={self.activation!r} must be one of {list(ACTIVATIONS)}",
        )
        _check(
            self.alpha is None or (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1e6),
            f"alpha={self.alpha!r} must be None or in (0, 1e6)",
        )
        _check(
            isinstance(self.lr, (int, float)) and 0 < self.lr <= 100 and math.isfinite(self.lr),
            f"lr={self.lr!r} must lie in (0, 100]",
        )
        _check(
            isinstance(self.batch_size, int) and 1 <= self.batch_size <= 100000,
            f"batch_size={self.batch_size!r} must lie in [1, 100000]",
        )
        _check(
            self.optimizer in OPTIMIZERS,
            f"optimizer={self.optimizer!r} must be one of {list(OPTIMIZERS)}",
        )
        _check(
            isinstance(self.seed, int) and 0 <= self.seed < 2**31,
            f"seed={self.seed!r} must lie in [0, 2**31)",
        )
        _check(self.device in DEVICES, f"device={self.device!r} must be one of {list(DEVICES)}")
        if self.data == "points":
            x = () if self.x is None else self.x
            y = () if self.y is None else self.y
            if len(x):
                xa, ya = datasets.check_arrays(x, y, "points")
                _check(xa.shape[1] == 2, f"points: x must have 2 columns, got {xa.shape[1]}")
                _check(
                    int(ya.max()) < MAX_CLASSES,
                    f"points: labels must lie in [0, {MAX_CLASSES - 1}], got {int(ya.max())}",
                )
                x = tuple(tuple(float(v) for v in row) for row in xa)
                y = tuple(int(v) for v in ya)
            else:
                _check(len(y) == 0, "points: y has labels but x has no points")
                x, y = (), ()
            object.__setattr__(self, "x", x)
            object.__setattr__(self, "y", y)
        else:
            _check(
                self.x is None and self.y is None,
                f"x and y are only for data='points', not data={self.data!r}",
            )
        if isinstance(self.alpha, int):
            object.__setattr__(self, "alpha", float(self.alpha))

    # ---- derived

    @property
    def num_classes(self) -> int:
        """Outputs of the network: 2 for the binary toys, ``classes`` for blobs and spirals,
        ``max(classes, max(y) + 1)`` for points."""
        if self.data in BINARY:
            return 2
        if self.data == "points" and self.y:
            return max(self.classes, max(self.y) + 1)
        return self.classes

    @property
    def effective_lr(self) -> float:
        """``lr / alpha**2`` for SGD (with or without momentum), ``lr / alpha`` for Adam,
        ``lr`` without alpha."""
        if self.alpha is None:
            return float(self.lr)
        return float(self.lr) / (self.alpha if self.optimizer == "adam" else self.alpha**2)

    def architecture(self) -> dict[str, Any]:
        """The run manifest's architecture entry: a registered MLP and the optional alpha."""
        return {
            "name": "mlp",
            "kwargs": {
                "in_features": 2,
                "hidden": [self.width] * self.depth,
                "out_features": self.num_classes,
                "activation": self.activation,
            },
            "alpha": self.alpha,
        }

    def data_spec(self) -> dict[str, Any]:
        """``{"name", "kwargs"}`` for :func:`richviz.datasets.load` (None: no points yet)."""
        if self.data == "points":
            if not self.x:
                return {"name": "arrays", "kwargs": None}
            return {
                "name": "arrays",
                "kwargs": {
                    "x": [list(r) for r in self.x],
                    "y": list(self.y or ()),
                    "num_classes": self.num_classes,
                },
            }
        kwargs: dict[str, Any] = {"n": self.n, "seed": self.seed}
        if self.data != "sinusoid":
            kwargs["noise"] = float(self.noise)
        if self.data == "blobs":
            kwargs["classes"] = self.classes
        if self.data == "spirals":
            kwargs["arms"] = self.classes
        return {"name": self.data, "kwargs": kwargs}

    def dataset(self) -> datasets.Dataset | None:
        """The data set (None for ``points`` without points)."""
        spec = self.data_spec()
        if spec["kwargs"] is None:
            return None
        return datasets.load(spec["name"], **spec["kwargs"])

    def with_points(self, x: Any, y: Any) -> PlaygroundConfig:
        """This config on the user's points ``x`` (N, 2), ``y`` (N,) (``data="points"``)."""
        return dataclasses.replace(self, data="points", x=_rows(x), y=_labels(y))

    # ---- JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, with a format header."""
        d = dataclasses.asdict(self)
        if self.x is not None:
            d["x"] = [list(r) for r in self.x]
            d["y"] = list(self.y or ())
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **d}

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> PlaygroundConfig:
        """Inverse of :meth:`to_dict`; ``ConfigError`` naming ``source`` for unknown keys or
        values out of range."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: a Playground config is a JSON object")
        d = dict(d)
        fmt = d.pop("format", CONFIG_FORMAT)
        version = d.pop("version", CONFIG_VERSION)
        if fmt != CONFIG_FORMAT:
            raise ConfigError(f"{source}: format={fmt!r} is not {CONFIG_FORMAT!r}")
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(f"{source}: version={version!r} is newer than {CONFIG_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}")
        try:
            return cls(**d)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except DataError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> PlaygroundConfig:
        """A config from JSON text (starting with ``{``) or from a JSON file's path."""
        source = "config"
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            source = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(d, source)


def _rows(x: Any) -> tuple[tuple[float, ...], ...]:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.size == 0:
        return ()
    return tuple(tuple(float(v) for v in row) for row in a.reshape(len(a), -1))


def _labels(y: Any) -> tuple[int, ...]:
    a = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if a.size == 0:
        return ()
    return tuple(int(v) for v in np.asarray(a, dtype=np.float64).round().reshape(-1))


# --------------------------------------------------------------------------- checkpoints


def log_spaced(step: int, per_decade: int = 10) -> bool:
    """True when ``step`` is a log-spaced checkpoint step: 0 or ``round(10**(k / per_decade))``
    for some integer k >= 0 (all of 0..10 at ``per_decade = 10``, then 13, 16, 20, 25, ...)."""
    if per_decade < 1:
        raise ValueError(f"per_decade={per_decade} must be >= 1")
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
            raise TypeError(f"config must be a PlaygroundConfig, got {type(config).__name__}")
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
            raise ValueError(f"split={split!r} must be 'train' or 'test'")
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
            raise ValueError(f"n={n!r} must be a positive integer")
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
        mini-batch order, and step 0; the next training writes a new run folder."""
        with self._cv:
            self._free = False
            self._budget = 0
            self._wait_idle_locked(None)
            self._checkpoint_now()
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
        """Stop the thread (after its current step) and write a final checkpoint."""
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
        self._checkpoint_now()

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


# --------------------------------------------------------------------------- viewers


class FrameLoop:
    """Draw the newest submitted item on a thread of its own, at most ``fps`` times a second.

    :meth:`submit` never blocks: it replaces any item not drawn yet (counted in ``skipped``).
    ``draw(item)`` runs on the loop's thread; an exception goes to ``on_error`` (default:
    kept in ``last_error``) and the loop goes on. ``frames`` counts finished draws.

    ``max_duty`` bounds the share of wall time spent drawing: after a frame that took ``d``
    seconds the next starts no sooner than ``max(1 / fps, d / max_duty)`` after it began, so a
    slow frame lowers the frame rate instead of taking CPU (and the GIL) from training.
    ``clock``: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        draw: Callable[[Any], None],
        fps: float = 10.0,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "richviz-frames",
        max_duty: float = 0.2,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not 0 < max_duty <= 1:
            raise ValueError(f"max_duty={max_duty!r} must lie in (0, 1]")
        self._draw = draw
        self._clock = clock
        self.max_duty = float(max_duty)
        self.fps = float(fps)
        self.on_error = on_error
        self.frames = 0
        self.skipped = 0
        self.last_error: BaseException | None = None
        self._item: Any = None
        self._pending = False
        self._drawing = False
        self._closed = False
        self._cv = threading.Condition()
        self._next = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def fps(self) -> float:
        return self._fps

    @fps.setter
    def fps(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"fps={value!r} must be a positive number")
        self._fps = float(value)

    def submit(self, item: Any) -> None:
        """Offer ``item`` for the next frame (replacing an undrawn one). Never blocks long."""
        with self._cv:
            if self._pending:
                self.skipped += 1
            self._item, self._pending = item, True
            self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or drawing (for tests and scripts)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._closed or (not self._pending and not self._drawing), timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._pending)
                if self._closed:
                    return
                delay = self._next - self._clock()
                if delay > 0:  # too early: newer items may replace this one meanwhile
                    self._cv.wait_for(lambda: self._closed, timeout=delay)
                    if self._closed:
                        return
                item, self._item, self._pending = self._item, None, False
                self._drawing = True
                start = self._clock()
            try:
                self._draw(item)
                self.frames += 1
            except BaseException as exc:
                self.last_error = exc
                if self.on_error is not None:
                    self.on_error(exc)
            finally:
                took = self._clock() - start
                with self._cv:
                    self._next = start + max(1.0 / self._fps, took / self.max_duty)
                    self._drawing = False
                    self._cv.notify_all()


#: the keys of :attr:`LiveView.metrics`, in display order
VIEW_METRICS = (
    "loss",
    "acc",
    "d_lr",
    "confinement",
    "isotropy",
    *NC_KEYS,
    "boundary_magnification",
)


@dataclass(frozen=True, eq=False)
class LiveView:
    """The numbers of one live frame on a slice grid indexed ``[i, j] = (v[i], u[j])``.

    u, v : grid coordinates; log10_volume : log10 sqrt(det G) of the pulled-back metric
    ``G = (J E)^T (J E) / p`` (penultimate features); margin, entropy, predicted : top-2
    logit margin, softmax entropy (log base C) and arg-max class; field : the
    :class:`richviz.geometry.MetricField` (for ellipses); metrics : ``loss``, ``acc`` on the
    probe set, ``d_lr`` with its factors ``confinement`` and ``isotropy``
    (``1 - d_lr = confinement * isotropy``), the neural-collapse statistics ``nc1``,
    ``nc2_equinorm``, ``nc2_equiangular``, ``nc3``, ``nc4`` and ``boundary_magnification`` (mean
    log10 volume in the 10 % of grid points with the smallest margin minus the mean elsewhere).
    A statistic that is undefined for the probe set (e.g. NC with a class missing) is NaN.
    """

    u: np.ndarray
    v: np.ndarray
    log10_volume: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    predicted: np.ndarray
    field: Any
    metrics: dict[str, float]


def compute_view(
    model: nn.Module,
    slice: Any,  # noqa: A002 - the geometry name
    resolution: int = 64,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LiveView:
    """Everything one live frame shows for ``model`` on ``slice`` (a 2-D
    :class:`richviz.geometry.Slice`); ``probe`` = (x, y) for loss, accuracy, D_LR (with its
    factors) and the neural-collapse statistics (see :class:`LiveView`).

    Uses forward-mode AD: callers that share the process with other forward-mode work hold a
    common lock around it.
    """
    from richviz.features import features_and_outputs, last_linear_name
    from richviz.geometry import boundary_magnification, decision_field, pullback_metric
    from richviz.metrics import neural_collapse, richness

    with torch.no_grad():
        field = pullback_metric(model, slice, resolution=resolution)
        dec = decision_field(model, slice, resolution=resolution)
    lv = field.log10_volume.numpy()
    margin = dec.margin.numpy()
    metrics = dict.fromkeys(VIEW_METRICS, math.nan)
    metrics["boundary_magnification"] = float(boundary_magnification(lv, margin))
    if probe is not None and len(probe[0]) >= 2:
        x, y = probe
        dev = next(model.parameters()).device
        x, y = x.to(dev), y.to(dev)
        with torch.no_grad():
            out = model.eval()(x)
            metrics["loss"] = float(F.cross_entropy(out, y))
            metrics["acc"] = float((out.argmax(1) == y).double().mean())
            feats, lin = features_and_outputs(model, x)
            try:
                r = richness(feats, lin)
                metrics.update(d_lr=r.d_lr, confinement=r.confinement, isotropy=r.isotropy)
            except ValueError:
                pass
            if len(torch.unique(y)) == lin.shape[1]:
                last = model.get_submodule(last_linear_name(model))
                try:
                    nc = neural_collapse(feats, y, last.weight, last.bias)
                    metrics.update({k: float(nc[k]) for k in NC_KEYS})
                except ValueError:
                    pass
    return LiveView(
        u=field.u.double().numpy(),
        v=field.v.double().numpy(),
        log10_volume=lv,
        margin=margin,
        entropy=dec.entropy.numpy(),
        predicted=dec.predicted.numpy(),
        field=field,
        metrics=metrics,
    )
