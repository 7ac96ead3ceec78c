"""The run table: one row per run, its varying hyper-parameters and its final values.

Final = the run's last checkpoint (largest step): test accuracy (from the checkpoint's
metadata), D_LR and boundary magnification (from the metrics cache; NaN until computed, and
always NaN for inputs that are not 2-D).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from richviz.compare.sources import RunEntry
from richviz.summary import varying

__all__ = ["FINAL_COLUMNS", "final_value", "run_table", "sort_table", "varying_hparams"]

#: (row key, column title) of the final values in the table
FINAL_COLUMNS = (
    ("test_acc", "test acc"),
    ("d_lr", "D_LR"),
    ("boundary_magnification", "boundary magn."),
)


def varying_hparams(entries: Sequence[RunEntry]) -> list[str]:
    """Hyper-parameters with more than one value across the usable ``entries`` (alpha, lr,
    width, depth, seed, ... first; as :func:`richviz.summary.varying`)."""
    points = [SimpleNamespace(params=e.hparams) for e in entries if e.usable]
    return varying(points)  # type: ignore[arg-type]


def final_value(entry: RunEntry, key: str) -> float:
    """``key`` at the entry's last checkpoint (NaN when missing)."""
    if not entry.rows:
        return math.nan
    v = entry.rows[-1].get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def run_table(entries: Sequence[RunEntry], params: Sequence[str] | None = None) -> list[dict]:
    """One dict per entry: ``name``, each of ``params`` (default: :func:`varying_hparams`),
    the :data:`FINAL_COLUMNS`, ``steps`` (checkpoint count) and ``error`` ("" when usable).

    Examples
    --------
    >>> from richviz.compare import RunEntry, run_table
    >>> a = RunEntry("a", hparams={"alpha": 0.1}, rows=[{"step": 9, "test_acc": 0.9}])
    >>> b = RunEntry("b", hparams={"alpha": 10.0}, rows=[{"step": 9, "test_acc": 0.8}])
    >>> [(r["name"], r["alpha"], r["test_acc"]) for r in run_table([a, b])]
    [('a', 0.1, 0.9), ('b', 10.0, 0.8)]
    """
    params = varying_hparams(entries) if params is None else list(params)
    out = []
    for e in entries:
        row: dict[str, Any] = {"name": e.name}
        for p in params:
            row[p] = e.hparams.get(p)
        for key, _title in FINAL_COLUMNS:
            row[key] = final_value(e, key)
        row["steps"] = len(e.rows)
        row["error"] = e.error or ""
        out.append(row)
    return out


def _sort_key(v: Any) -> tuple:
    """Numbers first (ascending), then text, missing values (None, NaN) last."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return (2, 0.0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, json.dumps(v, default=str))


def sort_table(rows: Sequence[dict], key: str, descending: bool = False) -> list[dict]:
    """``rows`` sorted by column ``key`` (stable; missing values last in either order)."""
    present = [r for r in rows if _sort_key(r.get(key))[0] < 2]
    absent = [r for r in rows if _sort_key(r.get(key))[0] == 2]
    present.sort(key=lambda r: _sort_key(r.get(key)), reverse=descending)
    return present + absent
