"""Sharded checkpoints: one model's weights split over several files beside an index.

Hugging Face's ``save_pretrained`` writes a model larger than ``max_shard_size`` as shards
(``model-00001-of-00003.safetensors``, ... or ``pytorch_model-00001-of-00003.bin``, ...) and an
index, ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``, whose
``weight_map`` names for each weight the shard that holds it::

    {"metadata": {"total_size": 1024},
     "weight_map": {"net.0.weight": "model-00001-of-00002.safetensors", ...}}

richviz treats the index as the checkpoint: its state dict is every weight read from its
shard, its fingerprint and content hash cover the index and all its shards (a rewritten shard
makes cached metrics stale). An index is read only when it is at most :data:`MAX_INDEX_BYTES`,
and it may name at most :data:`MAX_SHARDS` shards, each a plain file name beside it (no
folder, no link out of its folder).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from richviz.errors import checkpoint_error, one_line
from richviz.runs.manifest import inside

__all__ = [
    "INDEX_SUFFIX",
    "MAX_INDEX_BYTES",
    "MAX_SHARDS",
    "SHARD_SUFFIXES",
    "is_index",
    "read_shards",
    "shard_files",
    "weight_map",
]

INDEX_SUFFIX = ".index.json"
#: the largest index read (a 70B-parameter model's index is ~100 KiB)
MAX_INDEX_BYTES = 16 * 2**20
#: the most shards an index may name (a 400B-parameter model at 5 GB each: ~160)
MAX_SHARDS = 10_000
SHARD_SUFFIXES = (".safetensors", ".bin")
_PLAIN = re.compile(r"[^/\\\x00]+")


def is_index(path: str | Path) -> bool:
    """True when ``path`` names a shard index (``*.index.json``)."""
    return Path(path).name.endswith(INDEX_SUFFIX)


def weight_map(index: Path) -> dict[str, str]:
    """``{weight name: shard file name}`` of the shard index ``index``, checked.

    Raises ``CheckpointError`` naming ``index`` when it is missing, larger than
    :data:`MAX_INDEX_BYTES`, not JSON, has no non-empty ``weight_map`` object, names
    anything but a ``*.safetensors`` / ``*.bin`` file name beside it, or more than
    :data:`MAX_SHARDS` shards.
    """
    try:
        size = index.stat().st_size
    except FileNotFoundError:
        raise checkpoint_error(index, "checkpoint file is missing") from None
    except OSError as exc:
        raise checkpoint_error(index, f"cannot read the shard index ({exc.strerror})") from None
    if size > MAX_INDEX_BYTES:
        raise checkpoint_error(
            index,
            f"shard index is {size / 2**20:.1f} MiB, more than the "
            f"{MAX_INDEX_BYTES // 2**20} MiB richviz reads",
        )
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise checkpoint_error(
            index, f"not a readable shard index ({one_line(exc, 160)})"
        ) from None
    found = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(found, dict) or not found:
        raise checkpoint_error(
            index, "shard index has no 'weight_map' object naming each weight's shard"
        )
    for key, name in found.items():
        if not (
            isinstance(name, str)
            and _PLAIN.fullmatch(name)
            and name not in (".", "..")
            and Path(name).suffix in SHARD_SUFFIXES
        ):
            raise checkpoint_error(
                index,
                f"weight_map[{one_line(repr(key), 80)}] = {one_line(repr(name), 80)} is not a "
                "shard file name beside the index",
            )
    shards = len(set(found.values()))
    if shards > MAX_SHARDS:
        raise checkpoint_error(
            index, f"shard index names {shards:,} shards, more than {MAX_SHARDS:,}"
        )
    return found


def shard_files(index: Path) -> list[Path]:
    """The distinct shard files ``index`` names, in name order, each inside its folder.

    Raises ``CheckpointError`` naming ``index`` as :func:`weight_map` does, or when a shard
    is a link to a file outside the index's folder.

    Examples
    --------
    >>> import json, shutil, tempfile
    >>> from pathlib import Path
    >>> from richviz.errors import CheckpointError
    >>> from richviz.runs.shards import shard_files
    >>> folder = Path(tempfile.mkdtemp())
    >>> index = folder / "model.safetensors.index.json"
    >>> _ = index.write_text(json.dumps({"weight_map": {
    ...     "0.weight": "model-00001-of-00002.safetensors",
    ...     "2.weight": "model-00002-of-00002.safetensors",
    ...     "0.bias": "model-00001-of-00002.safetensors"}}))
    >>> index.name.endswith('.index.json'), [p.name for p in shard_files(index)]
    (True, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'])
    >>> _ = index.write_text(json.dumps({"weight_map": {"0.weight": "../elsewhere.safetensors"}}))
    >>> try:
    ...     shard_files(index)
    ... except CheckpointError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    weight_map['0.weight'] = '../elsewhere.safetensors' is not a shard file name beside the index
    >>> shutil.rmtree(folder)
    """
    return _confined(index, weight_map(index))


def _confined(index: Path, names: Mapping[str, str]) -> list[Path]:
    """The distinct shard files of the checked ``names``, each inside ``index``'s folder."""
    paths = [index.parent / name for name in sorted(set(names.values()))]
    for p in paths:
        if not inside(index.parent, p):
            raise checkpoint_error(
                index, f"shard {p.name} links to a file outside its folder; refused"
            )
    return paths


def read_shards(
    index: Path, read_shard: Callable[[Path], Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The state dict the shard index ``index`` describes: each weight from its own shard.

    ``read_shard(path)`` reads one shard file into ``{name: tensor}`` (and raises a
    ``CheckpointError`` naming it when it cannot). A shard that is missing, or lacks a weight
    the index puts in it, raises ``CheckpointError`` naming ``index`` and the shard.
    """
    names = weight_map(index)
    by_shard: dict[Path, list[str]] = {}
    for key, name in names.items():
        by_shard.setdefault(index.parent / name, []).append(key)
    state: dict[str, torch.Tensor] = {}
    for path in _confined(index, names):
        if not path.is_file():
            raise checkpoint_error(index, f"shard {path.name} named by the index is missing")
        tensors = read_shard(path)
        keys = by_shard[path]
        missing = [k for k in keys if k not in tensors]
        if missing:
            shown = ", ".join(one_line(repr(k), 60) for k in missing[:3])
            raise checkpoint_error(
                index,
                f"shard {path.name} lacks {len(missing)} weight(s) the index puts there "
                f"({shown}{', ...' if len(missing) > 3 else ''})",
            )
        state.update((k, tensors[k]) for k in keys)
    return state
