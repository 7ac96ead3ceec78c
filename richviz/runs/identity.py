"""Identity of a model for cache keys: what determines it, hashed without running it.

A model's identity is its repr, its parameter names, shapes and dtypes, and the source code of
its module classes; a factory or an output selector is named by its qualified name plus the
hash of its source. Source hashes are remembered per object (``inspect.getsource`` parses the
whole module).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from typing import Any

from torch import nn

__all__ = ["callable_identity", "model_identity"]


def _source_hash(obj: Any) -> str:
    """Hash of an object's source code ("" when Python cannot find it, e.g. a builtin).

    Remembered per object (``inspect.getsource`` parses the whole module, ~10 ms): a class or
    function object keeps its code for its lifetime, and a redefinition is a new object.
    """
    try:
        return _remembered_source_hash(obj)
    except TypeError:  # unhashable callable
        return _read_source_hash(obj)


def _read_source_hash(obj: Any) -> str:
    try:
        src = inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(src.encode()).hexdigest()[:16]


_remembered_source_hash = functools.lru_cache(maxsize=1024)(_read_source_hash)


def model_identity(model: nn.Module) -> str:
    """Hash of a model's structure: its repr, parameter names/shapes, its classes' source."""
    h = hashlib.sha256(repr(model).encode())
    for k, v in model.state_dict().items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        h.update(f"{cls.__module__}.{cls.__qualname__}:{_source_hash(cls)};".encode())
    return h.hexdigest()[:16]


def callable_identity(fn: Any) -> str:
    """Qualified name plus source hash of a callable (a factory or an output selector)."""
    if isinstance(fn, (int, str)) or fn is None:
        return repr(fn)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{getattr(fn, '__module__', '?')}.{name}:{_source_hash(fn)}"
