"""SweepView: several points selected (pick clicks, a box) and opened in Compare; coinciding
points counted; seed bands (mean +- population std per x value) checked against numpy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bqplot", reason="the view needs bqplot")
traitlets = pytest.importorskip("traitlets", reason="the view needs ipywidgets")

from richviz.summary import summarize  # noqa: E402
from richviz.widgets import SweepView  # noqa: E402
from richviz.widgets.sweep_view import coinciding  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ALPHAS, SEEDS = (1.0, 10.0), (0, 1, 2)


@pytest.fixture(scope="module")
def sweep(tiny_run, tmp_path_factory) -> dict[Path, list[dict]]:
    """Six XOR runs (alpha 1 and 10 x seeds 0, 1, 2; copies: metrics are cached in them) and
    their metric rows."""
    from richviz.runs import Run

    root = tmp_path_factory.mktemp("sweep-view")
    out = {}
    for alpha in ALPHAS:
        for seed in SEEDS:
            path = tiny_run(
                "xor", steps=3, alpha=alpha, seed=seed, overrides={"checkpoints": 2},
                copy_to=root / f"alpha{alpha:g}-seed{seed}",
            )  # fmt: skip
            out[path] = Run.open(path).metrics(progress=False, probe_size=64)
    return out


@pytest.fixture
def view(sweep):
    v = SweepView(sweep, x="alpha", color="none", compare={"geometry": False})
    yield v
    v.close()


def click(view: SweepView, key: str, path: Path) -> None:
    """The element_click bqplot sends for the point of ``path`` in chart ``key``."""
    for mark in view.marks[key]:
        paths = view._mark_paths[id(mark)]
        if path in paths:
            mark._handle_custom_msg(
                {"event": "element_click", "data": {"index": paths.index(path)}}, []
            )
            return
    raise AssertionError(f"{path} not drawn in {key}")


def test_pick_clicks_toggle_points_and_open_compare(view, sweep) -> None:
    paths = list(sweep)
    view.click_mode = "pick"
    assert view.mode_buttons.value == "pick" and view.compare_button.disabled
    click(view, "d_lr", paths[0])
    click(view, "test_acc", paths[4])
    click(view, "d_lr", paths[2])
    assert view.chosen == [str(paths[0]), str(paths[4]), str(paths[2])]
    click(view, "d_lr", paths[4])  # a second click removes it
    assert view.chosen == [str(paths[0]), str(paths[2])]
    assert view.explorer is None  # pick mode opens nothing
    assert not view.compare_button.disabled and "(2)" in view.compare_button.description
    # the chosen points are ringed in every chart
    ring = view.chosen_marks["d_lr"]
    x = view.x_values()
    y = np.array([s.final["d_lr"] for s in view.summaries])
    idx = [i for i, s in enumerate(view.summaries) if str(s.path) in view.chosen]
    assert list(ring.x) == list(x[idx]) and list(ring.y) == list(y[idx])
    # "Compare selected" (the button) opens exactly those runs below
    view.compare_button.click()
    cmp = view.compare
    assert cmp is not None and view.explorer_box.children == (cmp,)
    assert sorted(str(e.path) for e in cmp.entries) == sorted(view.chosen)
    assert sorted(cmp.selected) == sorted(Path(c).name for c in view.chosen)
    assert cmp.wait(120)
    # opening a run closes the comparison
    view.click_mode = "open"
    click(view, "d_lr", paths[1])
    assert view.compare is None and view.explorer is not None
    assert view.selected == str(paths[1])


def test_a_box_selects_the_points_inside(view, sweep) -> None:
    view.click_mode = "box"
    for key, fig in view.figures.items():
        if fig.layout.display != "none":
            assert fig.interaction is view.brushes[key]
    x = view.x_values()
    y = np.array([s.final["d_lr"] for s in view.summaries])
    # a box around the alpha = 10 points, above their median D_LR (independently computed)
    ten = x == 10.0
    cut = float(np.median(y[ten]))
    expected = [
        str(s.path) for s, a, b in zip(view.summaries, ten, y, strict=True) if a and b >= cut
    ]
    brush = view.brushes["d_lr"]
    brush.selected_x = np.array([9.0, 11.0])
    brush.selected_y = np.array([cut, float(y.max()) + 1.0])
    brush.brushing = True
    brush.brushing = False  # the drag ends: the box applies
    assert view.chosen == expected and 1 <= len(expected) <= 3
    # the front end may sync the corners after the drag ended: the box applies then too
    view.chosen = []
    brush.selected_y = np.array([float(y.min()) - 1.0, float(y.max()) + 1.0])
    assert view.chosen == [str(s.path) for s, a in zip(view.summaries, ten, strict=True) if a]
    view.chosen = expected
    view.click_mode = "open"
    assert all(fig.interaction is None for fig in view.figures.values())
    with pytest.raises(traitlets.TraitError, match="not one of this view's runs"):
        view.chosen = ["/no/such/run"]
    assert view.chosen == expected


def test_seed_bands_are_the_mean_and_spread_over_seeds(view, sweep) -> None:
    for key in ("d_lr", "test_acc"):
        ((value, band),) = view.bands[key]  # colour "none": one group
        assert value is None
        assert list(band.x) == list(ALPHAS) and list(band.count) == [3, 3]
        for j, alpha in enumerate(ALPHAS):
            ys = np.array(
                [
                    rows[-1][key]
                    for p, rows in sweep.items()
                    if summarize(p, rows).params["alpha"] == alpha
                ]
            )
            assert band.mean[j] == pytest.approx(ys.mean(), abs=1e-12)
            assert band.hi[j] - band.mean[j] == pytest.approx(ys.std(ddof=0), abs=1e-12)
            assert band.mean[j] - band.lo[j] == pytest.approx(ys.std(ddof=0), abs=1e-12)
        # drawn: the mean line through the means, bars from lo to hi, under the points
        fig = view.figures[key]
        bars, means = fig.marks[0], fig.marks[1]
        assert list(means.y) == pytest.approx(list(band.mean))
        finite = np.asarray(bars.y, float)
        assert np.nanmin(finite) == pytest.approx(band.lo.min())
        assert np.nanmax(finite) == pytest.approx(band.hi.max())
        assert fig.marks.index(view.marks[key][0]) > fig.marks.index(means)
    # coloured by seed: one run per (seed, alpha), nothing repeats, no band
    view.color_param = "seed"
    assert view.bands["d_lr"] == []


def test_coinciding_points_get_a_count_label(view) -> None:
    x = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0, math.nan])
    y = np.array([0.5, 0.5000001, 0.9, 0.2, 0.2, 0.1, 0.1])
    assert coinciding(x, y, 1e-3) == [[0, 1], [3, 4]]
    assert coinciding(x, y, 1.0) == [[0, 1, 2], [3, 4]]
    # test accuracy: the tiny runs share values, each cluster labelled with its size
    key = "test_acc"
    xs = view.x_values()
    ys = np.array([s.final[key] for s in view.summaries])
    span = float(np.ptp(ys))
    clusters = coinciding(xs, ys, 0.01 * span if span > 0 else 1e-12)
    label = view.count_marks[key]
    assert list(label.text) == [f"×{len(c)}" for c in clusters]
    assert list(label.x) == [xs[c[0]] for c in clusters]
    if clusters:
        assert label in view.figures[key].marks
