"""richviz.optimizers: bit-identical to torch.optim on CPU, and training imports no dynamo."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from richviz.errors import ArgumentError
from richviz.optimizers import PlainOptimizer, make_optimizer


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def _train(model: nn.Module, opt, steps: int = 25, lr_change_at: int | None = 10) -> None:
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(16, 3, generator=gen)
        y = torch.randint(0, 2, (16,), generator=gen)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if step == lr_change_at:  # the trainer's catapult cap changes the lr mid-run
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.5
        opt.step()


CASES = [
    ("sgd", {"lr": 0.1}, {}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, {}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}, {}),
    ("adam", {"lr": 1e-2}, {}),
    ("adam", {"lr": 1e-2, "weight_decay": 1e-3}, {}),
    ("adamw", {"lr": 1e-2, "weight_decay": 1e-2}, {}),
    ("adamw", {"lr": 3e-3, "weight_decay": 0.0}, {}),
]


@pytest.mark.parametrize(("kind", "kw", "_"), CASES)
def test_bit_identical_to_torch_optim(kind, kw, _):
    ref, mine = _model(), _model()
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    _train(ref, cls(ref.parameters(), **kw))
    _train(mine, PlainOptimizer(kind, mine.parameters(), **kw))
    for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
        assert torch.equal(a, b), (kind, kw, float((a - b).abs().max()))
    # and the run moved: the comparison is not between two untouched models
    assert not torch.equal(next(_model().parameters()), next(mine.parameters()))


def test_zero_grad_in_place_and_missing_grads():
    w = nn.Parameter(torch.ones(3))
    v = nn.Parameter(torch.ones(2))  # never gets a gradient: left as is
    opt = PlainOptimizer("adam", [w, v], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.equal(v.detach(), torch.ones(2)) and not torch.equal(w.detach(), torch.ones(3))
    opt.zero_grad(set_to_none=False)
    assert w.grad is not None and torch.equal(w.grad, torch.zeros(3))
    opt.zero_grad()
    assert w.grad is None


def test_make_optimizer_choice_and_errors():
    params = list(_model().parameters())
    assert isinstance(make_optimizer("adamw", params, 1e-3), PlainOptimizer)
    with pytest.raises(ArgumentError, match="optimizer must be one of"):
        make_optimizer("lbfgs", params, 1e-3)
    with pytest.raises(ArgumentError, match="optimizer must be one of"):
        PlainOptimizer("rmsprop", params, 1e-3)


def test_quick_start_training_and_metrics_do_not_import_dynamo(tmp_path):
    # torch.optim's constructor and step, and meta-device kernels, import torch._dynamo (with
    # sympy): about a second of the quick start
    code = textwrap.dedent(
        f"""
        import sys
        from richviz.train import train
        run = train("circles", out={str(tmp_path / "run")!r}, steps=5, progress=False,
                    overrides={{"checkpoints": 2}})
        assert len(run.metrics(progress=False)) == 2
        heavy = [m for m in ("torch._dynamo", "sympy") if m in sys.modules]
        print(heavy or "no dynamo")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "no dynamo", out.stderr[-2000:]
