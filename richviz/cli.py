"""``richviz`` command line: train presets, inspect runs, fill the metrics cache.

    richviz presets
    richviz train PRESET --out DIR [--steps N] [--alpha A] [--seed S] [--device D]
    richviz info RUN
    richviz metrics RUN [--csv] [--layer NAME] [--device D]

``--device`` defaults to $RICHVIZ_DEVICE, else CUDA when available, else CPU.

Errors are printed as one line on stderr with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from richviz.errors import RichvizError


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[list[Any]], header: list[str], out: TextIO) -> None:
    cells = [header] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        out.write("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _cmd_presets(args: argparse.Namespace) -> int:
    from richviz.train import PRESETS

    for name, cfg in PRESETS.items():
        alpha = "-" if cfg.alpha is None else f"{cfg.alpha:g}"
        print(f"{name:18s} steps={cfg.steps:<6d} alpha={alpha:<6s} {cfg.description}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from richviz.train import train

    run = train(
        args.preset,
        args.out,
        steps=args.steps,
        alpha=args.alpha,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        data_root=args.data_root,
    )
    last = run.checkpoints[-1]
    print(
        f"wrote {len(run.checkpoints)} checkpoints to {run.path} "
        f"(final train_acc={_fmt(last.meta.get('train_acc'))}, "
        f"test_acc={_fmt(last.meta.get('test_acc'))})"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from richviz.checkpoints import Run

    run = Run.open(args.run)
    m = run.manifest
    arch = m.get("architecture") or {}
    data = m.get("data") or {}
    print(f"run        {run.path}")
    print(f"preset     {m.get('preset', '-')}")
    alpha = arch.get("alpha")
    print(
        f"model      {arch.get('name')} {arch.get('kwargs')}"
        + (f" alpha={alpha:g}" if alpha else "")
    )
    print(f"data       {data.get('name')} {data.get('kwargs') or ''}".rstrip())
    hp = {k: v for k, v in (m.get("hparams") or {}).items() if k != "checkpoint_steps"}
    print(f"seed       {m.get('seed')}")
    print("hparams    " + ", ".join(f"{k}={_fmt(v)}" for k, v in hp.items()))
    keys = ["step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time"]
    rows, bad = [], 0
    for c in run.checkpoints:
        status = "ok" if c.readable else "UNREADABLE"
        if c.readable and c.nonfinite:
            status = "nan-weights"
        bad += not c.readable
        rows.append([c.step] + [c.meta.get(k) for k in keys[1:]] + [c.path.name, status])
    _table(rows, keys + ["file", "status"], sys.stdout)
    for c in run.checkpoints:
        if c.error:
            print(f"unreadable: {c.error}")
    print(f"{len(run.checkpoints)} checkpoints, {bad} unreadable")
    return 0


_TABLE_KEYS = (
    "step",
    "train_acc",
    "test_acc",
    "d_lr",
    "nc1",
    "cka_init",
    "param_dist_sq",
    "effective_rank",
    "boundary_magnification",
)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from richviz.checkpoints import Run

    run = Run.open(args.run)
    rows = run.metrics(progress=not args.quiet, layer=args.layer, device=args.device)
    if not rows:
        raise RichvizError(f"{run.path}: no readable checkpoints")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    keys = [k for k in keys if k != "error"] + ["error"]
    if args.csv:
        w = csv.DictWriter(sys.stdout, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in keys})
    else:
        shown = [k for k in _TABLE_KEYS if k in keys]
        _table([[r.get(k) for k in shown] for r in rows], shown, sys.stdout)
        for r in rows:
            if r.get("error"):
                print(f"step {r['step']}: {r['error']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``richviz`` command."""
    p = argparse.ArgumentParser(prog="richviz", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("presets", help="list training presets").set_defaults(func=_cmd_presets)

    t = sub.add_parser("train", help="train a preset and write a checkpoint run")
    t.add_argument("preset", help="preset name (see `richviz presets`)")
    t.add_argument("--out", required=True, help="output folder for the run")
    t.add_argument("--steps", type=int, default=None, help="number of optimizer steps")
    t.add_argument("--alpha", type=float, default=None, help="output scale (large = lazy)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    t.add_argument("--data-root", default=None, help="folder of image data (CIFAR-10)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    i = sub.add_parser("info", help="show a run's manifest and checkpoints")
    i.add_argument("run", help="run folder")
    i.set_defaults(func=_cmd_info)

    m = sub.add_parser("metrics", help="compute (or read cached) metrics per checkpoint")
    m.add_argument("run", help="run folder")
    m.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    m.add_argument("--layer", default=None, help="feature layer (default: input of last Linear)")
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_cmd_metrics)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 on success, 1 on a reported error)."""
    args = build_parser().parse_args(argv)
    # torch's forward-AD decompositions warn about torch.jit.script on first use: not ours.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
    try:
        return args.func(args)
    except (RichvizError, ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"richviz {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"richviz {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
