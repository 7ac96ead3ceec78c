"""One checkpoint file of any layout -> (state dict, the record's own metadata).

- ``*.safetensors``: read with the safetensors library (no pickle at all); its
  ``__metadata__`` strings may carry ``step`` / ``epoch``.
- ``*.index.json``: a sharded checkpoint's index; each weight read from the shard it names
  (:mod:`richviz.runs.shards`);
- everything else (``*.ckpt``, ``*.pt``, ``*.pth``, ``*.bin``): ``torch.load`` with
  ``weights_only=True``; a zip checkpoint that it refuses is read by the inert unpickler of
  :mod:`.pickles`, and kept only when what blocked it is harmless data outside the weights.

The state dict is found inside the record (``state_dict``, ``model_state_dict``, ``model``,
``module``, ``net``, or the record itself when it is a dict of tensors), and
:func:`fit_keys` removes a key prefix (``model.``, ``module.``, ``_orig_mod.``, ...) only when
that makes the keys those of the factory's model.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from richviz.errors import CheckpointError, MissingDependencyError, checkpoint_error, one_line
from richviz.runs.formats.pickles import check_inert, inert_load
from richviz.runs.shards import is_index, read_shards
from richviz.runs.storage import _torch_load

__all__ = [
    "SAFETENSORS",
    "STATE_KEYS",
    "fill_tied",
    "fit_keys",
    "read_file",
    "read_record",
    "record_meta",
    "state_dict_of",
]

SAFETENSORS = ".safetensors"
#: where records keep the model's weights, in the order they are looked for
STATE_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
#: the record's own step / epoch, in the order they are trusted
STEP_KEYS = ("global_step", "step", "iteration", "iter", "steps")
EPOCH_KEYS = ("epoch",)


def _safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise MissingDependencyError(
            f"{path}: reading *.safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise checkpoint_error(
            path, f"not a readable safetensors file ({one_line(exc, 160)})"
        ) from None
    return sd, meta


def _shard(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    """One shard of a sharded checkpoint: a safetensors file, or a ``torch.save`` of tensors
    (read with ``weights_only``)."""
    if path.suffix == SAFETENSORS:
        return _safetensors(path)[0]
    return state_dict_of(path, _torch_load(path, mmap=mmap))[0]


def read_record(path: Path, mmap: bool = False) -> tuple[Any, bool]:
    """The object stored in ``path`` and whether it came through the inert unpickler.

    Safetensors files read as ``{"state_dict": tensors, "meta": their __metadata__}``; a shard
    index (``*.index.json``, :mod:`richviz.runs.shards`) as ``{"state_dict": every weight
    from its shard, "meta": {}}``.
    """
    if is_index(path):
        return {"state_dict": read_shards(path, lambda p: _shard(p, mmap)), "meta": {}}, False
    if not path.exists():
        raise checkpoint_error(path, "checkpoint file is missing")
    if path.suffix == SAFETENSORS:
        sd, meta = _safetensors(path)
        return {"state_dict": sd, "meta": meta}, False
    try:
        return _torch_load(path, mmap=mmap), False
    except CheckpointError as exc:
        if "refused to load" not in str(exc) or path.is_dir() or not zipfile.is_zipfile(path):
            raise
    return inert_load(path, mmap=mmap), True


def _tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def state_dict_of(path: Path, record: Any) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside ``record`` and the entry that held it (None: the record itself)."""
    if _tensor_dict(record):
        return dict(record), None
    if isinstance(record, Mapping):
        for key in STATE_KEYS:
            value = record.get(key)
            if _tensor_dict(value):
                return dict(value), key
        present = [k for k in STATE_KEYS if k in record]
        if present:
            value = record[present[0]]
            raise checkpoint_error(
                path,
                f"entry {present[0]!r} is a {type(value).__name__}, not a state dict of tensors",
            )
        keys = ", ".join(repr(k) for k in list(record)[:6])
        raise checkpoint_error(
            path,
            f"no state dict found (looked for {', '.join(STATE_KEYS)}; the record has {keys})",
        )
    raise checkpoint_error(path, f"not a state dict (found {type(record).__name__})")


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def record_meta(record: Any) -> dict[str, Any]:
    """The record's own ``step`` / ``epoch`` and numeric top-level entries (``loss``, ...).

    richviz's own ``{"state_dict", "meta"}`` contributes its ``meta``; a Lightning record its
    ``global_step`` and ``epoch``; a hand-written loop its ``step`` / ``epoch`` / ``loss``.
    """
    if not isinstance(record, Mapping):
        return {}
    meta: dict[str, Any] = {}
    inner = record.get("meta")
    sources = [inner, record] if isinstance(inner, Mapping) else [record]
    for src in sources:
        for key in STEP_KEYS:
            step = _integer(src.get(key))
            if step is not None and "step" not in meta:
                meta["step"] = step
        for key in EPOCH_KEYS:
            epoch = _number(src.get(key))
            if epoch is not None and "epoch" not in meta:
                meta["epoch"] = int(epoch) if float(epoch).is_integer() else epoch
        for key, value in src.items():
            if isinstance(key, str) and key not in meta and key not in STEP_KEYS:
                # strings count only in an inner meta (safetensors keeps numbers as strings)
                number = None if isinstance(value, str) and src is record else _number(value)
                if number is not None:
                    meta[key] = number
    if "pytorch-lightning_version" in record:
        meta["format"] = "lightning"
    return meta


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def fit_keys(
    sd: dict[str, torch.Tensor], reference: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], str]:
    """``sd`` with the key prefix removed that makes its keys and shapes those of ``reference``.

    Prefixes are found, not guessed: for each key of ``sd`` that ends with a reference key at a
    ``.`` boundary, the part before it (``model.``, ``module._orig_mod.``, ...) is a candidate;
    the first candidate whose stripped keys are exactly the reference's, with the same shapes,
    wins (keys without the prefix, e.g. a loss module's buffers, are then dropped). Returns
    ``(state dict, prefix)``; ``sd`` unchanged and ``""`` when it already fits or nothing fits
    (the caller's key check then names the missing and unexpected keys).
    """
    if set(sd) == set(reference) or not reference:
        return sd, ""
    anchor = next(iter(reference))
    candidates = []
    for k in sd:
        if k.endswith(anchor) and len(k) > len(anchor) and k[-len(anchor) - 1] == ".":
            candidates.append(k[: -len(anchor)])
    for prefix in dict.fromkeys(candidates):
        stripped = _strip(sd, prefix)
        if set(stripped) == set(reference) and all(
            tuple(stripped[k].shape) == tuple(reference[k].shape) for k in reference
        ):
            return stripped, prefix
    return sd, ""


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata  # one id per storage, also on the meta device
    except Exception:
        return None


def fill_tied(sd: dict[str, torch.Tensor], reference: Mapping[str, Any]) -> list[str]:
    """Add to ``sd`` the tied weights a file leaves out; returns the keys added.

    ``save_pretrained`` writes a weight shared by two modules once (GPT-2's ``lm_head.weight``
    is ``transformer.wte.weight``). A reference key missing from ``sd`` whose tensor shares
    its storage with one that ``sd`` has (and has its shape) gets that tensor.
    """
    missing = [k for k in reference if k not in sd]
    if not missing:
        return []
    by_storage: dict[int, str] = {}
    for k, v in reference.items():
        sid = _storage(v) if isinstance(v, torch.Tensor) else None
        if sid is not None and k in sd:
            by_storage.setdefault(sid, k)
    added = []
    for k in missing:
        sid = _storage(reference[k])
        twin = by_storage.get(sid) if sid is not None else None
        if twin is not None and tuple(sd[twin].shape) == tuple(reference[k].shape):
            sd[k] = sd[twin]
            added.append(k)
    return added


def read_file(
    path: Path, reference: Mapping[str, Any], mmap: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict fitted to ``reference``, the record's meta) of one checkpoint file.

    Raises ``CheckpointError`` naming the file: unreadable, unsafe, or no state dict inside.
    """
    record, inert = read_record(path, mmap=mmap)
    if inert:  # name what blocked weights_only, unless it is harmless data beside the weights
        entry = None
        if isinstance(record, Mapping):
            entry = next((k for k in STATE_KEYS if k in record), None)
        check_inert(path, record, entry)
    sd, _ = state_dict_of(path, record)
    sd, prefix = fit_keys(sd, reference)
    tied = fill_tied(sd, reference)
    meta = record_meta(record)
    if prefix:
        meta["stripped_prefix"] = prefix
    if tied:
        meta["tied_keys"] = tied
    return sd, meta
