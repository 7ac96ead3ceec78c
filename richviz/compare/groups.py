"""Group runs by a hyper-parameter: one curve per group, the mean with a spread band.

At each x value of the union of the group's curves, the band is taken over the curves that
have a finite value exactly there (no interpolation: runs of one group normally share their
checkpoint steps, seeds being the other hyper-parameter). ``spread="std"``: mean +- the
population standard deviation (ddof = 0) of those values; ``spread="minmax"``: from their
minimum to their maximum. ``count`` says how many runs each point averages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from richviz.compare.sources import RunEntry
from richviz.errors import ArgumentError

__all__ = ["SPREADS", "Band", "group_bands", "group_entries", "group_label"]

SPREADS = ("std", "minmax")


@dataclass
class Band:
    """A group's curve: ``mean`` with the band ``lo``..``hi`` at each ``x``, over ``count`` runs."""

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray


def group_entries(entries: Sequence[RunEntry], param: str) -> list[tuple[Any, list[RunEntry]]]:
    """(value, its entries) per value of ``param`` over the usable entries, values sorted
    (numbers first, then text; runs without the hyper-parameter under ``None``, last)."""
    by: dict[str, tuple[Any, list[RunEntry]]] = {}
    for e in entries:
        if e.usable:
            v = e.hparams.get(param)
            by.setdefault(json.dumps(v, sort_keys=True, default=str), (v, []))[1].append(e)

    def key(item: tuple[Any, list[RunEntry]]) -> tuple:
        v = item[0]
        if v is None:
            return (2, 0.0, "")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, float(v), "")
        return (1, 0.0, str(v))

    return sorted(by.values(), key=key)


def group_label(param: str, value: Any) -> str:
    """``"alpha=0.1"`` (floats in ``g`` format)."""
    text = format(value, "g") if isinstance(value, float) else str(value)
    return f"{param}={text}"


def group_bands(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], spread: str = "std"
) -> Band:
    """Mean and spread of ``curves`` (each ``(x, y)``) at every x of their union.

    See the module docstring for what the spread is. A point where no curve has a finite value
    is NaN (a gap).

    Examples
    --------
    >>> from richviz.compare import group_bands
    >>> b = group_bands([([1, 2], [0.0, 1.0]), ([1, 2], [2.0, 1.0])])
    >>> b.mean.tolist(), b.lo.tolist(), b.hi.tolist()
    ([1.0, 1.0], [0.0, 1.0], [2.0, 1.0])
    """
    if spread not in SPREADS:
        raise ArgumentError(f"spread={spread!r} must be one of {', '.join(SPREADS)}")
    pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves]
    xs = np.unique(np.concatenate([x for x, _ in pairs])) if pairs else np.array([])
    table = np.full((len(pairs), len(xs)), np.nan)
    for i, (x, y) in enumerate(pairs):
        table[i, np.searchsorted(xs, x)] = y
    finite = np.isfinite(table)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(finite, table, 0.0).sum(axis=0)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        if spread == "std":
            dev = np.where(finite, (table - mean) ** 2, 0.0).sum(axis=0)
            std = np.sqrt(dev / np.maximum(count, 1))
            lo, hi = mean - std, mean + std
        else:
            lo = np.where(count > 0, np.where(finite, table, np.inf).min(axis=0), np.nan)
            hi = np.where(count > 0, np.where(finite, table, -np.inf).max(axis=0), np.nan)
    return Band(xs, mean, np.where(count > 0, lo, np.nan), np.where(count > 0, hi, np.nan), count)
