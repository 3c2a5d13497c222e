"""The step clock: a step's device time from CUDA events, read once the device gets there, never by draining it.

A host timer around a step measures launches, not work. Draining the device at each boundary
(``torch.cuda.synchronize``) makes the timer honest, but the host then cannot queue the next step's kernels while
the device finishes this one: at small shapes, where the host launches just ahead of the device, that bubble
costs percents. So a step records an event on the current stream at its start and at its end, and the clock
reads them later: ``poll`` when the end event has completed, or ``wait`` for it, which blocks only until the
device reaches that event while everything queued after it keeps the device busy. The guard waits for a step at
the end of the next one (one step late), at the end of an inspected step (slow anyway, and its findings should
come at once), at a phase boundary and at the end of the run. A step's seconds are the device time between its
two events: the old synchronised figure, without the host's launch gap before the first kernel.

The VRAM peak needs no sync: the caching allocator is stream-ordered and books each allocation and free when the
host issues it, so its high-water mark between the reset at a step's start and the read at its end is the peak
of that step's own allocations, whatever the device is running. Blind spot: work on other streams is not
timed (the events live on the current stream). Without an initialised CUDA context (a CPU run, or before the
model is loaded) the clock is a host timer and a step is known at its end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Event(Protocol):
    """What the clock needs of ``torch.cuda.Event`` (tests give a stand-in with the same four calls)."""

    def record(self, stream: Any = None) -> None: ...

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...

    def elapsed_time(self, end_event: Any) -> float: ...  # milliseconds


@dataclass(slots=True)
class StepTiming:
    """One step on the clock: host times at once, device seconds once the end event has completed."""

    t0: float = 0.0  # host, at the start (perf_counter)
    t1: float = 0.0  # host, at the end: when its last launch returned
    start: Event | None = None
    end: Event | None = None
    peak: int | None = None  # allocator high-water mark of the step, bytes (None without CUDA)
    reserved: int | None = None  # memory the allocator holds from the device at the step's end
    seconds: float | None = None  # None until resolved
    t_done: float = 0.0  # host time at which the device was known to be past the step (for the NVML window)

    @property
    def host_seconds(self) -> float:
        return self.t1 - self.t0

    def give_up(self) -> None:
        """Keep the host's time: the device failed, or its events cannot be read."""
        self.seconds = self.host_seconds
        self.t_done = self.t1
        self.start = self.end = None


def _allocator(device: int | str | torch.device) -> tuple[int, int]:
    """(the allocator's peak since the last reset, what it holds now); the nested stats skip ``memory_stats``'
    flattening, and one read gives both."""
    try:
        stats = torch.cuda.memory_stats_as_nested_dict(device)
        return int(stats["allocated_bytes"]["all"]["peak"]), int(stats["reserved_bytes"]["all"]["current"])
    except (KeyError, TypeError):
        return int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.memory_reserved(device))


class StepClock:
    def __init__(self, device: torch.device, events: Callable[[], Event] | None = None) -> None:
        """``events`` makes timing events (default: ``torch.cuda.Event`` once CUDA is initialised)."""
        self.device = device
        self._cuda = device.type == "cuda"
        self._make = events
        self._free: list[Event] = []  # events of resolved steps, recorded again by later ones
        self._initialised = False
        self._index: int | str | torch.device = device

    def _ready(self) -> bool:
        """CUDA is initialised (once it is, it stays so: the answer is kept). Then the device's index is read once:
        torch resolves a bare ``cuda`` anew in every call that takes a device (about 7 us each, four a step)."""
        if not self._initialised and self._cuda:
            self._initialised = torch.cuda.is_available() and torch.cuda.is_initialized()
            if self._initialised:
                with contextlib.suppress(Exception):
                    self._index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return self._initialised

    @property
    def on_device(self) -> bool:
        """Steps are timed by device events (resolved later) rather than by the host clock."""
        return self._make is not None or self._ready()

    def sync(self) -> None:
        if self._ready():
            torch.cuda.synchronize(self._index)

    def _event(self) -> Event:
        if self._free:
            return self._free.pop()
        if self._make is not None:
            return self._make()
        return torch.cuda.Event(enable_timing=True)

    def _record(self) -> Event:
        event = self._event()
        event.record(torch.cuda.current_stream(self._index) if self._make is None else None)
        return event

    def start(self) -> StepTiming:
        timing = StepTiming()
        if self._ready():
            torch.cuda.reset_peak_memory_stats(self._index)
        if self.on_device:
            timing.start = self._record()
        timing.t0 = time.perf_counter()
        return timing

    def stop(self, timing: StepTiming) -> None:
        """Mark the step's end without waiting; a host-timed step is resolved here."""
        timing.t1 = time.perf_counter()
        if timing.start is not None:
            timing.end = self._record()
        else:
            timing.seconds, timing.t_done = timing.host_seconds, timing.t1
        if self._ready():
            timing.peak, timing.reserved = _allocator(self._index)

    def poll(self, timing: StepTiming) -> bool:
        """Resolve the step if the device is past its end; True when its seconds are known."""
        if timing.seconds is None:
            if timing.end is None or not timing.end.query():
                return False
            self._resolve(timing)
        return True

    def wait(self, timing: StepTiming) -> None:
        """Resolve the step, waiting for the device to reach its end (not for the work queued after it)."""
        if timing.seconds is None:
            if timing.end is None:  # stopped without an end event (the step never closed): host time
                timing.give_up()
                return
            timing.end.synchronize()
            self._resolve(timing)

    def _resolve(self, timing: StepTiming) -> None:
        start, end = timing.start, timing.end
        assert start is not None and end is not None
        timing.t_done = time.perf_counter()
        timing.seconds = start.elapsed_time(end) / 1000.0
        timing.start = timing.end = None
        self._free += [start, end]
