"""One pass over a slice grid: the pulled-back metric and the model's logits together.

A frame of the slice viewer needs both the metric ``G = (J E)^T (J E) / p`` of the feature map
and the logits (for the decision boundary). Both come from the same forward-mode pass:

- when the model is a plain ``nn.Sequential`` chain up to the feature layer
  (:func:`richviz.geometry.chain_modules`) and the rest of it is a *separable head* (the
  remaining children of the model itself), the chain kernel's primal is the features and the
  head maps them to the logits;
- otherwise ``torch.func.jvp`` runs through the whole model with the feature layer captured
  by a hook (:meth:`richviz.features.FeatureMap.with_logits`), so the logits are the primal
  output of the same pass.

Grid points are flattened row-major (point ``k = i * res + j`` sits at ``(u[j], v[i])``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import jvp, vmap

from richviz.devices import module_device, module_dtype
from richviz.errors import ArgumentError, ArgumentTypeError
from richviz.features import (
    LOGITS,
    PENULTIMATE,
    FeatureMap,
    eval_mode,
    in_eval_mode,
    last_linear_name,
    select_output,
)
from richviz.geometry.chunk_threads import map_chunks, parallel_chunks
from richviz.geometry.chunking import ChunkPlan, check_chunk_size
from richviz.geometry.field import MetricChunk, slice_metric_and_volume
from richviz.geometry.jets import (
    _chain_kernel,
    _run_chain,
    chain_directional_derivatives,
    chain_modules,
    chain_thread_safe,
)
from richviz.geometry.slices import Slice, _check_resolution

__all__ = ["FrameChunk", "HeadSplit", "iter_frame_chunks", "separable_head"]


@dataclass(frozen=True, eq=False)
class FrameChunk(MetricChunk):
    """One chunk of a one-pass frame: a :class:`MetricChunk` plus the logits.

    Attributes
    ----------
    logits : (stop - start, C) the model's outputs at the chunk's points, compute dtype, CPU.
    """

    logits: torch.Tensor


@dataclass(frozen=True)
class HeadSplit:
    """The feature map as a chain plus what maps its features to the logits.

    Attributes
    ----------
    chain : the Linear/elementwise modules from the input to the features
        (:func:`richviz.geometry.chain_modules`).
    head : the children of ``container`` after the feature layer, applied as ordinary modules
        (empty for ``"logits"``).
    container : the ``nn.Sequential`` holding both: the model itself, or (``nested``) a
        submodule whose input must be the model's input (checked at every pass).
    nested : whether ``container`` is a submodule (e.g. the ``net`` of a centred model).
    """

    chain: list[nn.Module]
    head: list[nn.Module]
    container: nn.Module
    nested: bool


def separable_head(model: nn.Module, layer: str | None = None) -> HeadSplit | None:
    """How ``model``'s logits follow from its features at ``layer`` in one chain pass, if so.

    Holds when the feature layer (``"penultimate"``: the input of the last Linear; a submodule
    name; ``"logits"``) is a direct child of an ``nn.Sequential`` without hooks (the model, or
    one of its submodules) and the modules before it form a Linear/elementwise chain (judged in
    eval mode; the caller's modes come back). None otherwise.
    """
    layer = PENULTIMATE if layer is None else layer
    with eval_mode(model):  # the chain test reads Dropout's mode
        chain = chain_modules(FeatureMap(model, layer))
    if chain is None:
        return None
    if layer == LOGITS:
        return HeadSplit(chain[0], [], model, False)
    name = last_linear_name(model) if layer == PENULTIMATE else layer
    parent, _, child = name.rpartition(".")
    container = model.get_submodule(parent) if parent else model
    if container._forward_hooks or (not parent and model._forward_pre_hooks):
        return None
    if "forward" in vars(container):  # a forward set on the instance is not Sequential's
        return None
    names = [n for n, _ in container.named_children()]
    idx = names.index(child) + (0 if layer == PENULTIMATE else 1)
    head = [m for _, m in list(container.named_children())[idx:]]
    return HeadSplit(chain[0], head, container, bool(parent))


class _NotModelInput(Exception):
    """The nested chain's container was called on something other than the model's input."""


def _apply_head(head: list[nn.Module], feats: torch.Tensor) -> torch.Tensor:
    z = feats
    for m in head:
        z = m(z)
    if not isinstance(z, torch.Tensor):
        raise ArgumentTypeError(f"the model's head returned {type(z).__name__}, not a tensor")
    return z


def _nested_pass(
    model: nn.Module, split: HeadSplit, x: torch.Tensor, tangents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward of ``model`` in which the nested container's first call runs the chain
    kernel (features and tangents) and its head; the rest of the model runs as usual.

    Raises :class:`_NotModelInput` when the container's input is not ``x`` itself.
    """
    container = split.container
    real_forward = container.forward
    jet: list[tuple[torch.Tensor, torch.Tensor]] = []

    def shim(inp: torch.Tensor) -> torch.Tensor:
        if jet:  # called again: an ordinary forward
            return real_forward(inp)
        if inp is not x and not (inp.shape == x.shape and torch.equal(inp, x)):
            raise _NotModelInput
        jet.append(_run_chain(split.chain, inp, tangents))
        return _apply_head(split.head, jet[0][0])

    container.forward = shim  # an instance attribute, removed below
    try:
        logits = select_output(model(x))
    finally:
        del container.forward
    if not jet:
        raise _NotModelInput
    return jet[0][0], jet[0][1], logits


def _jvp_with_logits(
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    tangents: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (N, p), ``J t`` (k, N, p) and logits (N, C) of ``fn(x) = (features, logits)``:
    ``jvp`` vmapped over the k tangents, the primal shared."""

    def push(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (feats, logits), (dfeats, _) = jvp(fn, (x,), (t.expand_as(x),))
        return feats, logits, dfeats

    feats, logits, jt = vmap(push, out_dims=(None, None, 0))(tangents)
    return feats, jt, logits


@in_eval_mode
def iter_frame_chunks(
    model: nn.Module,
    slice: Slice,  # noqa: A002 - the geometry name
    resolution: int = 64,
    chunk_size: int | None = None,
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    method: Literal["auto", "jvp"] = "auto",
) -> Iterator[FrameChunk]:
    """Stream metric and logits chunk by chunk, ONE forward-mode pass per chunk.

    ``model``: an ``nn.Module`` (evaluated in eval mode; every submodule's train/eval mode
    is restored afterwards). ``layer``: the feature layer (default ``"penultimate"``, the input
    of the last Linear). ``method="jvp"`` forces the generic path. Yields :class:`FrameChunk`
    (metric (n, 2, 2) and volume (n,) float64, logits (n, C) in the compute dtype, all CPU).
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if method not in ("auto", "jvp"):
        raise ArgumentError(f"method must be 'auto' or 'jvp', got {method!r}")
    res = _check_resolution(resolution)
    check_chunk_size(chunk_size)
    layer = PENULTIMATE if layer is None else layer
    fmap = FeatureMap(model, layer)  # checks the layer
    dev = module_device(model) if device is None else torch.device(device)
    dt = module_dtype(model) if dtype is None else dtype
    split = separable_head(model, layer) if method == "auto" else None
    if split is not None and len(slice.input_shape) != 1:
        if not (split.chain and isinstance(split.chain[0], nn.Flatten)):
            split = None  # a Linear would act on the last axis of a multi-axis input
    numel = int(np.prod(slice.input_shape))
    uv = slice.grid_uv(res)
    origin = slice.origin.to(dev).reshape(1, -1)
    basis64 = slice.basis.to(dev).reshape(2, -1)
    tangents = slice.basis.to(device=dev, dtype=dt)
    plan = ChunkPlan(uv.shape[0], numel, dev, chunk_size)
    threads = 1
    if (
        split is not None
        and not split.nested
        and _chain_kernel() is chain_directional_derivatives
        and chain_thread_safe(split.chain)
    ):
        threads = parallel_chunks(math.ceil(uv.shape[0] / plan.size), dev)
    if threads > 1:  # CPU: whole chunks on parallel threads, one torch thread each
        chain, head = split.chain, split.head  # type: ignore[union-attr]

        def one(rng: tuple[int, int]) -> FrameChunk:
            x = origin + uv[rng[0] : rng[1]].to(dev) @ basis64
            feats, jt = _run_chain(chain, x.reshape(-1, *slice.input_shape).to(dt), tangents)
            logits = _apply_head(head, feats)
            metric, volume = slice_metric_and_volume(jt, jt.shape[-1])
            return FrameChunk(*rng, metric, volume, jt.shape[-1], logits.reshape(len(x), -1))

        yield from map_chunks(one, list(plan), threads)
        return
    with torch.no_grad():
        for start, stop in plan:
            x = origin + uv[start:stop].to(dev) @ basis64
            x = x.reshape(-1, *slice.input_shape).to(dt)
            try:
                if split is not None and split.nested:
                    try:
                        feats, jt, logits = _nested_pass(model, split, x, tangents)
                    except _NotModelInput:
                        split = None  # the container sees a transformed input: generic path
                if split is not None and not split.nested:
                    feats, jt = _run_chain(split.chain, x, tangents)
                    logits = _apply_head(split.head, feats)
                elif split is None:
                    feats, jt, logits = _jvp_with_logits(fmap.with_logits, x, tangents)
                    jt = jt.reshape(jt.shape[0], jt.shape[1], -1)
                logits = logits.reshape(logits.shape[0], -1)
                p = jt.shape[-1]
                metric, volume = slice_metric_and_volume(jt, p)
            except torch.OutOfMemoryError:
                del x
                plan.out_of_memory()  # halves an automatic chunk; re-raises a given one
                continue
            yield FrameChunk(start, stop, metric.cpu(), volume.cpu(), p, logits.cpu())
