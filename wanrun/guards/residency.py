"""Where the denoiser's weights live: read from each parameter's device flag, without a sync or any per-op work.

A full check reads every parameter over a module list built once (0.1-0.15 ms for Wan-1.3B's 825 parameters on
a CPU); the guard runs it on inspected steps and whenever a cheaper sample (about 15 µs) says something moved.
The sample compares with the last full check the first parameter-holding module under each module down to
depth 2 (the model, ``blocks``, each ``blocks.7``) and a rotating slice of the others (``SAMPLE`` a step, every
one within ``period`` steps): a model or a block moved whole (``.to()``, ``.cpu()``, a Wan2.2 expert swapped
in) is seen at the next step, a single layer within ``period`` steps.

CPU-resident modules are reported as the highest modules whose whole subtree is on the CPU (``blocks.3`` rather
than its fifteen linear layers). It also recognises offload hooks that libraries attach to modules on purpose
(accelerate's ``_hf_hook``, diffusers' hook registry), so their traffic can be reported as the cost of a chosen
offload rather than as a bug.

What it cannot see: weights on the CPU that are not module parameters (a tensor held in a plain attribute),
and parameters replaced by ``meta`` placeholders between uses (accelerate's offload): those show up as
traffic in the per-op inspection instead.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

from torch import nn


def _hook_parts(hook: Any) -> list[Any]:
    if hook is None:
        return []
    inner = getattr(hook, "hooks", None)  # accelerate's SequentialHook
    return list(inner) if isinstance(inner, list | tuple) else [hook]


def offload_hook(module: nn.Module) -> str | None:
    """The name of an offload hook a library attached to ``module``, or None."""
    for part in _hook_parts(module.__dict__.get("_hf_hook")):  # plain attributes: no nn.Module lookup
        kind = type(part).__name__
        if kind == "CpuOffload" or getattr(part, "offload", False) is True:
            return kind
        if getattr(part, "weights_map", None) is not None:
            return kind
    registry = module.__dict__.get("_diffusers_hook")
    hooks = getattr(registry, "hooks", None)
    if isinstance(hooks, Mapping):
        for name, part in hooks.items():
            if "offload" in str(name).lower() or "offload" in type(part).__name__.lower():
                return type(part).__name__
    return None


def layerwise_casting(module: nn.Module) -> bool:
    """Diffusers' layerwise casting is on for ``module``: weights stored in one dtype (fp8, say) and cast to the
    compute dtype around each forward, on purpose."""
    hooks = getattr(module.__dict__.get("_diffusers_hook"), "hooks", None)
    return isinstance(hooks, Mapping) and any("layerwise_casting" in str(name) for name in hooks)


def offload_weights_maps(module: nn.Module) -> list[Mapping[str, Any]]:
    """Host-side weight stores of accelerate hooks on ``module`` (the tensors copied in before each use)."""
    maps = []
    for part in _hook_parts(module.__dict__.get("_hf_hook")):
        weights = getattr(part, "weights_map", None)
        if weights is not None and hasattr(weights, "__getitem__"):
            maps.append(weights)
    return maps


Model = tuple[str, str, nn.Module]  # (path prefix, label, module)
SAMPLE = 32  # owners read per sampled check, besides the sentinels
SENTINEL_DEPTH = 2  # ``blocks.7`` is at depth 2 below its model


def dotted(prefix: str, label: str, path: str) -> str:
    """The reported path of a module: bare under a sole denoiser (``blocks.7.ffn.0``), else under its model's
    prefix; a model's root module reads as the prefix, or as the model's label when there is none."""
    if not path:
        return prefix or label
    return f"{prefix}.{path}" if prefix else path


class Residency:
    """Per-step residency of attached models' parameters."""

    def __init__(self, models: Sequence[Model]) -> None:
        self._owners: list[tuple[str, nn.Module]] = []  # modules holding parameters directly
        self._ancestors: dict[str, tuple[str, ...]] = {}  # owner -> itself and every ancestor up to its root
        self._parent: dict[str, str | None] = {}
        self._owner_count: Counter[str] = Counter()  # owners in each module's subtree
        self._order: dict[str, int] = {}
        self._modules: list[nn.Module] = []
        depth: dict[str, int] = {}
        for prefix, label, model in models:
            for path, module in model.named_modules():
                full = dotted(prefix, label, path)
                self._order.setdefault(full, len(self._order))
                depth[full] = path.count(".") + 1 if path else 0
                self._modules.append(module)
                self._parent[full] = dotted(prefix, label, path.rpartition(".")[0]) if path else None
                if any(p is not None for p in module._parameters.values()):
                    self._owners.append((full, module))
        for full, _ in self._owners:
            chain_: list[str] = []
            cur: str | None = full
            while cur is not None:
                chain_.append(cur)
                cur = self._parent.get(cur)
            self._ancestors[full] = tuple(chain_)
            self._owner_count.update(chain_)
        self._cpu_counts = [-1] * len(self._owners)  # per owner, its CPU parameters at the last full check
        self._cpu_bytes = [0] * len(self._owners)  # per owner, bytes of those parameters
        # bytes that came onto the device and went back to the CPU between the last two full checks
        self.moved_in = self.moved_out = 0
        self.period = max(1, math.ceil(len(self._owners) / SAMPLE))
        # read by every sample: the first owner under each module down to SENTINEL_DEPTH (a model, ``blocks``,
        # ``blocks.7``), so moving any of those whole is seen at the next step
        first: dict[str, int] = {}
        for i, (full, _) in enumerate(self._owners):
            for module in self._ancestors[full]:
                if depth[module] <= SENTINEL_DEPTH:
                    first.setdefault(module, i)
        self._sentinels = sorted(set(first.values()))

    def check(self) -> tuple[list[str], int]:
        """(highest modules with parameters on the CPU, bytes of those parameters); a full read of every one."""
        cpu: list[tuple[str, bool]] = []
        nbytes = moved_in = moved_out = 0
        counts, before, first = self._cpu_counts, self._cpu_bytes, self._cpu_counts[:1] == [-1]
        for i, (path, module) in enumerate(self._owners):
            n = n_cpu = owner_bytes = 0
            for p in module._parameters.values():
                if p is None:
                    continue
                n += 1
                if p.is_cpu:
                    n_cpu += 1
                    owner_bytes += p.nbytes
            nbytes += owner_bytes
            if not first and owner_bytes != before[i]:
                if owner_bytes < before[i]:
                    moved_in += before[i] - owner_bytes
                else:
                    moved_out += owner_bytes - before[i]
            counts[i], before[i] = n_cpu, owner_bytes
            if n_cpu:
                cpu.append((path, n_cpu == n))
        self.moved_in, self.moved_out = moved_in, moved_out
        if not cpu:
            return [], 0
        full_counts: Counter[str] = Counter()
        partial = []
        for path, whole in cpu:
            if whole:
                full_counts.update(self._ancestors[path])
            else:
                partial.append(path)
        full = {m for m, c in full_counts.items() if c == self._owner_count[m]}
        tops = [m for m in full if self._parent.get(m) not in full] + partial
        tops.sort(key=lambda m: self._order.get(m, 0))
        return tops, nbytes

    def moved(self, turn: int) -> bool:
        """Did the sentinels or slice ``turn % period`` of the owners change since the last full check? (Always
        True before one.)"""
        counts, owners = self._cpu_counts, self._owners
        for i in chain(self._sentinels, range(turn % self.period, len(owners), self.period)):
            n_cpu = 0
            for p in owners[i][1]._parameters.values():
                if p is not None and p.is_cpu:
                    n_cpu += 1
            if n_cpu != counts[i]:
                return True
        return False

    def cpu_bytes_under(self, prefix: str) -> int:
        """Bytes of parameters on the CPU, at the last full check, under the module ``prefix`` (an expert)."""
        return sum(
            self._cpu_bytes[i]
            for i, (full, _) in enumerate(self._owners)
            if full == prefix or full.startswith(prefix + ".")
        )

    def layerwise_casting(self) -> bool:
        return any(layerwise_casting(m) for m in self._modules)

    def offload_hooks(self) -> list[str]:
        """Kinds of library offload hooks found on the models' modules (a chosen offload)."""
        return sorted({kind for m in self._modules if (kind := offload_hook(m)) is not None})
