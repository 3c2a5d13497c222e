"""The doctor's checklist: every area it looked at, one line each, before the findings (as ``flutter doctor``
starts): passed, with issues (the worst finding's severity), or not checked and how to check it.

Each line is read from the facts; the findings are laid on it by their rule's area, and, for the lines that
share an area with another (the torch build and torch at run time; generate.py's arguments and the several-GPU
ones; the platform and RAM), by what the rule's condition reads. The JSON summary's ``checked`` and
``not_checked`` are these lines too, so every view says the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from wandoc.engine import Finding, Rule
from wandoc.engine.expr import HELPERS
from wandoc.facts import Facts

State = Literal["passed", "issues", "not_checked"]
_bytes: Callable[[object], str | None] = HELPERS["bytes"]


def size(value: float) -> str:
    return _bytes(value) or "0 B"


class CheckItem(BaseModel):
    """One line of the doctor's checklist: an area it looked at (or could not), with what it saw."""

    key: str = Field(description="env, platform, ram, gpus, torch, torch_runtime, attention, code, args, estimate, "
                     "checkpoints, git, parallel")  # fmt: skip
    label: str = Field(description="The area in words, e.g. 'GPUs (NVML)'.")
    state: State = Field(
        description="passed (looked at, nothing found), issues (findings below), not_checked (could not look)."
    )
    checked: bool = Field(
        True, description="The area could be looked at; false with issues when findings came all the same."
    )
    detail: str = Field("", description="What was seen, or why it could not be looked at.")
    how: str = Field("", description="How to check it, when it was not checked.")
    severity: str = Field("", description="The worst severity among its findings (issues only).")
    rules: list[str] = Field(default_factory=list, description="The ids of the findings laid on this line.")
    evidence: list[tuple[str, str]] = Field(
        default_factory=list, description="(label, value) pairs of what was seen, for `wandoc check -v`."
    )


@dataclass(frozen=True)
class _Line:
    key: str
    label: str
    areas: tuple[str, ...]  # rule areas whose findings this line takes
    reads: tuple[str, ...] = ()  # on a shared area: the facts this line is about, which its rules read
    see: Callable[[Facts], tuple[State, str, str, list[tuple[str, str]]]] = lambda f: ("passed", "", "", [])


# -- what each line saw -------------------------------------------------------------------------------------


def _env(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    read = sorted(f.repo.env_vars)
    shown = [(name, f.env.vars[name]) for name in read if name in f.env.vars]
    unset = [name for name in read if name not in f.env.vars]
    if unset:
        shown.append(("read by the code, not set", ", ".join(unset)))
    where = f", {len(read)} of them read by the checkout's code" if read else ""
    return "passed", f"{len(f.env.vars)} variables in this process{where}", "", shown


def _platform(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    p = f.platform
    os_line = " ".join(x for x in (p.os, p.release, p.machine) if x) + (" (WSL2)" if p.wsl else "")
    rows = [("OS", os_line or "unknown"), ("Python", p.python or "unknown"), ("shell", p.shell)]
    if p.error:
        return "not_checked", p.error, "", rows
    return "passed", f"{os_line or 'unknown OS'}, Python {p.python or '?'}", "", rows


def _ram(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    s = f.system
    if s.error:
        return "not_checked", s.error, "", []
    ram = f"{size(s.ram_available_bytes)} free of {size(s.ram_total_bytes)}"
    swap = f"swap {size(s.swap_used_bytes)} used of {size(s.swap_total_bytes)}"
    cpu = f"{s.cpu_model}, " if s.cpu_model else ""
    return "passed", f"{ram}; {swap}", "", [("CPU", f"{cpu}{s.cpu_count} cores"), ("RAM", f"{ram}; {swap}")]


def _gpus(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    n, amd = f.nvml, f.amd
    if not n.available:
        if amd.gpus:
            names = ", ".join(g.gfx or f"node {g.node}" for g in amd.gpus)
            return "passed", f"no NVIDIA GPU read; AMD (ROCm KFD): {len(amd.gpus)} GPU(s), {names}", "", []
        how = "on a machine with an NVIDIA GPU, install its driver: nvidia-smi must list the card"
        return "not_checked", n.error or "NVML not available", how, []
    rows = [("driver", f"{n.driver_version} (CUDA {n.cuda_driver_version:g})")]
    for g in n.gpus:
        memory = f"{size(g.memory_free_bytes)} free of {size(g.memory_total_bytes)}"
        rows.append((f"GPU {g.index}", f"{g.name}, compute {g.compute_capability:g}, {memory}"))
    if n.visible_indices is not None:
        rows.append(("visible GPUs", ", ".join(str(i) for i in n.visible_indices) or "none"))
    names = "; ".join(v for k, v in rows if k.startswith("GPU "))
    return "passed", f"{n.gpu_count} GPU(s): {names or 'none'}; driver {n.driver_version}", "", rows


def _torch(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    t = f.torch
    if not t.installed:
        why = f"not installed ({t.error})" if t.error else "not installed for this Python"
        return "not_checked", why, "install torch for your CUDA (pytorch.org shows the command)", []
    build = "CPU-only build" if t.is_cpu_build else (f"CUDA {t.cuda_build:g}" if t.cuda_build else t.hip_build)
    rows = [("torch", f"{t.version} ({build})" if build else t.version)]
    if t.cudnn_version:
        rows.append(("cuDNN", f"{t.cudnn_version} ({t.cudnn_from})" if t.cudnn_from else str(t.cudnn_version)))
    if t.location:
        rows.append(("location", t.location))
    return "passed", f"{rows[0][1]}, read from its files", "", rows


def _torch_runtime(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    d = f.torch.deep
    if not d.ran:
        how = "add --deep, which imports torch in a subprocess for a few seconds"
        return "not_checked", "torch was not imported", how, []
    if not d.import_ok:
        return "passed", f"the import failed: {d.error or 'no reason given'}", "", []
    rows = [("import", f"{d.seconds:.1f} s"), ("CUDA", "available" if d.cuda_available else "not available")]
    rows += [(name, status) for name, status in d.attention_imports.items()]
    if not d.cuda_available:
        cpu_build = f.torch.is_cpu_build
        why = "a CPU-only torch build" if cpu_build else (d.error or "torch sees no CUDA device")
        how = ("on a machine with an NVIDIA GPU, with a CUDA build of torch" if cpu_build
               else "see that nvidia-smi lists the GPU and CUDA_VISIBLE_DEVICES does not hide it")  # fmt: skip
        return "not_checked", f"torch imported in {d.seconds:.1f} s, but no GPU matmul was possible: {why}", how, rows
    rows.append(("GPU", f"{d.device_name}, {d.device_count} device(s)"))
    if not d.matmul_ok:
        return "passed", f"imported, CUDA on {d.device_name}, but the matmul failed: {d.error or '?'}", "", rows
    rows.append(("matmul", f"{d.matmul_ms:.1f} ms"))
    return "passed", f"imported in {d.seconds:.1f} s; a matmul ran on {d.device_name}", "", rows


def _attention(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    names = ("flash_attn", "flash_attn_3", "sageattention", "xformers", "triton", "diffusers", "accelerate")
    rows = [(n, pkg.version or "installed") for n in names if (pkg := getattr(f.packages, n)).installed]
    found = ", ".join(f"{n} {v}" for n, v in rows)
    return "passed", found or "none of flash_attn, sageattention, xformers, triton installed", "", rows


def _code(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    r = f.repo
    if not r.found:
        if r.given:
            return "not_checked", r.error or "not a checkout", "point --repo at the Wan checkout", []
        return "not_checked", "no Wan checkout here", "add --repo DIR, the folder with generate.py", []
    wan = f", Wan {r.wan_version}" if r.wan_version else ""
    rows = [("checkout", f"{r.path} ({r.entry_script}{wan})")]
    entry = r.call_graph.entry or r.import_path.entry  # facts recorded before the call graph name the walk's
    if not r.call_graph.entry and not r.import_path.modules:  # the default entry's name, but no file was walked
        return "not_checked", f"{r.path}: {r.error or 'no entry script found'}", "name the entry with --script", rows
    rows.append(("files on the run's path", str(len(r.import_path.modules))))
    rows.append(("functions walked", str(r.call_graph.functions_walked)))
    files = len(r.import_path.modules)
    return "passed", f"{r.path}: {entry or r.entry_script} and the {files} file(s) it imports{wan}", "", rows


def _args(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    r = f.repo
    script = r.entry_script or "generate.py"
    if not r.found or not (r.call_graph.entry or r.import_path.entry or r.args):
        how = "add --repo DIR, then the run's arguments after --"
        return "not_checked", "no entry script to parse them with", how, []
    if r.args_note:
        return "not_checked", r.args_note, "", []
    if not r.args:
        return "not_checked", f"{script} defines no arguments the doctor could read", "", []
    rows = [("given", " ".join(r.given_args) or "(none)")]
    rows += [(k, str(v)) for k, v in sorted(r.effective.items()) if v is not None]
    if r.args_error:
        return "passed", f"they do not parse as {script} parses them", "", rows
    given = f"{len(r.given_args)} given after --" if r.given_args else f"none after --: {script}'s defaults"
    return "passed", f"{given}, parsed as {script} parses them", "", rows


def _estimate(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    e = f.estimate
    if e.known:
        need = f"{size(e.peak_vram_no_offload)} VRAM without offload, {size(e.peak_vram_offload)} with it"
        rows = [("DiT", f"{e.dit_params / 1e9:.1f}B params x {e.dit_experts} in {e.dit_runtime_dtype}")]
        rows += [("parked in RAM by offload", size(e.offloaded_bytes)), ("how", e.note)]
        return "passed", f"{e.task or 'the run'}: {need}", "", rows
    if f.repo.args_error:
        why = "skipped, because the arguments after -- do not parse"
        return "not_checked", why, "correct the arguments", []
    if not f.repo.found:
        return "not_checked", "no checkout, so no task to size", "add --repo DIR -- --task TASK", []
    return "not_checked", e.note or "no task to size", "give the run's --task (and --ckpt_dir) after --", []


def _checkpoints(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    c = f.checkpoints
    if not c.given:
        return "not_checked", "no checkpoint folder named", "give the run's --ckpt_dir after --, or --ckpt-dir DIR", []
    if not c.found:
        return "passed", c.error or f"{c.dir} not found", "", []
    if not c.files:
        return "passed", f"{c.dir}: no weight files", "", []
    dit = f", DiT {c.dit_params / 1e9:.1f}B params in {c.dit_main_dtype}" if c.dit_params else ""
    rows = [(m.folder or ".", f"{m.role or '?'}: {m.files} file(s), {size(m.bytes)}, {m.main_dtype}") for m in c.models]
    if c.storage.fstype:
        rows.append(("storage", f"{c.storage.fstype} on {c.storage.device or '?'}"))
    return "passed", f"{c.dir}: {len(c.files)} weight file(s){dit}", "", rows


def _git(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    g = f.git
    rows = [("git", f"{g.branch or 'detached'} @ {g.commit[:10]}" + (" (uncommitted changes)" if g.dirty else ""))]
    if not g.compare_ref:
        how = "add --compare REF, a branch or commit that was fast"
        return "not_checked", "no branch to compare with", how, rows if g.is_repo else []
    if g.compare_error:
        return "passed", f"{g.compare_ref}: {g.compare_error}", "", rows
    on, off = len(g.changed_on_path), len(g.changed_off_path)
    return "passed", f"{g.compare_ref}: {len(g.changed)} file(s) differ, {on} on the run's path, {off} off it", "", rows


def _parallel(f: Facts) -> tuple[State, str, str, list[tuple[str, str]]]:
    p = f.parallel
    if not p.requested:
        return "passed", "one process: no multi-GPU arguments", "", []
    rows = [(k, str(v)) for k, v in (("ulysses_size", p.ulysses_size), ("dit_fsdp", p.dit_fsdp),
                                     ("t5_fsdp", p.t5_fsdp), ("heads", p.heads)) if v not in (None, False)]  # fmt: skip
    if p.world_size is None:
        why = p.error or "WORLD_SIZE is not set"
        return "not_checked", why, "run the doctor under torchrun, or export WORLD_SIZE=N", rows
    return "passed", f"world size {p.world_size} ({p.world_size_from})", "", rows


DEEP_FACTS = ("torch.deep.ran",)  # rules that need the --deep probe to have run
SPLIT_FACTS = ("parallel.world_size", "parallel.local_world_size", "parallel.sp_size", "parallel.ulysses_size",
               "parallel.heads", "parallel.dit_fsdp", "parallel.t5_fsdp")  # fmt: skip
LINES: tuple[_Line, ...] = (  # in the order they are shown
    _Line("env", "Environment variables", ("ENV",), see=_env),
    _Line("platform", "Platform", ("SYS",), ("platform.",), see=_platform),
    _Line("ram", "RAM and swap", ("SYS",), see=_ram),
    _Line("gpus", "GPUs (NVML)", ("GPU",), see=_gpus),
    _Line("torch", "torch build", ("TORCH",), see=_torch),
    _Line("torch_runtime", "torch at run time (--deep)", ("TORCH", "GPU", "ATTN"), DEEP_FACTS, see=_torch_runtime),
    _Line("attention", "Attention packages", ("ATTN",), see=_attention),
    _Line("code", "Checkout code", ("CODE",), see=_code),
    _Line("args", "generate.py arguments", ("ARGS",), see=_args),
    _Line("estimate", "Memory estimate", (), see=_estimate),
    _Line("checkpoints", "Checkpoints", ("CKPT",), see=_checkpoints),
    _Line("git", "Branch comparison", ("GIT",), see=_git),
    _Line("parallel", "Several GPUs", ("ARGS",), SPLIT_FACTS, see=_parallel),
)


def _reads(condition: str, roots: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(root)}", condition) for root in roots)


def _owner(f: Finding, conditions: Mapping[str, str]) -> str | None:
    """The line a finding belongs to: the first whose area is the rule's and, on a shared area, whose facts the
    rule's condition reads."""
    condition = conditions.get(f.rule, "")
    specific = [line for line in LINES if line.reads and _reads(condition, line.reads)]
    for line in [*specific, *(line for line in LINES if not line.reads)]:
        if f.area in line.areas:
            return line.key
    return None


def checklist(facts: Facts, findings: Sequence[Finding], conditions: Mapping[str, str]) -> list[CheckItem]:
    """The lines in reading order. ``conditions``: rule id -> the text of its ``when`` and ``each``."""
    owned: dict[str, list[Finding]] = {}
    for f in findings:
        if (key := _owner(f, conditions)) is not None:
            owned.setdefault(key, []).append(f)
    items = []
    for line in LINES:
        key = line.key
        state, detail, how, rows = line.see(facts)
        mine = owned.get(key, [])
        item = CheckItem(key=key, label=line.label, state=state, checked=state != "not_checked", detail=detail,
                         how=how, evidence=rows)  # fmt: skip
        if mine:
            worst = max(mine, key=lambda x: x.rank)
            item.state, item.severity = "issues", worst.severity
            item.rules = list(dict.fromkeys(x.rule for x in mine))
        items.append(item)
    return items


def coverage(items: Sequence[CheckItem], probe_errors: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(checked, not checked) as lines of text, for the JSON summary and the shared views."""
    seen = [f"{i.label}: {i.detail}" for i in items if i.checked]
    unseen = [f"{i.label}: {i.detail}" + (f" ({i.how})" if i.how else "") for i in items if not i.checked]
    return seen, [*unseen, *(f"probe failed: {e}" for e in probe_errors)]


def conditions_of(rules: Sequence[Rule]) -> dict[str, str]:
    """Rule id -> what its condition reads (``when`` and ``each``), for laying findings on lines."""
    return {r.id: f"{r.when} {r.each or ''}" for r in rules}
