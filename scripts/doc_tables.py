"""Regenerate every numeric table that README.md and docs/*.md quote from training runs.

Each table sits in a document between two markers::

    <!-- table: grokking -->
    | step | ... |
    <!-- /table -->

and is computed here from fresh runs (presets of :mod:`richviz.train`, metrics of
:meth:`richviz.checkpoints.Run.metrics`), on the CPU with ``--threads`` intra-op threads
(default 1: the conditions the documents state for their numbers).

    python scripts/doc_tables.py                  # print every table as markdown
    python scripts/doc_tables.py --check          # exit 1 if a document's table differs
    python scripts/doc_tables.py --write          # rewrite the tables in the documents
    python scripts/doc_tables.py --check --cheap  # only the cheap tables (what the tests run)
    python scripts/doc_tables.py --check grokking_quick digits_alpha   # chosen tables

Timing figures (benchmarks) are measurements of a machine, not of the code, and are not here.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(
    r"^<!-- table: (?P<name>[a-z0-9_]+) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S
)

__all__ = ["TABLES", "Table", "compute", "documents", "find_tables", "main", "replace_tables"]


# --------------------------------------------------------------------------- formatting


def pct(x: float) -> str:
    """An accuracy in per cent, one decimal (``100 %`` when it rounds to 100)."""
    v = round(100 * x, 1)
    return "100 %" if v == 100 else f"{v:.1f} %"


def f2(x: float) -> str:
    return f"{x:.2f}"


def f3(x: float) -> str:
    return f"{x:.3f}"


def near_one(x: float) -> str:
    """Three decimals, four close to 1 (where similarities differ)."""
    return f"{x:.4f}" if x >= 0.995 else f"{x:.3f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "---") -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([align] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- runs


class Runs:
    """Trains each (preset, settings) once into ``folder`` and keeps its metrics rows."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._rows: dict[tuple, list[dict[str, Any]]] = {}

    def rows(
        self,
        preset: str,
        steps: int | None = None,
        alpha: float | None = None,
        seed: int = 0,
        probe_size: int = 1000,
    ) -> list[dict[str, Any]]:
        from richviz.checkpoints import Run
        from richviz.train import train

        key = (preset, steps, alpha, seed, probe_size)
        if key not in self._rows:
            out = self.folder / f"{preset}-steps{steps}-alpha{alpha}-seed{seed}"
            if (out / "run.json").is_file() and Run.open(out).complete:
                run = Run.open(out)
            else:
                run = train(preset, out, steps=steps, alpha=alpha, seed=seed, progress=False)
            rows = run.metrics(progress=False, probe_size=probe_size)
            self._rows[key] = sorted(rows, key=lambda r: r["step"])
        return self._rows[key]


# --------------------------------------------------------------------------- the tables


def digits_alpha(runs: Runs) -> str:
    """README: lazy vs rich on digits (400 steps, seed 0)."""
    out = []
    for alpha in (1, 10, 1000):
        r = runs.rows("digits", alpha=alpha)
        first, last = r[0], r[-1]
        out.append(
            [
                str(alpha),
                f3(first["d_lr"]),
                f"**{f3(last['d_lr'])}**",
                pct(last["train_acc"]),
                pct(last["test_acc"]),
                near_one(last["cka_init"]),
                f2(last["nc1"]),
            ]
        )
    header = ["alpha", "D_LR step 0", "D_LR final", "train acc", "test acc"]
    return markdown(header + ["similarity to init", "NC1"], out)


def digits_alpha_runs(runs: Runs) -> str:
    """docs/runs.md: the same runs with the parameter distance."""
    out = []
    for alpha in (1, 10, 1000):
        r = runs.rows("digits", alpha=alpha)
        first, last = r[0], r[-1]
        out.append(
            [
                str(alpha),
                f3(first["d_lr"]),
                f"**{f3(last['d_lr'])}**",
                pct(last["train_acc"]),
                pct(last["test_acc"]),
                near_one(last["cka_init"]),
                f"{last['param_dist_sq']:.3g}",
                f2(last["nc1"]),
            ]
        )
    header = ["alpha", "D_LR step 0", "D_LR final", "train acc", "test acc", "cka_init"]
    return markdown(header + ["\\|theta - theta_0\\|^2", "NC1"], out)


def metrics_alpha(runs: Runs) -> str:
    """docs/metrics.md: D_LR's factors over alpha on digits (400 steps, seed 0)."""
    out = []
    for alpha, label in (
        (0.1, "0.1 (catapults at step 21)"),
        (0.3, "0.3"),
        (1, "1"),
        (1000, "1000"),
    ):
        r = runs.rows("digits", alpha=alpha)
        last = r[-1]
        low = min(row["d_lr"] for row in r)
        out.append(
            [
                label,
                f"{f3(last['d_lr'])} ({f3(low)})",
                f3(last["confinement"]),
                f3(last["isotropy"]),
                pct(last["test_acc"]),
            ]
        )
    return markdown(["alpha", "D_LR final (min)", "confinement", "isotropy", "test acc"], out)


def _over_steps(rows: list[dict[str, Any]], steps: Sequence[int], keys: Sequence[tuple]) -> str:
    by_step = {r["step"]: r for r in rows}
    missing = [s for s in steps if s not in by_step]
    if missing:
        raise SystemExit(f"doc_tables: no checkpoint at steps {missing}")
    out = [[label] + [f2(by_step[s][key]) for s in steps] for label, key in keys]
    return markdown(["step"] + [str(s) for s in steps], out)


GROKKING_KEYS = (("train acc", "train_acc"), ("test acc", "test_acc"), ("D_LR", "d_lr"))


def grokking(runs: Runs) -> str:
    """README: modular addition, 8000 steps, seed 0."""
    steps = (0, 47, 170, 1166, 2216, 3054, 4210, 8000)
    return _over_steps(runs.rows("modular_addition"), steps, GROKKING_KEYS)


def grokking_runs(runs: Runs) -> str:
    """docs/runs.md: the same run at more checkpoints, with the similarity to init."""
    steps = (0, 25, 47, 65, 170, 614, 1166, 2216, 3054, 4210, 5804, 8000)
    keys = GROKKING_KEYS + (("cka_init", "cka_init"),)
    return _over_steps(runs.rows("modular_addition"), steps, keys)


def grokking_quick(runs: Runs) -> str:
    """docs/runs.md: the reduced preset the tests run (1400 steps, seed 0)."""
    steps = (0, 9, 37, 159, 329, 678, 1400)
    keys = GROKKING_KEYS + (("cka_init", "cka_init"),)
    return _over_steps(runs.rows("modular_addition_quick"), steps, keys)


def _cnn(
    runs: Runs, steps: int, presets: Sequence[tuple[str, str]], extra: bool, bold: set[str]
) -> str:
    """One row per preset; the final D_LR of the presets in ``bold`` in bold (as the text
    discusses them)."""
    out = []
    for preset, label in presets:
        r = runs.rows(preset, steps=steps, probe_size=500)
        last = r[-1]
        cells = [label, pct(last["test_acc"]), pct(last["train_acc"])]
        cells.append(f"**{f3(last['d_lr'])}**" if preset in bold else f3(last["d_lr"]))
        if extra:
            cells.append(f3(min(row["d_lr"] for row in r)))
        cells += [f3(last["confinement"]), f3(last["isotropy"])]
        cells.append(f"{last['effective_rank']:.{2 if extra else 1}f}")
        out.append(cells)
    header = ["preset" if extra else "run", "test acc", "train acc", "D_LR final"]
    header += ["min over training"] if extra else []
    header += ["confinement", "isotropy", "eff. rank" if extra else "feature eff. rank"]
    return markdown(header, out)


def cnn_150(runs: Runs) -> str:
    """README: notebook 07's digits CNN comparisons, 150 steps, probe 500."""
    presets = (
        ("digits_cnn", "no BatchNorm, lr 0.05 (`digits_cnn`)"),
        ("digits_cnn_bn", "BatchNorm, lr 0.05 (`digits_cnn_bn`)"),
        ("digits_cnn_lr_low", "no BatchNorm, lr 0.005 (`digits_cnn_lr_low`)"),
        ("digits_cnn_lr_high", "no BatchNorm, lr 0.2 (`digits_cnn_lr_high`)"),
    )
    return _cnn(runs, 150, presets, extra=False, bold={"digits_cnn_bn", "digits_cnn_lr_high"})


def cnn_300(runs: Runs) -> str:
    """docs/runs.md: every digits CNN preset, 300 steps, probe 500."""
    presets = (
        ("digits_cnn", "`digits_cnn`"),
        ("digits_cnn_bn", "`digits_cnn_bn`"),
        ("digits_cnn_lr_low", "`digits_cnn_lr_low` (0.005)"),
        ("digits_cnn_lr_high", "`digits_cnn_lr_high` (0.2)"),
        ("digits_cnn_small_data", "`digits_cnn_small_data` (10 %)"),
        ("digits_cnn_label_noise", "`digits_cnn_label_noise` (20 %)"),
    )
    return _cnn(runs, 300, presets, extra=True, bold={"digits_cnn_bn"})


@dataclass(frozen=True)
class Table:
    """A table's computation and whether it is cheap enough for the test suite (< ~30 s)."""

    compute: Callable[[Runs], str]
    cheap: bool = False


TABLES: dict[str, Table] = {
    "digits_alpha": Table(digits_alpha),
    "digits_alpha_runs": Table(digits_alpha_runs),
    "metrics_alpha": Table(metrics_alpha),
    "grokking": Table(grokking),
    "grokking_runs": Table(grokking_runs),
    "grokking_quick": Table(grokking_quick, cheap=True),
    "cnn_150": Table(cnn_150),
    "cnn_300": Table(cnn_300),
}


# --------------------------------------------------------------------------- documents


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def find_tables(text: str) -> dict[str, str]:
    """``{name: body}`` of the marked tables in ``text``."""
    return {m["name"]: m["body"] for m in MARKER.finditer(text)}


def replace_tables(text: str, tables: dict[str, str]) -> str:
    """``text`` with the bodies of the marked tables named in ``tables`` replaced."""

    def sub(m: re.Match) -> str:
        body = tables.get(m["name"], m["body"])
        return f"<!-- table: {m['name']} -->\n{body}<!-- /table -->"

    return MARKER.sub(sub, text)


def compute(names: Sequence[str], work: Path, threads: int) -> dict[str, str]:
    """The markdown of each named table, from runs trained (once) into ``work``."""
    import torch

    torch.set_num_threads(threads)
    runs = Runs(work)
    return {name: TABLES[name].compute(runs) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="tables to compute (default: every marked table)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a document differs")
    mode.add_argument("--write", action="store_true", help="rewrite the documents' tables")
    p.add_argument("--cheap", action="store_true", help="only the tables cheap enough for tests")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--work", type=Path, default=None, help="keep the runs in this folder")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    docs = {path: path.read_text(encoding="utf-8") for path in documents(args.root)}
    marked = {name: path for path, text in docs.items() for name in find_tables(text)}
    unknown = sorted(set(marked) - set(TABLES))
    if unknown:
        print(f"doc_tables: unknown tables marked in the documents: {unknown}", file=sys.stderr)
        return 2
    names = args.names or [n for n in TABLES if n in marked]
    names = [n for n in names if TABLES[n].cheap] if args.cheap else names
    bad = sorted(
        set(names) - set(TABLES) if not (args.check or args.write) else set(names) - set(marked)
    )
    if bad:
        print(f"doc_tables: unknown or unmarked tables: {bad}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="doc-tables-") as tmp:
        fresh = compute(names, args.work or Path(tmp), args.threads)
    if not (args.check or args.write):
        for name in names:
            where = marked[name].relative_to(args.root) if name in marked else "not marked"
            print(f"<!-- table: {name} ({where}) -->")
            print(fresh[name])
        return 0
    differ = 0
    for path, text in docs.items():
        old = find_tables(text)
        for name in sorted(set(old) & set(fresh)):
            if old[name] != fresh[name]:
                differ += 1
                diff = difflib.unified_diff(
                    old[name].splitlines(),
                    fresh[name].splitlines(),
                    "documented",
                    "fresh",
                    n=0,
                    lineterm="",
                )
                print(f"{path.relative_to(args.root)}: table {name!r} differs", file=sys.stderr)
                print("\n".join(diff), file=sys.stderr)
        if args.write:
            new = replace_tables(text, fresh)
            if new != text:
                from richviz.atomic import atomic_write_text

                atomic_write_text(new, path)
                print(f"wrote {path.relative_to(args.root)}")
    if args.check and differ:
        return 1
    print(f"doc_tables: {len(names)} tables checked, {differ} differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
