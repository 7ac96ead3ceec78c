"""A pytest plugin (``-p hide_packages``) that makes packages unimportable, as on a machine
without them: ``RICHVIZ_HIDE_PACKAGES="ipywidgets,bqplot"`` (top-level names, comma-separated).

Used by ``test_gpu_check.py`` to check that the suite collects, and skips with a reason, on a
GPU machine that has PyTorch but not the widget and notebook stack.
"""

from __future__ import annotations

import os
import sys

HIDDEN = {p.strip() for p in os.environ.get("RICHVIZ_HIDE_PACKAGES", "").split(",") if p.strip()}


class _Hide:
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, _Hide())
for _name in list(sys.modules):
    if _name.split(".")[0] in HIDDEN:
        del sys.modules[_name]
