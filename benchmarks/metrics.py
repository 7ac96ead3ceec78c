"""Cost of the metrics-panel numbers against the forward pass that produced the features.

n = 2000 probe inputs through a 3072 -> 512 -> 512 -> 10 ReLU MLP (CIFAR-sized inputs),
features p = 512 (input of the last Linear), C = 10. Every timing is the median of several
rounds; rounds interleave all measurements so machine load affects them alike.

    .venv/bin/python benchmarks/metrics.py [--repeats 7] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from richviz.devices import best_device
from richviz.features import features_and_outputs
from richviz.metrics import (
    checkpoint_metrics,
    d_lr,
    feature_spectrum,
    linear_cka,
    neural_collapse,
    parameter_norms,
)


def mlp(d: int, p: int, c: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Linear(p, p), nn.ReLU(), nn.Linear(p, c))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=3072)
    ap.add_argument("--p", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = best_device(args.device)
    torch.manual_seed(0)
    model = mlp(args.d, args.p, args.classes).to(dev).eval()
    init = copy.deepcopy(model)
    with torch.no_grad():  # a "trained" checkpoint: perturbed weights
        for q in model.parameters():
            q.add_(0.5 * q.std() * torch.randn_like(q))
    x = torch.randn(args.n, args.d, device=dev)
    y = torch.arange(args.n, device=dev) % args.classes
    with torch.no_grad():
        feats, out = features_and_outputs(model, x)
        feats0, _ = features_and_outputs(init, x)
    last = model[4]
    sd, sd0 = dict(model.named_parameters()), dict(init.named_parameters())

    def forward() -> None:
        with torch.no_grad():
            model(x)

    jobs: dict[str, Callable[[], object]] = {
        "forward pass (reference)": forward,
        "d_lr": lambda: d_lr(feats, out),
        "neural_collapse (NC1-NC4)": lambda: neural_collapse(feats, y, last.weight, last.bias),
        "d_lr + neural_collapse": lambda: (
            d_lr(feats, out),
            neural_collapse(feats, y, last.weight, last.bias),
        ),
        "linear_cka (similarity to init)": lambda: linear_cka(feats, feats0),
        "parameter_norms": lambda: parameter_norms(sd, sd0),
        "feature_spectrum (eigh, curves)": lambda: feature_spectrum(feats, y, out),
        "checkpoint_metrics (incl. 2 forwards)": lambda: checkpoint_metrics(
            model, x, y, init_model=init, batch_size=args.n
        ),
    }
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for job in jobs.values():  # warm-up
        job()
    for _ in range(args.repeats):
        for name, job in jobs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            job()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    mw = {k: statistics.median(v) * 1e3 for k, v in wall.items()}
    lw = {k: min(v) * 1e3 for k, v in wall.items()}
    mc = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    ref = "forward pass (reference)"
    print(
        f"n={args.n} d={args.d} p={args.p} C={args.classes} device={dev} "
        f"threads={torch.get_num_threads()} repeats={args.repeats}; wall median and min; "
        "cpu = median process CPU time (all threads), less sensitive to other load"
    )
    cols = ("wall med", "x fwd", "wall min", "x fwd", "cpu med", "x fwd")
    print(f"{'measurement':40s}" + "".join(f"{c:>10s}" for c in cols))

    def row(name: str, vals: tuple[float, float, float]) -> None:
        refs = (mw[ref], lw[ref], mc[ref])
        cells = "".join(f"{v:10.2f}{v / r:10.2f}" for v, r in zip(vals, refs, strict=True))
        print(f"{name:40s}{cells}")

    for name in jobs:
        row(name, (mw[name], lw[name], mc[name]))
    name = "checkpoint_metrics (incl. 2 forwards)"
    row(
        "  checkpoint_metrics minus 2 forwards",
        (mw[name] - 2 * mw[ref], lw[name] - 2 * lw[ref], mc[name] - 2 * mc[ref]),
    )

    # accuracy of the float32 work path against float64 features (same numbers otherwise)
    f64, o64, f0_64 = feats.double(), out.double(), feats0.double()
    w64, b64 = last.weight.double(), last.bias.double()
    nc32 = neural_collapse(feats, y, last.weight, last.bias)
    nc64 = neural_collapse(f64, y, w64, b64)
    s32, s64 = feature_spectrum(feats, y, out), feature_spectrum(f64, y, o64)
    diffs = {
        "d_lr": abs(d_lr(feats, out) - d_lr(f64, o64)),
        "linear_cka": abs(linear_cka(feats, feats0) - linear_cka(f64, f0_64)),
        "nc1 (relative)": abs(nc32["nc1"] - nc64["nc1"]) / abs(nc64["nc1"]),
        "effective_rank (relative)": abs(s32.effective_rank - s64.effective_rank)
        / s64.effective_rank,
        "quality curve (max)": float((s32.quality - s64.quality).abs().max()),
    }
    print("float32 features vs float64: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    cm = checkpoint_metrics(model, x, y, init_model=init)
    print("checkpoint_metrics:", {k: round(v, 4) for k, v in cm.items()})


if __name__ == "__main__":
    main()
