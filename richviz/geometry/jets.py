"""Forward-mode kernels: a feature map's primal and its directional derivatives, batched.

For inputs x (N, *input_shape) and k tangent directions t (k, *input_shape) the kernels return
``phi(x)`` (N, p) and ``J t`` (k, N, p), ``J = d phi / d x``, without building the p x d
Jacobian. Any model goes through ``torch.func.jvp`` vmapped over the tangents (the primal pass
is shared); plain chains of ``nn.Linear`` and elementwise activations take a hand-written
version of the same recursion (the primal and the k tangents travel as one stacked jet), with
``(sigma(h), sigma'(h))`` from :mod:`richviz.activations`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.func import jvp, vmap

from richviz import activations
from richviz.devices import module_device, module_dtype
from richviz.features import (
    LOGITS,
    PENULTIMATE,
    FeatureMap,
    as_feature_map,
    last_linear_name,
)
from richviz.geometry.slices import Slice

__all__ = [
    "COMPILE_ENV",
    "FeatureFn",
    "activation_jet",
    "chain_directional_derivatives",
    "chain_modules",
    "chain_thread_safe",
    "directional_derivatives",
]

FeatureFn = nn.Module | Callable[[torch.Tensor], torch.Tensor]


def _resolve(
    phi: FeatureFn,
    layer: str | None,
    slice_: Slice,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.device, torch.dtype]:
    fn = as_feature_map(phi, layer)
    module = (
        fn.model if isinstance(fn, FeatureMap) else (phi if isinstance(phi, nn.Module) else None)
    )
    if module is not None:
        dev = module_device(module) if device is None else torch.device(device)
        dt = module_dtype(module) if dtype is None else dtype
    else:
        dev = slice_.origin.device if device is None else torch.device(device)
        dt = slice_.dtype if dtype is None else dtype
    return fn, dev, dt


def directional_derivatives(
    phi: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tangents: torch.Tensor
) -> torch.Tensor:
    """``J(x) t`` for every tangent: (k, N, p) for x (N, *input_shape), tangents (k, *input_shape).

    One forward-mode pass: ``torch.func.jvp`` vmapped over the k tangents, so the primal
    computation is shared and the k tangent computations run as one batched pass.
    """

    def push(t: torch.Tensor) -> torch.Tensor:
        out = jvp(phi, (x,), (t.expand_as(x),))[1]
        return out.reshape(out.shape[0], -1)

    return vmap(push)(tangents)


_ELEMENTWISE: tuple[type[nn.Module], ...] = activations.elementwise_types()


_IDENTITY: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout, nn.AlphaDropout)


def _flat_children(mods: list[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in mods:
        if type(m) is nn.Sequential:
            out += _flat_children(list(m.children()))
        else:
            out.append(m)
    return out


def _chain_supported(m: nn.Module) -> bool:
    if m._forward_hooks or m._forward_pre_hooks:
        return False
    if isinstance(m, nn.Linear) or isinstance(m, _ELEMENTWISE):
        return True
    if isinstance(m, _IDENTITY):
        return not m.training
    if isinstance(m, nn.Flatten):
        return m.start_dim == 1 and m.end_dim == -1
    return False


def chain_modules(
    phi: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[list[nn.Module], bool] | None:
    """The feature map as a list of modules, when it is a plain chain.

    Returns ``(modules, nested)`` when ``phi`` is a :class:`FeatureMap` whose layer lies in an
    ``nn.Sequential`` made of ``nn.Linear``, elementwise activations, ``Flatten``, ``Identity``
    and eval-mode ``Dropout`` (``nested``: that Sequential is not the model itself, so its input
    is only presumed to be the model's input and must be checked); otherwise None.
    """
    if not isinstance(phi, FeatureMap):
        return None
    model = phi.model
    if phi.layer == LOGITS:
        container, name, nested = model, None, False
    else:
        name = last_linear_name(model) if phi.layer == PENULTIMATE else phi.layer
        parent, _, name = name.rpartition(".")
        container = model.get_submodule(parent) if parent else model
        nested = bool(parent)
    if type(container) is not nn.Sequential or container._forward_pre_hooks:
        return None
    named = list(container.named_children())
    if name is None:
        mods = [m for _, m in named]
    else:
        idx = [n for n, _ in named].index(name)
        mods = [m for _, m in named[: idx + (0 if phi.layer == PENULTIMATE else 1)]]
    mods = _flat_children(mods)
    if not all(_chain_supported(m) for m in mods):
        return None
    return mods, nested


def activation_jet(
    m: nn.Module, h: torch.Tensor, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act(h), act'(h))`` for an elementwise activation module ``m``.

    The registry entry's one-pass ``jet`` where it has one (:mod:`richviz.activations`: tanh
    ``1 - y^2``, sigmoid ``y (1 - y)``, ReLU ``[h > 0]``), ``torch.func.jvp`` with a unit
    tangent for any other elementwise module. ``inplace``: ``act(h)`` may overwrite h.
    """
    entry = activations.identify(m)
    if entry is not None and entry.jet is not None:
        return entry.jet(h, inplace)
    return jvp(m, (h,), (torch.ones_like(h),))


def _stacked_linear(jet: torch.Tensor, m: nn.Linear) -> torch.Tensor:
    """A Linear on the stacked jet ((1 + k), N, in), the bias on the primal slice 0 only
    (tangents are linear in the input). On CUDA one ``((1 + k) N, in) @ W^T`` product (fewer,
    larger launches); on CPU ``addmm`` for the primal and ``mm`` for the tangents into one
    buffer (no extra pass over the output for the bias)."""
    s, n = jet.shape[0], jet.shape[1]
    w_t = m.weight.T
    if jet.is_cuda or m.bias is None:
        out = torch.mm(jet.reshape(s * n, -1), w_t).reshape(s, n, -1)
        if m.bias is not None:
            out[0] += m.bias
        return out
    out = torch.empty((s, n, w_t.shape[1]), dtype=jet.dtype, device=jet.device)
    torch.addmm(m.bias, jet[0], w_t, out=out[0])
    torch.mm(jet[1:].reshape((s - 1) * n, -1), w_t, out=out[1:].reshape((s - 1) * n, -1))
    return out


def chain_thread_safe(mods: list[nn.Module]) -> bool:
    """True when the chain kernel runs ``mods`` without ``torch.func.jvp`` (every activation has
    a one-pass ``push``: tanh, sigmoid, ReLU), so chunks may run on parallel threads: forward-
    mode AD levels are process-wide, and two threads in ``jvp`` at once break each other."""
    for m in mods:
        if isinstance(m, (nn.Linear, nn.Flatten, *_IDENTITY)):
            continue
        entry = activations.identify(m)
        if entry is None or entry.push is None:
            return False
    return True


def _first_jet_linear(mods: list[nn.Module]) -> int | None:
    """Index of the Linear whose output is the input of the chain's first nonlinearity, when
    that nonlinearity has a one-pass ``push`` (tanh, sigmoid, ReLU) and only Identity-like
    modules lie between them; else None."""
    for i, m in enumerate(mods):
        if isinstance(m, (nn.Linear, nn.Flatten, *_IDENTITY)):
            continue
        entry = activations.identify(m)
        if entry is None or entry.push is None:
            return None
        lin = [j for j in range(i) if isinstance(mods[j], nn.Linear)]
        if not lin or any(not isinstance(mods[j], _IDENTITY) for j in range(lin[-1] + 1, i)):
            return None
        return lin[-1]
    return None


def chain_directional_derivatives(
    mods: list[nn.Module], x: torch.Tensor, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, p) and ``J t`` (k, N, p) of a Linear/elementwise chain, by hand.

    The same forward-mode recursion as ``jvp``, without its overheads. Before the first
    nonlinearity the tangents are the same for every point and stay (k, width). From there on
    the primal and the k tangents travel as one stacked jet ((1 + k), N, width): each Linear is
    ONE ``((1 + k) N, in) @ W^T`` product (bias on the primal only), each activation
    ``y = act(h)``, ``t <- act'(h) * t`` updates the jet in place (tanh, sigmoid and ReLU in two
    fused passes, ``act'`` computed from ``y``: :attr:`richviz.activations.Activation.push`).
    x (N, *input_shape), tangents (k, *input_shape).
    """
    n, k = x.shape[0], tangents.shape[0]
    h = x
    t = tangents  # (k, *shape) while point-independent
    jet: torch.Tensor | None = None  # ((1 + k), N, width) once the tangents depend on the point
    pre = _first_jet_linear(mods)  # the Linear that writes straight into the first jet
    first = x  # that jet, once allocated
    for i, m in enumerate(mods):
        if isinstance(m, _IDENTITY):
            continue
        if jet is not None:
            if isinstance(m, nn.Flatten):
                jet = jet.reshape(1 + k, n, -1)
            elif isinstance(m, nn.Linear):
                if jet.ndim != 3:
                    raise ValueError("Linear on a non-flat input")  # not reached: checked by caller
                jet = _stacked_linear(jet, m)
            else:
                entry = activations.identify(m)
                if entry is not None and entry.push is not None:
                    entry.push(jet)  # sigma(h), sigma'(h) * t in two fused passes
                    continue
                y, d = activation_jet(m, jet[0], inplace=True)
                jet[1:] *= d
                if y.data_ptr() != jet.data_ptr():  # not computed in place
                    jet[0] = y
        elif isinstance(m, nn.Flatten):
            h = h.reshape(n, -1)
            t = t.reshape(k, -1)
        elif isinstance(m, nn.Linear):
            if h.ndim != 2:
                raise ValueError("Linear on a non-flat input")  # not reached: checked by caller
            t = t @ m.weight.T
            if i == pre:  # the primal goes straight into slice 0 of the first jet
                first = torch.empty((1 + k, n, m.out_features), dtype=h.dtype, device=h.device)
                if m.bias is None:
                    torch.mm(h, m.weight.T, out=first[0])
                else:
                    torch.addmm(m.bias, h, m.weight.T, out=first[0])
                h = first[0]
            else:
                h = nn.functional.linear(h, m.weight, m.bias)
        else:  # first nonlinearity: the tangents become point-dependent
            if pre is not None and i > pre:  # the primal is already in slice 0 of the jet
                jet = first
                jet[1:] = t.reshape(k, 1, -1)  # the same tangents at every point
                activations.identify(m).push(jet)  # type: ignore[union-attr]
                continue
            y, d = activation_jet(m, h)
            jet = torch.empty((1 + k, *y.shape), dtype=y.dtype, device=y.device)
            jet[0] = y
            torch.mul(d, t.reshape(k, 1, *t.shape[1:]), out=jet[1:])
    if jet is None:
        w = t.reshape(k, -1).shape[1]
        return h.reshape(n, -1), t.reshape(k, 1, w).expand(k, n, w)
    return jet[0].reshape(n, -1), jet[1:].reshape(k, n, -1)


COMPILE_ENV = "RICHVIZ_COMPILE"


"""Set to ``1`` to run the chain kernel through ``torch.compile`` (off by default: on 2 CPU
threads it measured no faster than eager, and its first call compiles for a minute)."""


_compile_state: dict[str, object] = {"kernel": None, "failed": False}


def _chain_kernel() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The chain kernel: ``torch.compile``d when ``$RICHVIZ_COMPILE`` is 1, else eager (also
    after any compile failure, for the rest of the process)."""
    on = os.environ.get(COMPILE_ENV, "0").strip().lower() in ("1", "true", "yes", "on")
    if not on or _compile_state["failed"]:
        return chain_directional_derivatives
    if _compile_state["kernel"] is None:
        try:
            _compile_state["kernel"] = torch.compile(chain_directional_derivatives, dynamic=True)
        except Exception:  # no compiler backend on this machine: eager, silently
            _compile_state["failed"] = True
            return chain_directional_derivatives
    return _compile_state["kernel"]  # type: ignore[return-value]


def _run_chain(
    mods: list[nn.Module], x: torch.Tensor, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chain kernel, falling back to eager once and quietly if the compiled one fails."""
    kernel = _chain_kernel()
    if kernel is chain_directional_derivatives:
        return kernel(mods, x, tangents)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return kernel(mods, x, tangents)
    except torch.OutOfMemoryError:
        raise
    except Exception:
        _compile_state["failed"] = True
        return chain_directional_derivatives(mods, x, tangents)


def _chain_reproduces(
    fn: Callable[[torch.Tensor], torch.Tensor], mods: list[nn.Module], x: torch.Tensor
) -> bool:
    """True when the chain ``mods`` gives the feature map ``fn`` at inputs ``x`` (rtol 1e-5)."""
    feats = fn(x)
    try:
        mine = chain_directional_derivatives(mods, x, torch.zeros_like(x[:1]))[0]
    except (RuntimeError, ValueError):  # e.g. the chain expects another width
        return False
    tol = 1e-5 * float(feats.abs().max()) + 1e-30
    return mine.shape == feats.shape and float((mine - feats).abs().max()) <= tol
