"""Benchmark: moving the step slider with cached fields vs. computing a new field.

Builds an ``Explorer`` on a small moons run (trained here, 2-64-64-2 tanh MLP, 200 steps),
visits every checkpoint once (fields and metrics computed and cached), then times

* ``cached``: setting ``step`` to an already visited checkpoint (the slider's path): the views
  are redrawn synchronously from the LRU cache — colormap, PNG encoding and trait updates;
* ``compute``: the same with an empty field cache: load the model copy, a coarse field, the
  full field, the decision field and ellipses, in the background (timed until idle);

and prints medians and their ratio, plus how many fields were computed while scrubbing cached
steps (must be 0).

    python benchmarks/widgets_scrub.py [--resolution 96] [--repeats 5]
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
    from richviz.widgets import Explorer

    with tempfile.TemporaryDirectory() as tmp:
        run = train("moons", out=f"{tmp}/moons", steps=200, progress=False)
        ex = Explorer(run, viewer={"resolution": args.resolution})
        ex.wait(600)
        steps = run.steps
        for s in steps:  # fill the caches
            ex.step = s
            ex.wait(600)
        viewer = ex.viewer
        computed = viewer.compute_count
        cached = []
        for _ in range(args.repeats):
            for s in steps:
                t = time.perf_counter()
                ex.step = s
                cached.append(time.perf_counter() - t)
                assert viewer.shown_step == s
        recomputed = viewer.compute_count - computed

        compute = []
        for k in range(args.repeats):
            viewer._fields.clear()
            viewer._previews.clear()
            s = steps[(k * 7) % len(steps)]
            ex.step = steps[(k * 7 + 3) % len(steps)]
            ex.wait(600)
            viewer._fields.clear()
            viewer._previews.clear()
            t = time.perf_counter()
            ex.step = s
            ex.wait(600)
            compute.append(time.perf_counter() - t)
        ex.close()

    c, f = statistics.median(cached), statistics.median(compute)
    print(f"checkpoints: {len(steps)}, resolution {args.resolution}, threads {args.threads}")
    print(f"step change, cached field : {1e3 * c:8.2f} ms (median of {len(cached)})")
    print(f"step change, new field    : {1e3 * f:8.2f} ms (median of {len(compute)})")
    print(f"ratio new / cached        : {f / c:8.1f}x")
    print(f"fields computed while scrubbing cached steps: {recomputed}")


if __name__ == "__main__":
    main()
