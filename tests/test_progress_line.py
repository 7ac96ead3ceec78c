"""ProgressLine: the bar notebooks show ahead of their long cells (app mode)."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")

from richviz.errors import ArgumentError  # noqa: E402
from richviz.widgets.progress import ProgressLine  # noqa: E402


def test_track_moves_the_bar_and_names_the_work() -> None:
    line = ProgressLine()
    assert line.children == (line.bar, line.label)
    train = line.track("training <moons>")
    assert line.bar.value == 0.0 and line.label.value == "training &lt;moons&gt;: starting"
    train(50, 200)
    assert line.bar.value == 0.25 and line.bar.bar_style == "info"
    assert line.label.value == "training &lt;moons&gt;: 50 / 200"
    train(200, 200)
    assert line.bar.value == 1.0 and line.bar.bar_style == "success"
    assert line.label.value == "training &lt;moons&gt;: done (200)"
    metrics = line.track("metrics")  # a second stage starts from zero
    assert line.bar.value == 0.0
    metrics(0, 0)  # nothing to do counts as done
    assert line.bar.value == 1.0 and line.label.value == "metrics: done (0)"


def test_a_richviz_loop_reports_to_it(tiny_run, tmp_path) -> None:
    """Run.metrics reports (done, total) to the callable: the bar ends full."""
    from richviz.checkpoints import Run

    line = ProgressLine()
    seen = []
    track = line.track("metrics")

    def report(done: int, total: int) -> None:
        seen.append((done, total))
        track(done, total)

    run = Run.open(tiny_run("moons", steps=20, copy_to=tmp_path / "run"))  # metrics cache
    run.metrics(progress=report, probe_size=50)
    assert seen[-1][0] == seen[-1][1] == len(run.steps)
    assert line.bar.value == 1.0 and line.label.value == f"metrics: done ({len(run.steps)})"


def test_bad_counts_are_one_line_errors() -> None:
    report = ProgressLine().track("x")
    with pytest.raises(ArgumentError, match=r"^progress: done and total must be >= 0"):
        report(-1, 3)
