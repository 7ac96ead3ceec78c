"""Chunk policy per device: how many points one batched forward-mode pass takes.

CPU: cache-sized chunks, about ``CPU_CHUNK_ELEMENTS = 2**18`` input elements per chunk (1 MiB
of float32 input), at most ``CPU_CHUNK_MAX = 1024`` points. Chosen on 2 threads: for a
2->256->256->256 MLP on a 128 x 128 grid, with the stacked (primal + 2 tangents) jet, chunks
of 1024 points cost 2.07x a forward pass (256: 2.38x, 512: 2.20x, 2048: 2.19x, 4096: 2.43x,
16384: 3.32x; one run, same machine); for a ResNet18 on 3x32x32 inputs 85 points per chunk
are within 5 % of 128.

CUDA: small chunks leave the GPU idle between launches, so the chunk is sized from memory.
The first chunk is a probe of ``max(cpu size, CUDA_PROBE_POINTS)`` points; its peak memory
growth ``m`` (``torch.cuda.max_memory_allocated`` after the probe minus
``memory_allocated`` before it, peak statistics reset first) gives the cost per point, and
every later chunk takes

    points = floor(CUDA_HEADROOM * available / (m / probe points)),

with ``available = free (torch.cuda.mem_get_info) + reserved - allocated`` (memory PyTorch's
caching allocator holds but does not use counts as free). ``CUDA_HEADROOM = 0.5`` leaves room
for fragmentation, other tensors and other users of the device. When a chunk still runs out
of memory, :meth:`ChunkPlan.out_of_memory` halves the chunk and the same range comes again.

Resetting the peak statistics is process-wide: two probes racing on one device (two widget
threads) can under-estimate a chunk; the out-of-memory halving covers that case.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from richviz import validation
from richviz.errors import ArgumentError

__all__ = [
    "CPU_CHUNK_ELEMENTS",
    "CPU_CHUNK_MAX",
    "CUDA_HEADROOM",
    "CUDA_PROBE_POINTS",
    "ChunkPlan",
    "available_cuda_bytes",
    "check_chunk_size",
    "chunk_from_memory",
    "cpu_chunk_size",
]

CPU_CHUNK_ELEMENTS = 2**18
CPU_CHUNK_MAX = 1024
CUDA_HEADROOM = 0.5
CUDA_PROBE_POINTS = 256


def cpu_chunk_size(input_numel: int) -> int:
    """Points per chunk on CPU for inputs of ``input_numel`` elements:
    ``clip(CPU_CHUNK_ELEMENTS // input_numel, 1, CPU_CHUNK_MAX)``."""
    return int(max(1, min(CPU_CHUNK_MAX, CPU_CHUNK_ELEMENTS // max(1, input_numel))))


def check_chunk_size(chunk_size: object, name: str = "chunk_size") -> int | None:
    """``None`` (automatic) or a positive int; one-line ``ValueError`` naming ``name`` else."""
    return None if chunk_size is None else validation.chunk_size(chunk_size, 1, name)


def available_cuda_bytes(device: torch.device) -> int:
    """Bytes a new allocation on ``device`` can use: free device memory
    (``torch.cuda.mem_get_info``) plus what the caching allocator reserves but does not use."""
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free) + max(0, int(cached))


def chunk_from_memory(
    available: int, bytes_per_point: float, headroom: float = CUDA_HEADROOM
) -> int:
    """``max(1, floor(headroom * available / bytes_per_point))`` points."""
    if not bytes_per_point > 0:
        raise ArgumentError(f"bytes_per_point must be > 0, got {bytes_per_point!r}")
    return max(1, math.floor(headroom * max(0, available) / bytes_per_point))


class ChunkPlan:
    """Iterate ``(start, stop)`` ranges covering ``range(total)`` with the device's policy.

    Parameters
    ----------
    total : number of points.
    input_numel : elements per point (sets the CPU size, and the CUDA probe).
    device : where the chunks run; ``"cuda"`` sizes chunks from memory (module docstring).
    chunk_size : a fixed size (no probe, no halving), or None for the policy.
    headroom : fraction of the available device memory a chunk may take.

    Attributes
    ----------
    size : the current chunk size (changes after the CUDA probe or a halving).
    probe_bytes_per_point : the measured cost of one point on CUDA, or None.

    Use::

        plan = ChunkPlan(total, numel, device)
        for start, stop in plan:
            try:
                out = work(start, stop)
            except torch.OutOfMemoryError:
                plan.out_of_memory()  # re-raises for a fixed chunk_size or a chunk of 1
                continue
    """

    def __init__(
        self,
        total: int,
        input_numel: int,
        device: torch.device | str,
        chunk_size: int | None = None,
        *,
        headroom: float = CUDA_HEADROOM,
    ):
        if not 0 < headroom <= 1:
            raise ArgumentError(f"headroom must lie in (0, 1], got {headroom!r}")
        self.total = int(total)
        self.device = torch.device(device)
        self.fixed = check_chunk_size(chunk_size) is not None
        self.headroom = headroom
        self.probe_bytes_per_point: float | None = None
        cpu = cpu_chunk_size(input_numel)
        self._probe = not self.fixed and self.device.type == "cuda"
        if self.fixed:
            self.size = int(chunk_size)  # type: ignore[arg-type]
        elif self._probe:
            self.size = max(1, min(self.total, max(cpu, CUDA_PROBE_POINTS)))
        else:
            self.size = cpu
        self._failed = False

    def out_of_memory(self) -> None:
        """The last chunk ran out of memory: halve the size and repeat its range.

        Re-raises the current exception when the size was given or is already 1."""
        if self.fixed or self.size <= 1:
            raise
        self.size = max(1, self.size // 2)
        self._failed = True
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = 0
        while start < self.total:
            stop = min(self.total, start + self.size)
            probing = self._probe
            if probing:
                torch.cuda.reset_peak_memory_stats(self.device)
                before = torch.cuda.memory_allocated(self.device)
            self._failed = False
            yield start, stop
            if self._failed:
                continue  # same start, smaller size
            if probing:
                self._probe = False
                peak = torch.cuda.max_memory_allocated(self.device) - before
                per_point = max(1.0, peak / (stop - start))
                self.probe_bytes_per_point = per_point
                avail = available_cuda_bytes(self.device)
                self.size = chunk_from_memory(avail, per_point, self.headroom)
            start = stop
