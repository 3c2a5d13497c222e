"""Deep inspection of one step: every aten op seen, classified by the registry, attributed to a module.

A ``TorchDispatchMode`` sees each op below autograd and autocast, so it sees the casts autocast inserts and the
copies ``module.to()`` makes. Global forward pre/post hooks keep a stack of the module paths being run; an op
is charged to the innermost attached module (an op outside any module is charged to ``(loop)``, the code
between forwards). A weight copy or cast is charged to the module that owns the weight.

Everything is installed by ``DeepSession.start`` and removed by ``stop``; the guard runs a session only on
sampled steps, because Python code per op costs about 18 µs (fine at real shapes, ruinous at small ones).

Blind spots: ops inside CUDA graphs or compiled regions (``torch.compile`` traces them away from eager
dispatch), copies made by ``torch.tensor(data, device=...)`` (created below the dispatcher), and work in other
threads (a dispatch mode is per thread).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from wandoc.metrics import ModuleVolume
from wanrun.guards.casts import CastTracker, WeightIndex
from wanrun.guards.ops import REGISTRY, OpEvent
from wanrun.guards.residency import Model, dotted

LOOP = "(loop)"
TOP_N = 10


class ModuleStack:
    """The attached modules being run right now, kept by global forward hooks (never by patching classes)."""

    def __init__(self, names: dict[int, str]) -> None:
        self._names = names
        self._stack: list[tuple[int, str]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def current(self) -> str:
        return self._stack[-1][1] if self._stack else LOOP

    def install(self) -> None:
        self._handles = [
            register_module_forward_pre_hook(self._push),
            register_module_forward_hook(self._pop, always_call=True),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()

    def _push(self, module: nn.Module, args: Any) -> None:
        name = self._names.get(id(module))
        self._stack.append((id(module), name if name is not None else self.current))

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        key = id(module)
        for i in range(len(self._stack) - 1, -1, -1):  # tolerate a frame lost to an exception
            if self._stack[i][0] == key:
                del self._stack[i:]
                return


class _Volumes:
    def __init__(self) -> None:
        self._bytes: defaultdict[str, int] = defaultdict(int)
        self._count: defaultdict[str, int] = defaultdict(int)

    def add(self, module: str, nbytes: int) -> None:
        self._bytes[module] += nbytes
        self._count[module] += 1

    def top(self, n: int = TOP_N) -> list[ModuleVolume]:
        order = sorted(self._count, key=lambda m: (-self._bytes[m], -self._count[m], m))[:n]
        return [ModuleVolume(module=m, bytes=self._bytes[m], count=self._count[m]) for m in order]


class StepCollector:
    """Turns op events into one step's metrics (the deep fields of ``StepMetrics``)."""

    def __init__(self, stack: ModuleStack, weights: WeightIndex, casts: CastTracker, expects_accelerator: bool) -> None:
        self.stack, self.weights, self.casts, self.expects_accelerator = stack, weights, casts, expects_accelerator
        self.m: dict[str, Any] = defaultdict(int)
        self.cpu_flops = 0.0
        self.top_h2d, self.top_casts, self.top_cpu, self.top_syncs = _Volumes(), _Volumes(), _Volumes(), _Volumes()

    def add(self, ev: OpEvent) -> None:
        getattr(self, "_" + ev.kind)(ev)

    def _copy(self, ev: OpEvent) -> None:
        m = self.m
        weight = self.weights.lookup(ev.src) if ev.src is not None else None
        module = weight[0] if weight else self.stack.current
        m["copies"] += 1
        if not ev.pinned:
            m["pageable_copy_bytes"] += ev.nbytes
        if ev.blocking:
            m["blocking_copies"] += 1
        if ev.direction == "h2d":
            m["h2d_bytes"] += ev.nbytes
            m["h2d_copies"] += 1
            if weight:
                m["weight_h2d_bytes"] += ev.nbytes
            self.top_h2d.add(module, ev.nbytes)
        else:
            m["d2h_bytes"] += ev.nbytes
            m["d2h_copies"] += 1
            # reading device data into pageable memory (or waiting for it) stalls the host; weights moved back
            # by an offload are that offload's cost, reported as traffic rather than as syncs
            if not weight and (ev.blocking or not ev.pinned):
                m["syncs"] += 1
                self.top_syncs.add(module, ev.nbytes)

    def _cast(self, ev: OpEvent) -> None:
        m = self.m
        weight = self.weights.lookup(ev.src) if ev.src is not None else None
        m["cast_bytes"] += ev.nbytes
        m["cast_count"] += 1
        if weight is None:
            m["activation_cast_bytes"] += ev.nbytes
            return
        self.top_casts.add(weight[0], ev.nbytes)  # charged to the weight's owner, wherever the cast happened
        if self.casts.repeated(weight[1], ev.nbytes):
            m["repeated_cast_bytes"] += ev.nbytes
            m["repeated_casts"] += 1

    def _sync(self, ev: OpEvent) -> None:
        self.m["syncs"] += 1
        self.top_syncs.add(self.stack.current, 0)

    def _compute(self, ev: OpEvent) -> None:
        if ev.host and self.expects_accelerator:
            self.m["cpu_ops"] += 1
            self.cpu_flops += ev.flops
            self.top_cpu.add(self.stack.current, ev.nbytes)

    def metrics(self) -> dict[str, Any]:
        return {
            **self.m,
            "cpu_flops": self.cpu_flops,
            "top_h2d": self.top_h2d.top(),
            "top_casts": self.top_casts.top(),
            "top_cpu": self.top_cpu.top(),
            "top_syncs": self.top_syncs.top(),
        }


class InspectMode(TorchDispatchMode):
    """Runs each op, then hands the registry's events for it to the collector; never changes a result."""

    def __init__(self, sink: Callable[[OpEvent], None]) -> None:
        super().__init__()
        self._sink = sink
        self.errors = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        handler = REGISTRY.get(getattr(func, "overloadpacket", None))
        if handler is not None:
            try:
                for ev in handler(args, kwargs, out):
                    self._sink(ev)
            except Exception:  # a classification bug must never break the user's run
                self.errors += 1
        return out


def warm_up() -> None:
    """Pay the one-time cost of a first dispatch mode (torch imports its compiler stack lazily, about a second)
    before the run, so step 0 does not look like a cold start because of the guard."""
    with InspectMode(lambda ev: None):
        torch.zeros(1).add_(1)


def module_names(models: Sequence[Model]) -> dict[int, str]:
    return {id(m): dotted(prefix, label, path) for prefix, label, model in models for path, m in model.named_modules()}


class DeepSession:
    """One inspected step: module stack, weight index and dispatch mode, installed together, removed together."""

    def __init__(self, models: Sequence[Model], casts: CastTracker, expects_accelerator: bool) -> None:
        self.stack = ModuleStack(module_names(models))
        self.collector = StepCollector(self.stack, WeightIndex(models), casts, expects_accelerator)
        self.mode = InspectMode(self.collector.add)
        self._active = False

    def start(self) -> None:
        self.stack.install()
        try:
            self.mode.__enter__()
        except BaseException:
            self.stack.remove()
            raise
        self._active = True

    def stop(self) -> dict[str, Any]:
        """Remove everything (safe to call twice) and return the step's deep metrics."""
        if self._active:
            self._active = False
            try:
                self.mode.__exit__(None, None, None)
            finally:
                self.stack.remove()
        return self.collector.metrics()
