"""Training grids, pure: ``KEY=V1,V2,...`` specs -> typed grid -> points -> run folder names.

No Dask, no torch: every function here is a pure function of its arguments.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from richviz import validation
from richviz.errors import ArgumentError

__all__ = ["GRID_KEYS", "grid_points", "parse_grid", "run_name"]

#: Keys a training grid may vary: ``seed``, ``width`` (every hidden layer of an MLP, or the
#: ``width`` of a CNN), ``batch_norm`` (on/off, for architectures that take it: the CNNs) and
#: the scalar fields of :class:`richviz.train.Config` (including the training-set fraction
#: and the label-noise rate).
GRID_KEYS = (
    "seed",
    "alpha",
    "lr",
    "width",
    "batch_norm",
    "steps",
    "momentum",
    "weight_decay",
    "batch_size",
    "checkpoints",
    "optimizer",
    "loss",
    "train_fraction",
    "label_noise",
)
_INT_KEYS = {"seed", "width", "steps", "batch_size", "checkpoints"}
_FLOAT_KEYS = {"alpha", "lr", "momentum", "weight_decay", "train_fraction", "label_noise"}
_BOOL_KEYS = {"batch_norm"}
_BOOL_WORDS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
_NAME_VALUE = re.compile(r"[A-Za-z0-9_.+-]+")


def _coerce(key: str, value: Any) -> Any:
    if key not in GRID_KEYS:
        raise ArgumentError(f"sweep key {key!r} cannot be swept; choose from {GRID_KEYS}")
    if key in _BOOL_KEYS:
        word = str(value).strip().lower()
        if isinstance(value, bool) or word in _BOOL_WORDS:
            return value if isinstance(value, bool) else _BOOL_WORDS[word]
        raise ArgumentError(f"sweep {key}={value!r} must be on or off (true/false, 1/0)")
    if key in _INT_KEYS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # "100.0" counts as 100
        return validation.check_int(value, f"sweep {key}")
    if key in _FLOAT_KEYS:
        return validation.check_number(value, f"sweep {key}")
    if not isinstance(value, str) or not _NAME_VALUE.fullmatch(value):
        raise ArgumentError(f"sweep {key}={value!r} must be a word (letters, digits, _ . + -)")
    return value


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["alpha=0.1,1,10", "seed=0,1"]`` -> ``{"alpha": [0.1, 1.0, 10.0], "seed": [0, 1]}``.

    Raises ``ValueError`` naming the ``--sweep`` argument that is malformed, repeats a key or
    names a key outside :data:`GRID_KEYS`.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise ArgumentError(f"--sweep {spec!r} must look like KEY=V1,V2,... (e.g. alpha=0.1,1)")
        if key in grid:
            raise ArgumentError(f"--sweep {spec!r}: key {key!r} is given twice")
        grid[key] = [_coerce(key, _parse_value(v)) for v in items]
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values (the last key varies fastest), validated."""
    if not grid:
        raise ArgumentError("grid is empty; give at least one KEY=V1,V2,...")
    keys = list(grid)
    values = []
    for k in keys:
        vs = [_coerce(k, v) for v in grid[k]]
        if not vs:
            raise ArgumentError(f"grid[{k!r}] has no values")
        if len(set(vs)) != len(vs):
            raise ArgumentError(f"grid[{k!r}] repeats a value: {vs}")
        values.append(vs)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def run_name(params: Mapping[str, Any]) -> str:
    """Folder name of a grid point: ``{"alpha": 0.1, "seed": 0}`` -> ``alpha=0.1,seed=0``
    (on/off values as ``on`` / ``off``)."""

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        return format(v, "g") if isinstance(v, float) else str(v)

    return ",".join(f"{k}={text(v)}" for k, v in params.items())
