"""CSV of a comparison: every metric row of every run, with the run's hyper-parameters.

One line per (run, checkpoint): ``run``, then the hyper-parameters (the union over the runs;
a run without one leaves its cell empty), then ``step`` and every metric key in first-seen
order. A hyper-parameter named like a metric column is written as ``hparam.<name>``.
Numbers are written exactly (``repr``), NaN as ``nan``, None as an empty cell;
:func:`read_csv` reads the text back into numbers, booleans, None and text.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from richviz.atomic import atomic_write_bytes
from richviz.compare.sources import RunEntry
from richviz.compare.table import varying_hparams

__all__ = ["HPARAM_PREFIX", "comparison_csv", "read_csv", "write_csv"]

HPARAM_PREFIX = "hparam."
_INT = re.compile(r"[+-]?\d+")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def _parse(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def comparison_csv(entries: Sequence[RunEntry]) -> str:
    """The CSV text of ``entries`` (see the module docstring); runs with an error are left out."""
    entries = [e for e in entries if e.usable]
    first = varying_hparams(entries)
    rest = sorted({k for e in entries for k in e.hparams} - set(first))
    params = first + rest
    metrics: list[str] = ["step"]
    for e in entries:
        for row in e.rows:
            for k in row:
                if k not in metrics:
                    metrics.append(k)
    heads = [HPARAM_PREFIX + p if p in metrics or p == "run" else p for p in params]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", *heads, *metrics])
    for e in entries:
        hp = [_cell(e.hparams.get(p)) for p in params]
        for row in e.rows:
            writer.writerow([e.name, *hp, *(_cell(row.get(k)) for k in metrics)])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, entries: Sequence[RunEntry]) -> Path:
    """Write :func:`comparison_csv` to ``path`` atomically (parent folders created)."""
    return atomic_write_bytes(comparison_csv(entries).encode(), Path(path))


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a comparison CSV as dicts (numbers, booleans, None and text restored).

    Examples
    --------
    >>> import os, tempfile
    >>> from richviz.compare import RunEntry, read_csv, write_csv
    >>> a = RunEntry("a", hparams={"alpha": 0.5}, rows=[{"step": 0, "d_lr": 0.25}])
    >>> path = write_csv(os.path.join(tempfile.mkdtemp(), "runs.csv"), [a])
    >>> read_csv(path)
    [{'run': 'a', 'alpha': 0.5, 'step': 0, 'd_lr': 0.25}]
    """
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
