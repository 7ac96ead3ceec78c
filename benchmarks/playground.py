"""Benchmark: the Playground's live view and what drawing costs training.

For a 2-16-16-C tanh MLP on Gaussian blobs (C = 4 by default), in one process:

* ``frame``: the time to draw one frame of the live view at 64 x 64 (metric field, decision
  field, ellipses, PNG, boundary lines, metrics strip row, bqplot trait updates), called
  directly; frames/s = 1 / median;
* ``train alone``: training steps/s of the background trainer running freely with no viewer;
* ``train + views``: the same with a Playground drawing the newest weights at its frame rate
  (default 10 frames/s); reports the frames drawn and skipped meanwhile;

and prints the ratio (training with views / alone: the slowdown drawing causes). Both
training runs alternate ``--repeats`` times; the ratio of the medians and the median of the
ratios of neighbouring windows are printed, so slow drifts of a noisy shared machine affect
both alike.

    python benchmarks/playground.py [--threads 2] [--seconds 3] [--repeats 3] [--fps 10]
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from richviz.live import LiveTrainer, PlaygroundConfig
    from richviz.widgets import Playground

    config = PlaygroundConfig(
        data="blobs", classes=args.classes, n=400, width=16, depth=2, device="cpu"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pg = Playground(config, root=f"{tmp}/pg", resolution=args.resolution, fps=args.fps)
        pg.step(200)
        pg.wait()
        item = (pg.trainer, pg.trainer.state)
        for _ in range(3):
            pg._draw(item)  # warm up
        frame = []
        for _ in range(30):
            t = time.perf_counter()
            pg._draw(item)
            frame.append(time.perf_counter() - t)

        def free_run(trainer: LiveTrainer) -> float:
            s0 = trainer.step_count
            t = time.perf_counter()
            trainer.start()
            time.sleep(args.seconds)
            trainer.pause(wait=True)
            return (trainer.step_count - s0) / (time.perf_counter() - t)

        alone, viewed, drawn, skipped = [], [], [], []
        bare = LiveTrainer(config, f"{tmp}/bare")
        for _ in range(args.repeats):
            alone.append(free_run(bare))
            f0, k0 = pg.frames.frames, pg.frames.skipped
            viewed.append(free_run(pg.trainer))
            pg.wait()
            drawn.append((pg.frames.frames - f0) / args.seconds)
            skipped.append(pg.frames.skipped - k0)
        bare.close()
        pg.close()

    med = statistics.median
    fms = med(frame) * 1e3
    print(f"threads={args.threads} blobs C={args.classes} 2-16-16-{args.classes} tanh MLP")
    print(f"frame {args.resolution}x{args.resolution}: {fms:.1f} ms  ->  {1e3 / fms:.0f} frames/s")
    print(f"train alone:   {med(alone):8.0f} steps/s  (runs: {[round(a) for a in alone]})")
    print(f"train + views: {med(viewed):8.0f} steps/s  (runs: {[round(v) for v in viewed]})")
    print(
        f"frames drawn while training: {med(drawn):.1f}/s at fps={args.fps:g} "
        f"(skipped states: {sum(skipped)})"
    )
    pairs = [v / a for v, a in zip(viewed, alone, strict=True) if a > 0]
    print(
        f"ratio with/without views: {med(viewed) / med(alone):.2f} (medians), "
        f"{med(pairs):.2f} (median of paired windows)"
    )


if __name__ == "__main__":
    main()
