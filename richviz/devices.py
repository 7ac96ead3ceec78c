"""Choice of the torch device: CUDA when present, else CPU, unless the user forces one.

The default can be forced for a whole process with the environment variable
``RICHVIZ_DEVICE`` (e.g. ``cpu`` on a GPU machine, or ``cuda:1``); an explicit ``device``
argument always wins. :func:`check_device` is the one check of a device argument (the trainer,
the runs and the widgets all go through it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from richviz.errors import ArgumentError

__all__ = [
    "DEVICE_ENV",
    "best_device",
    "check_device",
    "module_device",
    "module_dtype",
    "to_device",
]

DEVICE_ENV = "RICHVIZ_DEVICE"
"""Environment variable naming the default device (empty or ``auto``: CUDA when available)."""


def best_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a ``torch.device``, or the default one when it is ``None``.

    The default is ``$RICHVIZ_DEVICE`` when set (not empty, not ``"auto"``), else ``cuda``
    when ``torch.cuda.is_available()``, else ``cpu``. ``"cuda"`` is refused with an
    :class:`~richviz.errors.ArgumentError` (a ``ValueError``) on a machine without CUDA,
    rather than failing later inside a kernel (see :func:`check_device`).
    """
    if device is None:
        env = os.environ.get(DEVICE_ENV, "").strip()
        if env and env != "auto":
            return check_device(env, DEVICE_ENV)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def check_device(
    device: str | torch.device | None,
    name: str = "device",
    *,
    types: Sequence[str] | None = None,
    check_index: bool = False,
    purpose: str = "",
) -> torch.device:
    """The ``torch.device`` a device argument names; one-line errors naming ``name``.

    Parameters
    ----------
    device
        ``None`` or ``"auto"``: the default device (:func:`best_device`); else anything
        ``torch.device`` accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
    name
        The argument's name in messages (``device``, ``RICHVIZ_DEVICE``, ...).
    types
        Device types allowed (e.g. ``("cpu", "cuda")`` for training); None allows any.
    check_index
        Also refuse ``cuda:N`` with N at or beyond ``torch.cuda.device_count()``.
    purpose
        Words after "is not supported" in the message for a refused type (e.g.
        ``" for training"``).

    Raises
    ------
    ArgumentError
        (a ``ValueError``) for text that is no torch device, CUDA on a machine without it, a
        type outside ``types``, or (``check_index``) a CUDA index the machine lacks.
    """
    if device is None or (isinstance(device, str) and device.strip() == "auto"):
        return best_device(None)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        if types is not None:
            raise _unsupported(device, name, types, purpose) from None
        raise ArgumentError(f"{name}={device!r} is not a torch device") from exc
    if types is not None and dev.type not in types:
        raise _unsupported(device, name, types, purpose)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"{name}={device!r}: CUDA is not available on this machine")
    if check_index and dev.type == "cuda" and dev.index is not None:
        count = torch.cuda.device_count()
        if dev.index >= count:
            raise ArgumentError(f"{name}={device!r}: this machine has {count} CUDA device(s)")
    return dev


def _unsupported(device: object, name: str, types: Sequence[str], purpose: str) -> ArgumentError:
    choices = ["auto", *types] + (["cuda:N"] if "cuda" in types else [])
    use = ", ".join(choices[:-1]) + f" or {choices[-1]}"
    return ArgumentError(f"{name}={device!r} is not supported{purpose}; use {use}")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a module's first floating parameter (float32 when none)."""
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device`` (the same tensor when it is there already; non-blocking from pinned
    host memory)."""
    if x.device == device:
        return x
    return x.to(device, non_blocking=x.is_pinned())
