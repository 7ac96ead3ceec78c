"""Cost of the storage checks: opening a run (keys, shapes, NaN/inf scan) and the metrics-cache
key (SHA-256 of every checkpoint file), against plainly ``torch.load``-ing every file.

Writes ``n`` checkpoints of a registered architecture into a temporary run folder, then times
(median of several interleaved rounds) ``Run.open``, hashing every file, and loading every file.

    .venv/bin/python benchmarks/run_storage.py [--arch mlp|resnet18] [--n 26] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from richviz.architectures import build_model
from richviz.runs import Run, RunWriter, file_hash

ARCHS = {
    "mlp": {
        "name": "mlp",
        "kwargs": {"in_features": 64, "hidden": [256, 256], "out_features": 10},
        "alpha": None,
    },
    "resnet18": {"name": "resnet18", "kwargs": {"num_classes": 10}, "alpha": None},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(ARCHS), default="mlp")
    ap.add_argument("--n", type=int, default=26)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = ARCHS[args.arch]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        w = RunWriter(out, {"architecture": spec, "data": None})
        model = build_model(spec)
        for step in range(args.n):
            w.save(step, model, {"train_acc": 0.5})
        w.finish()
        files = sorted(out.glob("*.pt"))
        mb = sum(f.stat().st_size for f in files) / 2**20
        times: dict[str, list[float]] = {"open": [], "hash": [], "load": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            run = Run.open(out)
            times["open"].append(time.perf_counter() - t)
            assert run.steps == list(range(args.n))
            t = time.perf_counter()
            for f in files:
                file_hash(f)
            times["hash"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for f in files:
                torch.load(f, map_location="cpu", weights_only=True)
            times["load"].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.arch}: {args.n} checkpoints, {mb:.1f} MiB, {args.threads} thread(s)")
        print(f"  Run.open (keys, shapes, NaN scan)  {med['open'] * 1e3:8.1f} ms")
        print(f"  SHA-256 of every file (cache key)  {med['hash'] * 1e3:8.1f} ms")
        print(f"  torch.load of every file           {med['load'] * 1e3:8.1f} ms")
        print(
            f"  hash / load = {med['hash'] / med['load']:.2f}, open / load = "
            f"{med['open'] / med['load']:.2f}"
        )


if __name__ == "__main__":
    main()
