"""Boundary magnification on the sinusoid task: sensitivity to the band width, widths 20 and 250.

Trains the presets ``sinusoid_narrow`` ([2, 20, 2] sigmoid net) and ``sinusoid`` ([2, 250, 2])
(Zavatone-Veth et al.: 400 points uniform in [-1, 1]^2, label ``x2 > 0.6 sin(7 x1 - 1)``, N(0, 1)
init, readout 1/sqrt(w), SGD lr 0.1 momentum 0.9 batch 50; 60k steps = 10k epochs) and reports

    BM(band) = mean log10 sqrt(det G) over the ``band`` fraction of grid cells with the smallest
               top-2 logit margin  -  mean over all other cells

at initialisation and at the end, for bands 0.05 / 0.1 / 0.2, on the square covering the data
(5 % margin, as in the metrics table), feature map = the hidden layer (input of the readout).

    PYTHONPATH=. .venv/bin/python benchmarks/boundary_band.py [--seeds 0 1 2] [--steps 60000]
        [--resolution 128] [--out runs/boundary_band] [--threads 1]

Runs already in ``--out`` are reused (delete them to retrain). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from richviz.checkpoints import MANIFEST, Run
from richviz.geometry import Slice, boundary_magnification, decision_field, pullback_metric
from richviz.train import train

PRESETS = {"sinusoid_narrow": 20, "sinusoid": 250}
BANDS = (0.05, 0.1, 0.2)


def magnifications(model: torch.nn.Module, s: Slice, resolution: int) -> list[float]:
    """Boundary magnification of ``model`` on slice ``s`` for each band in BANDS."""
    field = pullback_metric(model, s, resolution=resolution)
    dec = decision_field(model, s, resolution=resolution)
    return [float(boundary_magnification(field.log10_volume, dec.margin, band=b)) for b in BANDS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None, help="override the presets' 60000")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--out", default="runs/boundary_band")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows: dict[tuple[str, str], list[list[float]]] = {}
    accs: dict[str, list[float]] = {}
    for preset, width in PRESETS.items():
        for seed in args.seeds:
            path = Path(args.out) / f"{preset}_seed{seed}"
            t0 = time.perf_counter()
            if (path / MANIFEST).exists():
                run = Run.open(path)
                if run.steps[-1] != run.manifest["hparams"]["steps"]:
                    raise SystemExit(f"{path} holds an unfinished run; delete it to retrain")
            else:
                run = train(preset, path, steps=args.steps, seed=seed, progress=False)
            x = run.data().x_train
            s = Slice.covering(x, margin=0.05)
            for label, step in (("init", run.steps[0]), ("end", run.steps[-1])):
                bm = magnifications(run.load(step), s, args.resolution)
                rows.setdefault((preset, label), []).append(bm)
            acc = float(run.checkpoint(run.steps[-1]).meta.get("test_acc", float("nan")))
            accs.setdefault(preset, []).append(acc)
            print(
                f"# {preset} (w={width}) seed {seed}: {time.perf_counter() - t0:.0f} s, "
                f"final test acc {acc:.3f}, BM init/end (band 0.1) "
                f"{rows[(preset, 'init')][-1][1]:.3f} / {rows[(preset, 'end')][-1][1]:.3f}",
                flush=True,
            )

    def cell(vals: list[float]) -> str:
        if len(vals) == 1:
            return f"{vals[0]:.3f}"
        return f"{statistics.mean(vals):.3f} +- {statistics.stdev(vals):.3f}"

    print()
    print(f"seeds {args.seeds}, resolution {args.resolution}, mean +- sd over seeds")
    print()
    print("| width | checkpoint | test acc | " + " | ".join(f"band {b}" for b in BANDS) + " |")
    print("| ---: | --- | ---: | " + " | ".join("---:" for _ in BANDS) + " |")
    for preset, width in PRESETS.items():
        for label in ("init", "end"):
            vals = rows[(preset, label)]
            per_band = [cell([v[k] for v in vals]) for k in range(len(BANDS))]
            acc = cell(accs[preset]) if label == "end" else ""
            print(f"| {width} | {label} | {acc} | " + " | ".join(per_band) + " |")


if __name__ == "__main__":
    main()
