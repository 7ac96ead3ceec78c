"""Choice of the torch device: CUDA when present, else CPU, unless the user forces one.

The default can be forced for a whole process with the environment variable
``RICHVIZ_DEVICE`` (e.g. ``cpu`` on a GPU machine, or ``cuda:1``); an explicit ``device``
argument always wins.
"""

from __future__ import annotations

import os

import torch

__all__ = ["DEVICE_ENV", "best_device", "module_device", "module_dtype", "to_device"]

DEVICE_ENV = "RICHVIZ_DEVICE"
"""Environment variable naming the default device (empty or ``auto``: CUDA when available)."""


def best_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a ``torch.device``, or the default one when it is ``None``.

    The default is ``$RICHVIZ_DEVICE`` when set (not empty, not ``"auto"``), else ``cuda``
    when ``torch.cuda.is_available()``, else ``cpu``. ``"cuda"`` is refused with a
    ``ValueError`` on a machine without CUDA, rather than failing later inside a kernel.
    """
    if device is None:
        env = os.environ.get(DEVICE_ENV, "").strip()
        if env and env != "auto":
            return _check(env, DEVICE_ENV)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _check(device, "device")


def _check(device: str | torch.device, name: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name}={device!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={device!r}: CUDA is not available on this machine")
    return dev


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
