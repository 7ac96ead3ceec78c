"""Compare: runs side by side (issue 22): the headless richviz.compare and the Compare widget.

Numbers are checked against independent computations: the rows against ``Run.metrics``, the
group bands against numpy over the runs' own metric rows, EMA against its closed form, the
fraction axis against step / last step, the geometry row's colour range against each run's
``views.run_color_limits`` computed here. Bad items (broken folder, empty folder, another task,
no step in common) each get one line and leave the rest usable.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

import traitlets  # noqa: E402

from richviz import views  # noqa: E402
from richviz.compare import (
    DASHES,
    PALETTE,
    RunColors,
    RunEntry,
    check_comparable,
    comparison_csv,
    ema,
    fill_missing,
    group_bands,
    open_runs,
    read_csv,
    run_table,
    sort_table,
    varying_hparams,
    write_csv,
    x_values,
)
from richviz.runs import Run  # noqa: E402
from richviz.runs.analysis import METRICS_CACHE  # noqa: E402
from richviz.widgets import Compare  # noqa: E402
from richviz.widgets.compare import RAW_OPACITY  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = {"steps": 6, "overrides": {"checkpoints": 4}}  # checkpoints at steps 0, 1, 2, 6
GEOMETRY = {"resolution": 16, "coarse_resolution": 16, "ellipse_density": 0, "device": "cpu"}


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (floats compared exactly)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def rows_equal(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        set(x) == set(y) and all(same(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def root(tiny_run, tmp_path_factory) -> Path:
    """Four XOR runs (alpha 0.5 and 2, seeds 0 and 1) with their metrics cached, a longer run,
    and bad folders: a broken manifest, an empty folder, a moons run, a run without a step in
    common with the others."""
    root = tmp_path_factory.mktemp("compare")
    for alpha in (0.5, 2.0):
        for seed in (0, 1):
            path = tiny_run(
                "xor", alpha=alpha, seed=seed, copy_to=root / f"a{alpha}-s{seed}", **SHORT
            )
            Run.open(path).metrics(progress=False, device="cpu")
    long = tiny_run("xor", alpha=0.5, seed=2, steps=12, overrides={"checkpoints": 5},
                    copy_to=root / "long")  # fmt: skip
    Run.open(long).metrics(progress=False, device="cpu")
    late = Path(shutil.copytree(long, root / "late"))
    for f in late.glob("step_*.pt"):
        if int(f.stem.split("_")[1]) <= 6:
            f.unlink()  # only steps after 6 left: none in common with the short runs
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    (root / "empty").mkdir()
    tiny_run("moons", steps=2, overrides={"checkpoints": 2}, copy_to=root / "moons")
    return root


def short_runs(root: Path) -> list[Path]:
    return [root / f"a{a}-s{s}" for a in (0.5, 2.0) for s in (0, 1)]


@pytest.fixture(scope="module")
def view(root):
    view = Compare(short_runs(root), geometry=False)
    assert view.wait(60) and view.loaded
    yield view
    view.close()


def drawn(view: Compare, key: str) -> dict[str, object]:
    """label -> the drawn Series of chart ``key``."""
    return {s.label: s for s in view.charts[key].drawn}


# ------------------------------------------------------------------ opening runs


def test_rows_from_the_cache_equal_run_metrics(root) -> None:
    entries = open_runs(short_runs(root))
    for e in entries:
        assert e.usable and not e.missing and e.run is None  # nothing loaded
        assert rows_equal(e.rows, Run.open(e.path).metrics(progress=False, device="cpu"))
    assert [e.name for e in entries] == ["a0.5-s0", "a0.5-s1", "a2.0-s0", "a2.0-s1"]
    assert entries[0].task == "xor · input 2" and entries[0].steps == [0, 1, 2, 6]


def test_bad_items_get_one_line_each_and_the_rest_stay_usable(root) -> None:
    items = [*short_runs(root), root / "broken", root / "empty", root / "moons", root / "late",
             root / "missing", 42]  # fmt: skip
    entries = open_runs(items)
    by = {e.name: e for e in entries}
    assert all(by[p.name].usable for p in short_runs(root))
    reasons = {
        "broken": "invalid run manifest",
        "empty": "empty folder",
        "moons": "task 'moons · input 2' differs from 'xor · input 2'",
        "late": "no checkpoint step in common with a0.5-s0",
        "missing": "no such run folder",
        "int": "int is not a run",
    }
    for name, words in reasons.items():
        error = by[name].error
        assert error is not None and words in error and "\n" not in error, (name, error)
        if name not in ("int",):
            assert str(root / name) in error  # names the folder
    view = Compare(items, geometry=False, fill=None)
    try:
        assert view.selected == [p.name for p in short_runs(root)]
        for name in reasons:
            assert view.table.checkboxes[name].disabled
            assert reasons[name].replace("'", "&#x27;") in view.table.cells[name].value
        with pytest.raises(traitlets.TraitError, match="'empty' is not compared: .*empty folder"):
            view.selected = ["a0.5-s0", "empty"]
        assert view.selected == [p.name for p in short_runs(root)]  # still usable
        assert len(drawn(view, "d_lr")) == 4
    finally:
        view.close()


def test_check_comparable_picks_the_majority_task_and_a_shared_step() -> None:
    def entry(name, task, steps):
        return RunEntry(name, task=task, task_key=task, rows=[{"step": s} for s in steps])

    entries = [entry("a", "moons", [0, 5]), entry("b", "xor", [0, 5]), entry("c", "xor", [0, 9]),
               entry("d", "xor", [7, 8])]  # fmt: skip
    check_comparable(entries)
    assert [e.usable for e in entries] == [False, True, True, False]
    assert "differs from 'xor' (the task of most runs)" in entries[0].error
    assert "no checkpoint step in common with b" in entries[3].error


def test_varying_hyperparameters_and_the_table(root) -> None:
    entries = open_runs(short_runs(root))
    assert varying_hparams(entries) == ["alpha", "seed"]
    table = run_table(entries)
    assert [(r["alpha"], r["seed"]) for r in table] == [(0.5, 0), (0.5, 1), (2.0, 0), (2.0, 1)]
    for r, e in zip(table, entries, strict=True):
        last = Run.open(e.path).metrics(progress=False)[-1]
        assert r["test_acc"] == last["test_acc"] and r["d_lr"] == last["d_lr"]
        assert r["boundary_magnification"] == last["boundary_magnification"]
        assert r["error"] == "" and r["steps"] == 4
    order = [r["name"] for r in sort_table(table, "d_lr", descending=True)]
    assert order == sorted((r["name"] for r in table), key=lambda n: -next(
        r["d_lr"] for r in table if r["name"] == n))  # fmt: skip
    missing = [{"name": "x", "v": math.nan}, {"name": "y", "v": 2.0}, {"name": "z", "v": None}]
    assert [r["name"] for r in sort_table(missing, "v")] == ["y", "x", "z"]  # missing last
    assert [r["name"] for r in sort_table(missing, "v", descending=True)] == ["y", "x", "z"]


# ------------------------------------------------------------------ colours


def test_colours_are_stable_under_reselection_and_across_charts(view) -> None:
    names = list(view.selected)
    before = {n: view.colors.style(n) for n in names}
    assert [before[n].color for n in names] == list(PALETTE[:4])
    view.selected = [names[2]]
    view.selected = [names[3], names[0], names[2]]  # another order, one run left out
    view.selected = names
    for key, chart in view.charts.items():
        if chart.widget.layout.display == "none":
            continue
        for n in names:
            s = drawn(view, key)[n]
            assert (s.color, s.line_style) == (before[n].color, before[n].dash), key
    assert all(before[n].color in view.table.cells[n].value for n in names)  # the table's swatch


def test_more_runs_than_colours_stay_distinguishable() -> None:
    colors = RunColors([f"run{i}" for i in range(160)])
    looks = {(colors.style(f"run{i}").color, colors.style(f"run{i}").dash,
              colors.style(f"run{i}").marker) for i in range(160)}  # fmt: skip
    assert len(looks) == 160
    assert colors.style("run8").color == PALETTE[0] and colors.style("run8").dash == DASHES[1]
    assert RunColors(["b", "a"]).color("a") == PALETTE[1]  # first-seen order, not sorted


def test_clicking_a_row_toggles_that_runs_curves(view) -> None:
    names = list(view.selected)
    view.table.checkboxes[names[1]].value = False  # what a click in the browser does
    assert view.selected == [n for n in names if n != names[1]]
    assert names[1] not in drawn(view, "d_lr") and len(drawn(view, "d_lr")) == 3
    view.table.checkboxes[names[1]].value = True
    assert set(view.selected) == set(names) and names[1] in drawn(view, "d_lr")
    view.selected = names


# ------------------------------------------------------------------ cursor, axes, smoothing


def test_one_cursor_for_every_chart(view) -> None:
    view.step = 5  # snaps to the nearest checkpoint step of the selected runs
    assert view.step == 6 and view.slider.value == 6
    assert all(c.cursor.x.tolist() == [7.0, 7.0] for c in view.charts.values())
    view.slider.value = 1
    assert view.step == 1 and all(c.cursor.x.tolist() == [2.0, 2.0] for c in view.charts.values())


def test_fraction_axis_puts_runs_of_different_lengths_on_zero_to_one(root) -> None:
    view = Compare([root / "a0.5-s0", root / "long"], geometry=False, fill=None)
    try:
        view.x_axis = "fraction"
        view.step = 6
        for name in ("a0.5-s0", "long"):
            steps = np.array(Run.open(root / name).steps, float)
            s = drawn(view, "d_lr")[name]
            assert np.allclose(s.x, steps / steps[-1]) and s.x[-1] == 1.0
        assert view.charts["d_lr"].cursor.x.tolist() == [0.5, 0.5]  # 6 / 12, the longest run
        assert not view.charts["d_lr"].x_log
        assert x_values([0, 3, 12], "step").tolist() == [1.0, 4.0, 13.0]
    finally:
        view.close()


def test_ema_matches_its_closed_form() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=12)
    w = 0.7
    closed = [w**t * v[0] + (1 - w) * sum(w ** (t - k) * v[k] for k in range(1, t + 1))
              for t in range(len(v))]  # fmt: skip
    assert np.allclose(ema(v, w), closed, rtol=1e-12, atol=1e-12)
    assert ema(v, 0.0).tolist() == v.tolist()
    gap = ema([1.0, math.nan, 3.0], 0.5)
    assert math.isnan(gap[1]) and gap[0] == 1.0 and gap[2] == 2.0  # NaN skipped, not zero
    with pytest.raises(ValueError, match="smoothing weight=1"):
        ema(v, 1)


def test_smoothing_draws_the_ema_with_the_raw_curve_faint(view) -> None:
    view.smoothing = 0.6
    try:
        name = view.selected[0]
        series = drawn(view, "d_lr")
        raw, smooth = series[f"{name} (raw)"], series[name]
        rows = Run.open(view.entries[0].path).metrics(progress=False)
        values = np.array([r["d_lr"] for r in rows])
        assert np.allclose(raw.y, values) and raw.opacity == RAW_OPACITY and not raw.legend
        assert np.allclose(smooth.y, ema(values, 0.6)) and smooth.opacity == 1.0
        with pytest.raises(traitlets.TraitError, match=r"smoothing=1.0 must be in \[0, 1\)"):
            view.smoothing = 1.0
        assert view.smoothing == 0.6
    finally:
        view.smoothing = 0.0


# ------------------------------------------------------------------ groups


@pytest.mark.parametrize("spread", ["std", "minmax"])
def test_group_bands_equal_mean_and_spread_computed_by_hand(view, spread) -> None:
    view.spread = spread
    view.group_by = "alpha"
    try:
        for key in ("d_lr", "test_acc", "nc1"):
            series = drawn(view, key)
            for alpha in (0.5, 2.0):
                members = [e for e in view.entries if e.hparams["alpha"] == alpha]
                y = np.array([[r[key] for r in Run.open(e.path).metrics(progress=False)]
                              for e in members])  # fmt: skip
                s = series[f"alpha={alpha:g}"]
                lo, hi = s.band
                assert np.allclose(s.y, y.mean(axis=0), rtol=1e-12) or key == "nc1"
                if spread == "std":
                    want = (y.mean(axis=0) - y.std(axis=0), y.mean(axis=0) + y.std(axis=0))
                else:
                    want = (y.min(axis=0), y.max(axis=0))
                if key == "nc1":  # a log axis: values below its floor are drawn at the floor
                    floor = view.charts[key].floors["left"]
                    want = tuple(np.maximum(w, floor) for w in want)
                    assert np.allclose(s.y, np.maximum(y.mean(axis=0), floor), rtol=1e-12)
                assert np.allclose(lo, want[0], rtol=1e-12) and np.allclose(hi, want[1], rtol=1e-12)
        for e in view.entries:  # the group's runs are listed in the table
            assert f"alpha={e.hparams['alpha']:g}" in view.table.cells[e.name].value
        assert "alpha=0.5 (2 runs)" in view.legend.value
        assert len(view.charts["d_lr"].band_marks) == 2
    finally:
        view.group_by = ""
    assert not view.table.groups and len(drawn(view, "d_lr")) == 4


def test_group_bands_over_uneven_curves() -> None:
    band = group_bands([([1, 2, 3], [1.0, 2.0, math.nan]), ([2, 3, 4], [4.0, 6.0, 8.0])])
    assert band.x.tolist() == [1, 2, 3, 4] and band.count.tolist() == [1, 2, 1, 1]
    assert band.mean.tolist() == [1.0, 3.0, 6.0, 8.0]
    assert band.lo.tolist() == [1.0, 2.0, 6.0, 8.0] and band.hi.tolist() == [1.0, 4.0, 6.0, 8.0]
    with pytest.raises(ValueError, match="spread='iqr'"):
        group_bands([], "iqr")


def test_group_by_refuses_an_unknown_hyperparameter(view) -> None:
    with pytest.raises(traitlets.TraitError, match="group_by='colour' is not a hyper-parameter"):
        view.group_by = "colour"
    assert view.group_by == ""


# ------------------------------------------------------------------ CSV, exports


def test_csv_round_trips_every_row_with_its_hyperparameters(view, tmp_path) -> None:
    path = view.save_csv(tmp_path / "runs.csv")
    back = read_csv(path)
    entries = view.selected_entries()
    want = [{"run": e.name, **e.hparams, **row} for e in entries for row in e.rows]
    assert len(back) == len(want) == 16
    for got, row in zip(back, want, strict=True):
        assert set(got) == set(row)
        assert all(same(got[k], row[k]) for k in row), [k for k in row if not same(got[k], row[k])]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left
    # a hyper-parameter named like a metric column keeps its own column
    clash = RunEntry("x", hparams={"step": 3}, rows=[{"step": 0, "d_lr": 0.5}])
    assert comparison_csv([clash]).splitlines()[0] == "run,hparam.step,step,d_lr"
    assert read_csv(write_csv(tmp_path / "c.csv", [clash])) == [
        {"run": "x", "hparam.step": 3, "step": 0, "d_lr": 0.5}
    ]


def test_png_and_svg_show_the_legend_in_run_colours(view, tmp_path) -> None:
    svg = view.save_svg(tmp_path / "cmp.svg").read_text()
    for name in view.selected:
        assert f">{name}</text>" in svg and view.colors.color(name) in svg
    assert ">D_LR</text>" in svg and ">test accuracy</text>" in svg
    png = view.save_png(tmp_path / "cmp.png", scale=1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png.resolve()) in view.status.value


# ------------------------------------------------------------------ background metrics


def test_missing_metrics_are_computed_through_the_runs_cache(tiny_run, tmp_path) -> None:
    paths = [tiny_run("xor", seed=s, copy_to=tmp_path / f"s{s}", **SHORT) for s in (0, 1)]
    for p in paths:
        assert not (p / METRICS_CACHE).exists()
    entries = open_runs(paths)
    assert entries[0].missing == [0, 1, 2, 6] and "d_lr" not in entries[0].rows[-1]
    view = Compare(paths, geometry=False)
    try:
        assert view.wait(120) and view.loaded and view.progress.value == 1.0
        for e, p in zip(view.entries, paths, strict=True):
            run = Run.open(p)
            assert run.pending_metrics() == []  # stored in the run's own metrics.json
            assert rows_equal(e.rows, run.metrics(progress=False)) and not e.missing
        assert np.isfinite(drawn(view, "d_lr")["s0"].y).all()
    finally:
        view.close()
    done = []
    assert fill_missing(open_runs(paths), progress=done.append) == []  # nothing left to do
    assert done == [0.5, 1.0]


# ------------------------------------------------------------------ geometry


def test_the_geometry_row_shares_the_cursor_and_the_union_colour_range(root, tmp_path) -> None:
    view = Compare(short_runs(root)[:3], geometry=True, geometry_options=GEOMETRY)
    try:
        assert view.wait(180)
        row = view.geometry
        assert row is not None and row.names == view.selected[:2]
        assert row.colors == [view.colors.color(n) for n in row.names]
        ranges = []
        for name in row.names:
            run = Run.open(root / name)
            fields = [views.log10_volume_field(run.load(s, device="cpu"), row.slice)
                      for s in run.steps]  # fmt: skip
            ranges.append(views.run_color_limits(fields))
        union = [min(r[0] for r in ranges), max(r[1] for r in ranges)]
        assert np.allclose(row.color_limits, union, rtol=1e-9)
        view.step = 2
        assert row.step == 2 and all(v.step == 2 for v in row.viewers)
        assert view.wait(60)
        svg = view.save_svg(tmp_path / "all.svg").read_text()  # charts, legend and geometry
        assert "left out" not in view.status.value and ">D_LR</text>" in svg
        for name in row.names:
            assert f">{name} · step 2</text>" in svg  # each view's title, in the export
        assert svg.count("<image ") == 3  # two heatmaps and the one shared colour bar
        view.selected = [view.selected[2], view.selected[0]]
        assert view.geometry is not row and view.geometry.names == view.selected
        # grouped charts: each view's swatch is its group's colour (that of its curve) ...
        view.group_by = "alpha"
        group_of = {e.name: label for label, members in view.groups() for e in members}
        expected = [view.group_colors.color(group_of[n]) for n in view.geometry.names]
        assert view.geometry.colors == expected
        assert all(c in t.value for c, t in zip(expected, view.geometry.titles, strict=True))
        view.selected = view.selected[::-1]  # a row rebuilt while grouped starts grouped
        assert view.geometry.colors == [
            view.group_colors.color(group_of[n]) for n in view.geometry.names
        ]
        view.group_by = ""  # ... and its run's colour again without groups
        assert view.geometry.colors == [view.colors.color(n) for n in view.geometry.names]
    finally:
        view.close()


def test_manifest_of_a_cached_run_names_its_hyperparameters(root) -> None:
    manifest = json.loads((root / "a2.0-s1" / "run.json").read_text())
    entry = open_runs([root / "a2.0-s1"])[0]
    assert entry.hparams["alpha"] == manifest["architecture"]["alpha"] == 2.0
    assert entry.hparams["seed"] == manifest["seed"] == 1 and entry.num_classes == 2


def test_a_sweeps_table_and_sweep_points_open_like_folders(root) -> None:
    from richviz.summary import summarize

    paths = short_runs(root)[:2]
    tables = {str(p): Run.open(p).metrics(progress=False) for p in paths}
    from_table = open_runs(tables)
    from_points = open_runs([summarize(p, rows) for p, rows in tables.items()])
    for a, b, p in zip(from_table, from_points, paths, strict=True):
        assert a.name == b.name == p.name and a.usable and b.usable
        assert rows_equal(a.rows, tables[str(p)]) and rows_equal(b.rows, tables[str(p)])
        assert a.hparams == b.hparams and a.hparams["alpha"] == 0.5
    view = Compare(tables, geometry=False, fill=None)
    try:
        assert view.selected == [p.name for p in paths] and len(drawn(view, "d_lr")) == 2
    finally:
        view.close()


def test_the_headless_package_imports_no_widgets(fresh_imports) -> None:
    bad = ["richviz.widgets", "ipywidgets", "bqplot", "richviz.runs.analysis"]
    assert fresh_imports("import richviz.compare", bad) == []


def test_a_stopped_fill_stops_there_and_blames_no_run(tiny_run, tmp_path) -> None:
    class Stop(Exception):
        pass

    paths = [tiny_run("xor", seed=s, copy_to=tmp_path / f"s{s}", **SHORT) for s in (0, 1)]
    entries = open_runs(paths)
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:  # during the first run's rows
            raise Stop

    with pytest.raises(Stop):
        fill_missing(entries, check=check)
    assert all(e.usable for e in entries) and entries[1].missing == [0, 1, 2, 6]


def test_close_leaves_no_row_widget_open(root) -> None:
    view = Compare(short_runs(root), geometry=False, fill=None)
    boxes = list(view.table.checkboxes.values())
    marks = [m for c in view.charts.values() for m in c.marks]
    view.close()
    assert all(b.comm is None for b in boxes) and all(m.comm is None for m in marks)
    view.close()  # twice is harmless


def test_the_cursor_starts_at_the_last_step_or_the_one_asked(root) -> None:
    view = Compare(short_runs(root), geometry=False, fill=None)
    assert view.step == 6 and view.slider.value == 6
    view.close()
    view = Compare(short_runs(root), step=2, geometry=False, fill=None)
    assert view.step == 2 and view.charts["d_lr"].cursor.x.tolist() == [3.0, 3.0]
    view.close()
