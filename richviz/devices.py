"""Choice of the torch device: CUDA when present, else CPU, unless the user forces one."""

from __future__ import annotations

import torch

__all__ = [
    "best_device",
    "module_device",
    "module_dtype",
]


def best_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a ``torch.device``, or the best available one when it is ``None``.

    ``"cuda"`` is refused with a ``ValueError`` on a machine without CUDA, rather than failing
    later inside a kernel.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine")
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
