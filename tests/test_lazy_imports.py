"""The quick start imports only what it uses: ``from richviz.widgets import Explorer`` loads
neither the Playground (and its live trainer), Compare nor SweepView; every widget name still
resolves on first use."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def test_explorer_import_leaves_the_other_widgets_unloaded():
    pytest.importorskip("bqplot")
    code = textwrap.dedent(
        """
        import sys
        from richviz.widgets import Explorer
        heavy = ["richviz.live", "richviz.widgets.playground", "richviz.widgets.compare",
                 "richviz.widgets.sweep_view", "torch._dynamo"]
        print([m for m in heavy if m in sys.modules])
        import richviz.widgets as w
        names = sorted(n for n in w.__all__ if getattr(w, n).__name__ == n)
        print(names == sorted(w.__all__), "Playground" in dir(w))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True True"], out.stderr[-2000:]


def test_unknown_widget_name_is_an_attribute_error():
    pytest.importorskip("bqplot")
    import richviz.widgets as w

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        w.Nope  # noqa: B018
