"""GPU signals for free: a background thread sampling NVML while the run goes on.

NVML answers from the driver without touching the CUDA stream, so sampling costs the run nothing but a few
GIL hand-offs per second (the calls release the GIL while in the driver). It gives what the allocator cannot:
this process's VRAM as the driver sees it (the honest figure, including the CUDA context and other
allocators), utilisation and power draw. The sampler never raises: a missing library, a refused query or an
unknown device becomes ``reason`` and ``None`` values, and the run goes on.

Per-process VRAM is not always visible: inside a container the driver reports host PIDs, and Windows (WDDM)
does not report per-process usage at all. Then the device-wide figure is used and ``process_vram`` says so.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Sample:
    t: float
    util: float | None
    used: int | None  # this process when visible, else the whole device
    power_w: float | None


@dataclass(slots=True)
class Window:
    gpu_util: float | None = None  # mean over the window, percent
    vram_used_bytes: int = 0  # max over the window
    power_w: float | None = None  # mean over the window


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVML raises its own error types per field; any failure is just "not readable"
        return None


class NvmlSampler:
    """Samples one GPU every ``interval`` seconds; ``window(t0, t1)`` summarises a step."""

    def __init__(
        self,
        index: int = 0,
        uuid: str | None = None,
        pci_bus_id: str | None = None,
        interval: float = 0.1,
        keep: int = 36_000,
    ) -> None:
        self.index, self.uuid, self.pci_bus_id, self.interval = index, uuid, pci_bus_id, interval
        self.available = False
        self.reason = "not started"
        self.name = ""
        self.total_bytes = 0
        self.power_limit_w = 0.0
        self.driver_version = ""
        self.process_vram: bool | None = None  # None: not known yet; False: device-wide figure used
        self._nvml: Any = None
        self._handle: Any = None
        self._pid = os.getpid()
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> bool:
        """Open NVML and start sampling; False (with ``reason``) when NVML cannot be used here."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:
            self.reason = f"NVML not available: {type(exc).__name__}: {exc}".strip()
            return False
        self._nvml = pynvml
        self._handle = self._find_handle()
        if self._handle is None:
            self.reason = f"NVML has no device matching the run's GPU (index {self.index})"
            _call(pynvml.nvmlShutdown)
            self._nvml = None
            return False
        name = _call(pynvml.nvmlDeviceGetName, self._handle)
        self.name = name.decode() if isinstance(name, bytes) else str(name or "")
        mem = _call(pynvml.nvmlDeviceGetMemoryInfo, self._handle)
        self.total_bytes = int(mem.total) if mem is not None else 0
        limit = _call(pynvml.nvmlDeviceGetEnforcedPowerLimit, self._handle)
        self.power_limit_w = limit / 1000.0 if isinstance(limit, int | float) else 0.0
        driver = _call(getattr(pynvml, "nvmlSystemGetDriverVersion", lambda: ""))
        self.driver_version = driver.decode() if isinstance(driver, bytes) else str(driver or "")
        self.available, self.reason = True, ""
        self._sample()
        self._thread = threading.Thread(target=self._run, name="wanrun-nvml-sampler", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._nvml is not None:
            _call(self._nvml.nvmlShutdown)
            self._nvml = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _find_handle(self) -> Any:
        nv = self._nvml
        if self.uuid:
            for u in (self.uuid, f"GPU-{self.uuid}"):
                handle = _call(nv.nvmlDeviceGetHandleByUUID, u)
                if handle is not None:
                    return handle
        if self.pci_bus_id:
            handle = _call(nv.nvmlDeviceGetHandleByPciBusId, self.pci_bus_id)
            if handle is not None:
                return handle
        return _call(nv.nvmlDeviceGetHandleByIndex, self.index)

    # -- sampling ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _process_used(self) -> int | None:
        procs = _call(self._nvml.nvmlDeviceGetComputeRunningProcesses, self._handle) or []
        mine = [p for p in procs if getattr(p, "pid", None) == self._pid]
        used = [getattr(p, "usedGpuMemory", None) for p in mine]
        known = [u for u in used if isinstance(u, int)]
        return sum(known) if known else None

    def _sample(self) -> None:
        try:
            nv, h = self._nvml, self._handle
            rates = _call(nv.nvmlDeviceGetUtilizationRates, h)
            power = _call(nv.nvmlDeviceGetPowerUsage, h)
            used = self._process_used()
            if used is not None:
                self.process_vram = True
            else:
                mem = _call(nv.nvmlDeviceGetMemoryInfo, h)
                used = int(mem.used) if mem is not None else None
                if self.process_vram is None and used:
                    self.process_vram = False
            sample = Sample(
                time.perf_counter(),
                float(rates.gpu) if rates is not None else None,
                used,
                power / 1000.0 if isinstance(power, int | float) else None,
            )
            with self._lock:
                self._samples.append(sample)
        except Exception:  # a sampler thread must never take the run down
            return

    def window(self, t0: float, t1: float) -> Window:
        """Summary of the samples taken in [t0, t1] (``time.perf_counter`` times); a step shorter than the
        interval gets the last sample before its end."""
        inside: list[Sample] = []
        with self._lock:
            for s in reversed(self._samples):  # steps are recent: walk back from the newest sample
                if s.t > t1:
                    continue
                if s.t < t0:
                    if not inside and t1 - s.t < 1.0:
                        inside.append(s)
                    break
                inside.append(s)
        if not inside:
            return Window()
        utils = [s.util for s in inside if s.util is not None]
        powers = [s.power_w for s in inside if s.power_w is not None]
        used = [s.used for s in inside if s.used is not None]
        return Window(
            gpu_util=sum(utils) / len(utils) if utils else None,
            vram_used_bytes=max(used) if used else 0,
            power_w=sum(powers) / len(powers) if powers else None,
        )
