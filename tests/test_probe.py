"""Linear probes give headless feature extractors a decision boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from richviz import datasets
from richviz.checkpoints import Run
from richviz.geometry import Slice, decision_field, pullback_metric
from richviz.probe import FeatureExtractor, LinearProbe, probe_classifier
from richviz.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_run(tiny_run) -> Run:
    """The digits_cnn preset trained for 150 steps (~3 s; ~98 % test accuracy), shared."""
    return Run.open(tiny_run("digits_cnn", steps=150))


def test_probe_on_digits_matches_the_models_own_accuracy(digits_run):
    model = digits_run.load(digits_run.steps[-1])
    data = digits_run.data()
    _, own = evaluate(model, data.x_test, data.y_test, "ce")
    x, y = digits_run.probe()
    clf = probe_classifier(model, x, y)  # features: input of the last Linear (64-d)
    with torch.no_grad():
        acc = float((clf(data.x_test).argmax(1) == data.y_test).double().mean())
    assert acc >= own - 0.02
    assert own > 0.9  # the model did learn, so the comparison means something
    # headless: the conv trunk alone (no Linear at all), probed on its flattened output
    trunk = nn.Sequential(*list(model.children())[:6])
    assert not any(isinstance(m, nn.Linear) for m in trunk.modules())
    clf2 = probe_classifier(trunk, x, y)
    with torch.no_grad():
        acc2 = float((clf2(data.x_test).argmax(1) == data.y_test).double().mean())
    assert acc2 >= own - 0.02


def test_probe_head_reproduces_sklearn_predict_exactly(digits_run):
    model = digits_run.load(digits_run.steps[-1])
    x, y = digits_run.probe()
    ext = FeatureExtractor(model)
    with torch.no_grad():
        f_train = ext(x).double()
        f_test = ext(digits_run.data().x_test).double()
    probe = LinearProbe.fit(f_train, y)
    scaler, sk = probe.sklearn_
    assert probe.weight.dtype == torch.float64 and probe.out_features == 10
    for f in (f_train, f_test):
        want = sk.predict(scaler.transform(f.numpy()))
        assert np.array_equal(probe.predict(f).numpy(), want)
        with torch.no_grad():
            z = probe(f).numpy()
        dec = sk.decision_function(scaler.transform(f.numpy()))
        assert np.allclose(z, dec, rtol=1e-10, atol=1e-10)
        assert np.array_equal(probe.classes[z.argmax(1)].numpy(), want)
    # device/dtype movable like any module; classes stay integer labels
    p32 = LinearProbe.fit(f_train, y).to(torch.float32)
    assert p32.weight.dtype == torch.float32 and p32.classes.dtype == torch.int64
    assert (p32.predict(f_test) == probe.predict(f_test)).double().mean() > 0.99


def test_binary_probe_with_label_gaps_and_decision_field_on_a_headless_extractor():
    # moons through a random tanh trunk without a classifier; labels {3, 7}
    data = datasets.load("moons", n=300)
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh()).double()
    y = torch.where(data.y_train == 1, 7, 3)
    clf = probe_classifier(trunk, data.x_train.double(), y, layer="logits", C=10.0)
    probe = clf[1]
    assert probe.out_features == 1 and probe.classes.tolist() == [3, 7]
    scaler, sk = probe.sklearn_
    f = trunk(data.x_test.double()).detach()
    assert np.array_equal(probe.predict(f).numpy(), sk.predict(scaler.transform(f.numpy())))
    # the combined model is an ordinary classifier on the slice ...
    s = Slice.covering(data.x_train.double())
    dec = decision_field(clf, s, resolution=21)
    grid_feats = trunk(s.to_input(s.grid_uv(21), dtype=torch.float64)).detach()
    want = (probe(grid_feats)[:, 0] > 0).long().reshape(21, 21)
    assert torch.equal(dec.predicted, want)
    assert dec.boundary.any()  # a boundary crosses the window
    # ... whose default feature map is still the trunk's output
    a = pullback_metric(clf, s, resolution=7)
    b = pullback_metric(trunk, s, resolution=7, layer="logits")
    assert a.p == b.p == 32 and torch.allclose(a.metric, b.metric, rtol=1e-12)


def test_probe_validation():
    f = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="labels has"):
        LinearProbe.fit(f, torch.zeros(9, dtype=torch.int64))
    with pytest.raises(ValueError, match="two classes"):
        LinearProbe.fit(f, torch.zeros(10, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-finite"):
        LinearProbe.fit(f * torch.nan, torch.arange(10) % 2)
    with pytest.raises(ValueError, match="integer"):
        LinearProbe.fit(f, torch.rand(10))
    with pytest.raises(ValueError, match="features must be"):
        LinearProbe.fit(torch.randn(10), torch.arange(10) % 2)
    with pytest.raises(TypeError, match="model"):
        probe_classifier(lambda x: x, f, torch.arange(10) % 2)
