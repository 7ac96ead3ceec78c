"""Chunk policy per device: CPU cache-sized chunks, CUDA chunks from memory (queries patched)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import richviz.geometry as geometry
from richviz.chunking import (
    CPU_CHUNK_MAX,
    CUDA_HEADROOM,
    CUDA_PROBE_POINTS,
    ChunkPlan,
    available_cuda_bytes,
    chunk_from_memory,
    cpu_chunk_size,
)
from richviz.geometry import Slice, pullback_metric

pytestmark = pytest.mark.usefixtures("one_thread")

MiB = 2**20


def covers(ranges: list[tuple[int, int]], total: int) -> bool:
    return (
        ranges[0][0] == 0
        and ranges[-1][1] == total
        and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        and all(stop > start for start, stop in ranges)
    )


def test_cpu_sizes_are_cache_sized():
    assert cpu_chunk_size(2) == CPU_CHUNK_MAX == 1024  # 2-D inputs: capped
    assert cpu_chunk_size(3 * 32 * 32) == 2**18 // 3072 == 85  # CIFAR images
    assert cpu_chunk_size(10**7) == 1
    assert geometry.auto_chunk_size(3072) == 85
    ranges = list(ChunkPlan(10_000, 2, "cpu"))
    assert covers(ranges, 10_000) and {b - a for a, b in ranges[:-1]} == {1024}
    ranges = list(ChunkPlan(100, 2, "cpu", chunk_size=7))
    assert covers(ranges, 100) and max(b - a for a, b in ranges) == 7
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkPlan(100, 2, "cpu", chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkPlan(100, 2, "cpu", chunk_size=2.5)


def test_chunk_from_memory_formula():
    assert chunk_from_memory(1000 * MiB, MiB, 0.5) == 500
    assert chunk_from_memory(10, MiB) == 1  # never below one point
    with pytest.raises(ValueError, match="bytes_per_point"):
        chunk_from_memory(10, 0)


class FakeCuda:
    """torch.cuda memory queries of a pretend device: ``cost`` bytes per point of a chunk."""

    def __init__(self, free: int, reserved: int, allocated: int, cost: float):
        self.free, self.reserved, self.allocated, self.cost = free, reserved, allocated, cost
        self.peak = allocated
        self.resets = 0
        self.emptied = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "mem_get_info", lambda device=None: (self.free, 80 * 2**30))
        monkeypatch.setattr(cuda, "memory_reserved", lambda device=None: self.reserved)
        monkeypatch.setattr(cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(cuda, "reset_peak_memory_stats", self._reset)
        monkeypatch.setattr(cuda, "empty_cache", self._empty)

    def _reset(self, device=None) -> None:
        self.resets += 1
        self.peak = self.allocated

    def _empty(self) -> None:
        self.emptied += 1

    def run(self, start: int, stop: int) -> None:
        """Pretend to compute a chunk: the peak grows by its cost."""
        self.peak = max(self.peak, self.allocated + int(self.cost * (stop - start)))


def test_cuda_chunks_sized_from_probe_and_free_memory(monkeypatch):
    fake = FakeCuda(free=40 * 2**30, reserved=6 * 2**30, allocated=2 * 2**30, cost=0.75 * MiB)
    fake.install(monkeypatch)
    assert available_cuda_bytes(torch.device("cuda")) == 44 * 2**30  # free + reserved unused
    total = 256 * 256
    plan = ChunkPlan(total, 3 * 32 * 32, torch.device("cuda"))
    # the probe: the CPU size (85 images) is raised to CUDA_PROBE_POINTS
    assert plan.size == CUDA_PROBE_POINTS
    ranges = []
    for start, stop in plan:
        fake.run(start, stop)
        ranges.append((start, stop))
    assert covers(ranges, total) and fake.resets == 1
    assert ranges[0] == (0, CUDA_PROBE_POINTS)
    assert plan.probe_bytes_per_point == pytest.approx(0.75 * MiB, rel=1e-6)
    expected = math.floor(CUDA_HEADROOM * 44 * 2**30 / (0.75 * MiB))  # 30037 points
    assert plan.size == expected
    assert [b - a for a, b in ranges[1:-1]] == [expected] * (len(ranges) - 2)
    # far larger than the CPU policy's 85 points: the GPU gets big launches
    assert expected > 300 * cpu_chunk_size(3 * 32 * 32)


def test_cuda_small_memory_gives_small_chunks(monkeypatch):
    fake = FakeCuda(free=64 * MiB, reserved=0, allocated=0, cost=1 * MiB)
    fake.install(monkeypatch)
    plan = ChunkPlan(1000, 2, "cuda")
    assert plan.size == 1000  # probe: min(total, max(1024, 256))
    ranges = [(a, b) for a, b in plan if not fake.run(a, b)]
    assert ranges == [(0, 1000)]  # one chunk covered it all; the measured size is for later
    assert plan.size == 32  # 0.5 * 64 MiB / 1 MiB


def test_out_of_memory_halves_and_repeats_the_range(monkeypatch):
    fake = FakeCuda(free=10**12, reserved=0, allocated=0, cost=1.0)
    fake.install(monkeypatch)
    limit = 300  # the device "fails" above 300 points per chunk
    plan = ChunkPlan(5000, 2, "cuda")
    done = []
    for start, stop in plan:
        if stop - start > limit:
            try:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            except torch.OutOfMemoryError:
                plan.out_of_memory()
                continue
        fake.run(start, stop)
        done.append((start, stop))
    assert covers(done, 5000) and max(b - a for a, b in done) <= limit
    assert fake.emptied >= 1
    # a chunk size the caller chose is not second-guessed
    fixed = ChunkPlan(5000, 2, "cuda", chunk_size=1000)
    with pytest.raises(torch.OutOfMemoryError):
        for _start, _stop in fixed:
            try:
                raise torch.OutOfMemoryError("simulated")
            except torch.OutOfMemoryError:
                fixed.out_of_memory()


def test_pullback_metric_retries_smaller_chunks_after_out_of_memory(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh()).double()
    s = Slice.square(torch.zeros(2, dtype=torch.float64), 1.0)
    ref = pullback_metric(model, s, 40, chunk_size=40 * 40, layer="logits")
    real = geometry.chain_directional_derivatives
    sizes = []

    def flaky(mods, x, tangents):
        if x.shape[0] > 500:
            raise torch.OutOfMemoryError("simulated")
        sizes.append(x.shape[0])
        return real(mods, x, tangents)

    monkeypatch.setattr(geometry, "chain_directional_derivatives", flaky)
    monkeypatch.setattr("richviz.chunking.CPU_CHUNK_MAX", 1600)
    field = pullback_metric(model, s, 40, layer="logits")  # 1600 points: 1600 -> 800 -> 400
    assert max(sizes) == 400 and sum(sizes) == 1600
    torch.testing.assert_close(field.metric, ref.metric, rtol=1e-12, atol=0)
    torch.testing.assert_close(field.volume, ref.volume, rtol=1e-12, atol=0)
    with pytest.raises(torch.OutOfMemoryError):
        pullback_metric(model, s, 40, chunk_size=1000, layer="logits")


def test_compile_failure_falls_back_to_eager_once_quietly(monkeypatch, recwarn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 4), nn.Tanh()).double()
    s = Slice.square(torch.zeros(2, dtype=torch.float64), 1.0)
    ref = pullback_metric(model, s, 10, layer="logits")  # eager (compile is off by default)
    calls = []

    def broken_compile(fn, **kw):
        def run(*args):
            calls.append(1)
            raise RuntimeError("inductor: no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(geometry, "_compile_state", {"kernel": None, "failed": False})
    monkeypatch.setenv("RICHVIZ_COMPILE", "1")
    field = pullback_metric(model, s, 10, chunk_size=25, layer="logits")  # 4 chunks
    torch.testing.assert_close(field.volume, ref.volume, rtol=1e-12, atol=0)
    assert calls == [1] and geometry._compile_state["failed"]  # tried once, then eager
    assert not [w for w in recwarn if "inductor" in str(w.message)]
