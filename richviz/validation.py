"""Argument checks shared by every public function of the numerical core.

One helper family, so a bad argument gets the same kind of one-line message naming the
argument everywhere: non-finite values raise :class:`~richviz.errors.NonFiniteError` (a
``ArgumentError``), every other bad value :class:`~richviz.errors.ArgumentError` (a
``ArgumentError``).

Two phrasings: the array helpers say ``"{name} must be ..., got {value!r}"``; the scalar
settings a user types as ``key=value`` (:func:`check_int`, :func:`check_number`: training
configs, sweep grids, CLI options) say ``"{name}={value!r} must be ..."``, so the message
shows the setting as it was written.

>>> check_int(3, "steps", low=1)
3
>>> check_number(0.5, "train_fraction", low=0, high=1, low_open=True)
0.5
>>> check_int(0, "steps", low=1)
Traceback (most recent call last):
...
richviz.errors.ArgumentError: steps=0 must be an integer >= 1
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from richviz.errors import ArgumentError, NonFiniteError

__all__ = [
    "as_array",
    "as_float_tensor",
    "as_tensor",
    "check_choice",
    "check_finite",
    "check_int",
    "check_ndim",
    "check_number",
    "chunk_size",
    "finite_float",
    "positive_int",
    "resolution",
]


def check_finite(x: torch.Tensor | np.ndarray, name: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if ``x`` holds NaN or inf (ints pass)."""
    if isinstance(x, torch.Tensor):
        bad = (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all())
    else:
        a = np.asarray(x)
        bad = a.dtype.kind in "fc" and not bool(np.isfinite(a).all())
    if bad:
        raise NonFiniteError(f"{name} contains non-finite values (NaN or inf){hint}")


def as_tensor(x: object, name: str) -> torch.Tensor:
    """``torch.as_tensor(x).detach()``; ``ArgumentError`` naming ``name`` if it is not numeric."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        kind = type(x).__name__
        raise ArgumentError(f"{name} must be a tensor or array of numbers, got {kind}") from exc


def check_ndim(x: torch.Tensor | np.ndarray, name: str, ndim: int, what: str = "") -> None:
    """``ArgumentError`` naming ``name`` unless ``x`` has ``ndim`` dimensions."""
    if x.ndim != ndim:
        shape = f" {what}" if what else ""
        raise ArgumentError(f"{name} must be {ndim}-D{shape}, got shape {tuple(x.shape)}")


def as_float_tensor(
    x: object, name: str, *, ndim: int | None = None, finite: bool = True
) -> torch.Tensor:
    """A detached, real, non-empty floating tensor (integers are cast to the default dtype).

    Raises ``ArgumentError`` for non-numeric, complex, boolean, empty or wrongly shaped input and
    :class:`NonFiniteError` for NaN/inf (unless ``finite=False``).
    """
    t = as_tensor(x, name)
    if t.is_complex() or t.dtype == torch.bool:
        raise ArgumentError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.numel() == 0:
        raise ArgumentError(f"{name} is empty")
    if ndim is not None:
        check_ndim(t, name, ndim)
    if finite:
        check_finite(t, name)
    return t


def as_array(x: object, name: str, ndim: int, *, finite: bool = False) -> np.ndarray:
    """A non-empty numpy array with ``ndim`` dimensions (tensors are moved to the CPU)."""
    try:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ArgumentError(f"{name} must be an array of numbers") from exc
    if arr.dtype == object:
        raise ArgumentError(f"{name} must be an array of numbers")
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise ArgumentError(f"{name} must be a non-empty {ndim}-D array, got shape {arr.shape}")
    if finite:
        check_finite(arr, name)
    return arr


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum``; ``ArgumentError`` naming ``name`` if not (no bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def resolution(value: Any, name: str = "resolution") -> int:
    """A grid resolution: an integer >= 2 (points per side)."""
    return positive_int(value, name, minimum=2)


def chunk_size(value: Any, default: int, name: str = "chunk_size") -> int:
    """A chunk size: ``default`` for None, else a positive integer."""
    if value is None:
        return int(default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{name} must be a positive integer or None, got {value!r}")
    return positive_int(value, name)


def finite_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``).

    NaN/inf raise :class:`NonFiniteError`; out-of-range values ``ArgumentError``.
    """
    if isinstance(value, bool):
        raise ArgumentError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise NonFiniteError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        op = ">" if low_open else ">="
        raise ArgumentError(f"{name} must be {op} {low}, got {value!r}")
    if high is not None and v > high:
        raise ArgumentError(f"{name} must be <= {high}, got {value!r}")
    return v


def check_choice(value: Any, name: str, choices: tuple | list) -> Any:
    """``value`` if it is one of ``choices``; ``ArgumentError`` naming ``name`` and the choices."""
    if value not in choices:
        raise ArgumentError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``[low, high]``-style text of a range (``(``/``)`` for open ends), e.g. ``(0, 1]``."""

    def num(v: float) -> str:
        return str(v) if isinstance(v, (int, np.integer)) else f"{v:g}"

    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{num(low)}, {num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {num(low)}"
    return f"{'<' if high_open else '<='} {num(high)}"


def check_int(
    value: Any,
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    optional: bool = False,
) -> int | None:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be None); no bools.

    ``optional=True`` lets None through. Raises :class:`ArgumentError` (a ``ValueError``) with
    one line ``"{name}={value!r} must be an integer ..."`` otherwise.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{name}={value!r} must be an integer{' or None' * optional}")
    if (low is not None and value < low) or (high is not None and value > high):
        where = _interval(low, high, False, False)
        raise ArgumentError(f"{name}={value!r} must be an integer {where}{' or None' * optional}")
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the range given by ``low``/``high`` (None: unbounded).

    ``low_open``/``high_open`` exclude the bound itself. One-line messages: bools and
    non-numbers raise :class:`ArgumentError` (``"{name}={value!r} must be a number"``); NaN/inf
    :class:`NonFiniteError` (``"... must be finite"``, or with bounds the range message); a
    value out of range :class:`ArgumentError` (``"... must be a finite number in (0, 1]"``,
    ``"... must be a finite positive number"`` for ``low=0, low_open=True`` alone).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"{name}={value!r} must be a number")
    v = float(value)
    finite = math.isfinite(v)
    if low is None and high is None:
        if not finite:
            raise NonFiniteError(f"{name}={value!r} must be finite")
        return v
    below = low is not None and (v < low or (low_open and v == low))
    above = high is not None and (v > high or (high_open and v == high))
    if not finite or below or above:
        if low == 0 and low_open and high is None:
            what = "a finite positive number"
        else:
            what = f"a finite number {_interval(low, high, low_open, high_open)}"
        error = ArgumentError if finite else NonFiniteError
        raise error(f"{name}={value!r} must be {what}")
    return v
