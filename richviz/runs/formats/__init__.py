"""Checkpoint layouts researchers already have: Lightning, Hugging Face, safetensors, loops.

:func:`run_spec` turns a folder into what :meth:`richviz.runs.Run.from_checkpoints` builds a
run from: the checkpoints with their steps (the record's own before the name's), their meta
(with the loss and accuracy a Lightning ``metrics.csv`` or a Hugging Face ``log_history``
logged for that step) and :func:`read_checkpoint`, the safe reader of one file (safetensors
through its library, everything else through ``weights_only=True`` or the inert unpickler;
key prefixes stripped only when that makes them the model's).

Modules: :mod:`.pickles` (inert unpickling), :mod:`.records` (one file -> state dict + meta),
:mod:`.logs` (logged metrics), :mod:`.layouts` (what a folder holds).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from richviz import datasets
from richviz.errors import ModelError
from richviz.factories import check_factory, hf_config_factory
from richviz.features import check_output_selector
from richviz.runs.formats.layouts import SUFFIXES, Found, Layout, discover
from richviz.runs.formats.pickles import HARMLESS
from richviz.runs.formats.records import fit_keys, read_file
from richviz.runs.manifest import FORMAT, FORMAT_VERSION

__all__ = [
    "HARMLESS",
    "SUFFIXES",
    "Found",
    "Layout",
    "discover",
    "fit_keys",
    "read_checkpoint",
    "read_file",
    "run_spec",
]


def read_checkpoint(
    path: Path, reference: Mapping[str, Any], mmap: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict fitted to ``reference``, extra meta) of one checkpoint file of any layout.

    The extra meta holds only ``stripped_prefix`` when a key prefix was removed and
    ``tied_keys`` when tied weights the file left out were filled in; the
    record's step, epoch and logged metrics are found once, when the folder is opened.
    """
    sd, meta = read_file(path, reference, mmap=mmap)
    return sd, {k: v for k, v in meta.items() if k in ("stripped_prefix", "tied_keys")}


def run_spec(
    folder: str | os.PathLike,
    factory: Callable[[], nn.Module] | str | None = None,
    data: datasets.Dataset | str | None = None,
    cache_size: int = 8,
    output: Any = None,
) -> dict[str, Any]:
    """Keyword arguments of :class:`richviz.runs.Run` for a folder of foreign checkpoints.

    ``factory``: a callable building the model, a spec string (``"torchvision:resnet18"``,
    ``"timm:NAME"``, ``"module:function"``, ``"file.py:function"``), or None for a Hugging Face
    layout whose ``config.json`` names a ``transformers`` class.
    """
    layout = discover(folder)
    if factory is None:
        if layout.kind != "huggingface":
            raise ModelError(
                f"{layout.folder}: factory= is needed to build the model (a callable, "
                "'torchvision:NAME', 'timm:NAME' or 'module:function')"
            )
        factory = hf_config_factory(layout.found[0].path.parent)
    factory = check_factory(factory)
    check_output_selector(output)
    if isinstance(data, str):
        data = datasets.load(data)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": None,
        "factory": getattr(factory, "__qualname__", repr(factory)),
        "data": {"name": data.name, "kwargs": data.kwargs} if data is not None else None,
        "source": {
            "layout": layout.kind,
            "formats": sorted({f.meta.get("format", "?") for f in layout.found}),
            "log": str(layout.log) if layout.log else None,
        },
        "checkpoints": [],
    }
    return {
        "path": layout.folder,
        "manifest": manifest,
        "factory": factory,
        "files": [(f.step, f.path, f.meta) for f in layout.found],
        "data": data,
        "cache_size": cache_size,
        "output": output,
        "reader": read_checkpoint,
    }
