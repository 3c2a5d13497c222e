"""What the host shows for free: RAM and swap during the run, bytes read from storage during a phase, and the
work torch.compile does. Each reading is cheap and never raises: what cannot be read is None.

RAM and swap are read at most every ``HostMemory.every`` seconds (about 30 µs a reading from ``/proc``), so a
step of a few milliseconds does not pay for it every time; a step that was not read has null figures.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

# dynamo's timers that cover a whole compile (their sum is the time spent compiling)
_COMPILE_TIMERS = ("_compile.compile_inner",)


@dataclass(slots=True)
class Memory:
    available: int
    total: int
    swap_used: int


class HostMemory:
    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self._last = -1e9
        try:
            import psutil

            self._psutil = psutil
        except ImportError:  # pragma: no cover - a dependency; a broken install only loses the readings
            self._psutil = None

    def read(self, force: bool = False) -> Memory | None:
        now = time.perf_counter()
        if self._psutil is None or (not force and now - self._last < self.every):
            return None
        if not force:  # a forced reading (the run's start) leaves the first step its own
            self._last = now
        try:
            vm, swap = self._psutil.virtual_memory(), self._psutil.swap_memory()
        except Exception:
            return None
        return Memory(int(vm.available), int(vm.total), int(swap.used))


def read_bytes() -> int | None:
    """Bytes this process has read from storage so far (not from the page cache), where the OS tells."""
    try:
        import psutil

        return int(psutil.Process().io_counters().read_bytes)
    except Exception:  # macOS has no per-process I/O counters
        return None


def compile_counters() -> tuple[int, float] | None:
    """(graphs dynamo compiled, seconds it spent compiling) so far in this process; None while torch.compile was
    never used (dynamo not imported: reading it must not import it)."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return None
    try:
        graphs = int(utils.counters["stats"]["unique_graphs"])
        metrics = utils.compilation_time_metrics
        seconds = float(sum(sum(metrics.get(name, ())) for name in _COMPILE_TIMERS))
    except Exception:
        return None
    return graphs, seconds
