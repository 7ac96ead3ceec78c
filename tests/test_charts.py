"""The chart helper and the server-side exports (no training: fast)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

from richviz.errors import ArgumentError  # noqa: E402
from richviz.widgets import chart_axes, charts, export  # noqa: E402


def test_power_labels_and_js_keys():
    assert chart_axes.power_label(-3) == "10⁻³" and chart_axes.power_label(0) == "10⁰"
    assert chart_axes.power_label(12) == "10¹²"
    # String(number) in JavaScript, the key bqplot looks tick labels up by
    assert chart_axes.js_number(1.0) == "1" and chart_axes.js_number(1000.0) == "1000"
    assert chart_axes.js_number(1e-3) == "0.001" and chart_axes.js_number(1e-6) == "0.000001"
    assert chart_axes.js_number(1e-7) == "1e-7" and chart_axes.js_number(1e21) == "1e+21"


@pytest.mark.parametrize("lo,hi", [(1e-16, 1.2), (0.18, 0.46), (1.0, 401.0), (3e-5, 2e9)])
def test_log_axis_ticks_are_decades_at_most_six(lo, hi):
    a, b, exps = chart_axes.log_axis_ticks(lo, hi)
    assert a <= lo and b >= hi and 2 <= len(exps) <= chart_axes.MAX_TICKS
    assert math.log10(a) == exps[0] and len(set(np.diff(exps))) <= 1


def chart_with(series, **kw) -> charts.LineChart:
    chart = charts.LineChart("t", **kw)
    chart.set_series(series)
    return chart


def test_axes_exist_before_display_and_log_labels_are_powers():
    chart = charts.LineChart("t", y_log=True, right=True)
    # every axis is in the figure from construction: nothing is added after display
    axes = list(chart.figure.axes)
    chart.set_series([charts.Series("a", [1, 10, 100], [1e-3, 1e-1, 1.0])])
    assert list(chart.figure.axes) == axes and len(axes) == 3
    x_axis, left, _right = axes
    assert list(left.tick_labels.values()) == ["10⁻³", "10⁻²", "10⁻¹", "10⁰"]
    assert set(left.tick_labels) == {"0.001", "0.01", "0.1", "1"}
    assert [float(k) for k in left.tick_labels] == pytest.approx(list(left.tick_values))
    assert list(x_axis.tick_labels.values()) == ["10⁰", "10¹", "10²"]
    assert 1 <= len(x_axis.tick_values) <= chart_axes.MAX_TICKS


@pytest.mark.parametrize("lo, hi", [(15, 150), (20, 80), (3, 9), (101, 999), (7, 7)])
def test_a_log_x_axis_within_about_a_decade_has_two_labelled_powers(lo, hi):
    chart = chart_with([charts.Series("a", np.geomspace(lo, hi, 5), [0.2, 0.5, 0.3, 0.1, 0.4])])
    ticks = list(chart.x_axis.tick_values)
    assert len(ticks) >= 2 and len(chart.x_axis.tick_labels) == len(ticks)
    assert all(chart.sx.min <= t <= chart.sx.max for t in ticks)
    assert chart.sx.min < lo and chart.sx.max > hi  # the data stay inside the axis
    assert all(math.log10(t) == round(math.log10(t)) for t in ticks)


def test_cursor_at_both_ends_is_inside_the_padded_range():
    chart = chart_with([charts.Series("a", [1, 10, 400], [0.2, 0.5, 0.3])], cursor=True)
    lo, hi = chart.sx.min, chart.sx.max
    assert lo < 1 and hi > 400  # the cursor at the first or last step is off the axis line
    chart.set_cursor(400)
    assert list(chart.cursor.x) == [400, 400]


def test_log_floor_clamps_zeros_and_keeps_gaps():
    y = np.array([1.0, 0.1, np.nan, 0.0, 1e-20])
    chart = chart_with([charts.Series("nc4", [1, 2, 3, 4, 5], y)], y_log=True)
    drawn = np.asarray(chart.marks[0].y, float)
    floor = chart.floors["left"]
    assert floor >= 1.0 * 10**-charts.FLOOR_DECADES
    assert np.isnan(drawn[2])  # a missing value is a gap, not joined
    assert drawn[3] == floor and drawn[4] == floor  # 0 and tiny values sit at the floor
    assert drawn[0] == 1.0 and drawn[1] == 0.1
    assert chart.scales["left"].min == floor


def test_coinciding_lines_get_distinct_styles():
    x = [1, 2, 3, 4]
    same = [0.5, 0.9, 1.0, 1.0]
    chart = chart_with(
        [
            charts.Series("alpha 1", x, same),
            charts.Series("alpha 10", x, same),
            charts.Series("alpha 1000", x, np.array(same) + 1e-4),
            charts.Series("other", x, [0.1, 0.2, 0.3, 0.4]),
        ]
    )
    styles = [(m.line_style, m.marker) for m in chart.marks]
    assert len(set(styles[:3])) == 3  # three coinciding curves read as three
    assert styles[3] == ("solid", None)
    assert charts.coinciding([np.array(same), np.array(same), np.array([0.1, 0.2, 0.3, 0.4])], 1)[
        :2
    ] == [0, 0]


def test_linear_ticks_at_most_six_and_legend_outside():
    chart = chart_with(
        [
            charts.Series("a", [1, 2, 3], [0.0, 50.0, 120.0]),
            charts.Series("b", [1, 2, 3], [5, 6, 7], "right"),
        ],
        right=True,
    )
    for axis in chart.figure.axes:
        assert 1 <= len(axis.tick_values) <= chart_axes.MAX_TICKS
    assert not any(m.display_legend for m in chart.figure.marks)
    assert "a" in chart.legend.value and "b (right)" in chart.legend.value


def test_an_axis_without_series_is_hidden():
    chart = chart_with([charts.Series("a", [1, 2, 3], [0.1, 0.2, 0.3])], right=True)
    assert chart.y_axes["left"].visible and not chart.y_axes["right"].visible
    chart.set_series([charts.Series("b", [1, 2, 3], [1.0, 2.0, 3.0], "right")])
    assert chart.y_axes["right"].visible and not chart.y_axes["left"].visible


def test_legend_escapes_labels():
    legend = charts.legend_html([("<img src=x onerror=alert(1)>", '"><script>', "solid", None)])
    assert "<img" not in legend and "<script>" not in legend


def test_chart_exports_with_legend_svg_and_png():
    chart = chart_with(
        [
            charts.Series("D_LR", [1, 10, 100], [0.4, 0.3, 0.1]),
            charts.Series("acc", [1, 10, 100], [0.1, 0.9, 1.0]),
        ]
    )
    svg = export.to_svg(chart.canvas(cursor=10.0))
    root = ET.fromstring(svg)  # well-formed
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "D_LR" in texts and "acc" in texts and "10¹" in texts and "t" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}polyline"))) >= 4
    png = export.to_png(chart.canvas(), scale=2)
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape[1] == 2 * chart.width and img.shape[0] >= 2 * chart.height
    # the two series' colours are drawn (legend and lines)
    for colour in chart.drawn:
        rgb = [int(colour.color[i : i + 2], 16) for i in (1, 3, 5)]
        assert (np.abs(img.astype(int) - rgb).sum(-1) < 30).sum() > 50, colour.label


def test_svg_dashes_and_gaps():
    canvas = export.Canvas(100, 50)
    canvas.polyline([0, 10, np.nan, 30, 40], [0, 10, 20, 30, 40], "#000", dash="dashed")
    svg = export.to_svg(canvas)
    assert svg.count("<polyline") == 2 and 'stroke-dasharray="6,4"' in svg
    assert re.search(r"<svg[^>]+width=\"100\"", svg)


def test_fit_axis_powers_of_ten_and_few_ticks_inside_padded_limits():
    import bqplot

    axis = bqplot.Axis(scale=bqplot.LogScale())
    values = np.array([0.5, 1, 2, 5, 10, 20, 50, np.nan])
    assert chart_axes.fit_axis(axis, values, log=True) == ["10⁰", "10¹"]
    assert axis.tick_values.tolist() == [1.0, 10.0]
    assert axis.tick_labels == {"1": "10⁰", "10": "10¹"}  # never "1e+0"
    assert axis.scale.min < 0.5 and axis.scale.max > 50  # end points off the axis line
    axis = bqplot.Axis(scale=bqplot.LinearScale())
    labels = chart_axes.fit_axis(axis, np.linspace(0.0, 0.93, 40), log=False)
    ticks = axis.tick_values.tolist()
    assert 2 <= len(ticks) <= chart_axes.MAX_TICKS and len(labels) == len(ticks)
    assert axis.scale.min < 0.0 < 0.93 < axis.scale.max
    assert all(axis.scale.min <= t <= axis.scale.max for t in ticks)
    assert len(set(labels)) == len(labels)  # distinct labels


def test_write_canvas_writes_both_formats_atomically_and_refuses_others(tmp_path):
    canvas = export.Canvas(60, 30)
    canvas.text(4, 16, "a<b")
    svg = export.write_canvas(canvas, tmp_path / "new" / "x.svg", "svg")
    root = ET.fromstring(svg.read_text())  # the same document as to_svg, parseable
    assert svg.read_text() == export.to_svg(canvas) and root.tag.endswith("svg")
    png = export.write_canvas(canvas, tmp_path / "x.png", "png", scale=3.0)
    assert png.read_bytes() == export.to_png(canvas, 3.0)
    with pytest.raises(ArgumentError, match="fmt='gif'"):
        export.write_canvas(canvas, tmp_path / "x.gif", "gif")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.png", "x.svg"]
