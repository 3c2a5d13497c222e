"""How a run splits over several GPUs: the processes torchrun starts and Wan's multi-GPU arguments.

Wan runs on several GPUs as ``torchrun --nproc_per_node=N generate.py --dit_fsdp --t5_fsdp --ulysses_size N``.
generate.py learns the process count from ``WORLD_SIZE``, which torchrun sets; a plain ``python generate.py``
leaves it unset and runs as one process. The doctor sees the same variable only when it runs under torchrun
itself (or the user exports it), so an unset ``WORLD_SIZE`` is recorded as unknown, never as 1: most users run
the doctor from a plain shell before launching with torchrun.

Derived from the repo facts (the effective arguments) and the NVML facts (the GPUs the run can see), so it runs
after those probes; it imports no other probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wandoc.facts import NvmlFacts, ParallelFacts, RepoFacts

# Attention heads of each task's DiT, for a checkout without wan/configs to read them from (the fallback), from
# the official configs (``num_heads`` in wan/configs/*.py):
# Wan2.2 from the wan22 2.2.11 package, Wan2.1 from Wan-Video/Wan2.1 (where t2i-14B and vace-14B reuse the
# t2v-14B config, flf2v-14B the i2v-14B one, and vace-1.3B the t2v-1.3B one).
TASK_HEADS: dict[str, int] = {
    "t2v-A14B": 40,
    "i2v-A14B": 40,
    "ti2v-5B": 24,
    "s2v-14B": 40,
    "animate-14B": 40,
    "t2v-14B": 40,
    "i2v-14B": 40,
    "t2i-14B": 40,
    "flf2v-14B": 40,
    "t2v-1.3B": 12,
    "vace-1.3B": 12,
    "vace-14B": 40,
}
# a fork's own task name still ends in the model size, and every official model of one size has the same
# width: 5120 = 40 x 128, 3072 = 24 x 128, 1536 = 12 x 128
SIZE_HEADS: dict[str, int] = {"A14B": 40, "14B": 40, "5B": 24, "1.3B": 12}


def heads_for_task(task: object) -> tuple[int | None, str]:
    """The attention heads of ``task``'s DiT and where that number comes from; (None, "") when unknown."""
    if not isinstance(task, str) or not task.strip():
        return None, ""
    name = task.strip()
    if name in TASK_HEADS:
        return TASK_HEADS[name], f"official config of {name}"
    suffix = name.rpartition("-")[2].upper()
    if suffix in SIZE_HEADS:
        return SIZE_HEADS[suffix], f"model size {suffix} in the task name"
    return None, ""


def _arg_int(value: Any) -> int | None:
    """An integer argument as the run got it; None when it is missing or not a number (argparse would refuse)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _env_count(environ: Mapping[str, str], name: str) -> tuple[int | None, str | None]:
    """A process count from the environment: (count, None), (None, None) when unset, (None, why) when bad."""
    raw = environ.get(name)
    if raw is None:
        return None, None
    try:
        count = int(raw.strip())
    except ValueError:
        return None, f"{name}={raw!r} is not a whole number: generate.py's int() of it fails"
    if count < 1:
        return None, f"{name}={raw!r} is not a process count"
    return count, None


def divisors_up_to(n: int, limit: int | None) -> list[int]:
    """The ``--ulysses_size`` values ``n`` heads allow: divisors above 1, at most ``limit`` when known."""
    top = n if limit is None else min(n, limit)
    return [d for d in range(2, top + 1) if n % d == 0]


def probe_parallel(environ: Mapping[str, str], repo: RepoFacts, nvml: NvmlFacts) -> ParallelFacts:
    """The multi-GPU facts of the run about to start; never raises."""
    facts = ParallelFacts()
    try:
        _fill(facts, environ, repo, nvml)
    except Exception as exc:  # a probe reports, it does not crash the doctor
        facts.error = f"parallel probe failed: {exc!r}"
    return facts


def _fill(facts: ParallelFacts, environ: Mapping[str, str], repo: RepoFacts, nvml: NvmlFacts) -> None:
    errors: list[str] = []
    facts.world_size, bad = _env_count(environ, "WORLD_SIZE")
    if bad:
        errors.append(bad)
    if facts.world_size is not None:
        # torchrun marks its workers with TORCHELASTIC_RUN_ID; otherwise the user exported WORLD_SIZE
        facts.world_size_from = "torchrun" if "TORCHELASTIC_RUN_ID" in environ else "WORLD_SIZE"
    facts.local_world_size, bad = _env_count(environ, "LOCAL_WORLD_SIZE")
    if bad:
        errors.append(bad)
    if facts.local_world_size is not None:
        facts.local_world_size_from = "LOCAL_WORLD_SIZE"
    elif facts.world_size is not None:
        facts.local_world_size = facts.world_size  # torchrun always sets LOCAL_WORLD_SIZE; by hand, one machine
        facts.local_world_size_from = "WORLD_SIZE, one machine"

    effective = repo.effective
    facts.ulysses_size = _arg_int(effective.get("ulysses_size"))
    facts.ring_size = _arg_int(effective.get("ring_size"))
    if facts.ulysses_size is not None:
        facts.sp_size = facts.ulysses_size * (facts.ring_size if facts.ring_size is not None else 1)
    facts.dit_fsdp = effective.get("dit_fsdp") is True
    facts.t5_fsdp = effective.get("t5_fsdp") is True
    facts.requested = (facts.ulysses_size or 1) > 1 or (facts.ring_size or 1) > 1 or facts.dit_fsdp or facts.t5_fsdp

    if nvml.available:
        facts.visible_gpus = len(nvml.visible_indices) if nvml.visible_indices is not None else nvml.gpu_count

    task = effective.get("task")
    facts.task = task.strip() if isinstance(task, str) else ""
    own = repo.model_configs.get(facts.task, {}).get("num_heads")
    if isinstance(own, int) and not isinstance(own, bool) and own > 0:
        facts.heads, facts.heads_from = own, f"the checkout's own config of {facts.task} (wan/configs)"
    else:
        facts.heads, facts.heads_from = heads_for_task(task)
    if facts.heads is not None:
        facts.ulysses_choices = divisors_up_to(facts.heads, facts.visible_gpus or None)
    facts.error = "; ".join(errors) or None
