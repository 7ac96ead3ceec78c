"""``richviz`` command line: train presets, inspect runs, fill the metrics cache.

    richviz presets
    richviz train PRESET --out DIR [--steps N] [--alpha A] [--lr LR] [--train-fraction F]
                  [--label-noise F] [--cap-lr] [--seed S] [--device D]
    richviz info RUN
    richviz metrics RUN [--csv] [--layer NAME] [--outputs last_linear|learned]
                   [--device D]
    richviz info PATH --factory SPEC [--data NAME]      (checkpoints from Lightning, Hugging
    richviz metrics PATH --factory SPEC --data NAME      Face, safetensors or a loop; SPEC:
                                                         torchvision:NAME, timm:NAME,
                                                         module:function or file.py:function)
    richviz train PRESET --out DIR --sweep alpha=0.1,1,10 --sweep seed=0,1 [--scheduler ADDR]
    richviz sweep RUN... [--scheduler ADDRESS] [--workers N] [--layer L] [--probe-size N]
    richviz animate RUN --out demo.gif|demo.mp4 [--fps N] [--show volume|regions|entropy]
                    [--duration S] [--resolution N] [--curves] [--layer L] [--device D]
    richviz app [NOTEBOOK] [--port N] [--open]     (a notebook served as an app by Voila on
                                                    127.0.0.1; default: the quick start)

``--device`` defaults to $RICHVIZ_DEVICE, else CUDA when available, else CPU.

Errors are printed as one line on stderr with a non-zero exit status, never a traceback
(exit status 2 when an optional dependency such as dask is missing, and for ``animate``'s bad
inputs: a missing run, an unknown suffix, ``--fps`` outside (0, 60], an ``--out`` under a file).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from richviz.app import add_app_parser
from richviz.errors import ArgumentError, MissingDependencyError, RichvizError

__all__ = [
    "build_parser",
    "main",
]


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
    if args.sweep:
        return _train_sweep(args)
    from richviz.train import CatapultWarning, train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CatapultWarning)
        run = train(
            args.preset,
            args.out,
            steps=args.steps,
            alpha=args.alpha,
            seed=args.seed,
            device=args.device,
            progress=not args.quiet,
            data_root=args.data_root,
            lr=args.lr,
            train_fraction=args.train_fraction,
            label_noise=args.label_noise,
            cap_lr=args.cap_lr,
        )
    for w in caught:
        if issubclass(w.category, CatapultWarning):
            print(f"richviz train: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    last = run.checkpoints[-1]
    print(
        f"wrote {len(run.checkpoints)} checkpoints to {run.path} "
        f"(final train_acc={_fmt(last.meta.get('train_acc'))}, "
        f"test_acc={_fmt(last.meta.get('test_acc'))})"
    )
    return 0


def _train_sweep(args: argparse.Namespace) -> int:
    from richviz.sweep import parse_grid, train_sweep

    grid = parse_grid(args.sweep)
    overrides = {}
    if args.steps is not None and "steps" not in grid:
        overrides["steps"] = args.steps
    for name in ("alpha", "lr", "train_fraction", "label_noise"):
        if getattr(args, name) is not None and name not in grid:
            overrides[name] = getattr(args, name)
    runs = train_sweep(
        args.preset,
        args.out,
        grid,
        scheduler=args.scheduler,
        workers=args.workers,
        seed=args.seed,
        overrides=overrides,
        device=args.device,
        data_root=args.data_root,
        progress=not args.quiet,
    )
    rows = []
    for run in runs:
        last = run.checkpoints[-1]
        rows.append(
            [
                run.path.name,
                len(run.checkpoints),
                last.meta.get("train_acc"),
                last.meta.get("test_acc"),
            ]
        )
    _table(rows, ["run", "checkpoints", "train_acc", "test_acc"], sys.stdout)
    print(f"{len(runs)} runs in {args.out}")
    return 0


def run_status(complete: bool | None) -> str:
    """``complete``, ``incomplete (...)`` or ``unknown (...)`` for a run's ``complete`` flag."""
    if complete is None:
        return "unknown (the run does not record whether training finished)"
    return "complete" if complete else "INCOMPLETE (training was stopped or is still running)"


def _open_run(args: argparse.Namespace) -> Any:
    """``Run.open(RUN)``, or ``Run.from_checkpoints(PATH, --factory, --data, --output)``."""
    from pathlib import Path

    from richviz.errors import ArgumentError, RunError
    from richviz.runs import MANIFEST, Run

    if args.factory is None:
        path = Path(args.run)
        if path.is_dir() and not (path / MANIFEST).is_file():
            raise RunError(
                f"{path}: not a richviz run (no {MANIFEST}); for checkpoints written by "
                "Lightning, Hugging Face, safetensors or your own loop pass --factory SPEC "
                "(torchvision:NAME, timm:NAME, module:function or file.py:function)"
            )
        return Run.open(args.run)
    if args.command == "metrics" and args.data is None:
        raise ArgumentError("--data NAME is needed for the metrics of checkpoints (--factory)")
    output: Any = args.output
    if isinstance(output, str) and output.lstrip("-").isdigit():
        output = int(output)
    return Run.from_checkpoints(args.run, args.factory, data=args.data, output=output)


def _info_foreign(run: Any) -> None:
    """The header of ``richviz info`` for checkpoints opened with ``--factory``."""
    m = run.manifest
    source = m.get("source") or {}
    data = m.get("data") or {}
    print(f"checkpoints {run.path}")
    print(f"layout     {source.get('layout')} ({', '.join(source.get('formats') or [])})")
    print(f"logged     {source.get('log') or '-'}")
    print(f"model      {m.get('factory')}")
    print(f"data       {data.get('name') or '- (pass --data NAME for metrics)'}")


def _cmd_info(args: argparse.Namespace) -> int:
    run = _open_run(args)
    if args.factory is not None:
        return _info_table(run, foreign=True)
    m = run.manifest
    arch = m.get("architecture") or {}
    data = m.get("data") or {}
    print(f"run        {run.path}")
    print(f"status     {run_status(run.complete)}")
    print(f"preset     {m.get('preset', '-')}")
    alpha = arch.get("alpha")
    print(
        f"model      {arch.get('name')} {arch.get('kwargs')}"
        + (f" alpha={alpha:g}" if isinstance(alpha, (int, float)) else "")
    )
    print(f"data       {data.get('name')} {data.get('kwargs') or ''}".rstrip())
    hp = {k: v for k, v in (m.get("hparams") or {}).items() if k != "checkpoint_steps"}
    print(f"seed       {m.get('seed')}")
    print("hparams    " + ", ".join(f"{k}={_fmt(v)}" for k, v in hp.items()))
    return _info_table(run)


def _info_table(run: Any, foreign: bool = False) -> int:
    """The checkpoint table of ``richviz info`` and the unreadable checkpoints' reasons."""
    if foreign:
        _info_foreign(run)
    keys = ["step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time"]
    rows, bad = [], 0
    for c in run.checkpoints:
        status = "ok" if c.readable else "UNREADABLE"
        if c.readable and c.nonfinite:
            status = "nan-weights"
        bad += not c.readable
        name = c.path.name
        if foreign and c.path.parent != run.path:  # checkpoint-N/model.safetensors
            name = f"{c.path.parent.name}/{c.path.name}"
        rows.append([c.step] + [c.meta.get(k) for k in keys[1:]] + [name, status])
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
    "confinement",
    "isotropy",
    "nc1",
    "cka_init",
    "param_dist_sq",
    "effective_rank",
    "boundary_magnification",
)


def _cmd_metrics(args: argparse.Namespace) -> int:
    run = _open_run(args)
    rows = run.metrics(
        progress=not args.quiet, layer=args.layer, outputs=args.outputs, device=args.device
    )
    if not rows:
        raise RichvizError(f"{run.path}: no readable checkpoints")
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    keys = [k for k in keys if k not in ("error", "note")] + ["error"]
    if any(r.get("note") for r in rows):
        keys.append("note")
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
            elif r.get("note"):
                print(f"step {r['step']}: {r['note']}")
        print(
            "1 - d_lr = confinement x isotropy (share of the feature kernel inside the outputs' "
            "span x its evenness there); compare with step 0 and with sibling runs"
        )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from richviz.sweep import sweep_metrics

    if args.probe_size < 1:
        raise ArgumentError(f"--probe-size {args.probe_size} must be positive")
    tables = sweep_metrics(
        args.runs,
        scheduler=args.scheduler,
        workers=args.workers,
        layer=args.layer,
        probe_size=args.probe_size,
        progress=not args.quiet,
    )
    if args.combined:
        shown = ["run"] + [
            k for k in _TABLE_KEYS if any(k in r for t in tables.values() for r in t)
        ]
        rows = [
            [path.name] + [r.get(k) for k in shown[1:]] for path, t in tables.items() for r in t
        ]
        _table(rows, shown, sys.stdout)
    for path, table in tables.items():
        if not args.combined:
            print(f"== {path}")
            shown = [k for k in _TABLE_KEYS if any(k in r for r in table)]
            _table([[r.get(k) for k in shown] for r in table], shown, sys.stdout)
        for r in table:
            if r.get("error"):
                print(f"{path.name} step {r['step']}: {r['error']}")
    return 0


class _BadInput(ArgumentError):
    """A bad input of a subcommand found before any work: one line, exit status 2."""


def _cmd_animate(args: argparse.Namespace) -> int:
    from richviz.animation.plan import check_output, make_plan
    from richviz.errors import CheckpointError
    from richviz.features import layer_names
    from richviz.runs import Run
    from richviz.validation import check_choice, check_int

    try:  # every input checked before any work, so a bad one writes nothing
        check_output(args.out)
        run = Run.open(args.run)
        make_plan(args.out, len(run.steps), args.fps, args.show, args.duration)
        check_int(args.resolution, "--resolution", low=2, high=1024)
        check_choice(args.layer, "--layer", tuple(layer_names(run.template())))
    except (ArgumentError, CheckpointError, OSError) as exc:
        raise _BadInput(str(exc)) from None
    from richviz.widgets.slice_animation import save_animation

    anim = save_animation(
        run, args.out, fps=args.fps, show=args.show, duration=args.duration,
        resolution=args.resolution, curves=args.curves, layer=args.layer, device=args.device,
        progress=not args.quiet,
    )  # fmt: skip
    w, h = anim.size
    print(f"wrote {anim.frames} frames ({w} x {h} px, {anim.fps:g} fps) to {anim.path}")
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
    t.add_argument(
        "--alpha", type=float, default=None, help="output scale in [1e-4, 1e6] (large = lazy)"
    )
    t.add_argument(
        "--lr", type=float, default=None, help="learning rate (before the alpha scaling)"
    )
    t.add_argument(
        "--train-fraction", type=float, default=None, help="keep this fraction of the train set"
    )
    t.add_argument(
        "--label-noise", type=float, default=None, help="fraction of train labels flipped"
    )
    t.add_argument(
        "--cap-lr",
        action="store_true",
        help="alpha-scaled SGD: cap the step at the measured stability bound instead of warning",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: auto)")
    t.add_argument("--data-root", default=None, help="folder of image data (CIFAR-10)")
    t.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="train one run per combination on a Dask cluster (repeatable; keys: seed, alpha, "
        "lr, width, steps, ...); runs go to OUT/KEY=V,...",
    )
    _cluster_args(t)
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    i = sub.add_parser("info", help="show a run's manifest and checkpoints")
    i.add_argument("run", help="run folder (or, with --factory, a folder of checkpoints)")
    _factory_args(i)
    i.set_defaults(func=_cmd_info)

    m = sub.add_parser("metrics", help="compute (or read cached) metrics per checkpoint")
    m.add_argument("run", help="run folder (or, with --factory, a folder of checkpoints)")
    _factory_args(m)
    m.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    m.add_argument("--layer", default=None, help="feature layer (default: input of last Linear)")
    m.add_argument(
        "--outputs",
        choices=("last_linear", "learned"),
        default="last_linear",
        help="D_LR against the last Linear's own output (default) or, for alpha-scaled runs, "
        "the learned function alpha*(f - f0) (undefined at step 0)",
    )
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_cmd_metrics)

    w = sub.add_parser("sweep", help="metrics of many runs on a Dask cluster, one task per row")
    w.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    _cluster_args(w)
    w.add_argument("--layer", default=None, help="feature layer (default: input of last Linear)")
    w.add_argument("--probe-size", type=int, default=1000, help="probe samples per run")
    w.add_argument("--combined", action="store_true", help="one table for all runs")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    w.set_defaults(func=_cmd_sweep)

    a = sub.add_parser("animate", help="write a run's slice view over training as GIF or MP4")
    a.add_argument("run", help="run folder")
    a.add_argument("--out", required=True, help="the file to write: NAME.gif or NAME.mp4")
    a.add_argument("--fps", type=float, default=4.0, help="frames per second in (0, 60]")
    a.add_argument(
        "--show", choices=("volume", "regions", "entropy"), default="volume",
        help="heatmap: log10 volume element, class regions or softmax entropy",
    )  # fmt: skip
    a.add_argument(
        "--duration", type=float, default=None, metavar="S",
        help="seconds (checkpoints held or spread to fill it); default one frame per checkpoint",
    )  # fmt: skip
    a.add_argument("--resolution", type=int, default=96, help="grid points per side")
    a.add_argument("--curves", action="store_true", help="metric curves with a moving cursor")
    a.add_argument("--layer", default="penultimate", help="feature layer of the metric")
    a.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_animate)
    add_app_parser(sub)
    return p


def _factory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--factory",
        default=None,
        metavar="SPEC",
        help="open PATH's checkpoints (Lightning, Hugging Face, safetensors, *.pt) with this "
        "model: torchvision:NAME, timm:NAME, module:function or file.py:function",
    )
    p.add_argument("--data", default=None, help="data set name for the metrics (with --factory)")
    p.add_argument(
        "--output",
        default=None,
        help="index or key of the logits when the model returns a tuple or dict (with --factory)",
    )


def _worker_count(text: str) -> int:
    """``--workers``: an integer in [1, the machine's bound] (the parser's one-line error)."""
    from richviz.sweep.cluster import check_workers

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a worker count (an integer >= 1)")
    try:
        return check_workers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster)",
    )
    p.add_argument(
        "--workers", type=_worker_count, default=2, help="worker processes of the local cluster"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 1 reported error, 2 missing extra)."""
    args = build_parser().parse_args(argv)
    # torch's forward-AD decompositions warn about torch.jit.script on first use: not ours.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return status
    except BrokenPipeError:
        # the reader went away (`richviz info RUN | head -1`): stop quietly, like other tools;
        # point stdout at devnull so the interpreter's final flush does not complain again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status of a Unix tool killed by a closed pipe
    except (MissingDependencyError, _BadInput) as exc:
        print(f"richviz {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    # OSError: a missing file, a file where a folder should be (`--out afile/sub`), a full disk
    except (RichvizError, ValueError, OSError) as exc:
        print(f"richviz {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"richviz {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
