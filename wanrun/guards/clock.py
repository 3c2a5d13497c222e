"""The step clock: wall time per step and the allocator's peak, synchronising only at step boundaries.

CUDA kernels run asynchronously, so a host timer around a step measures launches, not work, unless the device
is drained at both ends. One synchronize per boundary costs a few microseconds of idle device per step; nothing
inside the step is touched. The peak is the caching allocator's high-water mark, reset at each step start, so
each step reports its own. Without an initialised CUDA context (a CPU run, or before the model is loaded)
the clock is a plain host timer.
"""

from __future__ import annotations

import time

import torch


class StepClock:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._t0 = 0.0

    def _ready(self) -> bool:
        return self._cuda and torch.cuda.is_available() and torch.cuda.is_initialized()

    def sync(self) -> None:
        if self._ready():
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self.sync()
        if self._ready():
            torch.cuda.reset_peak_memory_stats(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> tuple[float, int]:
        """(seconds since start, allocator peak in bytes since start; 0 without CUDA)."""
        self.sync()
        seconds = time.perf_counter() - self._t0
        peak = int(torch.cuda.max_memory_allocated(self.device)) if self._ready() else 0
        return seconds, peak
