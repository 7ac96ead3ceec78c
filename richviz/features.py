"""Feature maps of a model: the representation phi(x) whose geometry and richness we study.

The default feature map is the *input* of the model's last ``nn.Linear`` (the penultimate
representation). Any named submodule may be chosen instead (its output, flattened per sample),
or ``"logits"`` for the model's output.

Feature maps are plain callables ``(N, *input_shape) -> (N, p)`` built from ordinary forward
calls with hooks, so they compose with ``torch.func`` transforms (``jvp``, ``vmap``).

A model whose forward returns a tuple, list or dict (e.g. ``(logits, hidden)``) is used with an
``output`` selector: an index, a key, or a callable ``output(raw) -> Tensor``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from richviz import validation
from richviz.devices import module_device, to_device
from richviz.errors import ArgumentError, ArgumentTypeError, ModelError

__all__ = [
    "LOGITS",
    "OutputSelector",
    "check_output_selector",
    "PENULTIMATE",
    "FeatureMap",
    "as_feature_map",
    "eval_mode",
    "feature_map",
    "features_and_outputs",
    "in_eval_mode",
    "last_linear_name",
    "layer_names",
    "model_output",
    "select_model_output",
    "select_output",
]

LOGITS = "logits"
PENULTIMATE = "penultimate"

OutputSelector = int | str | Callable[[Any], torch.Tensor] | None


def describe_output(out: Any) -> str:
    """Short description of what a forward returned, e.g. ``a tuple of 2 (Tensor(4, 2), int)``."""
    if isinstance(out, torch.Tensor):
        return f"Tensor{tuple(out.shape)}"
    if isinstance(out, Mapping):
        keys = list(out)
        return f"a {type(out).__name__} with keys {keys[:6]}{' ...' if len(keys) > 6 else ''}"
    if isinstance(out, (tuple, list)):
        parts = [
            f"Tensor{tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            for v in out[:4]
        ]
        more = ", ..." if len(out) > 4 else ""
        return f"a {type(out).__name__} of {len(out)} ({', '.join(parts)}{more})"
    return f"a {type(out).__name__}"


def check_output_selector(output: OutputSelector) -> OutputSelector:
    """``output`` if it can select the logits (None, an index, a key or a callable), else a
    one-line ``ModelError`` naming ``output=``."""
    if (
        output is None
        or callable(output)
        or (isinstance(output, (int, str)) and not isinstance(output, bool))
    ):
        return output
    raise ModelError(f"output= must be an index, a key or a callable, got {type(output).__name__}")


def select_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """The logits tensor from a forward's return value ``out``.

    ``output=None`` requires ``out`` to be a tensor; an int or str indexes ``out``; a callable
    is applied to it. Raises ``ModelError`` saying what the model returned otherwise.
    """
    if output is None:
        if isinstance(out, torch.Tensor):
            return out
        raise ModelError(
            f"the model returned {describe_output(out)}, not a tensor; pass output= (an index, a "
            "key or a callable) to pick the logits"
        )
    if callable(output):
        picked = output(out)
    elif isinstance(output, (int, str)) and not isinstance(output, bool):
        try:
            picked = out[output]
        except (KeyError, IndexError, TypeError):
            raise ModelError(
                f"output={output!r} selects nothing from {describe_output(out)}"
            ) from None
    else:
        check_output_selector(output)
    if not isinstance(picked, torch.Tensor):
        raise ModelError(f"output={output!r} picked {describe_output(picked)}, not a tensor")
    return picked


def select_model_output(model: nn.Module, output: OutputSelector) -> nn.Module:
    """Make ``model``'s forward return ``select_output(raw, output)`` (a forward hook).

    The module, its class and its state dict are unchanged; returns ``model``.
    """
    if output is not None and getattr(model, "_richviz_output", None) is None:
        model.register_forward_hook(lambda _m, _a, out: select_output(out, output))
        object.__setattr__(model, "_richviz_output", output)
    return model


def integer_input_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.Embedding``/``nn.EmbeddingBag`` submodules (their inputs are ids)."""
    return [
        n or type(m).__name__
        for n, m in model.named_modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    ]


def _forward(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)``; an integer-input model given real-valued points raises ``ModelError``."""
    try:
        return model(x)
    except RuntimeError as exc:
        emb = integer_input_layers(model)
        if emb and x.is_floating_point() and "indices" in str(exc):
            raise ModelError(
                f"{type(model).__name__} takes integer token ids (nn.Embedding {emb[0]!r}), but "
                "the input space must be continuous for fields, slices and derivatives; use a "
                "model of real-valued inputs (e.g. one-hot inputs with nn.Linear)"
            ) from None
        raise


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


@contextlib.contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Put ``model`` (an ``nn.Module``, a :class:`FeatureMap`, else nothing) in eval mode for
    the block, then give every submodule back the ``training`` flag it had on entry."""
    module = model.model if isinstance(model, FeatureMap) else model
    if not isinstance(module, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def in_eval_mode(fn: Callable) -> Callable:
    """Decorator: run ``fn(model, ...)`` (or iterate a generator function) inside
    :func:`eval_mode` of its first argument, so the caller's train/eval modes come back."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(model, *args, **kwargs):
            with eval_mode(model):
                yield from fn(model, *args, **kwargs)

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with eval_mode(model):
            return fn(model, *args, **kwargs)

    return wrapper


def model_output(model: nn.Module, x: torch.Tensor, output: OutputSelector = None) -> torch.Tensor:
    """``model(x)`` as a tensor: selected by ``output``, or a ``ModelError`` saying what the
    model returned (a tuple, a dict, ...) or that it needs integer inputs. NaN/inf in ``x``
    raise :class:`~richviz.errors.NonFiniteError`."""
    if isinstance(x, torch.Tensor):
        validation.check_finite(x, "x")
    return select_output(_forward(model, x), output)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activation is captured."""


class FeatureMap:
    """Callable ``x (N, *input_shape) -> features (N, p)`` for one layer of a model.

    Attributes
    ----------
    model : the wrapped module (put in eval mode, so BatchNorm uses running statistics).
    layer : ``"penultimate"``, ``"logits"`` or a submodule name.
    """

    def __init__(self, model: nn.Module, layer: str | None = None, output: OutputSelector = None):
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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
            raise ArgumentError(
                f"layer={layer!r} is not a submodule of {type(model).__name__}; "
                f"choose one of {layer_names(model)}"
            )
        self.model = model.eval()
        self.layer = layer
        self.output = output

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._module_name is None:
            out = select_output(_forward(self.model, x), self.output)
            return out.reshape(out.shape[0], -1)
        captured: list[torch.Tensor] = []
        module = self.model.get_submodule(self._module_name)
        # Hooks live on the (shared, cached) module: a forward in another thread meets this
        # hook too, and must pass it by (its own hook, registered after, takes its layer).
        owner = threading.get_ident()

        if self._use_input:

            def hook(_m, args):
                if threading.get_ident() != owner:
                    return None
                captured.append(args[0])
                raise _Stop

            handle = module.register_forward_pre_hook(hook)
        else:

            def hook(_m, _args, output):
                if threading.get_ident() != owner:
                    return None
                captured.append(output)
                raise _Stop

            handle = module.register_forward_hook(hook)
        try:
            _forward(self.model, x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} was not reached in the forward pass")
        out = captured[0]
        return out.reshape(out.shape[0], -1)

    def with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, p) and the model's output (N, C), both from ONE full forward pass.

        The layer is captured by a hook (its first call, as :meth:`__call__` does) while the
        forward runs on to the output, which ``output`` selects. Composes with ``torch.func``
        (``jvp`` through it gives the tangents of both).
        """
        captured: list[torch.Tensor] = []
        handle = None
        owner = threading.get_ident()  # as in __call__: other threads' forwards pass by

        def keep(value: torch.Tensor) -> None:
            if threading.get_ident() == owner:
                captured.append(value)

        if self._module_name is not None:
            module = self.model.get_submodule(self._module_name)
            if self._use_input:
                handle = module.register_forward_pre_hook(lambda _m, a: keep(a[0]))
            else:
                handle = module.register_forward_hook(lambda _m, _a, o: keep(o))
        try:
            out = select_output(_forward(self.model, x), self.output)
        finally:
            if handle is not None:
                handle.remove()
        if self._module_name is None:
            captured.append(out)
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} was not reached in the forward pass")
        feats = captured[0]
        return feats.reshape(feats.shape[0], -1), out.reshape(out.shape[0], -1)


def feature_map(
    model: nn.Module, layer: str | None = None, output: OutputSelector = None
) -> FeatureMap:
    """Feature map of ``model`` at ``layer`` (default: input of the last ``nn.Linear``).

    ``output`` picks the logits from a model returning a tuple/list/dict (``layer="logits"``).
    """
    return FeatureMap(model, layer, output)


def features_and_outputs(
    model: nn.Module, x: torch.Tensor, layer: str | None = None, output: OutputSelector = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features at ``layer`` (N, p) and the last Linear layer's own output (N, C), one forward.

    "Output" is the output of the final ``nn.Linear`` itself, not of a wrapper around the model:
    a centred lazy model alpha * (f - f0) outputs zero at init, where metrics based on the
    output would be undefined. Without a Linear layer the model output is used.
    ``output`` picks the logits from a model returning a tuple/list/dict. ``x`` is moved to the
    model's device; the results live there. NaN/inf in ``x`` raise
    :class:`~richviz.errors.NonFiniteError`.
    """
    if isinstance(x, torch.Tensor):
        validation.check_finite(x, "x")
    with eval_mode(model):
        x = to_device(torch.as_tensor(x), module_device(model))
        return _features_and_outputs(model, x, layer, output)


def _features_and_outputs(
    model: nn.Module, x: torch.Tensor, layer: str | None, output: OutputSelector
) -> tuple[torch.Tensor, torch.Tensor]:
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
            raise ArgumentError(f"layer={layer!r} is not a submodule of {type(model).__name__}")
        sub = model.get_submodule(layer)
        handles.append(sub.register_forward_hook(lambda _m, _a, o: feats.append(o)))
    try:
        raw = _forward(model, x)
    finally:
        for h in handles:
            h.remove()
    if layer == LOGITS or not outs:
        y = select_output(raw, output)
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
    raise ArgumentTypeError(f"phi must be an nn.Module or a callable, got {type(phi).__name__}")
