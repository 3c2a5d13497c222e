"""RAM, swap and CPU: offloaded experts and a CPU-resident T5 live in system RAM, and paging is a slow run."""

from __future__ import annotations

import platform

from wandoc.facts import SystemFacts


def cpu_model_from_cpuinfo(text: str) -> str:
    """The first "model name" (x86) or "Model"/"Hardware" (ARM boards) line of /proc/cpuinfo."""
    for key in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return ""


def cpu_model() -> str:
    """This machine's CPU model, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = cpu_model_from_cpuinfo(f.read(1 << 20))
        if model:
            return model
    except OSError:
        pass
    return platform.processor()


def probe_system() -> SystemFacts:
    facts = SystemFacts()
    errors: list[str] = []
    try:
        import psutil
    except Exception as exc:
        facts.error = f"psutil unavailable: {exc}"
        return facts
    try:
        vm = psutil.virtual_memory()
        facts.ram_total_bytes = int(vm.total)
        facts.ram_available_bytes = int(vm.available)
    except Exception as exc:
        errors.append(f"memory: {exc}")
    try:
        sm = psutil.swap_memory()
        facts.swap_total_bytes = int(sm.total)
        facts.swap_used_bytes = int(sm.used)
    except Exception as exc:
        errors.append(f"swap: {exc}")
    try:
        facts.cpu_count = int(psutil.cpu_count(logical=True) or 0)
    except Exception as exc:
        errors.append(f"cpu count: {exc}")
    try:
        facts.cpu_model = cpu_model()
    except Exception as exc:
        errors.append(f"cpu model: {exc}")
    facts.error = "; ".join(errors) or None
    return facts
