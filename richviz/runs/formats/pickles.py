"""Reading a PyTorch pickle that ``weights_only=True`` refuses, without running any of it.

Training stacks store more than weights beside the state dict: Lightning's
``hyper_parameters`` may hold an ``argparse.Namespace`` or a ``pathlib.Path``, a callback's
state a ``datetime.timedelta`` or a NumPy scalar. ``torch.load(weights_only=True)`` refuses
the whole file for one such entry. :func:`inert_load` reads it with an unpickler whose
``find_class`` returns the callables ``weights_only`` itself allows (tensor rebuilders,
``OrderedDict``, dtypes) and, for every other name, an inert stand-in class that only records
its name and arguments: no foreign constructor, ``__reduce__`` payload or ``__setstate__``
runs, ever. :func:`check_inert` then accepts the record only when every stand-in is one of
the :data:`HARMLESS` types and none sits inside the state dict; otherwise it names the entry
and the callable that blocks it and says how to re-save the weights.
"""

from __future__ import annotations

import pickle
import types
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from richviz.errors import CheckpointError, one_line

__all__ = ["HARMLESS", "Inert", "check_inert", "inert_load", "inert_names"]

#: types whose pickled values are plain data: a stand-in takes their place (never the real
#: class), and a record holding only these outside its state dict still yields the weights
HARMLESS = frozenset(
    {
        "argparse.Namespace",
        "builtins.frozenset",
        "builtins.range",
        "builtins.slice",
        "collections.defaultdict",
        "collections.deque",
        "copyreg._reconstructor",
        "builtins.object",
        "datetime.date",
        "datetime.datetime",
        "datetime.time",
        "datetime.timedelta",
        "datetime.timezone",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.PurePath",
        "pathlib.PurePosixPath",
        "pathlib.PureWindowsPath",
        "pathlib.WindowsPath",
        "pathlib._local.PosixPath",
        "pathlib._local.WindowsPath",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
        # Lightning's dict of hyper-parameters, under each of its package names
        "lightning.fabric.utilities.data.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "lightning.pytorch.utilities.parsing.AttributeDict",
        "pytorch_lightning.utilities.parsing.AttributeDict",
    }
)
_HARMLESS_PREFIXES = ("numpy.dtypes.", "omegaconf.")  # NumPy dtype classes, Hydra configs


def _harmless(name: str) -> bool:
    return name in HARMLESS or name.startswith(_HARMLESS_PREFIXES)


class Inert:
    """Stand-in for an object of a type richviz does not build: its name and arguments only."""

    richviz_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        self = object.__new__(cls)  # NEWOBJ calls only this, REDUCE this and __init__
        self.args, self.state, self.items = args, None, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD: store, never apply
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS of a dict subclass
        self.items.append((key, value))

    def append(self, value: Any) -> None:  # APPENDS of a list subclass
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<{self.richviz_name} (not built)>"


def _allowed_globals() -> dict[str, Any]:
    """The callables ``torch.load(weights_only=True)`` allows, by ``module.name``."""
    try:
        from torch import _weights_only_unpickler

        return dict(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # a torch without the private list: the minimum a state dict needs
        from collections import OrderedDict

        return {
            "collections.OrderedDict": OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        }


class _InertUnpickler(pickle.Unpickler):
    """``find_class`` gives the ``weights_only`` callables or an :class:`Inert` subclass."""

    _allowed: dict[str, Any] | None = None
    _stubs: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if _InertUnpickler._allowed is None:
            _InertUnpickler._allowed = _allowed_globals()
        full = f"{module}.{name}"
        found = _InertUnpickler._allowed.get(full)
        if found is not None:
            return found
        stub = _InertUnpickler._stubs.get(full)
        if stub is None:
            stub = type(name, (Inert,), {"richviz_name": full, "__module__": __name__})
            _InertUnpickler._stubs[full] = stub
        return stub


def _inert_pickle_load(file: Any, **kwargs: Any) -> Any:
    return _InertUnpickler(file, **kwargs).load()


# torch.load takes a pickle *module*: one whose Unpickler and load are the inert ones
_INERT_PICKLE = types.ModuleType("richviz_inert_pickle")
_INERT_PICKLE.Unpickler = _InertUnpickler  # type: ignore[attr-defined]
_INERT_PICKLE.load = _inert_pickle_load  # type: ignore[attr-defined]


def inert_load(path: Path, mmap: bool = False) -> Any:
    """The object in the zip checkpoint ``path``, foreign objects replaced by :class:`Inert`.

    Tensors are rebuilt by torch's own storage reader; nothing the pickle names outside the
    ``weights_only`` allowlist is imported or called. Raises ``CheckpointError`` naming the
    file when it cannot be read this way.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(
                path,
                map_location="cpu",
                weights_only=False,  # the unpickler below is the restriction, and a stricter one
                pickle_module=_INERT_PICKLE,
                mmap=mmap,
            )
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(exc).__name__}: {one_line(exc, 160)})"
        ) from None


def inert_names(obj: Any, depth: int = 0) -> Iterator[str]:
    """Names of the :class:`Inert` stand-ins anywhere inside ``obj`` (containers walked)."""
    if depth > 50:
        return
    if isinstance(obj, Inert):
        yield obj.richviz_name
        for part in (obj.args, obj.state, obj.items):
            yield from inert_names(part, depth + 1)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from inert_names(k, depth + 1)
            yield from inert_names(v, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from inert_names(v, depth + 1)


def check_inert(path: Path, record: Any, weights_entry: str | None) -> None:
    """Raise unless ``record``'s stand-ins are all harmless and none is in ``weights_entry``.

    The one-line message names the file, the entry, the callable and how to re-save the
    weights so they load with ``weights_only=True``.
    """
    entries = record.items() if isinstance(record, Mapping) else [(None, record)]
    for key, value in entries:
        names = list(dict.fromkeys(inert_names(value)))
        blocking = names if key == weights_entry else [n for n in names if not _harmless(n)]
        if not blocking:
            continue
        where = f"entry {key!r}" if key is not None else "its pickle"
        if key == weights_entry:
            what = f"holds a pickled {blocking[0]} object where tensors belong"
        else:
            what = f"would import and call {blocking[0]}"
        raise CheckpointError(
            f"{path}: refused to load: {where} {what}; richviz never runs pickled code. "
            "Re-save the weights alone in a session that trusts the file, e.g. "
            f"torch.save({_resave(key, weights_entry)}, 'weights.pt')"
        )


def _resave(blocking: str | None, weights_entry: str | None) -> str:
    """What extracts the weights from the trusted ``torch.load(f, weights_only=False)``."""
    load = "torch.load(f, weights_only=False)"
    if blocking is None:  # the whole file is one pickled object (e.g. torch.save(model))
        return f"{load}.state_dict()"
    if weights_entry is None:  # a dict of tensors with something else among them
        return f"{{k: v for k, v in {load}.items() if torch.is_tensor(v)}}"
    if blocking == weights_entry:  # e.g. {"model": model} instead of model.state_dict()
        return f"{load}[{weights_entry!r}].state_dict()"
    return f"{load}[{weights_entry!r}]"
