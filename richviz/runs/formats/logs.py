"""Metrics a training stack logged itself: Lightning's ``metrics.csv``, Hugging Face's
``log_history``, matched to checkpoints by step and named as richviz names them.

A log is a list of rows ``{"step": int, name: float, ...}``; :func:`metrics_at` gives, for one
checkpoint, each quantity's latest value logged at or before it, under its own name and, where
it is a loss or an accuracy, under richviz's ``train_loss`` / ``train_acc`` / ``test_loss`` /
``test_acc`` (validation and evaluation sets count as held-out, i.e. ``test_*``), so the
CheckpointBrowser, ``richviz info`` and the MetricsPanel show them beside richviz's own
metrics without recomputing anything.

Step conventions differ: Lightning's ``CSVLogger`` writes the optimizer-step count *before*
the batch's update is counted (the row at CSV step ``s`` belongs to the model after ``s + 1``
steps, the one ``epoch=...-step={s+1}.ckpt`` holds), Hugging Face logs ``global_step`` after
it. :func:`metrics_at` takes that offset.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["ALIASES", "hf_log_history", "lightning_metrics", "metrics_at", "richviz_names"]

#: richviz's name <- the names training stacks log it under, most specific first
ALIASES: dict[str, tuple[str, ...]] = {
    "train_loss": (
        "train_loss",
        "train_loss_epoch",
        "train_loss_step",
        "train/loss",
        "training_loss",
        "loss",
    ),
    "train_acc": (
        "train_acc",
        "train_acc_epoch",
        "train_acc_step",
        "train_accuracy",
        "train/acc",
        "train/accuracy",
        "accuracy",
        "acc",
    ),
    "test_loss": (
        "test_loss",
        "test/loss",
        "val_loss",
        "val/loss",
        "valid_loss",
        "validation_loss",
        "eval_loss",
    ),
    "test_acc": (
        "test_acc",
        "test_accuracy",
        "test/acc",
        "val_acc",
        "val_accuracy",
        "val/acc",
        "valid_acc",
        "validation_accuracy",
        "eval_accuracy",
        "eval_acc",
    ),
}
_MAX_ROWS = 1_000_000  # a log is read line by line and stops here


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def lightning_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a Lightning CSVLogger's ``metrics.csv`` (empty cells left out; [] if unreadable)."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, newline="") as f:
            for i, line in enumerate(csv.DictReader(f)):
                if i >= _MAX_ROWS:
                    break
                step = _float(line.get("step"))
                if step is None:
                    continue
                row: dict[str, Any] = {"step": int(step)}
                for k, v in line.items():
                    value = _float(v)
                    if isinstance(k, str) and k != "step" and value is not None:
                        row[k] = value
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return rows


def hf_log_history(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """(``log_history`` rows, ``global_step``) of a Hugging Face ``trainer_state.json``.

    Returns ``([], None)`` for a file that is missing or not a trainer state.
    """
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return [], None
    if not isinstance(state, dict):
        return [], None
    step = state.get("global_step")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
    rows = []
    history = state.get("log_history")
    for entry in history if isinstance(history, list) else []:
        if not isinstance(entry, dict) or _float(entry.get("step")) is None:
            continue
        if "train_runtime" in entry:  # the end-of-training summary: its train_loss is a mean
            continue
        row: dict[str, Any] = {"step": int(_float(entry["step"]) or 0)}
        for k, v in entry.items():
            value = None if isinstance(v, bool) else _float(v)
            if isinstance(k, str) and k != "step" and value is not None:
                row[k] = value
        rows.append(row)
    return rows, step


def metrics_at(rows: list[dict[str, Any]], step: int, offset: int = 0) -> dict[str, Any]:
    """Each logged quantity's latest value at or before ``step`` (rows at ``s + offset <= step``).

    Returns ``{"logged": {name: value}, "train_loss": ..., ...}``: the raw names under
    ``logged`` and richviz's names (:data:`ALIASES`) beside them; {} when nothing was logged
    by then.
    """
    latest: dict[str, tuple[int, float]] = {}
    for row in rows:
        s = row["step"] + offset
        if s > step:
            continue
        for k, v in row.items():
            if k != "step" and (k not in latest or latest[k][0] <= s):
                latest[k] = (s, v)
    if not latest:
        return {}
    logged = {k: v for k, (_, v) in sorted(latest.items())}
    return {"logged": logged, **richviz_names(logged)}


def richviz_names(values: dict[str, Any]) -> dict[str, Any]:
    """``train_loss`` / ``train_acc`` / ``test_loss`` / ``test_acc`` / ``epoch`` found in
    ``values`` under any of their :data:`ALIASES` (the first alias present wins)."""
    out: dict[str, Any] = {}
    for name, aliases in ALIASES.items():
        value = next((values[a] for a in aliases if isinstance(values.get(a), float)), None)
        if value is not None:
            out[name] = value
    epoch = values.get("epoch")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        out["epoch"] = int(epoch) if float(epoch).is_integer() else epoch
    return out
