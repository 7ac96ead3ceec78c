"""The ``Examples`` of the entry points users start from run, and say what they print.

Each entry point's numpydoc docstring has an ``Examples`` section with at least one ``>>>``
line, and :mod:`doctest` runs it with no failure (ELLIPSIS and NORMALIZE_WHITESPACE on, as for
a reader who skims numbers). The examples run in a temporary working directory, so runs they
write land there.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)

# dotted name of the object -> module that defines it (the rest is attributes)
ENTRY_POINTS = {
    "richviz.train.train": "richviz.train",
    "richviz.checkpoints.Run.open": "richviz.checkpoints",
    "richviz.runs.shards.shard_files": "richviz.runs.shards",
    "richviz.geometry.pullback_metric": "richviz.geometry",
    "richviz.geometry.decision_field": "richviz.geometry",
    "richviz.metrics.d_lr": "richviz.metrics",
    "richviz.metrics.neural_collapse": "richviz.metrics",
    "richviz.widgets.Explorer": "richviz.widgets",
    "richviz.widgets.Playground": "richviz.widgets",
    "richviz.widgets.compare_geometry.GeometryRow": "richviz.widgets.compare_geometry",
    "richviz.widgets.Compare": "richviz.widgets",
    "richviz.compare.open_runs": "richviz.compare",
    "richviz.compare.RunColors": "richviz.compare",
    "richviz.compare.ema": "richviz.compare",
    "richviz.compare.group_bands": "richviz.compare",
    "richviz.compare.read_csv": "richviz.compare",
    "richviz.widgets.keyboard.key_action": "richviz.widgets.keyboard",
    "richviz.widgets.keyboard.step_index": "richviz.widgets.keyboard",
    "richviz.widgets.keyboard.KeyControl": "richviz.widgets.keyboard",
    "richviz.widgets.export.write_canvas": "richviz.widgets.export",
    "richviz.widgets.export.export_path": "richviz.widgets.export",
    "richviz.widgets.slice_animation.save_animation": "richviz.widgets.slice_animation",
    "richviz.app.find_notebook": "richviz.app",
    "richviz.app.voila_command": "richviz.app",
    "richviz.app.add_app_parser": "richviz.app",
    "richviz.widgets.progress.ProgressLine": "richviz.widgets.progress",
    "richviz.kernel_warmup.install": "richviz.kernel_warmup",
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _resolve(dotted: str) -> object:
    module = ENTRY_POINTS[dotted]
    if module.startswith("richviz.widgets"):
        pytest.importorskip("ipywidgets", reason="widget examples need ipywidgets")
        pytest.importorskip("bqplot", reason="widget examples need bqplot")
    obj = importlib.import_module(module)
    for attr in dotted[len(module) + 1 :].split("."):
        obj = getattr(obj, attr)
    return obj


def _examples(doc: str) -> str | None:
    """The text of the numpydoc ``Examples`` section of ``doc``, or None without one."""
    match = re.search(r"^Examples\n-{8,}\n(.*?)(?=^\S[^\n]*\n-{3,}\n|\Z)", doc, re.M | re.S)
    return match.group(1) if match else None


def test_examples_reader():
    doc = "Summary.\n\nExamples\n--------\n>>> 1 + 1\n2\n\nNotes\n-----\nAfter.\n"
    assert _examples(doc) == ">>> 1 + 1\n2\n\n"
    assert _examples("Summary.\n\nParameters\n----------\nx : int\n") is None


def _run_examples(obj: object, name: str) -> doctest.TestResults | str:
    """Run the doctests of ``obj``'s own docstring: the results, or the failure report."""
    finder = doctest.DocTestFinder(recurse=False)  # this object's own docstring only
    tests = [t for t in finder.find(obj, name, module=inspect.getmodule(obj)) if t.examples]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    result = doctest.TestResults(runner.failures, runner.tries)
    return "".join(report) if result.failed else result


def _good(x):
    """Twice ``x``.

    Examples
    --------
    >>> _good(21)
    42
    >>> [_good(i) for i in range(30)]
    [0, 2, 4, ..., 58]
    """
    return 2 * x


def _bad(x):
    """Examples
    --------
    >>> _bad(1)
    3
    """
    return 2 * x


def test_examples_runner():
    assert _run_examples(_good, "_good") == (0, 2)
    report = _run_examples(_bad, "_bad")
    assert isinstance(report, str) and "Expected:\n    3\nGot:\n    2" in report


@pytest.mark.parametrize("dotted", sorted(ENTRY_POINTS))
def test_entry_point_examples_run(dotted, tmp_path, monkeypatch):
    obj = _resolve(dotted)
    examples = _examples(inspect.getdoc(obj) or "")
    assert examples is not None, f"{dotted}: its docstring has no 'Examples' section"
    assert ">>>" in examples, f"{dotted}: its 'Examples' section has no '>>>' line"
    monkeypatch.chdir(tmp_path)  # files an example writes land in a fresh directory
    result = _run_examples(obj, dotted)
    assert not isinstance(result, str), f"{dotted}: failing example(s)\n{result}"
    assert result.attempted >= 1, f"{dotted}: doctest finds no example"
