"""Benchmark: seconds to export a 30-checkpoint 2-D run as a GIF at 96 x 96, cold and warm.

Trains the circles task (2-64-64-2 tanh MLP, 300 steps, 30 log-spaced checkpoints; not
timed), then times :func:`richviz.widgets.slice_animation.save_animation` three times in one
process:

* ``cold``: no ``metrics.json`` beside the run and an empty grid cache: the run's metrics (test
  accuracy, D_LR, boundary magnification per checkpoint), 30 grids (one
  ``views.slice_frame`` pass each), drawing and the GIF;
* ``grids cold``: the metrics cached on disk, the grid cache emptied: grids, drawing, GIF;
* ``warm``: both cached (a second export in the same process): drawing and the GIF only;

and prints the three times, the grids computed by each (30, 30, 0) and the machine's load
average (the machine may be shared). Goals (2 threads): cold < 10 s, warm < 3 s.

    python benchmarks/animation.py [--resolution 96] [--threads 2] [--curves]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--curves", action="store_true", help="draw the metric curves too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from richviz.animation import FIELDS
    from richviz.runs import Run
    from richviz.train import train
    from richviz.widgets.slice_animation import save_animation

    with tempfile.TemporaryDirectory() as tmp:
        path = train("circles", out=f"{tmp}/circles", steps=300, progress=False,
                     overrides={"checkpoints": 35}).path  # fmt: skip
        steps = Run.open(path).steps
        assert len(steps) == 30, steps

        def export(name: str) -> tuple[float, int]:
            run = Run.open(path)  # a fresh run: no model in its LRU
            t = time.perf_counter()
            anim = save_animation(run, f"{tmp}/{name}.gif", resolution=args.resolution,
                                  curves=args.curves, progress=False, device="cpu")  # fmt: skip
            return time.perf_counter() - t, anim.computed

        FIELDS.clear()
        cold, n_cold = export("cold")
        FIELDS.clear()
        grids, n_grids = export("grids")
        warm, n_warm = export("warm")
        size = os.path.getsize(f"{tmp}/warm.gif")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"30 checkpoints, {args.resolution} x {args.resolution} grid, GIF "
          f"({size / 1024:.0f} KiB), {args.threads} threads, load average {load:.1f}")  # fmt: skip
    print(f"cold        {cold:6.2f} s  (grids computed: {n_cold})")
    print(f"grids cold  {grids:6.2f} s  (grids computed: {n_grids}, metrics from metrics.json)")
    print(f"warm        {warm:6.2f} s  (grids computed: {n_warm})")
    print(f"cold / warm {cold / warm:6.1f}x")


if __name__ == "__main__":
    main()
