"""Effective volume element of the full input space (for inputs of high dimension d >> p).

``det g`` of ``g = J^T J / p`` is zero or underflows when d >> p, so the effective volume
element is ``sum_{i <= k} log10 s_i`` over the top-k singular values ``s_i`` of
``J / sqrt(p)``, found by randomized block Krylov iteration on batched JVPs and VJPs (never
the full p x d Jacobian).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import jvp, vjp, vmap

from richviz import validation
from richviz.devices import module_device, to_device
from richviz.errors import ArgumentError
from richviz.features import (
    FeatureMap,
    as_feature_map,
    in_eval_mode,
)
from richviz.geometry.chunking import ChunkPlan
from richviz.geometry.jets import FeatureFn

__all__ = [
    "effective_volume",
]


@in_eval_mode
def effective_volume(
    phi: FeatureFn,
    points: torch.Tensor,
    k: int = 8,
    oversample: int = 8,
    iters: int = 3,
    chunk_size: int | None = None,
    seed: int = 0,
    *,
    layer: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k singular values of ``J(x) / sqrt(p)`` and the effective log10 volume element.

    For each input x (of ``points``, (N, *input_shape)), randomized block Krylov iteration
    (Musco & Musco 2015) with ``l = k + oversample`` directions: ``Y = J Omega`` by batched
    JVPs, then ``iters`` times ``Y <- J (J^T Q)`` (VJPs then JVPs), each block orthonormalised
    against all earlier ones; the singular values of ``K^T J`` (K = all blocks, l (iters + 1)
    orthonormal columns; ``K^T J`` comes from the VJPs already made) approximate the top ones
    of J. The full Jacobian (p x d) is never formed. Cost: ``l (iters + 1)`` JVP and as many
    VJP streams per input, against p VJPs for the full Jacobian. When ``l (iters + 1) >=
    min(d, p)`` the Krylov space would be all of ``R^min(d, p)``: J is then taken whole from
    its ``min(d, p)`` rows (VJPs) or columns (JVPs), no more passes, and the values are exact
    (a shallower, truncated space ran up to a few % low at small p).

    Returns ``(sigma (N, k), log10_volume (N,))`` with ``log10_volume = sum_i log10 sigma_i``
    (the paper's effective volume element for d >> p). k must not exceed min(d, p).

    Accuracy: on a ResNet18 at initialisation (flat spectrum, the hard case: top-8 values
    0.063 ... 0.047) the defaults give the top 8 within 0.2 % (``iters=2``: 1.1 %), at a
    quarter of the full Jacobian's passes. Trained networks' spectra decay faster.

    Device: ``points`` move to the model's device (a plain callable: they stay where they
    are); results are float64 on CPU. The start directions are drawn on the CPU from
    ``(seed, point index)``, so the results do not depend on the device or the chunking.
    """
    x = validation.as_tensor(points, "points")
    validation.check_finite(x, "points")
    if x.ndim < 2:
        raise ArgumentError(f"points must have shape (N, *input_shape), got {tuple(x.shape)}")
    if k < 1 or oversample < 0 or iters < 0:
        raise ArgumentError(
            f"need k >= 1, oversample >= 0, iters >= 0; got {k}, {oversample}, {iters}"
        )
    fn = as_feature_map(phi, layer)
    module = fn.model if isinstance(fn, FeatureMap) else None
    if module is not None:
        x = to_device(x, module_device(module))
    shape = tuple(x.shape[1:])
    d = int(np.prod(shape))
    plan = ChunkPlan(x.shape[0], d * (k + oversample), x.device, chunk_size)
    sig_out, vol_out = [], []
    with torch.no_grad():
        p = fn(x[:1]).reshape(1, -1).shape[1]
    if k > min(d, p):
        raise ArgumentError(f"k={k} exceeds min(input dim {d}, feature dim {p})")
    ell = min(k + oversample, d, p)
    m = min(d, p)
    # the Krylov space would be all of R^m: all m directions give J exactly, in no more passes
    exact = ell * (iters + 1) >= m
    depth = max(0, min(iters, m // ell - 1))
    with torch.no_grad():
        for start, stop in plan:
            xc = x[start:stop]
            n = xc.shape[0]

            def jmul(t: torch.Tensor, xc=xc, n=n) -> torch.Tensor:  # (l, n, d) -> (l, n, p)
                def push(ti: torch.Tensor) -> torch.Tensor:
                    return jvp(fn, (xc,), (ti.reshape(n, *shape),))[1].reshape(n, -1)

                return vmap(push)(t)

            _, pull = vjp(lambda z, n=n: fn(z).reshape(n, -1), xc)

            def jtmul(y: torch.Tensor, pull=pull, n=n) -> torch.Tensor:  # (l, n, p) -> (l, n, d)
                return vmap(lambda yi: pull(yi)[0].reshape(n, -1))(y)

            if exact:  # the rows of J (p <= d) or its columns (d < p), all of them
                basis = torch.eye(m, dtype=xc.dtype, device=xc.device)[:, None].expand(m, n, m)
                b = (jtmul(basis) if p <= d else jmul(basis)).permute(1, 0, 2)  # (n, m, d | p)
                s = torch.linalg.svdvals(b.double())[:, :k] / math.sqrt(p)
                sig_out.append(s.cpu())
                vol_out.append(torch.log10(s).sum(1).cpu())
                continue
            # drawn on CPU point by point: the same directions on every device and chunking
            omega = torch.stack(
                [_point_directions(seed, start + i, ell, d) for i in range(n)], 1
            ).to(xc)

            blocks: list[torch.Tensor] = []  # orthonormal Krylov blocks (l, n, p)
            pulled: list[torch.Tensor] = []  # J^T of each block (l, n, d)
            y = jmul(omega)
            for i in range(depth + 1):
                for _ in range(2):  # block Gram-Schmidt against the earlier blocks, twice
                    for qb in blocks:
                        coef = torch.einsum("anp,bnp->nab", qb, y)
                        y = y - torch.einsum("nab,anp->bnp", coef, qb)
                q = torch.linalg.qr(y.permute(1, 2, 0)).Q.permute(2, 0, 1)  # (l, n, p)
                blocks.append(q)
                pulled.append(jtmul(q))
                if i < depth:
                    y = jmul(pulled[-1])  # (J J^T) q
            b = torch.cat(pulled).permute(1, 0, 2)  # (n, l (depth + 1), d) = K^T J
            s = torch.linalg.svdvals(b.double())[:, :k] / math.sqrt(p)
            sig_out.append(s.cpu())
            vol_out.append(torch.log10(s).sum(1).cpu())
    return torch.cat(sig_out), torch.cat(vol_out)


def _point_directions(seed: int, index: int, ell: int, d: int) -> torch.Tensor:
    """(ell, d) float64 Gaussian start directions for point ``index``, from ``(seed, index)``."""
    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + index)
    return torch.randn(ell, d, generator=gen, dtype=torch.float64)
