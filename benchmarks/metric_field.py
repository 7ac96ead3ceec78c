"""Benchmark: cost of the pulled-back metric field relative to a plain forward pass.

Three workloads (targets: field <= 3x a forward pass; effective volume >= 5x faster than
the full Jacobian, top-k within 1 %):

* ``mlp``: a 2 -> 256 -> 256 -> 256 tanh MLP (feature map = its output) on a 128 x 128 grid;
* ``resnet``: a torchvision ResNet18 (num_classes=10, eval) on a 64 x 64 plane slice through
  three random 3 x 32 x 32 inputs (feature map = the 512-d penultimate layer);
* ``effective`` (not in the default ``both``; ``all`` runs the three): top-8 singular values of
  the ResNet18's J / sqrt(512) at a few inputs, ``effective_volume`` against the full Jacobian;
* GPU workloads (``gpu`` runs both): ``resnet256``, the ResNet18 plane on a 256 x 256 grid
  (forward reference in chunks of 8192 images, one pass over the same points), and
  ``mlp512``, the MLP on a 512 x 512 grid. Targets on a GPU: field <= 3x forward.

``--quick`` times only the forward reference and ``pullback_metric`` with automatic chunks
(plus, for the GPU workloads, a given chunk of 16384 and ``RICHVIZ_COMPILE=1``), the figures
the README quotes.

For each: the median wall time of several repeats of a plain forward pass over the same grid
points (one batch, and chunked), of ``pullback_metric`` at several chunk sizes (default
``method="auto"``: for the MLP the hand-written forward-mode recursion for Linear/elementwise
chains; ``method="jvp"``: ``torch.func.jvp`` vmapped over the two tangents, the path every other
model takes), of alternative forward-mode formulations (two separate JVPs; ``vmap(jacfwd)``),
and of the paper's way (the full Jacobian by reverse mode: p
backward passes; for the ResNet timed on 256 points and scaled to the grid, marked
"[256 pts]"). All ratios are to the one-batch plain forward pass measured in the same run.

Peak memory: each method runs once in a fresh subprocess (model built, grid made, forward and
reverse mode initialised on one point); reported
is the growth of the resident set while it runs (sampled every millisecond, and ``ru_maxrss``)
over the resident set just before, or the growth of ``torch.cuda.max_memory_allocated`` after
a warm-up call on CUDA. Sampling can miss very short peaks: CPU figures are lower bounds.

    python benchmarks/metric_field.py                 # both workloads, 2 CPU threads
    python benchmarks/metric_field.py --workload mlp --repeats 9
    python benchmarks/metric_field.py --workload effective --points 8 --repeats 3
    python benchmarks/metric_field.py --device cuda
    python benchmarks/metric_field.py --device cuda --workload gpu --quick --no-memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import jacfwd, jvp, vmap

from richviz.devices import best_device
from richviz.features import feature_map
from richviz.geometry import COMPILE_ENV, Slice, directional_derivatives, pullback_metric


def build(workload: str, device: torch.device, res: int | None):
    """(model, slice, resolution) for a workload."""
    torch.manual_seed(0)
    if workload in ("mlp", "mlp512"):
        model = nn.Sequential(
            nn.Linear(2, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
            nn.Linear(256, 256), nn.Tanh(),
        )  # fmt: skip
        model = model.to(device).eval()
        return (
            model,
            Slice.square(torch.zeros(2), 2.0),
            res or (512 if workload == "mlp512" else 128),
        )
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).to(device).eval()
    x0, x1, x2 = torch.randn(3, 3, 32, 32)
    return model, Slice.plane(x0, x1, x2), res or (256 if workload == "resnet256" else 64)


def phi_of(workload: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return model if workload in ("mlp", "mlp512") else feature_map(model)


def grid_points(model: nn.Module, slice_: Slice, res: int, device: torch.device) -> torch.Tensor:
    return slice_.to_input(slice_.grid_uv(res), dtype=torch.float32, device=device)


def methods(
    workload: str,
    model: nn.Module,
    slice_: Slice,
    res: int,
    device: torch.device,
    quick: bool = False,
    chunks: tuple[int, ...] = (),
):
    """name -> zero-argument callable doing the whole grid (``chunks``: extra fixed chunk
    sizes of the field to time, for tuning the automatic policy on a new device)."""
    phi = phi_of(workload, model)
    layer = "logits" if workload in ("mlp", "mlp512") else None
    x = grid_points(model, slice_, res, device)
    basis = slice_.basis.to(device=device, dtype=torch.float32)
    n = x.shape[0]

    def forward(cs: int | None = None):
        def run():
            with torch.no_grad():
                step = cs or n
                for s in range(0, n, step):
                    phi(x[s : s + step])

        return run

    def richviz(cs: int | None, method: str = "auto"):
        return lambda: pullback_metric(
            model, slice_, res, chunk_size=cs, layer=layer, method=method
        )

    def two_jvps(cs: int):
        def run():
            with torch.no_grad():
                for s in range(0, n, cs):
                    xc = x[s : s + cs]
                    a = jvp(phi, (xc,), (basis[0].expand_as(xc),))[1]
                    b = jvp(phi, (xc,), (basis[1].expand_as(xc),))[1]
                    torch.stack([(a * a).sum(1), (a * b).sum(1), (b * b).sum(1)])

        return run

    def vmap_jacfwd(cs: int):
        # Jacobian w.r.t. the slice coordinates (u, v) of phi(origin + u e1 + v e2): J E directly
        origin = slice_.origin.to(device=device, dtype=torch.float32)
        uv = slice_.grid_uv(res).to(device=device, dtype=torch.float32)

        def f(w):  # (2,) -> (p,)
            xi = origin + torch.tensordot(w, basis, dims=1)
            return phi(xi[None]).reshape(-1)

        def run():
            with torch.no_grad():
                for s in range(0, n, cs):
                    je = vmap(jacfwd(f))(uv[s : s + cs])  # (n, p, 2)
                    torch.einsum("npk,npl->nkl", je, je)

        return run

    def paper_reverse(cs: int, limit: int | None = None):
        # the paper's code: full Jacobian per point by reverse mode, one backward pass per output.
        # With ``limit``, only the first ``limit`` points are done (the time is scaled up later).
        def run():
            for s in range(0, limit or n, cs):
                xc = x[s : s + cs].clone().requires_grad_(True)
                out = phi(xc).reshape(xc.shape[0], -1)
                rows = []
                for k in range(out.shape[1]):
                    (g,) = torch.autograd.grad(out[:, k].sum(), xc, retain_graph=True)
                    rows.append(g.reshape(xc.shape[0], -1))
                jac = torch.stack(rows, 1)  # (n, p, d)
                je = jac @ basis.reshape(2, -1).T
                torch.einsum("npk,npl->nkl", je, je)

        return run

    def compiled(cs: int | None):
        def run():
            old = os.environ.get(COMPILE_ENV)
            os.environ[COMPILE_ENV] = "1"
            try:
                richviz(cs)()
            finally:
                if old is None:
                    del os.environ[COMPILE_ENV]
                else:
                    os.environ[COMPILE_ENV] = old

        return run

    ref = FORWARD_CHUNK.get(workload)
    out: dict[str, Callable[[], object]] = {REFERENCE: forward(ref)}
    for cs in chunks:
        out[f"richviz metric, chunk {cs}"] = richviz(cs)
    if quick or workload in ("mlp512", "resnet256"):
        out["richviz metric, chunk auto"] = richviz(None)
        if workload in ("mlp512", "resnet256"):
            out["richviz metric, chunk 16384"] = richviz(16384)
            if workload == "mlp512":
                out["richviz metric, chunk auto, RICHVIZ_COMPILE=1"] = compiled(None)
        return out
    if workload == "mlp":
        out["forward (chunks of 1024)"] = forward(1024)
        for cs in (None, 256, 512, 2048, 4096, 16384):
            out[f"richviz metric, chunk {cs or 'auto'}"] = richviz(cs)
        out["richviz metric, method='jvp', chunk auto"] = richviz(None, "jvp")
        out["richviz metric, method='jvp', chunk 4096"] = richviz(4096, "jvp")
        out["two separate jvps, chunk 1024"] = two_jvps(1024)
        out["vmap(jacfwd), chunk 1024"] = vmap_jacfwd(1024)
        out["paper: reverse-mode Jacobian, one batch"] = paper_reverse(n)
    else:
        out["forward (chunks of 64)"] = forward(64)
        for cs in (None, 16, 32, 128):
            out[f"richviz metric, chunk {cs or 'auto'}"] = richviz(cs)
        out["vmap(jacfwd), chunk 64"] = vmap_jacfwd(64)
        out[f"paper: reverse-mode Jacobian, chunk 64 [{PAPER_SUBSET} pts]"] = paper_reverse(
            64, PAPER_SUBSET
        )
    return out


REFERENCE = "forward (reference)"
FORWARD_CHUNK = {"resnet256": 8192}  # one pass over the grid, in chunks that fit any GPU
PAPER_SUBSET = 256  # ResNet: the paper's way is timed on this many points and scaled to the grid


def auto_chunks(model: nn.Module, slice_: Slice, res: int, workload: str) -> str:
    """The chunk sizes the automatic policy picks for one field of this workload."""
    from richviz.geometry import chunking, field

    sizes: list[int] = []

    class Recording(chunking.ChunkPlan):
        def __iter__(self):
            for start, stop in super().__iter__():
                sizes.append(stop - start)
                yield start, stop

    old, field.ChunkPlan = field.ChunkPlan, Recording
    try:
        layer = "logits" if workload in ("mlp", "mlp512") else None
        pullback_metric(model, slice_, res, layer=layer)
    finally:
        field.ChunkPlan = old
    runs: list[list[int]] = []  # run-length encoded: "256, 8000 x 3, 1234"
    for s in sizes:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return ", ".join(f"{s} x {k}" if k > 1 else str(s) for s, k in runs)


def median_times(fns: dict[str, Callable[[], object]], repeats: int, slow: set[str], sync):
    """Interleaved repeats (so load changes hit every method alike); median seconds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in fns.items():  # warm-up (the slow reference runs once, unwarmed)
        if name not in slow:
            fn()
            sync()
    for r in range(repeats):
        for name, fn in fns.items():
            if name in slow and r > 0:  # one run is enough for a 100x-slower method
                continue
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory_child(args) -> None:
    device = best_device(args.device)
    torch.set_num_threads(args.threads)
    model, slice_, res = build(args.workload, device, args.res)
    fns = methods(args.workload, model, slice_, res, device, args.quick)
    fn = fns[args.measure]
    # One-point warm-up of forward mode, reverse mode and vmap: their one-time initialisation
    # (imports, dispatch tables) is not the method's memory.
    x1 = grid_points(model, slice_, 2, device)[:1]
    phi = phi_of(args.workload, model)
    basis = slice_.basis.to(device=device, dtype=torch.float32)
    with torch.no_grad():
        directional_derivatives(phi, x1, basis)
        vmap(jacfwd(lambda w: phi(x1 + 0 * w.sum())[0]))(torch.zeros(1, 2, device=device))
    phi(x1.clone().requires_grad_(True)).sum().backward()
    if device.type == "cuda":
        fn()  # warm-up: lazy initialisation (cuBLAS workspaces) is not the method's memory
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = rss_growth(fn)
    print(json.dumps({"peak_bytes": peak}))


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def rss_growth(fn: Callable[[], object]) -> int:
    """Peak resident-set growth (bytes) while ``fn`` runs: the larger of the ``ru_maxrss``
    increase and the maximum of /proc/self/statm sampled every millisecond, minus the resident
    set just before."""
    base = _rss()
    base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = [base]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    fn()
    done.set()
    t.join()
    grown_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(peak[0] - base, grown_max - base_max if grown_max > base_max else 0)


def peak_memory(args, name: str) -> float:
    cmd = [sys.executable, __file__, "--workload", args.workload, "--threads", str(args.threads)]
    cmd += ["--measure", name] + (["--quick"] if args.quick else [])
    if args.device:
        cmd += ["--device", args.device]
    if args.res:
        cmd += ["--res", str(args.res)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"] / 2**20


def effective_volume_benchmark(device: torch.device, points: int, repeats: int, sync) -> None:
    """Top-k singular values of J/sqrt(p) for a ResNet18 at ``points`` inputs (3x32x32, p=512):
    randomized block Krylov (richviz) vs the full Jacobian by reverse mode + svdvals."""
    import torchvision
    from torch.func import jacrev

    from richviz.geometry import effective_volume

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device).eval()
    phi = feature_map(model)
    x = torch.randn(points, 3, 32, 32, device=device)
    k = 8

    def full():
        jac = vmap(jacrev(lambda z: phi(z[None])[0]), chunk_size=1)(x)  # (n, 512, 3, 32, 32)
        return torch.linalg.svdvals(jac.reshape(points, 512, -1) / 512**0.5)[:, :k]

    def randomized():
        return effective_volume(model, x, k=k)[0]  # defaults: oversample=8, iters=3

    fns = {"full Jacobian (reverse mode) + svdvals": full, "richviz effective_volume": randomized}
    med = median_times(fns, repeats, set(), sync)
    with torch.no_grad():
        ref = full().detach()
        err = float(((randomized().to(device) - ref).abs() / ref).max())
    print(f"\neffective volume: ResNet18, {points} inputs 3x32x32, top-{k} of J/sqrt(512)")
    base = med["full Jacobian (reverse mode) + svdvals"]
    for name, t in med.items():
        print(f"{name:44s} {t * 1e3:10.1f} ms   speed-up {base / t:6.2f}x")
    print(f"max relative error of the top-{k} singular values: {err:.2e}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--workload",
        choices=["mlp", "resnet", "effective", "mlp512", "resnet256", "gpu", "both", "all"],
        default="both",
    )
    ap.add_argument("--quick", action="store_true", help="forward and auto-chunk field only")
    ap.add_argument("--points", type=int, default=8, help="inputs for --workload effective")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: best available)")
    ap.add_argument("--res", type=int, default=None, help="grid resolution (default 128 / 64)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument(
        "--chunks",
        default="",
        help="comma-separated extra chunk sizes of the field to time (tuning), e.g. 4096,32768",
    )
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        peak_memory_child(args)
        return
    device = best_device(args.device)
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    groups = {
        "both": ["mlp", "resnet"],
        "all": ["mlp", "resnet", "effective"],
        "gpu": ["mlp512", "resnet256"],
    }
    workloads = groups.get(args.workload, [args.workload])
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    for wl in workloads:
        if wl == "effective":
            effective_volume_benchmark(device, args.points, args.repeats, sync)
            continue
        model, slice_, res = build(wl, device, args.res)
        chunks = tuple(int(c) for c in args.chunks.split(",") if c.strip())
        fns = methods(wl, model, slice_, res, device, args.quick, chunks)
        print(f"{wl}: automatic chunks {auto_chunks(model, slice_, res, wl)}")
        slow = {k for k in fns if k.startswith("paper") or "COMPILE" in k}
        if any("COMPILE" in k for k in fns):  # first call compiles: report its latency
            t0 = time.perf_counter()
            fns[next(k for k in fns if "COMPILE" in k)]()
            sync()
            print(f"{wl}: torch.compile first call {time.perf_counter() - t0:.1f} s")
        med = median_times(fns, args.repeats, slow, sync)
        base = med[REFERENCE]
        sub = argparse.Namespace(**{**vars(args), "workload": wl})
        print(f"\n{wl}: {res}x{res} grid, median of {args.repeats} (paper's way: 1 run)")
        print(f"{'method':44s} {'time ms':>10s} {'x forward':>10s} {'peak MiB':>10s}")
        for name, t in med.items():
            if f"[{PAPER_SUBSET} pts]" in name:
                t *= res * res / PAPER_SUBSET  # scaled to the whole grid; memory is per chunk
            mem = "" if args.no_memory else f"{peak_memory(sub, name):10.1f}"
            print(f"{name:44s} {t * 1e3:10.1f} {t / base:10.2f} {mem}", flush=True)


if __name__ == "__main__":
    main()
