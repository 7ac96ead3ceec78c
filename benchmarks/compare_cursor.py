"""Benchmark: moving the shared cursor of a GeometryRow with two cached slice viewers.

Trains two small moons runs (2-64-64-2 tanh MLP, 200 steps, seeds 0 and 1), builds a
``GeometryRow`` of both (one colour range = the union of their run ranges), visits every
checkpoint once so that every field is cached, then times

* ``cursor move``: setting the row's ``step`` to another checkpoint: both viewers snap to
  their nearest checkpoint and redraw synchronously from their caches on the fixed shared
  range (colormap, PNG encoding, trait updates) — the goal is < 50 ms (one frame at 20 fps);
* ``new field``: the same with emptied field caches (models loaded, coarse and full fields
  computed in the background, timed until idle), for the ratio;

and prints medians, the ratio and how many fields were computed while moving over cached steps
(must be 0).

    python benchmarks/compare_cursor.py [--resolution 96] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from richviz.train import train
    from richviz.widgets.compare_geometry import GeometryRow

    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            train("moons", out=f"{tmp}/moons{s}", steps=200, seed=s, progress=False) for s in (0, 1)
        ]
        row = GeometryRow(runs, resolution=args.resolution)
        row.wait(600)
        steps = runs[0].steps
        for s in steps:  # fill the caches
            row.step = s
            row.wait(600)
        computed = sum(v.compute_count for v in row.viewers)
        moves = []
        for _ in range(args.repeats):
            for s in steps:
                t = time.perf_counter()
                row.step = s
                moves.append(time.perf_counter() - t)
                assert all(v.shown_step == s for v in row.viewers), "not drawn synchronously"
        recomputed = sum(v.compute_count for v in row.viewers) - computed

        fresh = []
        for k in range(args.repeats):
            s = steps[(k * 7) % len(steps)]
            row.step = steps[(k * 7 + 3) % len(steps)]
            row.wait(600)
            for v in row.viewers:
                v._fields.clear()
                v._previews.clear()
            t = time.perf_counter()
            row.step = s
            row.wait(600)
            fresh.append(time.perf_counter() - t)
        row.close()

    m, f = statistics.median(moves), statistics.median(fresh)
    print(
        f"two viewers, checkpoints: {len(steps)}, resolution {args.resolution}, "
        f"threads {args.threads}, shared range {row.color_limits}"
    )
    print(f"cursor move, cached fields: {1e3 * m:8.2f} ms (median of {len(moves)}; goal < 50)")
    print(f"cursor move, max          : {1e3 * max(moves):8.2f} ms")
    print(f"cursor move, new fields   : {1e3 * f:8.2f} ms (median of {len(fresh)})")
    print(f"ratio new / cached        : {f / m:8.1f}x")
    print(f"fields computed while moving over cached steps: {recomputed}")


if __name__ == "__main__":
    main()
