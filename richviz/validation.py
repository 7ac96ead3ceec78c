"""Argument checks shared by every public function of the numerical core.

One helper family, so a bad argument gets the same kind of one-line message naming the
argument everywhere: non-finite values raise :class:`~richviz.errors.NonFiniteError` (a
``ValueError``), every other bad value a plain ``ValueError`` (``TypeError`` where noted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from richviz.errors import NonFiniteError

__all__ = [
    "as_array",
    "as_float_tensor",
    "as_tensor",
    "check_choice",
    "check_finite",
    "check_ndim",
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
    """``torch.as_tensor(x).detach()``; ``ValueError`` naming ``name`` if it is not numeric."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        kind = type(x).__name__
        raise ValueError(f"{name} must be a tensor or array of numbers, got {kind}") from exc


def check_ndim(x: torch.Tensor | np.ndarray, name: str, ndim: int, what: str = "") -> None:
    """``ValueError`` naming ``name`` unless ``x`` has ``ndim`` dimensions."""
    if x.ndim != ndim:
        shape = f" {what}" if what else ""
        raise ValueError(f"{name} must be {ndim}-D{shape}, got shape {tuple(x.shape)}")


def as_float_tensor(
    x: object, name: str, *, ndim: int | None = None, finite: bool = True
) -> torch.Tensor:
    """A detached, real, non-empty floating tensor (integers are cast to the default dtype).

    Raises ``ValueError`` for non-numeric, complex, boolean, empty or wrongly shaped input and
    :class:`NonFiniteError` for NaN/inf (unless ``finite=False``).
    """
    t = as_tensor(x, name)
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
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
        raise ValueError(f"{name} must be an array of numbers") from exc
    if arr.dtype == object:
        raise ValueError(f"{name} must be an array of numbers")
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {arr.shape}")
    if finite:
        check_finite(arr, name)
    return arr


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum``; ``ValueError`` naming ``name`` otherwise (no bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def resolution(value: Any, name: str = "resolution") -> int:
    """A grid resolution: an integer >= 2 (points per side)."""
    return positive_int(value, name, minimum=2)


def chunk_size(value: Any, default: int, name: str = "chunk_size") -> int:
    """A chunk size: ``default`` for None, else a positive integer."""
    if value is None:
        return int(default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
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

    NaN/inf raise :class:`NonFiniteError`; out-of-range values ``ValueError``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise NonFiniteError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return v


def check_choice(value: Any, name: str, choices: tuple | list) -> Any:
    """``value`` if it is one of ``choices``; ``ValueError`` naming ``name`` and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
