"""The shared tiny-run factory of conftest.py: one training per distinct run, copies on request."""

from __future__ import annotations

import pytest

from richviz.checkpoints import Run
from richviz.train import Config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)

# the same run as test_manifest.py's: within one worker it is trained once for both
CFG = Config(
    data="moons",
    data_kwargs={"n": 80},
    arch="mlp",
    arch_kwargs={"in_features": 2, "hidden": [6], "out_features": 2},
    steps=3,
    lr=0.1,
    batch_size=20,
    checkpoints=3,
)


def test_equal_arguments_give_the_same_folder_trained_once(tiny_run):
    first = tiny_run(CFG, seed=0)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    again = tiny_run(CFG, seed=0)
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == mtimes  # not retrained
    assert Run.open(first).manifest["seed"] == 0
    assert tiny_run(CFG, seed=1) != first  # other arguments, another run
    assert Run.open(tiny_run(CFG, seed=1)).manifest["seed"] == 1


def test_copy_to_gives_an_independent_copy(tiny_run, tmp_path):
    shared = tiny_run(CFG, seed=0)
    copy = tiny_run(CFG, seed=0, copy_to=tmp_path / "mine")
    assert copy == tmp_path / "mine" and copy != shared
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in shared.iterdir())
    (copy / "run.json").write_text("{}")  # the shared run is checked unchanged at session end
    assert (shared / "run.json").read_text() != "{}"
    assert Run.open(shared).steps == Run.open(tiny_run(CFG, seed=0, copy_to=tmp_path / "b")).steps


def test_cli_runs_are_trained_through_the_command_line(tiny_run):
    run = Run.open(tiny_run("xor", cli=True, steps=4, seed=1))
    assert run.manifest["preset"] == "xor" and run.manifest["seed"] == 1
    assert run.manifest["hparams"]["steps"] == 4
