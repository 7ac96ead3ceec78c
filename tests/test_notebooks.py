"""Every tutorial notebook executes top to bottom (nbclient, a kernel of this venv).

The notebooks run in a temporary copy of ``notebooks/`` so the demo runs they train land in a
temporary ``runs/`` folder. The quick start runs twice in the same folder: re-running a notebook
must not fail because its run directory already exists.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat")
NotebookClient = pytest.importorskip(
    "nbclient", reason="notebook tests need nbclient (and a Jupyter kernel)"
).NotebookClient
pytest.importorskip("ipykernel", reason="notebook tests need a Jupyter kernel (ipykernel)")
pytest.importorskip("ipywidgets", reason="the notebooks need ipywidgets")
pytest.importorskip("bqplot", reason="the notebooks need bqplot")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
TUTORIALS = [
    "01_quickstart",
    "02_geometry",
    "03_lazy_vs_rich",
    "04_grokking",
    "05_your_model",
    "06_playground",
    "07_richness",
    "08_sweeps",
]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CELL_TIMEOUT_S = 300
# Printed numbers a notebook's text relies on: (pattern with float groups, check on the floats).
PRINTED_CHECKS = {
    "08_sweeps": [
        # richness is not accuracy: the rich runs are richer and magnify the boundary more,
        # at (nearly) the same test accuracy
        (
            r"D_LR (\d+\.\d+) vs (\d+\.\d+); boundary magnification ([-+]\d+\.\d+) vs "
            r"([-+]\d+\.\d+); test accuracy (\d+\.\d+) vs (\d+\.\d+)",
            lambda d_rich, d_lazy, bm_rich, bm_lazy, a_rich, a_lazy: (
                d_rich < d_lazy - 0.05 and bm_rich > bm_lazy and abs(a_rich - a_lazy) <= 0.05
            ),
        ),
    ],
    "01_quickstart": [
        # training magnified the boundary: >= +0.2 decades, and >= 0.2 above step 0
        (
            r"went from ([-+.\d]+) decades at step 0 to ([-+.\d]+) at step",
            lambda before, after: after >= 0.2 and after - before >= 0.2,
        ),
    ],
    "03_lazy_vs_rich": [
        # equal accuracy (within 2 %) over nine runs, D_LR's change from step 0 ordered by alpha
        (
            r"Test accuracy [\d.]+% to [\d.]+% over all nine runs \(spread ([\d.]+)%\); final "
            r"D_LR ([\d.]+) at alpha = 1, ([\d.]+) at alpha = 10, ([\d.]+) at alpha = 1000",
            lambda spread, d1, d10, d1000: spread < 2 and d1 < d10 and d1 < d1000 - 0.1,
        ),
        (
            r"Change of D_LR from each run's step 0: ([-+][\d.]+) \+- ([\d.]+) at alpha = 1, "
            r"([-+][\d.]+) \+- ([\d.]+) at alpha = 10, ([-+][\d.]+) \+- ([\d.]+) at alpha = 1000",
            lambda c1, s1, c10, s10, c1000, s1000: c1 < c10 < c1000 and c1 + s1 < c10 - s10,
        ),
        (r"Equal accuracy, richness ordered by alpha", lambda: True),
        # NC1 barely moves in 100 steps while D_LR at alpha = 1 falls a lot
        (
            r"NC1 moves by at most ([\d.]+)% of its step-0 value in 100 steps \(largest over the "
            r"nine runs\); D_LR at alpha = 1 by ([\d.]+)%",
            lambda nc, dlr: nc < 10 and dlr > 30,
        ),
        # the geometry: the rich run reshapes the plane's metric far more than the lazy one
        (
            r"The rich run \(alpha = 1\) reshapes the geometry (\d+) x more than the lazy one",
            lambda ratio: ratio >= 1000,
        ),
    ],
    "04_grokking": [
        # D_LR falls as test accuracy jumps
        (
            r"While memorising \(step (\d+), test accuracy (\d+)%\) D_LR is ([\d.]+); when "
            r"test accuracy has jumped to (\d+)% \(step (\d+)\) it is ([\d.]+)",
            lambda s0, a0, d0, a1, s1, d1: a0 < 50 and a1 >= 90 and s1 > s0 and d1 < d0 - 0.1,
        ),
        (r"D_LR falls as test accuracy jumps", lambda: True),
    ],
    "02_geometry": [
        # the relative view's story: grown almost everywhere, most in the boundary band
        (
            r"([-+.\d]+) decades on average near the boundary, ([-+.\d]+) elsewhere; it shrank "
            r"on (\d+)% of the plane",
            lambda near, far, shrunk: near > far > 0 and shrunk <= 5,
        ),
        # entropy and effective volume are larger on class-boundary cells than elsewhere
        (r"entropy: mean ([\d.]+) on boundary cells, ([\d.]+) elsewhere", lambda a, b: a > 2 * b),
        (
            r"effective log10 volume: mean ([-\d.]+) on boundary cells, ([-\d.]+)",
            lambda a, b: a > b,
        ),
        # the digits CNN: accurate, and the whole plane magnified by orders of magnitude
        (
            r"reached (\d+)% test accuracy\. On this plane training changed the volume element "
            r"by ([-+.\d]+) decades \(median; ([-+.\d]+) to ([-+.\d]+)\)",
            lambda acc, median, lo, hi: acc >= 90 and median >= 2 and lo > 0,
        ),
        (r"max relative error ([-+.\de]+)", lambda e: e < 1e-9),  # the sphere check
        (r"step +0: R in .*?negative on (\d+)%", lambda pct: pct >= 90),
    ],
}
# An exception reported by a widget's status line, e.g. "step 400: RuntimeError: ...".
ERROR_PATTERN = re.compile(r"\b[A-Z]\w*(?:Error|Exception): ")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of notebooks/ (the kernels' working directory)."""
    path = tmp_path_factory.mktemp("notebooks")
    for nb in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(nb, path / nb.name)
    return path


def execute(path: Path) -> nbformat.NotebookNode:
    """Run a notebook in a fresh ``python3`` kernel, shut it down; raise on any cell error."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def widget_views(nb: nbformat.NotebookNode) -> int:
    return sum(WIDGET_VIEW in out.get("data", {}) for out in outputs(nb))


def widget_errors(nb: nbformat.NotebookNode) -> list[str]:
    """Error messages in the saved widget state (status lines of background computations)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    found = []
    for model in state.values():
        for value in model.get("state", {}).values():
            if isinstance(value, str) and ERROR_PATTERN.search(value):
                found.append(re.sub(r"<[^>]+>", "", value)[:300])
    return found


def stream_tracebacks(nb: nbformat.NotebookNode) -> list[str]:
    """Tracebacks printed to a stream (e.g. an exception in a widget's background thread)."""
    return [
        o.text[-500:]
        for o in outputs(nb)
        if o.output_type == "stream" and "Traceback (most recent call last)" in o.text
    ]


#: executed notebooks, so the claim tests reuse test_notebook_executes's run
EXECUTED: dict[str, nbformat.NotebookNode] = {}


def test_the_tutorials_are_there() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == TUTORIALS


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_is_committed_clean(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name}: no code cells"
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, (
            f"{name}: commit the notebook without outputs (Kernel > Restart and Clear Outputs)"
        )
    assert nb.cells[0].cell_type == "markdown", f"{name}: start with a markdown introduction"


def test_quickstart_is_one_code_cell() -> None:
    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    assert sum(c.cell_type == "code" for c in nb.cells) == 1


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_executes(
    name: str, workdir: Path, jupyter_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JUPYTER_PATH comes first in the kernel-spec search: python3 is this interpreter.
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_data_dir))
    # The demo models are tiny: one intra-op thread is faster, and far faster on a shared CPU.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = 2 if name == "01_quickstart" else 1  # the second run finds its run dir in place
    for attempt in range(runs):
        t0 = time.perf_counter()
        nb = execute(workdir / f"{name}.ipynb")
        print(f"{name} run {attempt + 1}: {time.perf_counter() - t0:.1f} s")
        errors = [o for o in outputs(nb) if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
        assert widget_views(nb) >= 1, f"{name}: no widget was displayed"
        assert not stream_tracebacks(nb), f"{name}: {stream_tracebacks(nb)}"
        assert not widget_errors(nb), f"{name}: a widget reports {widget_errors(nb)}"
        printed = "".join(o.text for o in outputs(nb) if o.output_type == "stream")
        for pattern, check in PRINTED_CHECKS.get(name, []):
            found = re.search(pattern, printed)
            assert found, f"{name}: no printed line matches {pattern!r}"
            values = [float(g) for g in found.groups()]
            assert check(*values), f"{name}: {found.group(0)!r} fails its check"
    EXECUTED[name] = nb


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in outputs(nb) if o.output_type == "stream")


def test_richness_notebook_claims(
    workdir: Path, jupyter_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every claim of 07_richness, re-checked from the numbers the notebook computed."""
    nb = EXECUTED.get("07_richness")
    if nb is None:  # run alone: execute it here
        monkeypatch.setenv("JUPYTER_PATH", str(jupyter_data_dir))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        nb = execute(workdir / "07_richness.ipynb")
    text = stream_text(nb)
    line = next(ln for ln in text.splitlines() if ln.startswith("RICHVIZ_CLAIMS "))
    claims = json.loads(line.removeprefix("RICHVIZ_CLAIMS "))
    cnn = claims["cnn"]
    for label, s in cnn.items():  # the factorisation, on every run
        assert 1 - s["d_lr"] == pytest.approx(s["confinement"] * s["isotropy"], abs=1e-12), label
        assert s["d_lr_0"] == pytest.approx(cnn["no BatchNorm, lr 0.05"]["d_lr_0"], abs=1e-6)
    plain, bn = cnn["no BatchNorm, lr 0.05"], cnn["BatchNorm, lr 0.05"]
    # richness is not accuracy: same test accuracy, different D_LR
    assert abs(plain["test_acc"] - bn["test_acc"]) < 0.02 and plain["test_acc"] > 0.95
    assert plain["d_lr"] - bn["d_lr"] > 0.1
    assert "Richness is not accuracy: equal accuracy" in text
    # BatchNorm trains richer, through isotropy (both fully confined)
    assert bn["d_lr"] < plain["d_lr"] < plain["d_lr_0"]
    assert "BatchNorm trains richer here" in text and "NOT reproduce" not in text
    assert min(plain["confinement"], bn["confinement"]) > 0.95
    assert bn["isotropy"] - plain["isotropy"] > 0.1
    assert plain["effective_rank"] < 9 < bn["effective_rank"]
    # learning rate: larger trains richer; the low rate is undertrained (stated as a caveat)
    lrs = [cnn[f"no BatchNorm, lr {lr}"] for lr in ("0.005", "0.05", "0.2")]
    assert lrs[0]["d_lr"] > lrs[1]["d_lr"] > lrs[2]["d_lr"]
    assert "D_LR falls as the learning rate grows" in text
    assert lrs[0]["train_acc"] < 0.95 and "Caveat: lr 0.005 reaches only" in text
    # grokking: memorising reads lazier than init (confinement drops), generalising rich
    g = claims["grokking"]
    peak, final = g["peak"], g["final"]
    assert peak["test_acc"] < 0.5 and peak["step"] >= g["memorised_step"]
    assert peak["d_lr"] > g["d_lr_0"] and final["d_lr"] < peak["d_lr"] - 0.2
    assert final["test_acc"] > 0.9 and final["d_lr"] < g["d_lr_0"]
    assert final["confinement"] - peak["confinement"] > 0.3
    assert "The grokking finding reproduces" in text
    assert all(math.isfinite(v) for s in cnn.values() for v in s.values())
    # the comparisons (Compare) list the same final numbers as the table printed above
    for label, name in claims["compare_runs"].items():
        if label in cnn:
            shown = claims["compare"][name]
            assert shown["d_lr"] == pytest.approx(cnn[label]["d_lr"], abs=1e-12), label
            assert shown["test_acc"] == pytest.approx(cnn[label]["test_acc"], abs=1e-12), label


def test_lazy_vs_rich_notebook_claims(
    workdir: Path, jupyter_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """03_lazy_vs_rich's numbers, re-checked from the per-run values the notebook computed:
    the seed bands are the mean and population spread over seeds, the geometry ratio is the
    ratio of the printed changes, the Compare shows the runs it says, on one colour range."""
    import numpy as np

    nb = EXECUTED.get("03_lazy_vs_rich")
    if nb is None:  # run alone: execute it here
        monkeypatch.setenv("JUPYTER_PATH", str(jupyter_data_dir))
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        nb = execute(workdir / "03_lazy_vs_rich.ipynb")
    text = stream_text(nb)
    line = next(ln for ln in text.splitlines() if ln.startswith("RICHVIZ_CLAIMS "))
    claims = json.loads(line.removeprefix("RICHVIZ_CLAIMS "))
    runs = claims["runs"]
    assert len(runs) == 9 and {r["seed"] for r in runs.values()} == {0, 1, 2}
    for alpha, band in claims["bands"].items():
        group = [r for r in runs.values() if f"{r['alpha']:g}" == alpha]
        final = np.array([r["d_lr"] for r in group])
        change = final - np.array([r["d_lr_0"] for r in group])
        assert band["d_lr"] == pytest.approx(final.mean(), abs=1e-12)
        assert band["d_lr_hi"] - band["d_lr"] == pytest.approx(final.std(ddof=0), abs=1e-12)
        assert band["d_lr"] - band["d_lr_lo"] == pytest.approx(final.std(ddof=0), abs=1e-12)
        assert band["change"] == pytest.approx(change.mean(), abs=1e-12)
        assert band["change_sd"] == pytest.approx(change.std(ddof=0), abs=1e-12)
        assert f"{band['change']:+.3f} +- {band['change_sd']:.3f} at alpha = {alpha}" in text
    # alpha = 1 lowers D_LR on every seed; alpha = 1000 leaves it where it started
    assert all(r["d_lr"] < r["d_lr_0"] - 0.1 for r in runs.values() if r["alpha"] == 1)
    assert all(abs(r["d_lr"] - r["d_lr_0"]) < 0.01 for r in runs.values() if r["alpha"] == 1000)
    accs = [r["test_acc"] for r in runs.values()]
    assert max(accs) - min(accs) < 0.02
    geo = claims["geometry"]
    moved = geo["moved"]
    assert geo["ratio"] == pytest.approx(moved["1"] / moved["1000"], rel=1e-12)
    assert f"reshapes the geometry {geo['ratio']:.0f} x more" in text
    assert moved["1"] > moved["10"] > moved["1000"] and moved["1000"] < 1e-4
    # the comparison: three seed-0 runs in the geometry row, one shared range = the union
    assert claims["compare"]["group_by"] == "alpha" and len(claims["compare"]["selected"]) == 9
    assert claims["compare"]["geometry"] == [
        f"digits_alpha_{a}_seed_0" for a in ("1", "10", "1000")
    ]
    lows, highs = zip(*geo["ranges"].values(), strict=True)
    assert geo["shared"] == pytest.approx([min(lows), max(highs)], abs=1e-12)
    assert all(lims == pytest.approx(geo["shared"], abs=1e-12) for lims in geo["viewer_limits"])
