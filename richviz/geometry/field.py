"""The pulled-back metric field on a slice grid, chunked with a per-device chunk policy.

A feature map ``phi: (N, *input_shape) -> (N, p)`` pulls the Euclidean metric of feature space
back to input space:

    g(x) = J(x)^T J(x) / p,        J = d phi / d x,   p = feature dimension.

The ``1/p`` is the width normalisation of Zavatone-Veth et al. (arXiv 2301.11375); it keeps
numbers comparable across widths and finite as the width grows. On a 2-D slice
``x(u, v) = origin + u e1 + v e2`` the induced 2x2 metric is

    G = E^T g E = (J E)^T (J E) / p,   E = [e1 e2],

which needs only the two directional derivatives ``J e1`` and ``J e2``
(:mod:`richviz.geometry.jets`), computed chunk by chunk so that memory stays bounded. The
volume element is ``sqrt(det G)``. Fields are indexed ``[i, j] = (v[i], u[j])``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from richviz import validation
from richviz.devices import module_device, to_device
from richviz.errors import ArgumentError
from richviz.features import (
    FeatureMap,
    as_feature_map,
    in_eval_mode,
)
from richviz.geometry.chunk_threads import map_chunks, parallel_chunks
from richviz.geometry.chunking import ChunkPlan, check_chunk_size, cpu_chunk_size
from richviz.geometry.jets import (
    FeatureFn,
    _chain_kernel,
    _chain_reproduces,
    _resolve,
    _run_chain,
    chain_directional_derivatives,
    chain_modules,
    chain_thread_safe,
    directional_derivatives,
)
from richviz.geometry.slices import Slice, _check_resolution
from richviz.progress import Progress, updater

__all__ = [
    "OUTPUT_BYTES_PER_POINT",
    "OUTPUT_MEMORY_FRACTION",
    "MetricChunk",
    "MetricField",
    "auto_chunk_size",
    "available_memory",
    "check_output_bytes",
    "iter_metric_chunks",
    "pullback_metric",
    "pullback_metric_at",
    "slice_metric_and_volume",
]


@dataclass(frozen=True, eq=False)
class MetricField:
    """The pulled-back metric on a slice grid (all tensors float64 on CPU).

    Attributes
    ----------
    metric : (res, res, 2, 2) ``G = (J E)^T (J E) / p`` at grid point ``(u[j], v[i])``.
    volume : (res, res) volume element ``sqrt(det G)`` (area magnification of the slice).
    u, v : (res,) grid coordinates.
    slice : the :class:`Slice`.
    p : feature dimension used in the ``1/p`` normalisation.
    """

    metric: torch.Tensor
    volume: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    slice: Slice
    p: int

    @property
    def resolution(self) -> int:
        return int(self.u.shape[0])

    @property
    def log10_volume(self) -> torch.Tensor:
        """(res, res) ``log10(volume)``; ``-inf`` where the volume element is exactly zero."""
        return torch.log10(self.volume)

    @property
    def det(self) -> torch.Tensor:
        """(res, res) ``det G = volume ** 2``."""
        return self.volume**2

    @property
    def points(self) -> torch.Tensor:
        """(res*res, *input_shape) input points of the grid, row-major (computed on access)."""
        return self.slice.to_input(self.slice.grid_uv(self.resolution))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(u_min, u_max, v_min, v_max)`` for image plots."""
        return (*self.slice.u_range, *self.slice.v_range)


def auto_chunk_size(input_numel: int) -> int:
    """Points per chunk on CPU for inputs of ``input_numel`` elements (about 1 MiB of float32
    input, at most 1024 points, at least 1); on CUDA chunks are sized from device memory
    (:class:`richviz.geometry.chunking.ChunkPlan`)."""
    return cpu_chunk_size(input_numel)


OUTPUT_BYTES_PER_POINT = 56


"""Bytes :func:`pullback_metric` keeps per grid point: the 2x2 float64 metric (32), the volume
element (8) and the point's (u, v) coordinates (16)."""


OUTPUT_MEMORY_FRACTION = 0.25


"""Default output budget of :func:`pullback_metric`: this fraction of the available memory."""


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; else the free
    physical pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_output_bytes(resolution: int, max_output_bytes: int | None = None) -> int:
    """Bytes the outputs of a ``resolution`` x ``resolution`` field need
    (``OUTPUT_BYTES_PER_POINT * resolution**2``); ``MemoryError`` naming the largest resolution
    that fits when they exceed ``max_output_bytes`` (default: ``OUTPUT_MEMORY_FRACTION`` of
    :func:`available_memory`; no check where that is unknown)."""
    need = OUTPUT_BYTES_PER_POINT * resolution * resolution
    if max_output_bytes is None:
        avail = available_memory()
        if avail is None:
            return need
        budget = int(avail * OUTPUT_MEMORY_FRACTION)
        what = f"{OUTPUT_MEMORY_FRACTION:g} of the available memory"
    else:
        if isinstance(max_output_bytes, bool) or not isinstance(
            max_output_bytes, (int, np.integer)
        ):
            raise ArgumentError(
                f"max_output_bytes must be an integer or None, got {max_output_bytes!r}"
            )
        budget, what = int(max_output_bytes), f"max_output_bytes={int(max_output_bytes)}"
    if need > budget:
        fits = math.isqrt(max(budget, 0) // OUTPUT_BYTES_PER_POINT)
        raise MemoryError(
            f"resolution={resolution} needs {need / 2**20:.0f} MiB for the field's outputs, more "
            f"than {what} ({budget / 2**20:.0f} MiB); the largest resolution that fits is {fits} "
            "(or pass a larger max_output_bytes)"
        )
    return need


def slice_metric_and_volume(jt: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 metric (N, 2, 2) and volume element (N,) from ``jt = (J e1, J e2)`` of shape (2, N, p).

    ``det G = (|a|^2 |b|^2 - (a.b)^2) / p^2`` (a = J e1, b = J e2) cancels when a and b are
    nearly parallel; where ``det < 0.1 |a|^2 |b|^2`` (angle below ~18 degrees) it is formed
    instead as ``|a|^2 |b_perp|^2 / p^2`` with ``b_perp`` the part of b orthogonal to a, whose
    relative error stays near machine precision / sin(angle). Results are float64.
    """
    a, b = jt[0], jt[1]
    sq = (jt * jt).sum(-1)  # (2, N): |a|^2, |b|^2
    aa, bb = sq[0], sq[1]
    ab = (a * b).sum(-1)
    det = aa * bb - ab * ab
    bad = torch.nonzero(det <= 0.1 * aa * bb).squeeze(1)
    det = det.double()
    if bad.numel():
        a_bad, b_bad, aa_bad = a[bad], b[bad], aa[bad]
        safe = torch.where(aa_bad > 0, aa_bad, torch.ones_like(aa_bad))
        b_perp = b_bad - (ab[bad] / safe).unsqueeze(-1) * a_bad
        bpbp = torch.where(aa_bad > 0, (b_perp * b_perp).sum(-1), bb[bad])
        det[bad] = aa_bad.double() * bpbp.double()
    metric = torch.stack([aa, ab, ab, bb], -1).double().reshape(-1, 2, 2) / p
    volume = torch.sqrt(torch.clamp(det, min=0)) / p
    return metric, volume


@dataclass(frozen=True, eq=False)
class MetricChunk:
    """One chunk of a streamed metric field (:func:`iter_metric_chunks`).

    Attributes
    ----------
    start, stop : the chunk holds flattened grid points ``start:stop`` (row-major).
    metric : (stop - start, 2, 2) float64 on CPU, ``G = (J E)^T (J E) / p``.
    volume : (stop - start,) float64 on CPU, ``sqrt(det G)``.
    p : feature dimension used in the ``1/p`` normalisation.
    """

    start: int
    stop: int
    metric: torch.Tensor
    volume: torch.Tensor
    p: int


@in_eval_mode
def iter_metric_chunks(
    phi: FeatureFn,
    slice: Slice,
    resolution: int = 128,
    chunk_size: int | None = None,
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    method: Literal["auto", "jvp"] = "auto",
) -> Iterator[MetricChunk]:
    """Stream the metric field chunk by chunk (for progressive displays).

    Yields one :class:`MetricChunk` per chunk of flattened grid points ``start:stop``
    (row-major: point ``k = i * res + j`` sits at ``(u[j], v[i])``), float64 on CPU.
    """
    res = _check_resolution(resolution)
    if method not in ("auto", "jvp"):
        raise ArgumentError(f"method must be 'auto' or 'jvp', got {method!r}")
    fn, dev, dt = _resolve(phi, layer, slice, device, dtype)
    numel = int(np.prod(slice.input_shape))
    check_chunk_size(chunk_size)
    uv = slice.grid_uv(res)
    total = uv.shape[0]
    origin = slice.origin.to(dev).reshape(1, -1)
    basis64 = slice.basis.to(dev).reshape(2, -1)
    tangents = slice.basis.to(device=dev, dtype=dt)
    chain = chain_modules(fn) if method == "auto" else None
    if chain is not None and len(slice.input_shape) != 1:
        if not (chain[0] and isinstance(chain[0][0], nn.Flatten)):
            chain = None  # a Linear would act on the last axis of a multi-axis input
    plan = ChunkPlan(total, numel, dev, chunk_size)

    def points(start: int, stop: int) -> torch.Tensor:
        x = origin + uv[start:stop].to(dev) @ basis64
        return x.reshape(-1, *slice.input_shape).to(dt)

    with torch.no_grad():
        if chain is not None and chain[1]:  # nested chain: check it is the feature map
            chain = (chain[0], False) if _chain_reproduces(fn, chain[0], points(0, 8)) else None
        threads = 1
        if (
            chain is not None
            and _chain_kernel() is chain_directional_derivatives
            and chain_thread_safe(chain[0])
        ):
            threads = parallel_chunks(math.ceil(total / plan.size), dev)
        if threads > 1:  # CPU: whole chunks on parallel threads, one torch thread each
            mods = chain[0]  # type: ignore[index]

            def one(rng: tuple[int, int]) -> MetricChunk:
                jt = _run_chain(mods, points(*rng), tangents)[1]
                metric, volume = slice_metric_and_volume(jt, jt.shape[-1])
                return MetricChunk(rng[0], rng[1], metric, volume, jt.shape[-1])

            yield from map_chunks(one, list(plan), threads)
            return
        for start, stop in plan:
            x = points(start, stop)
            try:
                if chain is not None:
                    jt = _run_chain(chain[0], x, tangents)[1]
                else:
                    jt = directional_derivatives(fn, x, tangents)
                p = jt.shape[-1]
                metric, volume = slice_metric_and_volume(jt, p)
            except torch.OutOfMemoryError:
                del x
                plan.out_of_memory()  # halves an automatic chunk; re-raises a given one
                continue
            yield MetricChunk(start, stop, metric.cpu(), volume.cpu(), p)


@in_eval_mode
def pullback_metric(
    phi: FeatureFn,
    slice: Slice,
    resolution: int = 128,
    chunk_size: int | None = None,
    progress: Progress = None,
    *,
    layer: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    method: Literal["auto", "jvp"] = "auto",
    max_output_bytes: int | None = None,
) -> MetricField:
    """The pulled-back metric ``G = (J E)^T (J E) / p`` on a ``resolution`` x ``resolution`` grid.

    Parameters
    ----------
    phi : an ``nn.Module`` (its feature map at ``layer``, default the input of the last
        ``nn.Linear``, evaluated in eval mode; the model's train/eval mode of every submodule
        is restored on return) or any callable ``(N, *input_shape) ->
        (N, ...)`` (flattened to (N, p)).
    slice : the :class:`Slice`; ``E = slice.basis``.
    resolution : grid points per axis (>= 2).
    chunk_size : grid points per forward-mode pass. None: on CPU :func:`auto_chunk_size`
        (cache-sized); on CUDA sized from free device memory after a probe chunk, halved on
        out-of-memory (:class:`richviz.geometry.chunking.ChunkPlan`). Peak memory is that of one
        chunk's forward pass with three streams (primal and two tangents). On CPU with
        ``torch.get_num_threads()`` = n > 1 the chain kernel's chunks run n at a time on n
        threads of one torch thread each (:mod:`richviz.geometry.chunk_threads`; same numbers).
    progress : None, True (tqdm bar) or ``callable(done, total)`` called after each chunk.
    device, dtype : where and in what precision to compute; default the model's (for a plain
        callable: the slice's device and input dtype).
    method : ``"jvp"``: ``torch.func.jvp`` vmapped over the two tangents (any model);
        ``"auto"`` (default): the same recursion written out by hand
        (:func:`chain_directional_derivatives`) when the feature map is a chain of Linear layers
        and elementwise activations in an ``nn.Sequential`` (an MLP), else ``"jvp"``.
    max_output_bytes : memory budget of the outputs, ``OUTPUT_BYTES_PER_POINT`` (56) bytes per
        grid point, checked before anything is allocated; default a quarter of the available
        memory. Over budget: ``MemoryError`` naming the largest resolution that fits.

    Returns
    -------
    MetricField with ``metric`` (res, res, 2, 2), ``volume`` (res, res), float64 on CPU,
    indexed ``[i, j] = (v[i], u[j])``.

    Examples
    --------
    A linear map ``phi(x) = 2 x`` of the plane (p = 2) has ``G = 4 I / 2 = 2 I`` everywhere,
    volume element ``sqrt(det G) = 2``:

    >>> import torch
    >>> from torch import nn
    >>> from richviz.geometry import Slice, pullback_metric
    >>> lin = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(2 * torch.eye(2))
    >>> square = Slice.square(torch.zeros(2), 1.0)  # [-1, 1]^2
    >>> field = pullback_metric(lin, square, resolution=4, layer="logits")
    >>> field.metric.shape, field.volume.shape
    (torch.Size([4, 4, 2, 2]), torch.Size([4, 4]))
    >>> field.metric[0, 0]
    tensor([[2., 0.],
            [0., 2.]], dtype=torch.float64)
    >>> field.volume.unique()
    tensor([2.], dtype=torch.float64)

    The default feature map of a classifier is the input of its last Linear layer:

    >>> _ = torch.manual_seed(0)
    >>> mlp = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    >>> field = pullback_metric(mlp, square, resolution=8)
    >>> field.p, bool((field.volume > 0).all())
    (16, True)
    """
    res = _check_resolution(resolution)
    check_output_bytes(res, max_output_bytes)
    total = res * res
    metric = torch.empty(total, 2, 2, dtype=torch.float64)
    volume = torch.empty(total, dtype=torch.float64)
    update, close = updater(progress, total, "metric field")
    p = 0
    try:
        for chunk in iter_metric_chunks(
            phi, slice, res, chunk_size, layer=layer, device=device, dtype=dtype, method=method
        ):
            p = chunk.p
            metric[chunk.start : chunk.stop] = chunk.metric
            volume[chunk.start : chunk.stop] = chunk.volume
            update(chunk.stop)
    finally:
        close()
    u, v = slice.grid(res)
    return MetricField(
        metric=metric.reshape(res, res, 2, 2),
        volume=volume.reshape(res, res),
        u=u,
        v=v,
        slice=slice,
        p=p,
    )


@in_eval_mode
def pullback_metric_at(
    phi: FeatureFn,
    x: torch.Tensor,
    basis: torch.Tensor | None = None,
    chunk_size: int | None = None,
    *,
    layer: str | None = None,
) -> torch.Tensor:
    """The metric ``B g(x) B^T = (J B^T)^T (J B^T) / p`` at arbitrary inputs.

    x : (N, *input_shape); basis : (k, *input_shape) directions (default: the standard basis,
    giving the full d x d metric ``g = J^T J / p``). Returns (N, k, k) in x's dtype on x's
    device, computed by forward mode (k tangents per pass) on the model's device (x's device
    for a plain callable).
    """
    x = validation.as_tensor(x, "x")
    validation.check_finite(x, "x")
    if x.ndim < 2:
        raise ArgumentError(f"x must have shape (N, *input_shape), got {tuple(x.shape)}")
    home = x.device
    fn = as_feature_map(phi, layer)
    module = fn.model if isinstance(fn, FeatureMap) else None
    dev = module_device(module) if module is not None else x.device
    x = to_device(x, dev)
    shape = tuple(x.shape[1:])
    numel = int(np.prod(shape))
    if basis is None:
        basis = torch.eye(numel, dtype=x.dtype, device=x.device).reshape(numel, *shape)
    basis = validation.as_tensor(basis, "basis").to(device=x.device, dtype=x.dtype)
    validation.check_finite(basis, "basis")
    if tuple(basis.shape[1:]) != shape:
        raise ArgumentError(f"basis must have shape (k, *{shape}), got {tuple(basis.shape)}")
    plan = ChunkPlan(x.shape[0], numel * basis.shape[0], dev, chunk_size)
    out = []
    with torch.no_grad():
        for start, stop in plan:
            try:
                jt = directional_derivatives(fn, x[start:stop], basis)  # (k, n, p)
                out.append(torch.einsum("knp,lnp->nkl", jt, jt) / jt.shape[-1])
            except torch.OutOfMemoryError:
                plan.out_of_memory()
    return torch.cat(out).to(home)
