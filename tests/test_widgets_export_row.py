"""The export row every widget shares (``richviz.widgets.common.export_row``): a file box and
buttons; a click runs its callback, a failing callback leaves a one-line error in the status
line and the row usable. Compare, MetricsPanel and SliceViewer build theirs with it (same
labels, widths and attribute names as before).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

import ipywidgets as widgets  # noqa: E402

from richviz import train  # noqa: E402
from richviz.widgets import Compare, MetricsPanel, SliceViewer  # noqa: E402
from richviz.widgets.common import export_row  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _row_shape(row: widgets.HBox) -> list[tuple[str, str]]:
    """(description, width) of each child of an export row, file box first."""
    return [(c.description, c.layout.width) for c in row.children]


def test_a_click_runs_its_callback_and_nothing_else() -> None:
    status = widgets.HTML(value="")
    calls: list[str] = []
    text, buttons, row = export_row(
        "my-file",
        [("CSV", lambda: calls.append("csv")), ("PNG", lambda: calls.append("png"), "110px")],
        status,
        name_width="240px",
    )
    assert isinstance(row, widgets.HBox) and row.children == (text, *buttons)
    assert (text.value, text.description, text.layout.width) == ("my-file", "file", "240px")
    assert _row_shape(row)[1:] == [("CSV", "70px"), ("PNG", "110px")]
    buttons[1].click()
    assert calls == ["png"]
    buttons[0].click()
    buttons[0].click()
    assert calls == ["png", "csv", "csv"]
    assert status.value == ""  # success: the callback writes its own status


def test_a_failing_callback_leaves_one_line_in_the_status_and_the_row_usable() -> None:
    status = widgets.HTML(value="")
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise OSError("cannot write\n  /nowhere/out.png:\tread-only")

    _text, (bad, good), _row = export_row(
        "x", [("PNG", fail), ("SVG", lambda: calls.append(2))], status
    )
    bad.click()  # does not raise
    assert calls == [1]
    assert "\n" not in status.value and "\t" not in status.value
    assert "OSError: cannot write /nowhere/out.png: read-only" in status.value
    assert "#b00020" in status.value  # the error colour of status_html
    good.click()
    assert calls == [1, 2]


def test_a_callback_error_is_escaped_in_the_status() -> None:
    status = widgets.HTML(value="")

    def fail() -> None:
        raise ValueError("<img src=x onerror=alert(1)>")

    _text, (button,), _row = export_row("x", [("CSV", fail)], status)
    button.click()
    assert "<img" not in status.value and "&lt;img" in status.value


@pytest.fixture(scope="module")
def run_path(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = dataclasses.replace(train.PRESETS["circles"], steps=3, checkpoints=2)
    # a copy: loading the panel's metrics writes the run's metrics cache
    return tiny_run(cfg, seed=0, copy_to=tmp_path_factory.mktemp("export-row") / "run")


def test_metrics_panel_buttons_write_the_file_box_name_or_say_why_not(
    run_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    panel = MetricsPanel(run_path, autoload=False)
    try:
        assert _row_shape(panel.children[-1]) == [
            ("file", "220px"), ("CSV", "70px"), ("PNG", "70px"), ("SVG", "70px"),
        ]  # fmt: skip
        assert panel.children[-1].children[0] is panel.export_name
        panel.csv_button.click()  # nothing loaded yet: an error line, not an exception
        assert "ValueError: no metrics loaded yet" in panel.status.value
        panel.load()
        assert panel.wait()
        panel.export_name.value = "from-the-box"
        panel.csv_button.click()
        out = tmp_path / "from-the-box.csv"
        assert out.read_text().splitlines()[0].startswith("step")
        assert len(out.read_text().splitlines()) == 1 + len(panel.rows)
        assert "metrics written to" in panel.status.value
    finally:
        panel.close()


def test_compare_and_slice_viewer_rows_keep_their_buttons(
    run_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    view = Compare([run_path], geometry=False, fill=None)
    try:
        row = view.children[-1]
        assert _row_shape(row) == [
            ("file", "240px"), ("CSV", "70px"), ("PNG", "70px"), ("SVG", "70px"),
        ]  # fmt: skip
        assert row.children == (view.export_name, view.csv_button, view.png_button,
                                view.svg_button)  # fmt: skip
        view.selected = []
        view.csv_button.click()
        assert "ValueError: no run selected" in view.status.value
        view.selected = [view.entries[0].name]
        view.csv_button.click()
        assert (tmp_path / "richviz-compare.csv").exists()
        assert "1 runs written to" in view.status.value
    finally:
        view.close()
    viewer = SliceViewer(run_path, resolution=8, coarse_resolution=4, device="cpu")
    try:
        row = viewer.footer.children[-1]
        assert _row_shape(row) == [
            ("file", "220px"), ("PNG", "70px"), ("SVG", "70px"), ("heatmap PNG", "110px"),
        ]  # fmt: skip
        assert row.children == (viewer.export_name, viewer.png_button, viewer.svg_button,
                                viewer.heatmap_button)  # fmt: skip
        assert viewer.wait()
        viewer.svg_button.click()
        assert [p.name for p in tmp_path.glob("richviz-slice-step*.svg")], viewer.status.value
    finally:
        viewer.close()


def test_an_export_during_the_first_load_waits_for_the_drawn_charts(
    run_path: Path, tmp_path: Path
) -> None:
    """The panel's worker sets its rows, then draws the charts. An export asked in between
    waits for the drawing: it writes the charts as drawn, and its status line is the last."""
    import threading

    from richviz.widgets import export

    panel = MetricsPanel(run_path, autoload=False)
    try:
        draw, entered, release = panel._draw, threading.Event(), threading.Event()

        def held_draw() -> None:  # the worker, between its rows and its charts
            entered.set()
            assert release.wait(10)
            draw()

        panel._draw = held_draw
        panel.load()
        assert entered.wait(60) and panel.rows  # rows are in, charts not yet drawn
        out = tmp_path / "charts.svg"
        saver = threading.Thread(target=panel.save_svg, args=(out,))
        saver.start()
        saver.join(0.3)  # on the old code it writes the undrawn charts here
        release.set()
        saver.join(60)
        assert panel.wait()
        assert out.read_text() == export.to_svg(panel.canvas())
        assert "charts written to" in panel.status.value
    finally:
        panel.close()
