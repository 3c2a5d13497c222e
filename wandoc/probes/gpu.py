"""The GPUs as the driver sees them (NVML), and which of them CUDA_VISIBLE_DEVICES leaves to the run.

NVML answers without CUDA or torch, so the doctor can name the card, its free memory, who else holds VRAM
and why clocks are down even when torch is a CPU-only build. Every NVML call may fail on its own (a laptop
GPU without power readings, WDDM hiding per-process memory): a refused field is recorded, never fatal.
Where Windows hides per-process memory, the VRAM others hold is the device's used memory minus this process's.
NVLink links and how each pair of GPUs is wired (NVML's common ancestor) say whether a multi-GPU run's
all-to-all traffic crosses PCIe.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wandoc.facts import GpuFacts, GpuPair, GpuProcess, NvmlFacts

# NVML clock-event (throttle) reason bits, named the way the rules read them.
THROTTLE_BITS: dict[int, str] = {
    0x1: "idle",
    0x2: "applications_clocks",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}

# nvmlDeviceGetTopologyCommonAncestor's levels, named the way the rules read them
TOPOLOGY_LEVELS: dict[int, str] = {
    0: "same_board",
    10: "single_switch",
    20: "multiple_switches",
    30: "host_bridge",
    40: "numa_node",
    50: "system",
}
MAX_NVLINKS = 36  # NVML_NVLINK_MAX_LINKS; the loop stops at the first link the device does not have
MAX_TOPOLOGY_GPUS = 16  # pairs grow with the square; a 16-GPU node has 120
_NOT_SUPPORTED, _INVALID_ARGUMENT = 3, 2

# NVML error codes for failures at start-up that deserve a sentence of their own.
_INIT_REASONS: dict[int, str] = {
    12: "NVML library not found (no NVIDIA driver installed, or its library is not on the search path)",
    9: "NVIDIA driver not loaded",
    4: "no permission to query the NVIDIA driver",
    18: "NVIDIA driver and NVML library versions differ (a driver update waiting for a reboot?)",
    15: "GPU is lost (fell off the bus)",
}


def decode_throttle_reasons(mask: int) -> list[str]:
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_BITS)
    bit = 1
    while unknown:
        if unknown & bit:
            names.append(f"0x{bit:x}")
            unknown &= ~bit
        bit <<= 1
    return names


def cuda_version_from_int(value: int) -> float:
    """NVML and the CUDA runtime encode 12.4 as 12040."""
    return float(f"{value // 1000}.{(value % 1000) // 10}") if value > 0 else 0.0


# -- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------------------


def _leading_int(token: str) -> int | None:
    """What strtoul makes of an entry: "1gpu" is 1, "-1" and "abc" are no device."""
    digits = ""
    for ch in token.removeprefix("+"):
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


def _match_uuid(prefix: str, uuids: Sequence[str]) -> tuple[int | None, str]:
    hits = [i for i, u in enumerate(uuids) if u.startswith(prefix)]
    if len(hits) == 1:
        return hits[0], ""
    return None, "matches no GPU" if not hits else f"matches {len(hits)} GPUs (an ambiguous prefix)"


def _resolve(
    token: str, kind: str, uuids: Sequence[str] | None, mig_parents: Mapping[str, int] | None
) -> tuple[int | None, str]:
    """The GPU index one entry names, or None and why CUDA stops reading there (``uuids`` None: GPUs unknown)."""
    if kind == "index":
        number = _leading_int(token)
        if number is None:
            return None, "is not a GPU index"
        if uuids is not None and number >= len(uuids):
            span = f"0-{len(uuids) - 1}" if uuids else "none"
            return None, f"names GPU {number}, which does not exist (this machine has {len(uuids)}: {span})"
        return number, ""
    if kind == "uuid":
        if not token.startswith("GPU-"):
            return None, "is not a GPU UUID like the first entry (CUDA does not mix indices and UUIDs)"
        return _match_uuid(token, uuids or [])
    if not token.startswith("MIG-"):
        return None, "is not a MIG device like the first entry"
    if token.startswith("MIG-GPU-"):  # the old form names the parent: MIG-GPU-<uuid>/<gi>/<ci>
        return _match_uuid(token[4:].split("/", 1)[0], uuids or [])
    hits = sorted({parent for mig, parent in (mig_parents or {}).items() if mig.startswith(token)})
    if len(hits) == 1:
        return hits[0], ""
    return None, "matches no MIG device" if not hits else "matches MIG devices on several GPUs"


def parse_visible_devices(
    value: str | None, uuids: Sequence[str] | None, mig_parents: Mapping[str, int] | None = None
) -> tuple[list[int] | None, str | None]:
    """The GPU indices (into NVML's list) CUDA will expose under CUDA_VISIBLE_DEVICES=value, and why not all.

    CUDA reads the comma list left to right: the first entry decides whether it holds indices, ``GPU-`` UUID
    prefixes or ``MIG-`` devices; the first entry that is invalid (not a number, "-1", an index past the last
    GPU, an unknown or ambiguous UUID) ends the list, silently. Naming one device twice hides every device.
    ``uuids`` is None when the GPUs are unknown (no NVML): then indices are taken as written and a UUID list
    is undecidable (None). ``mig_parents`` maps MIG device UUIDs to their GPU's index.
    """
    if value is None:
        return None, None
    tokens = [t.strip() for t in value.split(",")]
    if not tokens[0]:
        return [], None  # "" is the documented way to hide every GPU
    kind = "uuid" if tokens[0].startswith("GPU-") else "mig" if tokens[0].startswith("MIG-") else "index"
    if uuids is None and kind != "index":
        return None, None  # UUIDs cannot be matched without the GPUs' list
    shown = f"CUDA_VISIBLE_DEVICES={value!r}"
    visible: list[int] = []
    seen: set[str | int] = set()
    for pos, token in enumerate(tokens):
        index, why = _resolve(token, kind, uuids, mig_parents)
        if index is None:
            if pos == 0 and kind == "index" and (token.startswith("-") or token.lower() == "nodevfiles"):
                return [], None  # "-1" and Slurm's "NoDevFiles" hide every GPU on purpose
            if not any(tokens[pos:]):
                break  # a trailing comma ends the list where it ended anyway
            if pos == 0:
                return [], f"{shown}: the first entry {token!r} {why}, so CUDA sees no GPU at all"
            return visible, f"{shown}: entry {token!r} {why}; CUDA ignores it and every entry after it"
        key: str | int = token if kind == "mig" else index  # two MIG slices of one GPU are not a repeat
        if key in seen:
            return [], f"{shown} names {token!r} twice, and CUDA then shows no GPU at all"
        seen.add(key)
        if index not in visible:
            visible.append(index)
    return visible, None


# -- NVML -------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _read(errors: list[str], field: str, call: Callable[[], Any]) -> Any:
    """One NVML query; a refusal becomes "field: reason" in ``errors``."""
    try:
        return call()
    except Exception as exc:
        errors.append(f"{field}: {exc or type(exc).__name__}")
        return None


def _process_name(nv: Any, pid: int) -> str:
    try:
        import psutil

        return str(psutil.Process(pid).name())
    except Exception:
        pass
    try:
        return os.path.basename(_text(nv.nvmlSystemGetProcessName(pid)))
    except Exception:
        return ""


def _processes(nv: Any, handle: Any, errors: list[str]) -> tuple[list[GpuProcess], bool]:
    """Compute and graphics users merged by pid (a process with both contexts is listed twice by NVML), and
    whether NVML hid any of their memory figures (it does under Windows' WDDM driver model)."""
    used: dict[int, int] = {}
    hidden = False
    for field, fn in (
        ("compute processes", nv.nvmlDeviceGetComputeRunningProcesses),
        ("graphics processes", nv.nvmlDeviceGetGraphicsRunningProcesses),
    ):
        for proc in _read(errors, field, lambda fn=fn: fn(handle)) or []:
            pid = int(proc.pid)
            figure = getattr(proc, "usedGpuMemory", None)
            hidden = hidden or figure is None
            used[pid] = max(used.get(pid, 0), int(figure or 0))
    me = os.getpid()
    procs = [GpuProcess(pid=p, name=_process_name(nv, p), used_bytes=b, is_self=p == me) for p, b in used.items()]
    return procs, hidden


def held_by_others(gpu: GpuFacts, hidden: bool, wddm: bool, reserved: int) -> tuple[int, str]:
    """VRAM held by other processes, and from which figure: the per-process list, or, where per-process memory
    is hidden (WDDM lists processes with no figure, or none at all), the device's used memory minus the
    driver's reserve and what this process holds."""
    listed = sum(p.used_bytes for p in gpu.processes if not p.is_self)
    if (hidden or (wddm and not gpu.processes)) and gpu.memory_total_bytes > 0:
        own = sum(p.used_bytes for p in gpu.processes if p.is_self)
        device = max(gpu.memory_used_bytes - reserved - own, 0)
        if device > listed:
            return device, "device"
    return listed, "processes"


def nvlink_active(nv: Any, handle: Any, errors: list[str]) -> int | None:
    """Links up: NVML answers per link; "not supported" on the first means a PCIe-only GPU, "invalid argument"
    means the device has no more links."""
    active = 0
    for link in range(MAX_NVLINKS):
        try:
            active += int(nv.nvmlDeviceGetNvLinkState(handle, link)) == 1
        except Exception as exc:
            code = getattr(exc, "value", None)
            if code == _NOT_SUPPORTED or (code == _INVALID_ARGUMENT and link > 0):
                return active
            errors.append(f"nvlink: {exc or type(exc).__name__}")
            return None
    return active


def topology(nv: Any, count: int) -> list[GpuPair]:
    """How each pair of GPUs connects; a pair NVML will not describe is left out."""
    pairs: list[GpuPair] = []
    try:
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(min(count, MAX_TOPOLOGY_GPUS))]
    except Exception:
        return pairs
    for a in range(len(handles)):
        for b in range(a + 1, len(handles)):
            try:
                level = int(nv.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b]))
            except Exception:
                continue
            pairs.append(GpuPair(a=a, b=b, level=TOPOLOGY_LEVELS.get(level, str(level))))
    return pairs


def _memory(nv: Any, handle: Any) -> tuple[int, int, int, int]:
    """Total, used (everything not free, the driver's reserve included, as the first version of the query
    counts it), free, and the reserve (the second version splits it out; 0 where only the first answers)."""
    version = getattr(nv, "nvmlMemory_v2", None)
    if version is not None:
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(handle, version=version)
            return int(mem.total), int(mem.total) - int(mem.free), int(mem.free), int(mem.reserved or 0)
        except Exception:
            pass
    mem = nv.nvmlDeviceGetMemoryInfo(handle)
    return int(mem.total), int(mem.used), int(mem.free), 0


def _throttle_mask(nv: Any, handle: Any) -> int:
    getter = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if getter is not None:
        try:
            return int(getter(handle))
        except Exception:
            pass  # older drivers know only the older name
    return int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


def _power_limit_mw(nv: Any, handle: Any) -> int:
    try:
        return int(nv.nvmlDeviceGetEnforcedPowerLimit(handle))
    except Exception:
        return int(nv.nvmlDeviceGetPowerManagementLimit(handle))


def _gpu(nv: Any, index: int, wddm: bool = False) -> GpuFacts:
    gpu = GpuFacts(index=index)
    errs = gpu.errors
    handle = _read(errs, "handle", lambda: nv.nvmlDeviceGetHandleByIndex(index))
    if handle is None:
        return gpu
    gpu.name = _text(_read(errs, "name", lambda: nv.nvmlDeviceGetName(handle)) or "")
    gpu.uuid = _text(_read(errs, "uuid", lambda: nv.nvmlDeviceGetUUID(handle)) or "")
    cc = _read(errs, "compute capability", lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))
    if cc:
        gpu.compute_capability = float(f"{int(cc[0])}.{int(cc[1])}")
    mem = _read(errs, "memory", lambda: _memory(nv, handle))
    reserved = 0
    if mem is not None:
        gpu.memory_total_bytes, gpu.memory_used_bytes, gpu.memory_free_bytes, reserved = mem
    gpu.processes, hidden = _processes(nv, handle, errs)
    gpu.other_processes_bytes, gpu.other_processes_from = held_by_others(gpu, hidden, wddm, reserved)
    gpu.nvlink_active = nvlink_active(nv, handle, errs)
    for attr, field, fn in (
        ("pcie_gen_current", "pcie generation", nv.nvmlDeviceGetCurrPcieLinkGeneration),
        ("pcie_gen_max", "pcie max generation", nv.nvmlDeviceGetMaxPcieLinkGeneration),
        ("pcie_width_current", "pcie width", nv.nvmlDeviceGetCurrPcieLinkWidth),
        ("pcie_width_max", "pcie max width", nv.nvmlDeviceGetMaxPcieLinkWidth),
    ):
        value = _read(errs, field, lambda fn=fn: fn(handle))
        if value is not None:
            setattr(gpu, attr, int(value))
    mask = _read(errs, "throttle reasons", lambda: _throttle_mask(nv, handle))
    if mask is not None:
        gpu.throttle_reasons = decode_throttle_reasons(mask)
    util = _read(errs, "utilization", lambda: nv.nvmlDeviceGetUtilizationRates(handle))
    if util is not None:
        gpu.utilization_gpu = int(util.gpu)
    power = _read(errs, "power", lambda: nv.nvmlDeviceGetPowerUsage(handle))
    if power is not None:
        gpu.power_w = int(power) / 1000.0
    limit = _read(errs, "power limit", lambda: _power_limit_mw(nv, handle))
    if limit is not None:
        gpu.power_limit_w = int(limit) / 1000.0
    return gpu


def _mig_parents(nv: Any, count: int) -> dict[str, int]:
    """MIG device UUID -> its GPU's index, for GPUs in MIG mode (best effort: most machines have none)."""
    parents: dict[str, int] = {}
    for index in range(count):
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            if nv.nvmlDeviceGetMigMode(handle)[0] != 1:
                continue
            for slot in range(int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))):
                try:
                    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                    parents[_text(nv.nvmlDeviceGetUUID(mig))] = index
                except Exception:
                    continue  # an empty slot
        except Exception:
            continue
    return parents


def _init_reason(exc: Exception) -> str:
    code = getattr(exc, "value", None)
    if isinstance(code, int) and code in _INIT_REASONS:
        return _INIT_REASONS[code]
    return f"NVML failed to start: {exc or type(exc).__name__}"


def _collect(nv: Any, facts: NvmlFacts, environ: Mapping[str, str]) -> None:
    problems: list[str] = []
    facts.driver_version = _text(_read(problems, "driver version", nv.nvmlSystemGetDriverVersion) or "")
    cuda = _read(problems, "cuda driver version", lambda: _cuda_driver_version(nv))
    facts.cuda_driver_version = cuda_version_from_int(int(cuda)) if cuda else 0.0
    count = _read(problems, "device count", nv.nvmlDeviceGetCount)
    if count is None:
        facts.error = "; ".join(problems)
        facts.visible_indices, facts.visible_error = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"), None)
        return
    facts.available = True
    facts.gpu_count = int(count)
    facts.gpus = [_gpu(nv, i, wddm=os.name == "nt") for i in range(facts.gpu_count)]
    if facts.gpu_count > 1:
        facts.topology = topology(nv, facts.gpu_count)
    value = environ.get("CUDA_VISIBLE_DEVICES")
    mig = _mig_parents(nv, facts.gpu_count) if value and value.strip().startswith("MIG-") else {}
    facts.visible_indices, facts.visible_error = parse_visible_devices(value, [g.uuid for g in facts.gpus], mig)
    facts.error = "; ".join(problems) or None


def _cuda_driver_version(nv: Any) -> int:
    try:
        return int(nv.nvmlSystemGetCudaDriverVersion_v2())
    except Exception:
        return int(nv.nvmlSystemGetCudaDriverVersion())


def probe_nvml(environ: Mapping[str, str]) -> NvmlFacts:
    facts = NvmlFacts()
    try:
        import pynvml as nv
    except Exception as exc:
        facts.error = f"nvidia-ml-py (pynvml) is not importable: {exc}"
        facts.visible_indices, facts.visible_error = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"), None)
        return facts
    try:
        nv.nvmlInit()
    except Exception as exc:
        facts.error = _init_reason(exc)
        facts.visible_indices, facts.visible_error = parse_visible_devices(environ.get("CUDA_VISIBLE_DEVICES"), None)
        return facts
    try:
        _collect(nv, facts, environ)
    except Exception as exc:
        facts.error = f"NVML query failed: {type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()
    return facts
