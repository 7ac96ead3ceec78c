"""Benchmark: one frame in one pass (``richviz.views.slice_frame``) against two passes
(``pullback_metric`` for the metric, then ``decision_field`` for the logits).

Workloads, all on 2 CPU threads (``torch.set_num_threads(2)``), timed in ONE run:

* ``live``: the Playground's frame, a 2 -> 16 -> 16 -> 2 tanh MLP on a 64 x 64 grid, as the plain
  network (chain + separable head) and as a centred ``alpha (f - f0)`` model (the chain runs
  nested inside one forward of the model);
* ``viewer``: the slice viewer's first field for the quick start's 2 -> 64 -> 64 -> 2 tanh MLP,
  the coarse 32 x 32 preview and the 96 x 96 field;
* ``generic``: a model with no chain (the generic ``jvp`` path through the whole model),
  2 -> 64 -> 64 -> 2 at 64 x 64.

Both sides produce the same record (metric field, margin, entropy, classes, boundary lines,
boundary magnification). Printed per workload: the median wall time and the median CPU time
of this process (less sensitive to other processes on shared cores) of ``--repeats`` runs of
each way (after one warm-up each, interleaved), and the ratios old / new.

    python benchmarks/frame_pass.py
    python benchmarks/frame_pass.py --repeats 31
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from richviz.architectures import Centered, build
from richviz.geometry import (
    Slice,
    boundary_magnification,
    decision_boundary_lines,
    decision_field,
    pullback_metric,
)
from richviz.views import slice_frame


class _NoChain(nn.Module):
    """An MLP whose forward is not a plain chain (forces the generic jvp path)."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.body, self.head = net[:-1], net[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) * 1.0)


def _old(model: nn.Module, s: Slice, res: int) -> None:
    """The two passes, plus what the old callers derived from them (boundary lines in the
    viewer, boundary magnification in the live view), so both sides yield the same record."""
    with torch.no_grad():
        field = pullback_metric(model, s, resolution=res)
        dec = decision_field(model, s, resolution=res)
    margin, predicted = dec.margin.numpy(), dec.predicted.numpy()
    decision_boundary_lines(margin, predicted, field.u.numpy(), field.v.numpy())
    boundary_magnification(field.log10_volume, margin)


def _new(model: nn.Module, s: Slice, res: int) -> None:
    slice_frame(model, s, resolution=res)


def _time(fn: Callable[..., None], *args: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    small = build("mlp", in_features=2, hidden=[16, 16], out_features=2, activation="tanh")
    quick = build("mlp", in_features=2, hidden=[64, 64], out_features=2, activation="tanh")
    s = Slice.square(torch.zeros(2), 1.5)
    workloads = [
        ("live 2-16-16-2, 64x64", small, 64),
        ("live centred alpha(f - f0), 64x64", Centered(small, alpha=2.0), 64),
        ("viewer coarse 2-64-64-2, 32x32", quick, 32),
        ("viewer field 2-64-64-2, 96x96", quick, 96),
        ("generic jvp path 2-64-64-2, 64x64", _NoChain(quick), 64),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'':38s} {'wall time':^26s}   {'CPU time':^26s}")
    print(f"{'workload':38s} {'old ms':>8s} {'new ms':>8s} {'old/new':>8s}   " * 1, end="")
    print(f"{'old ms':>8s} {'new ms':>8s} {'old/new':>8s}")
    for name, model, res in workloads:
        model.eval()
        _old(model, s, res)  # warm-up
        _new(model, s, res)
        old_t, new_t = [], []
        for _ in range(args.repeats):  # interleaved, so drifts hit both alike
            old_t.append(_time(_old, model, s, res))
            new_t.append(_time(_new, model, s, res))
        cols = []
        for k in (0, 1):
            o = statistics.median(t[k] for t in old_t) * 1e3
            n = statistics.median(t[k] for t in new_t) * 1e3
            cols.append(f"{o:8.2f} {n:8.2f} {o / n:8.2f}")
        print(f"{name:38s} {'   '.join(cols)}")


if __name__ == "__main__":
    main()
