"""One point per run: its hyper-parameters (from the manifest) and its final metrics.

The table behind a sweep's scatter plots: richness (D_LR, boundary magnification) and accuracy
of each run's last checkpoint against the hyper-parameters that vary across the runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from richviz.errors import CheckpointError

__all__ = ["FINAL_KEYS", "RunSummary", "hyperparameters", "summarize", "varying"]

#: Final-checkpoint values a summary keeps (NaN where a run has none).
FINAL_KEYS = ("d_lr", "boundary_magnification", "train_acc", "test_acc")

# Preferred order of hyper-parameters in menus; others follow alphabetically.
_ORDER = ("alpha", "lr", "width", "depth", "seed", "steps", "batch_size", "weight_decay")


@dataclass
class RunSummary:
    """A run as one point: ``params`` (hyper-parameters) and ``final`` (last row's values)."""

    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    step: int | None = None

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name


# measured or derived by the trainer, not chosen: never a sweep axis
_DERIVED = frozenset({"effective_lr", "sharpness_init", "stable_lr", "lr_capped"})


def hyperparameters(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Flat hyper-parameters of a run manifest (numbers, strings, booleans only).

    ``preset``, ``data``, ``seed``, ``alpha`` (output scale; 0 for a plain model), ``width``
    (the hidden size when all hidden layers share it, or a CNN's ``width``), ``depth`` (number
    of hidden layers), ``batch_norm`` (when the architecture has the switch) and every scalar
    of ``hparams`` except derived ones (``effective_lr``, ``sharpness_init``, ``stable_lr``,
    ``lr_capped``).
    """
    out: dict[str, Any] = {}
    for key in ("preset", "seed"):
        if _scalar(manifest.get(key)):
            out[key] = manifest[key]
    data = manifest.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("name"), str):
        out["data"] = data["name"]
    arch = manifest.get("architecture")
    if isinstance(arch, Mapping):
        alpha = arch.get("alpha")
        out["alpha"] = float(alpha) if isinstance(alpha, (int, float)) else 0.0
        kw = arch.get("kwargs") if isinstance(arch.get("kwargs"), Mapping) else {}
        hidden = kw.get("hidden")
        if isinstance(hidden, list) and hidden and all(isinstance(h, int) for h in hidden):
            out["depth"] = len(hidden)
            if len(set(hidden)) == 1:
                out["width"] = hidden[0]
        elif isinstance(kw.get("width"), int):
            out["width"] = kw["width"]
        if isinstance(kw.get("batch_norm"), bool):
            out["batch_norm"] = kw["batch_norm"]
    hp = manifest.get("hparams")
    if isinstance(hp, Mapping):
        for k, v in hp.items():
            if k not in _DERIVED and _scalar(v):
                out[str(k)] = v
    return out


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str))


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def summarize(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> RunSummary:
    """The summary of the run folder ``path`` from its metrics ``rows`` (last step = final).

    Reads only the manifest; raises ``CheckpointError`` naming it when it is unreadable.
    """
    from richviz.runs.manifest import MANIFEST  # lazily: importing richviz.widgets opens no runs

    path = Path(path)
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{mpath}: cannot read the run manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{mpath}: not a richviz run manifest")
    summary = RunSummary(path, hyperparameters(manifest))
    last = max(rows, key=lambda r: r.get("step", -1), default=None)
    summary.final = {k: _float(last.get(k)) if last else math.nan for k in FINAL_KEYS}
    summary.step = last.get("step") if last else None
    return summary


def varying(summaries: Sequence[RunSummary], numeric: bool = False) -> list[str]:
    """Hyper-parameters with more than one distinct value across ``summaries``.

    ``numeric``: only those whose values are all numbers (ints or floats, not booleans).
    Ordered alpha, lr, width, depth, seed, ... then alphabetically.
    """
    keys: set[str] = set()
    for s in summaries:
        keys |= set(s.params)
    out = []
    for k in keys:
        values = [s.params.get(k) for s in summaries]
        if len({json.dumps(v) for v in values}) < 2:
            continue
        if numeric and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            continue
        out.append(k)
    return sorted(out, key=lambda k: (_ORDER.index(k) if k in _ORDER else len(_ORDER), k))
