"""Feature maps of a model: the representation phi(x) whose geometry and richness we study.

The default feature map is the *input* of the model's last ``nn.Linear`` (the penultimate
representation). Any named submodule may be chosen instead (its output, flattened per sample),
or ``"logits"`` for the model's output.

Feature maps are plain callables ``(N, *input_shape) -> (N, p)`` built from ordinary forward
calls with hooks, so they compose with ``torch.func`` transforms (``jvp``, ``vmap``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from richviz.devices import module_device, to_device

LOGITS = "logits"
PENULTIMATE = "penultimate"


def last_linear_name(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` submodule in registration order.

    Raises ``ValueError`` when the model has none.
    """
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer, so the default feature map "
            "(input of the last Linear) is undefined; pass layer=<module name> or layer='logits'"
        )
    return name


def layer_names(model: nn.Module) -> list[str]:
    """Layers a user may pick: "penultimate" (if defined), named submodules, "logits"."""
    names = []
    try:
        last_linear_name(model)
        names.append(PENULTIMATE)
    except ValueError:
        pass
    names += [n for n, m in model.named_modules() if n and not isinstance(m, nn.Dropout)]
    names.append(LOGITS)
    return names


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activation is captured."""


class FeatureMap:
    """Callable ``x (N, *input_shape) -> features (N, p)`` for one layer of a model.

    Attributes
    ----------
    model : the wrapped module (put in eval mode, so BatchNorm uses running statistics).
    layer : ``"penultimate"``, ``"logits"`` or a submodule name.
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        layer = PENULTIMATE if layer is None else layer
        modules = dict(model.named_modules())
        if layer == PENULTIMATE:
            self._module_name: str | None = last_linear_name(model)
            self._use_input = True
        elif layer == LOGITS:
            self._module_name = None
            self._use_input = False
        elif layer in modules and layer != "":
            self._module_name = layer
            self._use_input = False
        else:
            raise ValueError(
                f"layer={layer!r} is not a submodule of {type(model).__name__}; "
                f"choose one of {layer_names(model)}"
            )
        self.model = model.eval()
        self.layer = layer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._module_name is None:
            out = self.model(x)
            return out.reshape(out.shape[0], -1)
        captured: list[torch.Tensor] = []
        module = self.model.get_submodule(self._module_name)

        if self._use_input:

            def hook(_m, args):
                captured.append(args[0])
                raise _Stop

            handle = module.register_forward_pre_hook(hook)
        else:

            def hook(_m, _args, output):
                captured.append(output)
                raise _Stop

            handle = module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} was not reached in the forward pass")
        out = captured[0]
        return out.reshape(out.shape[0], -1)


def feature_map(model: nn.Module, layer: str | None = None) -> FeatureMap:
    """Feature map of ``model`` at ``layer`` (default: input of the last ``nn.Linear``)."""
    return FeatureMap(model, layer)


def features_and_outputs(
    model: nn.Module, x: torch.Tensor, layer: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features at ``layer`` (N, p) and the last Linear layer's own output (N, C), one forward.

    "Output" is the output of the final ``nn.Linear`` itself, not of a wrapper around the model
    (DESIGN §4): a centred lazy model alpha * (f - f0) outputs zero at init, where metrics based
    on the output would be undefined. Without a Linear layer the model output is used.
    ``x`` is moved to the model's device; the results live there.
    """
    model = model.eval()
    x = to_device(torch.as_tensor(x), module_device(model))
    layer = PENULTIMATE if layer is None else layer
    if layer == PENULTIMATE:
        last = model.get_submodule(last_linear_name(model))  # ValueError without a Linear
    else:
        try:
            last = model.get_submodule(last_linear_name(model))
        except ValueError:
            last = None
    feats: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    handles = []
    if last is not None:
        handles.append(last.register_forward_hook(lambda _m, _a, o: outs.append(o)))
    if layer == PENULTIMATE:
        handles.append(last.register_forward_pre_hook(lambda _m, a: feats.append(a[0])))
    elif layer != LOGITS:
        if layer not in dict(model.named_modules()) or layer == "":
            raise ValueError(f"layer={layer!r} is not a submodule of {type(model).__name__}")
        sub = model.get_submodule(layer)
        handles.append(sub.register_forward_hook(lambda _m, _a, o: feats.append(o)))
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    if layer == LOGITS:
        feats.append(y)
    if not outs:
        outs.append(y)
    f = feats[0]
    return f.reshape(f.shape[0], -1), outs[-1].reshape(outs[-1].shape[0], -1)


def as_feature_map(
    phi: nn.Module | Callable[[torch.Tensor], torch.Tensor], layer: str | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Accept a module (wrapped with :func:`feature_map`) or any callable ``(N, ...) -> (N, p)``."""
    if isinstance(phi, FeatureMap):
        return phi
    if isinstance(phi, nn.Module):
        return FeatureMap(phi, layer)
    if callable(phi):
        return phi
    raise TypeError(f"phi must be an nn.Module or a callable, got {type(phi).__name__}")
