"""Which checkpoint layout a folder holds, its checkpoints' steps and logged metrics.

Layouts (see docs/runs.md for example trees):

- ``huggingface``: ``checkpoint-N/`` folders (or one such folder) holding
  ``model.safetensors`` or ``pytorch_model.bin``, or a sharded model's index
  (``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``); the step is the folder's
  ``trainer_state.json`` ``global_step`` (else N), the metrics its ``log_history``;
- ``files``: checkpoint files in the folder (or in its ``checkpoints/`` subfolder, as a
  Lightning logger's version folder has, or in the one ``lightning_logs/version_N/`` below
  it): ``*.ckpt`` (Lightning), ``*.safetensors``, ``*.pt``, ``*.pth``, ``*.bin``. The step is
  the record's own (``global_step``, ``step``, safetensors metadata), else the name's
  (``step=1200``, ``model_step1000``, else its last integer), else the file comes after the
  others in name order (``last.pt``); metrics from a Lightning ``metrics.csv`` beside the
  files or one folder up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from richviz.errors import CheckpointError
from richviz.runs.formats.logs import hf_log_history, lightning_metrics, metrics_at, richviz_names
from richviz.runs.formats.records import SAFETENSORS, read_record, record_meta
from richviz.runs.shards import is_index

__all__ = ["SUFFIXES", "Found", "Layout", "discover", "name_step"]

SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", SAFETENSORS)
#: a Hugging Face checkpoint's weights, in the order they are looked for (sharded: the index)
HF_WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_HF_DIR = re.compile(r"checkpoint-(\d+)")
# files beside checkpoints that hold no model weights (Hugging Face, common loops)
_NOT_WEIGHTS = re.compile(
    r"(optimizer|scheduler|scaler|rng_state|training_args)[\w.-]*\.(pt|pth|bin)", re.I
)


@dataclass
class Found:
    """One checkpoint: its weights file, step, where the step came from, and its meta."""

    path: Path
    step: int | None
    step_source: str  # "record" | "trainer_state" | "name" | "order"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Layout:
    """A folder's checkpoints (sorted by step) and the log their metrics came from."""

    kind: str  # "huggingface" | "files"
    folder: Path
    found: list[Found]
    log: Path | None = None


def _natural_key(name: str) -> list[Any]:
    return [
        (0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t
    ]


def name_step(stem: str) -> tuple[int | None, int | None]:
    """(step, epoch) a file name states: ``epoch=3-step=1200`` -> (1200, 3), ``ckpt_e10`` ->
    (10, 10) (the only integer counts as the step), ``last`` -> (None, None)."""
    step = re.search(r"(?:global_step|step|steps|iter|it)[=_-]?(\d+)", stem, re.I)
    epoch = re.search(r"(?:^|[^a-z])(?:epoch|ep|e)[=_-]?(\d+)", stem, re.I)
    nums = re.findall(r"\d+", stem)
    s = int(step.group(1)) if step else (int(nums[-1]) if nums else None)
    return s, int(epoch.group(1)) if epoch else None


def _peek(path: Path) -> dict[str, Any]:
    """The record's own meta, cheaply (safetensors: its header; torch: a memory-mapped load)."""
    try:
        if path.suffix == SAFETENSORS:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                return record_meta({"meta": dict(f.metadata() or {})})
        return record_meta(read_record(path, mmap=True)[0])
    except Exception:  # the run marks the file unreadable with the reason when it opens it
        return {}


def _huggingface(folder: Path, dirs: list[Path]) -> Layout:
    found, logs, last, log = [], [], -1, None
    for d in dirs:
        weights = next((d / w for w in HF_WEIGHTS if (d / w).is_file()), d / HF_WEIGHTS[0])
        rows, step = hf_log_history(d / "trainer_state.json")
        m = _HF_DIR.fullmatch(d.name)
        source = "trainer_state" if step is not None else "name"
        if step is None and m:
            step = int(m.group(1))
        if step is None:
            step, source = None, "order"
        if rows and (step or 0) >= last:
            # the latest trainer state holds the whole history
            logs, last, log = rows, step or 0, d / "trainer_state.json"
        found.append(Found(weights, step, source, {"format": "huggingface"}))
    for f in found:
        if f.step is not None:
            f.meta.update(metrics_at(logs, f.step))
    log = next(
        (d / "trainer_state.json" for d in dirs if (d / "trainer_state.json").is_file()), None
    )
    return Layout("huggingface", folder, found, log)


def _files(folder: Path, paths: list[Path]) -> Layout:
    csv = next(
        (p for p in (folder / "metrics.csv", folder.parent / "metrics.csv") if p.is_file()), None
    )
    rows = lightning_metrics(csv) if csv else []
    # names that state a step first: a step's first file keeps it (last.ckpt is the duplicate)
    paths = sorted(paths, key=lambda p: (name_step(p.stem)[0] is None, _natural_key(p.name)))
    found, lightning = [], False
    for p in paths:
        meta = _peek(p)
        lightning |= meta.get("format") == "lightning"
        s_name, e_name = name_step(p.stem)
        if "step" in meta:
            step, source = meta.pop("step"), "record"
        elif s_name is not None:
            step, source = s_name, "name"
        else:
            step, source = None, "order"
        if e_name is not None and "epoch" not in meta:
            meta["epoch"] = e_name
        kind = meta.pop("format", None) or ("safetensors" if p.suffix == SAFETENSORS else "torch")
        found.append(Found(p, step, source, {"format": kind, **richviz_names(meta), **meta}))
    # Lightning's CSVLogger counts a batch's step before its update (see richviz.runs.formats.logs)
    offset = 1 if lightning or (csv is not None and (csv.parent / "hparams.yaml").is_file()) else 0
    for f in found:
        if rows and f.step is not None:
            f.meta = {**metrics_at(rows, f.step, offset), **f.meta}
    return Layout("files", folder, found, csv)


def discover(folder: str | Path) -> Layout:
    """The layout of ``folder`` (a folder, one ``checkpoint-N/`` folder or one file).

    Raises ``CheckpointError`` naming the folder when it holds no checkpoints.
    """
    folder = Path(folder)
    if folder.is_file():
        layout = _files(folder.parent, [folder])
        layout.folder = folder.parent
    elif not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder of checkpoints")
    else:
        entries = _listing(folder)
        dirs = [p for p in entries if p.is_dir() and _HF_DIR.fullmatch(p.name)]
        if not dirs and (
            any((folder / w).is_file() for w in HF_WEIGHTS if is_index(w))
            or (
                any((folder / w).is_file() for w in HF_WEIGHTS)
                and ((folder / "trainer_state.json").is_file() or _HF_DIR.fullmatch(folder.name))
            )
        ):
            # one checkpoint-N folder, a saved Trainer output, or any folder of a sharded
            # model (its shards are one checkpoint, never several)
            dirs = [folder]
        if dirs:
            layout = _huggingface(folder, dirs)
        else:
            folder, entries = _lightning_descend(folder, entries)
            paths = [
                p
                for p in entries
                if p.suffix in SUFFIXES and not p.is_dir() and not _NOT_WEIGHTS.fullmatch(p.name)
            ]
            if not paths:
                raise CheckpointError(
                    f"{folder}: no checkpoints (looked for checkpoint-N/ folders and "
                    f"{', '.join('*' + s for s in SUFFIXES)} files)"
                )
            layout = _files(folder, paths)
    _order(layout.found)
    return layout


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: _natural_key(p.name))
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot list the folder ({exc.strerror})") from None


def _lightning_descend(folder: Path, entries: list[Path]) -> tuple[Path, list[Path]]:
    """From a Lightning root (``lightning_logs/version_N/``) or version folder down to the
    ``checkpoints/`` folder, when ``folder`` itself holds no checkpoint files."""
    if any(p.suffix in SUFFIXES for p in entries if p.is_file()):
        return folder, entries
    logs = folder / "lightning_logs"
    if logs.is_dir():
        versions = [d for d in _listing(logs) if (d / "checkpoints").is_dir()]
        if len(versions) > 1:
            names = ", ".join(d.name for d in versions[:4])
            raise CheckpointError(
                f"{folder}: {len(versions)} Lightning runs in lightning_logs/ ({names}); "
                "open one of them"
            )
        if versions:
            folder = versions[0]
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    return folder, _listing(folder)


def _order(found: list[Found]) -> None:
    """Give files without a step the steps after the others', in name order (``last.pt``)."""
    known = [f.step for f in found if f.step is not None]
    nxt = max(known) + 1 if known else 0
    for f in found:
        if f.step is None:
            f.step, nxt = nxt, nxt + 1
    for f in found:
        f.meta["step_source"] = f.step_source
