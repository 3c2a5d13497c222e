"""What the shareable views (HTML, markdown) say the same way: findings in area order, a fix split into prose
and the command, evidence as short text, and the few facts a reader of an issue needs about the machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wandoc.engine import Finding
from wandoc.engine.expr import HELPERS, show
from wandoc.facts import Facts
from wandoc.render.text import AREAS

fmt_bytes = HELPERS["bytes"]
SHELL_LANG = {"bash": "bash", "zsh": "zsh", "fish": "fish", "cmd": "bat", "powershell": "powershell"}


def by_area(findings: Sequence[Finding]) -> list[tuple[str, list[Finding]]]:
    """Areas with their findings, the area of the most severe finding first (as the terminal shows them)."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.area, []).append(f)
    order = sorted(groups, key=lambda a: (-max(f.rank for f in groups[a]), a))
    return [(a, groups[a]) for a in order]


def area_name(area: str) -> str:
    return AREAS.get(area, area or "Other")


def split_fix(f: Finding) -> tuple[str, str | None]:
    """The fix's prose and, apart, the command for the user's shell (the engine appends it to the prose)."""
    command = f.fix_command
    if not command:
        return f.fix, None
    prose = f.fix[: -len(command)].rstrip() if f.fix.endswith(command) else f.fix
    return prose, command


def evidence_text(value: Any, limit: int = 300) -> str:
    text = show(value) if not isinstance(value, dict) else ", ".join(f"{k}={show(v)}" for k, v in value.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(value: int) -> str:
    return fmt_bytes(value) or "0 B"


def _packages(facts: Facts) -> str:
    names = ("flash_attn", "flash_attn_3", "sageattention", "xformers", "triton", "diffusers", "accelerate")
    found = [f"{n} {pkg.version}".strip() for n in names if (pkg := getattr(facts.packages, n)).installed]
    return ", ".join(found) or "none of flash_attn, sageattention, xformers, triton"


def _machine(facts: Facts) -> list[tuple[str, str]]:
    p, s = facts.platform, facts.system
    os_line = " ".join(x for x in (p.os, p.release, p.machine) if x) + (" (WSL2)" if p.wsl else "")
    rows = [("OS", os_line or "unknown"), ("Python", p.python or "unknown"), ("shell", p.shell)]
    if s.error:
        return [*rows, ("RAM", f"not read ({s.error})")]
    ram = f"{_size(s.ram_available_bytes)} free of {_size(s.ram_total_bytes)}"
    swap = f"swap {_size(s.swap_used_bytes)} used of {_size(s.swap_total_bytes)}"
    cpu = f"{s.cpu_model}, " if s.cpu_model else ""
    return [*rows, ("CPU", f"{cpu}{s.cpu_count} cores"), ("RAM", f"{ram}; {swap}")]


def _gpus_and_torch(facts: Facts) -> list[tuple[str, str]]:
    n, t = facts.nvml, facts.torch
    rows: list[tuple[str, str]] = []
    if n.available:
        rows.append(("driver", f"{n.driver_version} (CUDA {n.cuda_driver_version:g})"))
        for g in n.gpus:
            memory = f"{_size(g.memory_free_bytes)} free of {_size(g.memory_total_bytes)}"
            rows.append((f"GPU {g.index}", f"{g.name}, compute {g.compute_capability:g}, {memory}"))
        if n.visible_indices is not None:
            rows.append(("visible GPUs", ", ".join(str(i) for i in n.visible_indices) or "none"))
    else:
        rows.append(("GPUs", f"not read ({n.error or 'NVML not available'})"))
    if not t.installed:
        return [*rows, ("torch", f"not installed ({t.error})" if t.error else "not installed")]
    build = "CPU-only build" if t.is_cpu_build else (f"CUDA {t.cuda_build:g}" if t.cuda_build else t.hip_build)
    rows.append(("torch", f"{t.version} ({build})" if build else t.version))
    if t.deep.ran:
        seen = f"CUDA available, {t.deep.device_name}" if t.deep.cuda_available else "CUDA not available"
        rows.append(("torch at run time", f"{seen} {t.deep.error or ''}".strip()))
    return rows


def _code(facts: Facts) -> list[tuple[str, str]]:
    r, g, c, e = facts.repo, facts.git, facts.checkpoints, facts.estimate
    rows: list[tuple[str, str]] = []
    if r.found:
        wan = f", Wan {r.wan_version}" if r.wan_version else ""
        rows.append(("checkout", f"{r.path} ({r.entry_script}{wan})"))
        if r.given_args:
            rows.append(("generate.py args", " ".join(r.given_args)))
    if g.is_repo:
        dirty = " (uncommitted changes)" if g.dirty else ""
        rows.append(("git", f"{g.branch or 'detached'} @ {g.commit[:10]}{dirty}"))
        if g.compare_ref:
            changed = f"{len(g.changed_on_path)} changed file(s) on the run's path, {len(g.changed_off_path)} off it"
            rows.append(("compared with", f"{g.compare_ref}: {changed}"))
    if c.found:
        dit = f", DiT {c.dit_params / 1e9:.1f}B params in {c.dit_main_dtype}" if c.dit_params else ""
        rows.append(("checkpoints", f"{c.dir}: {len(c.files)} file(s){dit}"))
    if e.known:
        need = f"{_size(e.peak_vram_no_offload)} VRAM without offload, {_size(e.peak_vram_offload)} with offload"
        rows.append((f"memory estimate ({e.task})", need))
    return rows


def key_facts(facts: Facts, source: str) -> list[tuple[str, str]]:
    """(label, value) rows: what a maintainer asks first about a slow run, read from the facts as they are."""
    rows = [("judged", source)] + ([("wandoc", facts.wandoc_version)] if facts.wandoc_version else [])
    attention = [("attention and friends", _packages(facts))]
    return [*rows, *_machine(facts), *_gpus_and_torch(facts), *attention, *_code(facts)]
