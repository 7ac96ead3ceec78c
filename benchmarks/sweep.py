"""Metrics sweep of 8 runs x 26 checkpoints on a Dask LocalCluster: 1 vs 2 worker processes.

The runs (moons preset, 2-64-64-2 tanh MLP, 400 steps, 26 log-spaced checkpoints, alpha x
seed grid) are trained once by ``train_sweep`` on 2 workers. Then each round fills fresh
copies of their metrics caches (208 rows, in tasks of up to 8 rows of one run) with
``sweep_metrics`` on a warm 1-worker and a warm 2-worker cluster, and in this process with
``Run.metrics`` (1 thread) as the serial reference, and in two plain worker processes
(``multiprocessing``, half the runs each, no scheduler): the scaling this machine allows two
processes without Dask. Rounds interleave the four so machine load affects them alike; the
report gives medians and the ratios measured in this one run.

Only the cluster (or pool) being timed is alive: each is started before its turn, warmed
(every worker computes one metrics row of a scratch copy, so lazy imports are paid) and closed
after it. An idle cluster's heartbeats and monitors cost CPU, and on a 2-core machine they
fall on a core the 2-worker round needs but the 1-worker round leaves free.

    .venv/bin/python benchmarks/sweep.py [--rounds 2] [--steps 400] [--probe-size 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from richviz.checkpoints import METRICS_CACHE, Run
from richviz.sweep import compute_metrics_entries, open_client, sweep_metrics, train_sweep

GRID = {"alpha": [0.1, 1.0, 10.0, 100.0], "seed": [0, 1]}


def serial_metrics(job: tuple[list[Path], int]) -> None:
    """``Run.metrics`` of each run in turn, in this process (1 thread)."""
    paths, probe_size = job
    torch.set_num_threads(1)
    for p in paths:
        Run.open(p).metrics(progress=False, probe_size=probe_size)


def warm(job: tuple[Path, int, int]) -> None:
    """One metrics row of a scratch copy, stored nowhere: pays this process's lazy imports."""
    path, step, probe_size = job
    torch.set_num_threads(1)
    compute_metrics_entries(str(path), [step], None, probe_size)


def fresh(src: list[Path], dest: Path) -> list[Path]:
    shutil.rmtree(dest, ignore_errors=True)
    out = []
    for p in src:
        q = Path(shutil.copytree(p, dest / p.name))
        (q / METRICS_CACHE).unlink(missing_ok=True)
        out.append(q)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--probe-size", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as each worker (dask sets OMP_NUM_THREADS=1)
    root = Path(tempfile.mkdtemp(prefix="richviz-sweep-bench-"))
    try:
        t0 = time.perf_counter()
        runs = train_sweep(
            "moons",
            root / "runs",
            GRID,
            workers=2,
            overrides={"steps": args.steps, "checkpoints": 30},
            progress=False,
        )
        train_s = time.perf_counter() - t0
        paths = [r.path for r in runs]
        tasks = sum(len(r.steps) for r in runs)
        print(f"trained {len(runs)} runs, {tasks} checkpoints, in {train_s:.1f} s (2 workers)")
        times: dict[str, list[float]] = {
            "serial": [],
            "2 plain": [],
            "1 worker": [],
            "2 workers": [],
        }
        spawn = multiprocessing.get_context("spawn")
        scratch = fresh(paths[:1], root / "scratch")[0]
        warm_job = (scratch, Run.open(scratch).steps[-1], args.probe_size)
        warm(warm_job)
        for r in range(args.rounds):
            for label in times:
                copies = fresh(paths, root / f"copy-{r}-{label.replace(' ', '')}")
                if label == "serial":
                    t = time.perf_counter()
                    serial_metrics((copies, args.probe_size))
                    elapsed = time.perf_counter() - t
                elif label == "2 plain":
                    with spawn.Pool(2) as pool:
                        pool.map(warm, [warm_job] * 2)
                        half = len(copies) // 2  # half the runs each, no scheduler
                        t = time.perf_counter()
                        pool.map(
                            serial_metrics,
                            [(copies[:half], args.probe_size), (copies[half:], args.probe_size)],
                        )
                        elapsed = time.perf_counter() - t
                else:
                    with open_client(workers=int(label[0])) as client:
                        client.run(warm, warm_job)
                        t = time.perf_counter()
                        sweep_metrics(
                            copies, scheduler=client, probe_size=args.probe_size, progress=False
                        )
                        elapsed = time.perf_counter() - t
                times[label].append(elapsed)
                print(f"round {r + 1}: {label:9s} {times[label][-1]:6.1f} s", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{tasks} metrics rows, medians of {args.rounds} rounds:")
        for k, v in med.items():
            print(f"  {k:9s} {v:6.1f} s  ({1000 * v / tasks:.0f} ms/row)")
        print(f"  speed-up 2 workers vs 1 worker: {med['1 worker'] / med['2 workers']:.2f}x")
        print(f"  1 worker vs serial in-process:  {med['serial'] / med['1 worker']:.2f}x")
        print(f"  2 plain processes vs serial:    {med['serial'] / med['2 plain']:.2f}x (the")
        print("    machine's own scaling for two processes, without Dask)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
