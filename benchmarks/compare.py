"""Benchmark: Compare over 200 runs x 30 checkpoints of cached metrics.

Trains one small XOR run (2-64-64-2 tanh MLP, 60 steps, 30 checkpoints) and fills its metrics
cache with ``Run.metrics`` (the real cache code). Then makes ``--runs`` run folders from it:
the checkpoint files hard-linked (same bytes, so the cache's content hashes hold), the
manifest's ``seed`` and ``hparams.lr`` varied (neither is part of the cache key), and each
cached row's values perturbed and stored with ``Run.store_metrics_rows`` under the row's own
key. A sample of the fake runs is checked with ``Run.open(...).pending_metrics() == []``: their
caches are current. Then it times (medians over ``--repeats``):

* ``open``: :func:`richviz.compare.open_runs` over all the folders (manifests + caches);
* ``table``: building ``Compare(folders)`` with nothing selected (open + the run table);
* ``overlay 10``: selecting 10 runs (13 charts x 10 curves drawn);
* ``overlay 10, smoothed``: the same with EMA smoothing (raw curves faint + smoothed);
* ``group by``: grouping the 10 by a hyper-parameter (mean +- std bands);
* ``sort``: sorting the table by final D_LR;
* ``verify all``: ``fill="all"`` — every run opened and its cache checked against the
  checkpoints' content in the background (timed until idle; once, for information).

Goal: table and overlay < 1 s each on 2 threads.

    python benchmarks/compare.py [--runs 200] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch


def make_runs(root: Path, count: int) -> list[Path]:
    """``count`` run folders with 30 cached checkpoints each (see the module docstring)."""
    from richviz.runs import Run
    from richviz.runs.analysis import METRICS_CACHE, read_metrics_cache
    from richviz.train import train

    base = root / "base"
    train("xor", base, steps=60, progress=False, device="cpu", overrides={"checkpoints": 30})
    Run.open(base).metrics(progress=False, device="cpu")
    cached = read_metrics_cache(base / METRICS_CACHE)["rows"]
    manifest = json.loads((base / "run.json").read_text())
    rng = random.Random(0)
    paths = []
    for i in range(count):
        path = root / f"run{i:03d}"
        path.mkdir()
        for f in base.glob("step_*.pt"):
            try:
                os.link(f, path / f.name)
            except OSError:
                shutil.copy2(f, path / f.name)
        m = dict(manifest, seed=i % 5)
        m["hparams"] = dict(manifest["hparams"], lr=[0.05, 0.1, 0.2, 0.4][(i // 5) % 4])
        (path / "run.json").write_text(json.dumps(m))
        run = Run.open(path)
        scale = 1.0 + 0.2 * rng.random()
        entries = []
        for step, entry in cached.items():
            row = {
                k: (v * scale if isinstance(v, float) and k != "step" else v)
                for k, v in entry["row"].items()
            }
            entries.append({"step": int(step), "key": entry["key"], "row": row})
        run.store_metrics_rows(entries)  # the real cache writer, the row's own key
        paths.append(path)
    for path in paths[:: max(1, count // 5)]:  # the caches are current for the real code
        assert Run.open(path).pending_metrics() == [], path
    return paths


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn()``: on a shared, loaded machine the CPU time (this
    process, all threads) is what the wall time would be on an idle one."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from richviz.compare import open_runs
    from richviz.widgets import Compare

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        paths = make_runs(Path(tmp), args.runs)
        print(f"made {len(paths)} runs x 30 checkpoints in {time.perf_counter() - t:.1f} s")
        Compare(paths[:2], geometry=False, fill=None).close()  # imports, first widgets

        t_open = timed(lambda: open_runs(paths), args.repeats)
        views = []

        def build() -> None:
            views.append(Compare(paths, selected=[], geometry=False, fill=None))

        t_table = timed(build, args.repeats)
        view = views[-1]
        names = [e.name for e in view.entries]
        ten = [names[i] for i in range(0, len(names), max(1, len(names) // 10))][:10]

        def overlay() -> None:
            view.selected = []
            view.selected = ten

        t_overlay = timed(overlay, args.repeats)
        view.smoothing = 0.6
        t_smooth = timed(overlay, args.repeats)
        view.smoothing = 0.0

        def group() -> None:
            view.group_by = "lr"
            view.group_by = ""

        t_group = tuple(v / 2 for v in timed(group, args.repeats))

        def sort() -> None:
            view.table.sort_by = "d_lr"
            view.table.sort_by = "table order"

        t_sort = tuple(v / 2 for v in timed(sort, args.repeats))
        drawn = sum(len(c.drawn) for c in view.charts.values())
        for v in views:
            v.close()

        t = time.perf_counter()
        check = Compare(paths, selected=[], geometry=False, fill="all")
        assert check.wait(600)
        t_verify = time.perf_counter() - t
        bad = sum(not e.usable for e in check.entries)
        check.close()

    print(f"threads: {args.threads}, runs: {args.runs} x 30 checkpoints, median of {args.repeats}")
    print(f"load average: {os.getloadavg()[0]:.1f} (wall ms / CPU ms of this process)")
    rows = [
        ("open (manifests + caches)", t_open, ""),
        ("table (Compare built)", t_table, "goal < 1000 ms"),
        ("overlay 10 runs", t_overlay, f"goal < 1000 ms ({drawn} curves)"),
        ("overlay 10, smoothed", t_smooth, ""),
        ("group by lr (bands)", t_group, ""),
        ("sort by D_LR", t_sort, ""),
    ]
    for label, (wall, cpu), note in rows:
        print(f"{label + ':':28}{wall * 1e3:7.0f} / {cpu * 1e3:5.0f} ms  {note}")
    print(f"{'verify all (background):':28}{t_verify * 1e3:7.0f} ms wall  ({bad} runs not usable)")


if __name__ == "__main__":
    main()
