"""Bring-your-own-model mistakes: instance as factory, tuple/dict outputs, integer inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from richviz import datasets
from richviz.checkpoints import Run
from richviz.errors import ModelError, RichvizError
from richviz.features import feature_map, features_and_outputs, select_output
from richviz.geometry import Slice, pullback_metric
from richviz.metrics import d_lr

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.py)


class TupleNet(nn.Module):
    """Returns (logits, hidden) like many research models."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 6), nn.Tanh())
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.body(x)
        return self.head(h), h


class DictNet(TupleNet):
    def forward(self, x):
        logits, h = super().forward(x)
        return {"logits": logits, "hidden": h}


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.emb(x).flatten(1))


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    for s in (0, 5):
        torch.save(TupleNet().state_dict(), tmp_path / f"step_{s}.pt")
    return tmp_path


def test_model_instance_as_factory(folder):
    with pytest.raises(ModelError, match=r"factory= got a model instance \(TupleNet\)") as info:
        Run.from_state_dicts(TupleNet(), folder)
    assert "lambda: TupleNet(...)" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="factory= must be a callable"):
        Run.from_state_dicts("TupleNet", folder)
    with pytest.raises(ModelError, match="factory= returned Tensor, not an nn.Module"):
        Run.from_state_dicts(lambda: torch.zeros(2), folder)


def test_tuple_output_without_selector_says_what_was_returned():
    model = TupleNet().eval()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ModelError) as info:
        features_and_outputs(model, x, layer="logits")
    msg = str(info.value)
    assert "returned a tuple of 2 (Tensor(5, 2), Tensor(5, 6))" in msg and "output=" in msg
    # the default (penultimate) layer needs only hooks, so it works without a selector
    f, o = features_and_outputs(model, x)
    torch.testing.assert_close(f, model.body(x))
    torch.testing.assert_close(o, model.head(model.body(x)))


def _expected(model: TupleNet, x: torch.Tensor) -> float:
    h = model.body(x)
    return d_lr(h, model.head(h))


@pytest.mark.parametrize("output", [0, lambda out: out[0]])
def test_tuple_model_with_selector(folder, output):
    data = datasets.load("moons", n=60)
    run = Run.from_state_dicts(TupleNet, folder, data=data, output=output)
    model = run.load(5)
    x, _ = run.probe()
    out = model(x)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, model.head(model.body(x)))
    rows = run.metrics(progress=False)
    for r in rows:
        assert r["error"] is None
        assert r["d_lr"] == pytest.approx(_expected(run.load(r["step"]), x), rel=1e-6)
        assert math.isfinite(r["boundary_magnification"])


def test_tuple_model_without_selector_stops_the_table_in_one_line(folder):
    run = Run.from_state_dicts(TupleNet, folder, data=datasets.load("moons", n=60))
    x, _ = run.probe()
    with pytest.raises(
        ModelError, match=r"returned a tuple of 2 \(Tensor\(45, 2\), Tensor\(45, 6\)\)"
    ):
        feature_map(run.load(0), "logits")(x)
    # every row would fail alike: the table stops at once, one line naming the run and what
    # the model returned, and nothing is computed or cached
    with pytest.raises(ModelError) as info:
        run.metrics(progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{run.path}: ")
    assert "returned a tuple of 2 (Tensor(2, 2), Tensor(2, 6))" in message and "output=" in message
    assert not (folder / "metrics.json").exists()
    # with the selector the same run has its table
    picked = Run.from_state_dicts(TupleNet, folder, data=datasets.load("moons", n=60), output=0)
    rows = picked.metrics(progress=False)
    assert rows and all(r["error"] is None and math.isfinite(r["d_lr"]) for r in rows)
    assert (folder / "metrics.json").exists()  # where the refused table would have been cached


def test_dict_output_selected_by_key():
    torch.manual_seed(1)
    model = DictNet().eval()
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ModelError, match=r"a dict with keys \['logits', 'hidden'\]"):
        features_and_outputs(nn.Sequential(model), x, layer="logits")
    f, o = features_and_outputs(model, x, layer="logits", output="logits")
    torch.testing.assert_close(f, model.head(model.body(x)))
    fm = feature_map(model, "logits", output="logits")
    torch.testing.assert_close(fm(x), f)
    with pytest.raises(ModelError, match="output='nope' selects nothing"):
        select_output(model(x), "nope")
    with pytest.raises(ModelError, match="output='hidden' picked|output=0 selects"):
        select_output(model(x), 0)


def test_integer_input_model_given_to_a_field():
    model = TokenNet().eval()
    s = Slice.covering(torch.tensor([[0.0, 0.0], [9.0, 9.0]]))
    with pytest.raises(ModelError, match="the input space must be continuous") as info:
        pullback_metric(model, s, resolution=4, layer="logits")
    assert "nn.Embedding 'emb'" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, RichvizError)
    # integer ids still work for features (no field involved)
    f, o = features_and_outputs(model, torch.tensor([[1, 2], [3, 4]]))
    assert f.shape == (2, 8) and o.shape == (2, 2)
