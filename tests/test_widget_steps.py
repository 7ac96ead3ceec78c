"""The widgets' one step rule (``richviz.widgets.common.Step``), on every route a step enters.

A step that is not a readable checkpoint snaps to the nearest one (ties: the earlier); bools,
non-integers, NaN, infinities and negative numbers raise ``TraitError`` naming the trait and
leave the value as it was. Routes: setting the trait, the constructor's ``step=``, a
``traitlets.link`` from another widget, the sliders (and Play). After each, a later change
still works (no stuck state) and linked views agree. Also: a run folder path instead of a Run.

One tiny run (circles, 12 steps, checkpoints at steps 0, 1, 3, 12) from the shared
``tiny_run`` factory; the widgets use tiny grids and do not load the metrics (``autoload``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

import traitlets  # noqa: E402

from richviz import train  # noqa: E402
from richviz.errors import ArgumentError, RunError  # noqa: E402
from richviz.runs import Run  # noqa: E402
from richviz.widgets import CheckpointBrowser, Explorer, MetricsPanel, SliceViewer  # noqa: E402
from richviz.widgets.common import nearest_step  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = [0, 1, 3, 12]
VIEWER = {"resolution": 8, "coarse_resolution": 4, "ellipse_density": 2}
PANEL = {"autoload": False}

#: (asked, shown): between two steps (a tie goes to the earlier), above the last, huge,
#: integer-valued floats and numpy ints (below the first step, 0, is negative: refused;
#: test_nearest_step covers a first step above 0)
SNAPS = [
    (2, 1),  # tie between 1 and 3: the earlier
    (5, 3),
    (8, 12),
    (7, 3),  # 7.5 is the midpoint of 3 and 12
    (13, 12),
    (10**12, 12),
    (10**40, 12),
    (3.0, 3),
    (np.int64(11), 12),
    (0, 0),
    (12, 12),
]
#: refused with a TraitError: bools, non-integers, NaN, infinities, negatives, wrong types
REFUSED = [True, False, 2.5, -0.5, math.nan, math.inf, -math.inf, -1, -(10**12), "3", None]


@pytest.fixture(scope="module")
def run_path(tiny_run) -> Path:
    cfg = dataclasses.replace(train.PRESETS["circles"], steps=12, checkpoints=4)
    path = tiny_run(cfg, seed=0)
    assert Run.open(path).steps == STEPS
    return path


@pytest.fixture(scope="module")
def run(run_path: Path) -> Run:
    return Run.open(run_path)


def make(kind: str, run, **kw):
    """A widget of ``kind`` over ``run`` with tiny settings."""
    if kind == "explorer":
        return Explorer(run, viewer=VIEWER, panel=PANEL, device="cpu", **kw)
    if kind == "browser":
        return CheckpointBrowser(run, device="cpu", **kw)
    if kind == "viewer":
        return SliceViewer(run, device="cpu", **VIEWER, **kw)
    return MetricsPanel(run, **PANEL, **kw)


KINDS = ["explorer", "browser", "viewer", "panel"]


@pytest.fixture(scope="module")
def widgets(run: Run):
    made = {kind: make(kind, run) for kind in KINDS}
    yield made
    for w in made.values():
        w.close()


def steps_of(widget) -> tuple[int, ...]:
    """The step of the widget and, for an Explorer, of each of its views."""
    if isinstance(widget, Explorer):
        return (widget.step, widget.browser.step, widget.viewer.step, widget.panel.step)
    return (widget.step,)


def settle(widget, expected: int) -> None:
    """Wait for background work; what is loaded / on screen is the expected step."""
    assert widget.wait(60)
    views = [widget.browser, widget.viewer] if isinstance(widget, Explorer) else [widget]
    for view in views:
        if isinstance(view, CheckpointBrowser):
            assert view.loaded_step == expected
        if isinstance(view, SliceViewer):
            assert view.shown_step == expected
            assert view.step_slider.value == expected
        if isinstance(view, MetricsPanel):
            assert view.slider.value == expected


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("step", "steps", "expected"),
    [
        (2, [0, 1, 3], 1),
        (2, [1, 3], 1),
        (0, [5, 9], 5),
        (7, [5, 9], 5),
        (8, [5, 9], 9),
        (100, [5, 9], 9),
        (5, [5], 5),
        (6, [5], 5),
        (9, [5, 9], 9),
    ],
)
def test_nearest_step(step, steps, expected):
    assert nearest_step(step, steps) == expected


# ----------------------------------------------------------------------------- trait set


@pytest.mark.parametrize("kind", KINDS)
def test_setting_a_non_checkpoint_step_snaps(widgets, kind):
    widget = widgets[kind]
    for asked, shown in SNAPS:
        widget.step = asked
        assert steps_of(widget) == (shown,) * len(steps_of(widget)), (kind, asked)
        assert type(widget.step) is int
    settle(widget, 12)
    widget.step = 1  # a later change still works
    assert steps_of(widget) == (1,) * len(steps_of(widget))
    settle(widget, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_refused_steps_leave_the_widget_as_it_was(widgets, kind):
    widget = widgets[kind]
    widget.step = 3
    for bad in REFUSED:
        with pytest.raises(traitlets.TraitError, match="step"):
            widget.step = bad
        assert steps_of(widget) == (3,) * len(steps_of(widget)), (kind, bad)
    widget.step = 9  # still usable: snaps to 12
    assert steps_of(widget) == (12,) * len(steps_of(widget))
    settle(widget, 12)


def test_explorer_views_snap_and_agree_whichever_view_is_set(widgets):
    ex = widgets["explorer"]
    for view in (ex.browser, ex.viewer, ex.panel, ex):
        for asked, shown in [(2, 1), (8, 12), (5, 3)]:
            view.step = asked
            assert steps_of(ex) == (shown,) * 4, (type(view).__name__, asked)
        with pytest.raises(traitlets.TraitError):
            view.step = 2.5
        assert steps_of(ex) == (3,) * 4
    settle(ex, 3)


def test_docs_example_step_100(widgets):
    ex = widgets["explorer"]
    ex.step = 100  # docs/widgets.md: moves all three views (to the nearest checkpoint)
    assert steps_of(ex) == (12,) * 4
    ex.step = 0
    settle(ex, 0)


# ----------------------------------------------------------------------------- constructor


@pytest.mark.parametrize("kind", KINDS)
def test_constructor_step_snaps(run: Run, kind):
    for asked, shown in [(2, 1), (8, 12), (10**9, 12)]:
        widget = make(kind, run, step=asked)
        try:
            assert steps_of(widget) == (shown,) * len(steps_of(widget)), (kind, asked)
            settle(widget, shown)
            widget.step = 0  # not stuck
            assert steps_of(widget) == (0,) * len(steps_of(widget))
            settle(widget, 0)
        finally:
            widget.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [True, 2.5, math.nan, -1])
def test_constructor_refuses_bad_steps(run: Run, kind, bad):
    with pytest.raises(traitlets.TraitError, match="step"):
        make(kind, run, step=bad)


# ----------------------------------------------------------------------------- links


def test_a_link_between_two_widgets_never_leaves_them_disagreeing(run: Run):
    browser, viewer, panel = make("browser", run), make("viewer", run), make("panel", run)
    try:
        links = [
            traitlets.link((browser, "step"), (viewer, "step")),
            traitlets.link((viewer, "step"), (panel, "step")),
        ]
        for source in (browser, viewer, panel):
            for asked, shown in SNAPS:
                source.step = asked
                assert (browser.step, viewer.step, panel.step) == (shown,) * 3, asked
            for bad in (True, 2.5, math.nan, -3):
                with pytest.raises(traitlets.TraitError):
                    source.step = bad
                assert (browser.step, viewer.step, panel.step) == (12,) * 3
        browser.step = 2
        assert (browser.step, viewer.step, panel.step) == (1,) * 3
        assert browser.wait(60) and viewer.wait(60)
        assert browser.loaded_step == 1 and viewer.shown_step == 1
        for link in links:
            link.unlink()
    finally:
        for w in (browser, viewer, panel):
            w.close()


# ----------------------------------------------------------------------------- sliders


def test_sliders_and_play_move_every_view(widgets):
    ex = widgets["explorer"]
    slider = ex.viewer.step_slider
    assert [v for _, v in slider.options] == STEPS
    slider.value = 3
    assert steps_of(ex) == (3,) * 4
    with pytest.raises(traitlets.TraitError):
        slider.value = 5  # not an option of the slider: refused by ipywidgets
    assert slider.value == 3 and steps_of(ex) == (3,) * 4
    ex.viewer.step_play.value = 1  # Play moves the slider's index
    assert slider.value == 1 and steps_of(ex) == (1,) * 4
    ex.step = 7  # the trait moves the slider to the snapped step
    assert slider.value == 3 and ex.panel.slider.value == 3
    settle(ex, 3)


def test_standalone_panel_slider(widgets):
    panel = widgets["panel"]
    panel.slider.value = 1
    assert panel.step == 1
    panel.play.value = STEPS.index(12)
    assert panel.step == 12 and panel.slider.value == 12
    panel.step = 2
    assert panel.slider.value == 1
    with pytest.raises(traitlets.TraitError):
        panel.slider.value = 2
    assert panel.step == 1


# ----------------------------------------------------------------------------- other routes


def test_select_is_exact(widgets):
    browser = widgets["browser"]
    with pytest.raises(ArgumentError, match="step=5"):
        browser.select(5)  # a row is picked exactly; the trait snaps
    browser.select(3)
    assert browser.step == 3
    settle(browser, 3)


def test_a_widget_without_readable_checkpoints_refuses_every_step(run_path: Path, tmp_path):
    import shutil

    copy = Path(shutil.copytree(run_path, tmp_path / "broken"))
    for ck in Run.open(copy).checkpoints:
        ck.path.write_bytes(b"not a checkpoint")
    empty = Run.open(copy)
    assert empty.steps == []
    for kind in KINDS:
        widget = make(kind, empty)
        try:
            with pytest.raises(traitlets.TraitError, match="no readable checkpoint"):
                widget.step = 0
        finally:
            widget.close()
        with pytest.raises(traitlets.TraitError, match="no readable checkpoint"):
            make(kind, empty, step=3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("as_path", [str, Path])
def test_a_run_folder_path_is_opened(run_path: Path, kind, as_path):
    widget = make(kind, as_path(run_path), step=5)
    try:
        assert isinstance(widget.run if kind != "viewer" else widget.source.run, Run)
        assert steps_of(widget) == (3,) * len(steps_of(widget))
        settle(widget, 3)
    finally:
        widget.close()


@pytest.mark.parametrize("kind", ["explorer", "browser", "panel"])
def test_a_path_that_is_not_a_run_is_one_line(tmp_path, kind):
    with pytest.raises(RunError) as info:
        make(kind, tmp_path / "no-such-run")
    assert "\n" not in str(info.value) and "no-such-run" in str(info.value)
