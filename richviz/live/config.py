"""The Playground's configuration and the one table of its settings' types and bounds.

:data:`CONFIG_FIELDS` (what determines a demo: data, network, hyper-parameters, seed,
device) and :data:`VIEW_FIELDS` (what the widget shows: background, grid, ellipses, frame
rate, clicks) declare each setting once: its type, default, bounds or choices and a help
line. :class:`PlaygroundConfig` validates against this table, and the Playground widget
builds its traits, their validators and its controls from it, so the two never disagree.

Types are strict: an ``int`` setting takes an integer (never a ``bool``), a ``float``
setting a finite real number (never a ``bool``, NaN or inf), a choice one of its choices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from richviz import activations, datasets
from richviz.errors import ConfigError, DataError

__all__ = [
    "ACTIVATIONS",
    "CONFIG_FIELDS",
    "DATA_SETS",
    "DEVICES",
    "FIELDS",
    "MAX_CLASSES",
    "OPTIMIZERS",
    "VIEWS",
    "VIEW_FIELDS",
    "Field",
    "PlaygroundConfig",
    "check_field",
]

DATA_SETS = ("moons", "circles", "xor", "spirals", "sinusoid", "blobs", "points")
"""Data choices: five 2-D toys, Gaussian blobs, and ``"points"`` (the user's own x, y)."""
BINARY = ("moons", "circles", "xor", "sinusoid")
OPTIMIZERS = ("sgd", "momentum", "adam")
"""``sgd``: plain SGD; ``momentum``: SGD with momentum 0.9; ``adam``: Adam."""
ACTIVATIONS = activations.MENU
"""Activation choices (:data:`richviz.activations.MENU`)."""
DEVICES = ("auto", "cpu", "cuda")
VIEWS = ("volume", "classes", "entropy")
"""Backgrounds: log10 volume element, class regions, softmax entropy."""
MAX_CLASSES = 6
MOMENTUM = 0.9
CONFIG_FORMAT = "richviz-playground"
CONFIG_VERSION = 1
MAX_LABEL = MAX_CLASSES - 1


# --------------------------------------------------------------------------- the table


def _num(x: float) -> str:
    """A bound as people write it: ``8``, ``0.5``, ``1e6``."""
    if float(x).is_integer() and abs(x) < 1e5:
        return str(int(x))
    return f"{x:g}".replace("e+0", "e").replace("e+", "e")


@dataclass(frozen=True)
class Field:
    """One setting: its type, default, bounds or choices, and a help line.

    kind : ``int``, ``float`` or ``str``. low, high : bounds (inclusive unless ``open_low`` /
    ``open_high``). choices : the allowed strings (``kind = str``). optional : None is
    allowed too (``alpha``: the plain network).
    """

    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] | None = None
    optional: bool = False

    def interval(self) -> str:
        """The bounds in interval notation, e.g. ``"(0, 100]"``."""
        left = "(" if self.open_low else "["
        right = ")" if self.open_high else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"

    def check(self, name: str, value: Any) -> Any:
        """``value`` as a plain ``int``, ``float`` or ``str``; ``ConfigError`` naming ``name``
        (one line) for a wrong type, NaN/inf or a value out of bounds."""
        if value is None and self.optional:
            return None
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise ConfigError(f"{name}={value!r} must be one of {list(self.choices)}")
            return value
        where = f"None or in {self.interval()}" if self.optional else f"in {self.interval()}"
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(
                    f"{name}={value!r} must be an integer {where}, not {type(value).__name__}"
                )
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(
                    f"{name}={value!r} must be a number {where}, not {type(value).__name__}"
                )
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} must be a finite number {where}")
        low_ok = value > self.low if self.open_low else value >= self.low
        high_ok = value < self.high if self.open_high else value <= self.high
        if not (low_ok and high_ok):
            text = "must be None or in" if self.optional else "must lie in"
            raise ConfigError(f"{name}={value!r} {text} {self.interval()}")
        return value


#: what determines a demo (the fields of :class:`PlaygroundConfig` other than ``x``, ``y``)
CONFIG_FIELDS: dict[str, Field] = {
    "data": Field(str, "moons", "data set ('points': your own x, y)", choices=DATA_SETS),
    "n": Field(int, 200, "points generated (train and test together)", 8, datasets.MAX_POINTS),
    "noise": Field(float, 0.1, "the generator's noise (sinusoid has none)", 0.0, 2.0),
    "classes": Field(
        int, 2, "classes of blobs, arms of spirals, classes clicks may add", 2, MAX_CLASSES
    ),
    "width": Field(int, 16, "units per hidden layer", 1, 1024),
    "depth": Field(int, 2, "hidden layers", 1, 8),
    "activation": Field(str, "tanh", "the hidden layers' activation", choices=ACTIVATIONS),
    "alpha": Field(
        float,
        None,
        "output scale of alpha (f - f0); None (0 in the widget): the plain network",
        0.0,
        1e6,
        open_low=True,
        open_high=True,
        optional=True,
    ),
    "lr": Field(float, 0.1, "learning rate (before the alpha scaling)", 0.0, 100.0, True),
    "batch_size": Field(int, 32, "mini-batch size (full batch when >= the data)", 1, 100000),
    "optimizer": Field(str, "momentum", "sgd, momentum (0.9) or adam", choices=OPTIMIZERS),
    "seed": Field(int, 0, "initial weights, data and mini-batch order", 0, 2**31 - 1),
    "device": Field(str, "auto", "auto (CUDA when available), cpu or cuda", choices=DEVICES),
}

#: what the Playground widget shows (not part of a demo's config)
VIEW_FIELDS: dict[str, Field] = {
    "view": Field(
        str, "volume", "background: log10 volume, class regions or entropy", choices=VIEWS
    ),
    "resolution": Field(int, 64, "grid points per side", 16, 256),
    "ellipse_density": Field(int, 10, "ellipses per side (0: none)", 0, 32),
    "fps": Field(float, 10.0, "frames per second at most", 0.5, 60.0),
    "steps_per_click": Field(int, 10, "steps taken by the Step button", 1, 100000),
    "click_class": Field(int, 0, "class of the points clicks add", 0, MAX_LABEL),
}

#: every setting of the Playground, by name
FIELDS: dict[str, Field] = {**CONFIG_FIELDS, **VIEW_FIELDS}


def check_field(name: str, value: Any) -> Any:
    """``value`` checked against :data:`FIELDS` ``[name]`` (see :meth:`Field.check`)."""
    return FIELDS[name].check(name, value)


# --------------------------------------------------------------------------- the config


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _points(x: Any, y: Any) -> tuple[tuple[tuple[float, float], ...], tuple[int, ...]]:
    """The user's points as tuples; ``ConfigError`` for labels that are not classes and
    ``DataError`` (from :func:`richviz.datasets.check_arrays`) for malformed arrays."""
    x = () if x is None else x
    y = () if y is None else y
    for name, a in (("x", x), ("y", y)):
        _check(
            isinstance(a, (list, tuple, np.ndarray, torch.Tensor)),
            f"points: {name} must be a list of numbers, not {type(a).__name__}",
        )
    if not len(x):
        _check(len(y) == 0, "points: y has labels but x has no points")
        return (), ()
    if not isinstance(y, (np.ndarray, torch.Tensor)):
        _check(
            not any(isinstance(v, bool) for v in y), "points: labels y must be integers, not bool"
        )
    try:  # labels checked as numbers first: a huge one would overflow int64 below
        top = np.asarray(y, dtype=np.float64).max(initial=0.0)
    except (TypeError, ValueError):
        top = 0.0  # not numbers: check_arrays says so
    _check(
        not top > MAX_LABEL, f"points: labels must lie in [0, {MAX_LABEL}], got {_num(float(top))}"
    )
    xa, ya = datasets.check_arrays(x, y, "points")
    _check(xa.shape[1] == 2, f"points: x must have 2 columns, got {xa.shape[1]}")
    return tuple((float(a), float(b)) for a, b in xa), tuple(int(v) for v in ya)


@dataclass(frozen=True)
class PlaygroundConfig:
    """Everything that determines a Playground demo; same config, same initial weights.

    Each field's type and bounds are :data:`CONFIG_FIELDS`; a value of the wrong type (a
    ``bool`` for an ``int``), NaN, inf or out of bounds raises a one-line ``ConfigError``
    naming the field.

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
        for name, spec in CONFIG_FIELDS.items():
            object.__setattr__(self, name, spec.check(name, getattr(self, name)))
        if self.data == "points":
            x, y = _points(self.x, self.y)
            object.__setattr__(self, "x", x)
            object.__setattr__(self, "y", y)
        else:
            _check(
                self.x is None and self.y is None,
                f"x and y are only for data='points', not data={self.data!r}",
            )

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
        if isinstance(version, bool) or not isinstance(version, int) or version > CONFIG_VERSION:
            raise ConfigError(f"{source}: version={version!r} is newer than {CONFIG_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}")
        try:
            return cls(**d)
        except (ConfigError, DataError) as exc:
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
        except RecursionError:
            raise ConfigError(f"{source}: invalid JSON (nested too deeply)") from None
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
