"""geometry.chunk_threads: CPU fields on parallel chunk threads equal the one-thread field bit
for bit, stream in order, restore the caller's thread count and raise a chunk's error."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from richviz.geometry import Slice, iter_metric_chunks, pullback_metric
from richviz.geometry.chunk_threads import map_chunks, parallel_chunks


@pytest.fixture
def threads():
    """Run the test with 2 torch threads, restoring the caller's count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(n)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 3)
    ).eval()


def test_threaded_field_equals_the_one_thread_field_bit_for_bit(threads):
    model, s = _mlp(), Slice.square(torch.zeros(2), 1.5)
    torch.set_num_threads(1)
    one = pullback_metric(model, s, resolution=40, chunk_size=100)
    torch.set_num_threads(threads)
    used = []
    real = map_chunks

    def spy(fn, items, n):
        used.append(n)
        return real(fn, items, n)

    import richviz.geometry.field as field

    field.map_chunks, saved = spy, field.map_chunks
    try:
        two = pullback_metric(model, s, resolution=40, chunk_size=100)
    finally:
        field.map_chunks = saved
    assert used == [2]  # 16 chunks of 100 points went to 2 threads
    assert torch.equal(one.metric, two.metric) and torch.equal(one.volume, two.volume)
    assert torch.get_num_threads() == threads  # the caller's count is back
    # and the field is right: G = J^T J / p against autograd's Jacobian at one point
    x = s.to_input(s.grid_uv(40))[123:124].float()
    jac = torch.autograd.functional.jacobian(lambda z: model[:4](z), x).reshape(32, 2)
    g = (jac.T @ jac / 32).double()
    assert torch.allclose(two.metric.reshape(-1, 2, 2)[123], g, rtol=1e-5, atol=1e-7)


def test_chunks_stream_in_order(threads):
    chunks = list(
        iter_metric_chunks(_mlp(), Slice.square(torch.zeros(2), 1.0), resolution=30, chunk_size=64)
    )
    assert [c.start for c in chunks] == list(range(0, 900, 64))
    assert all(c.stop == min(900, c.start + 64) for c in chunks)


def test_map_chunks_order_grad_mode_errors_and_restore(threads):
    seen = set()

    def work(i: int) -> tuple[int, bool, int]:
        seen.add(threading.current_thread().name)
        return i, torch.is_grad_enabled(), torch.get_num_threads()

    out = list(map_chunks(work, range(12), 2))
    assert [o[0] for o in out] == list(range(12))
    assert not any(o[1] for o in out) and {o[2] for o in out} == {1}
    assert all(name.startswith("richviz-chunk") for name in seen)
    assert torch.get_num_threads() == 2

    def boom(i: int) -> int:
        if i == 3:
            raise ValueError("chunk 3")
        return i

    got = []
    with pytest.raises(ValueError, match="chunk 3"):
        for v in map_chunks(boom, range(8), 2):
            got.append(v)
    assert got == [0, 1, 2] and torch.get_num_threads() == 2
    assert list(map_chunks(lambda i: i * i, [1, 2, 3], 1)) == [1, 4, 9]  # plain loop


def test_parallel_chunks_policy(threads):
    assert parallel_chunks(16, torch.device("cpu")) == 2
    assert parallel_chunks(1, torch.device("cpu")) == 1
    assert parallel_chunks(16, torch.device("meta")) == 1
    torch.set_num_threads(1)
    assert parallel_chunks(16, torch.device("cpu")) == 1


def test_threaded_frame_chunks_equal_the_one_thread_frame(threads):
    from richviz.geometry.frame_pass import iter_frame_chunks

    model, s = _mlp(), Slice.square(torch.zeros(2), 1.5)
    torch.set_num_threads(1)
    one = list(iter_frame_chunks(model, s, resolution=36, chunk_size=128))
    torch.set_num_threads(threads)
    two = list(iter_frame_chunks(model, s, resolution=36, chunk_size=128))
    assert [(c.start, c.stop) for c in two] == [(c.start, c.stop) for c in one]
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a.metric, b.metric) and torch.equal(a.volume, b.volume)
        assert torch.equal(a.logits, b.logits) and a.p == b.p == 32
    # the logits are the model's own
    x = s.to_input(s.grid_uv(36)).float()
    with torch.no_grad():
        assert torch.allclose(torch.cat([c.logits for c in two]), model(x), atol=1e-6)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("act", [nn.GELU, nn.SiLU])
def test_chains_that_need_jvp_stay_on_the_calling_thread(threads, act, monkeypatch):
    # their activations' derivatives come from torch.func.jvp, whose levels are process-wide
    import richviz.geometry.field as field

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), act(), nn.Linear(16, 2))
    s = Slice.square(torch.zeros(2), 1.0)
    used = []
    real = field.map_chunks
    monkeypatch.setattr(field, "map_chunks", lambda *a: used.append(1) or real(*a))
    fast = pullback_metric(model.eval(), s, resolution=24, chunk_size=50)
    ref = pullback_metric(model, s, resolution=24, chunk_size=50, method="jvp")
    assert not used
    torch.testing.assert_close(fast.metric, ref.metric, rtol=1e-5, atol=1e-8)
