"""Pickles that ``weights_only=True`` refuses: harmless data kept, anything else named.

The inert unpickler of :mod:`richviz.runs.formats.pickles` never builds a foreign object:
these tests need only torch (no training stack), and check that a harmless entry beside the
weights still yields them, while a pickled module or a foreign callable is a one-line error
naming the file, the entry and how to re-save the weights.
"""

from __future__ import annotations

import argparse
import datetime
import fractions
import os
import pathlib
from pathlib import Path

import torch
from torch import nn

from richviz.runs import Run


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3))


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_harmless_entries_beside_the_weights_still_load(tmp_path):
    model = net()
    extras = {
        "args": argparse.Namespace(lr=0.1, path=pathlib.Path("/data")),
        "elapsed": datetime.timedelta(seconds=5),
        "when": datetime.datetime(2024, 1, 1),
    }
    torch.save({"state_dict": model.state_dict(), "step": 7, **extras}, tmp_path / "a.pt")
    run = Run.from_checkpoints(tmp_path, net)
    assert run.steps == [7]
    loaded = run.load(7, device="cpu").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_harmless_type_does_not_carry_a_payload_through(tmp_path):
    marker = tmp_path / "pwned"
    bad = argparse.Namespace(inner=Evil(marker))
    torch.save({"state_dict": net().state_dict(), "args": bad}, tmp_path / "a.pt")
    (ck,) = Run.from_checkpoints(tmp_path, net).checkpoints
    assert "entry 'args' would import and call" in ck.error and "system" in ck.error
    assert not marker.exists()


def test_refusals_say_how_to_resave(tmp_path):
    model = net()
    torch.save(model, tmp_path / "whole_1.pt")
    torch.save({"model": model, "step": 2}, tmp_path / "entry_2.pt")
    torch.save({**model.state_dict(), "cfg": fractions.Fraction(1, 2)}, tmp_path / "bare_3.pt")
    errors = {c.path.name: c.error for c in Run.from_checkpoints(tmp_path, net).checkpoints}
    assert (
        "its pickle holds a pickled torch.nn.modules.container.Sequential" in errors["whole_1.pt"]
    )
    assert "weights_only=False).state_dict(), 'weights.pt')" in errors["whole_1.pt"]
    assert "entry 'model' holds a pickled" in errors["entry_2.pt"]
    assert "weights_only=False)['model'].state_dict()" in errors["entry_2.pt"]
    assert "entry 'cfg' would import and call fractions.Fraction" in errors["bare_3.pt"]
    assert "if torch.is_tensor(v)" in errors["bare_3.pt"]
    assert all(str(tmp_path) in e and "\n" not in e for e in errors.values())
