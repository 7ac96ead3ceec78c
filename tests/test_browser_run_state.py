"""CheckpointBrowser: the run's complete/incomplete label and duplicate steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets", reason="widget tests need ipywidgets")
pytest.importorskip("bqplot", reason="widget tests need bqplot")

from richviz.checkpoints import Run, checkpoint_name  # noqa: E402
from richviz.train import Config  # noqa: E402
from richviz.widgets import CheckpointBrowser  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)

CFG = Config(
    data="xor",
    data_kwargs={"n": 60},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [4], "out_features": 2},
    steps=3,
    lr=0.1,
    checkpoints=3,
)


@pytest.fixture(scope="module")
def master(tiny_run) -> Path:
    return tiny_run(CFG, seed=0)  # shared: the tests change only copies


def _browser(path: Path) -> CheckpointBrowser:
    b = CheckpointBrowser(Run.open(path), device="cpu")
    assert b.wait(60)
    return b


def test_complete_and_incomplete_label(master, tmp_path):
    b = _browser(master)
    assert "complete run" in b.run_state.value and "incomplete" not in b.run_state.value
    assert b.run_state in b.children
    b.close()
    copy = Path(shutil.copytree(master, tmp_path / "copy"))
    m = json.loads((copy / "run.json").read_text())
    m["complete"] = False
    (copy / "run.json").write_text(json.dumps(m))
    b = _browser(copy)
    assert "incomplete run: training was stopped or is running" in b.run_state.value
    b.close()
    del m["complete"]  # an older run: nothing shown
    (copy / "run.json").write_text(json.dumps(m))
    b = _browser(copy)
    assert b.run_state.value == ""
    b.close()


def test_duplicate_step_row_does_not_shadow_the_readable_one(master, tmp_path):
    copy = Path(shutil.copytree(master, tmp_path / "copy"))
    last = Run.open(copy).steps[-1]
    shutil.copy(copy / checkpoint_name(last), copy / f"step_{last}.pt")
    b = _browser(copy)
    assert b.loaded_step == last and b.checkpoint.readable
    assert b.checkpoint.path.name == checkpoint_name(last)
    dup = next(i for i, c in enumerate(b.run.checkpoints) if not c.readable)
    b.list.value = dup
    assert "duplicate of step" in b.status.value and b.loaded_step == last
    b.close()
