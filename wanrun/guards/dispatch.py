"""Deep inspection of one step: every aten op seen, classified by the registry, attributed to a module.

A ``TorchDispatchMode`` sees each op below autograd and autocast, so it sees the casts autocast inserts and the
copies ``module.to()`` makes. Global forward pre/post hooks keep a stack of the module paths being run; an op
is charged to the innermost attached module (an op outside any module is charged to ``(loop)``, the code
between forwards). A weight copy or cast is charged to the module that owns the weight.

Everything is installed by ``DeepSession.start`` and removed by ``stop``; the guard runs a session only on
sampled steps, because interception costs about 8 µs an op in torch itself (a Python dispatch mode; measured on
a CPU) plus what this module adds (about 2 µs): fine at real shapes, ruinous at small ones. A session can also
inspect only the first forward(s) of a step: ``pause`` before a denoiser forward takes everything out, ``resume``
after it puts it back, so the loop code between and after the forwards is still seen. Counts made inside the
inspected forwards are then scaled to the step's forwards (CFG runs the same code twice); counts made in the
loop are not.

Blind spots: ops inside CUDA graphs or compiled regions (``torch.compile`` traces them away from eager
dispatch), copies made by ``torch.tensor(data, device=...)`` (created below the dispatcher), work in other
threads (a dispatch mode is per thread), and, in a paused forward, anything that forward does differently from
the inspected one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

from wandoc.metrics import ModuleVolume
from wanrun.guards.casts import CastTracker, WeightIndex, module_paths
from wanrun.guards.handles import remove_handles
from wanrun.guards.ops import OpEvent, handler_for
from wanrun.guards.residency import Model, layerwise_casting

LOOP = "(loop)"
TOP_N = 10
_VOLUMES = ("top_h2d", "top_casts", "top_cpu", "top_syncs")
# counters every inspected step reports, 0 when nothing happened (the step was looked at)
COUNTED = (
    "h2d_bytes", "d2h_bytes", "copies", "h2d_copies", "d2h_copies", "pageable_copy_bytes", "blocking_copies",
    "weight_h2d_bytes", "cast_bytes", "cast_count", "repeated_cast_bytes", "repeated_casts", "activation_cast_bytes",
    "chosen_cast_bytes", "cpu_ops", "syncs", "attention_math_bytes",
)  # fmt: skip


class ModuleStack:
    """The attached modules being run right now, kept by global forward hooks (never by patching classes).

    Global forward hooks run before a module's own forward hooks, so a module that has hooks of its own (an
    offload hook moving weights back, a user's hook copying an output) is popped by a hook of its own appended
    after them (``late``, kept by the guard for the whole run, since torch iterates a module's hooks in place
    when its forward fails): what its hooks do is charged to it, not to its parent.
    """

    def __init__(self, names: dict[int, str], late: frozenset[int] = frozenset()) -> None:
        self._names = names
        self._stack: list[tuple[int, str]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._late = late  # ids of modules popped by their own late hook

    @property
    def current(self) -> str:
        return self._stack[-1][1] if self._stack else LOOP

    def install(self) -> None:
        self._handles = [
            register_module_forward_pre_hook(self._push),
            register_module_forward_hook(self._pop_early, always_call=True),
        ]

    def remove(self) -> None:
        remove_handles(self._handles)
        self._stack.clear()

    def _pop_early(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) not in self._late:
            self._pop(module, args, output)

    def enter(self, module: nn.Module) -> None:
        """Put ``module`` on the stack unless it is already on top (a session started inside its pre-hooks)."""
        if not self._stack or self._stack[-1][0] != id(module):
            self._push(module, ())

    def _push(self, module: nn.Module, args: Any) -> None:
        stack = self._stack
        name = self._names.get(id(module))
        if name is None:  # not an attached module: ops inside it belong to the attached module around it
            name = stack[-1][1] if stack else LOOP
        stack.append((id(module), name))

    def pop(self, module: nn.Module, args: Any, output: Any) -> None:
        """The late pop of a module with hooks of its own (see the class docstring)."""
        self._pop(module, args, output)

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        stack, key = self._stack, id(module)
        if stack and stack[-1][0] == key:
            stack.pop()
            return
        for i in range(len(stack) - 1, -1, -1):  # tolerate a frame lost to an exception
            if stack[i][0] == key:
                del stack[i:]
                return


class _Volumes:
    def __init__(self) -> None:
        self.bytes: defaultdict[str, int] = defaultdict(int)
        self.count: defaultdict[str, int] = defaultdict(int)

    def add(self, module: str, nbytes: int) -> None:
        self.bytes[module] += nbytes
        self.count[module] += 1

    def merged(self, other: _Volumes, scale: float) -> _Volumes:
        out = _Volumes()
        for src, k in ((self, 1.0), (other, scale)):
            for m, b in src.bytes.items():
                out.bytes[m] += round(b * k)
            for m, c in src.count.items():
                out.count[m] += round(c * k)
        return out

    def top(self, n: int = TOP_N) -> list[ModuleVolume]:
        order = sorted(self.count, key=lambda m: (-self.bytes[m], -self.count[m], m))[:n]
        return [ModuleVolume(module=m, bytes=self.bytes[m], count=self.count[m]) for m in order]


class _Bucket:
    """Counts of one part of a step: the loop code, or the inspected denoiser forwards."""

    def __init__(self) -> None:
        self.m: defaultdict[str, int] = defaultdict(int)
        self.cpu_flops = 0.0
        self.attention: defaultdict[str, int] = defaultdict(int)
        self.top_h2d, self.top_casts, self.top_cpu, self.top_syncs = _Volumes(), _Volumes(), _Volumes(), _Volumes()


class StepCollector:
    """Turns op events into one step's metrics (the deep fields of ``StepMetrics``).

    Events land in the loop bucket, or in the forward bucket while an inspected denoiser forward runs; a partial
    inspection scales the forward bucket to the step's forwards.
    """

    def __init__(
        self,
        stack: ModuleStack,
        weights: WeightIndex,
        casts: CastTracker,
        expects_accelerator: bool,
        *,
        meta_run: bool = False,
        chosen_casts: frozenset[str] = frozenset(),
    ) -> None:
        self.stack, self.weights, self.casts, self.expects_accelerator = stack, weights, casts, expects_accelerator
        self.meta_run = meta_run  # ``meta`` stands for the accelerator (tests): a copy there is an upload
        self.chosen_casts = chosen_casts  # modules whose casts the user chose (layerwise casting)
        self.loop, self.forward = _Bucket(), _Bucket()
        self._b = self.loop
        self._by_kind: dict[str, Callable[[OpEvent], None]] = {
            "copy": self._copy,
            "cast": self._cast,
            "sync": self._sync,
            "compute": self._compute,
            "attention": self._attention,
        }

    def in_forward(self, inside: bool) -> None:
        self._b = self.forward if inside else self.loop

    def add(self, ev: OpEvent) -> None:
        self._by_kind[ev.kind](ev)

    def _copy(self, ev: OpEvent) -> None:
        if ev.to_meta and not self.meta_run:
            return  # weights dropped to ``meta`` after use (accelerate's offload): nothing crosses PCIe
        b = self._b
        m = b.m
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
            b.top_h2d.add(module, ev.nbytes)
        else:
            m["d2h_bytes"] += ev.nbytes
            m["d2h_copies"] += 1
            # reading device data into pageable memory (or waiting for it) stalls the host; weights moved back
            # by an offload are that offload's cost, reported as traffic rather than as syncs
            if not weight and (ev.blocking or not ev.pinned):
                m["syncs"] += 1
                b.top_syncs.add(module, ev.nbytes)

    def _cast(self, ev: OpEvent) -> None:
        b = self._b
        m = b.m
        weight = self.weights.lookup(ev.src) if ev.src is not None else None
        m["cast_bytes"] += ev.nbytes
        m["cast_count"] += 1
        if self.chosen_casts and (weight[0] if weight else self.stack.current) in self.chosen_casts:
            m["chosen_cast_bytes"] += ev.nbytes  # layerwise casting: stored in one dtype, computed in another
            return
        if weight is None:
            m["activation_cast_bytes"] += ev.nbytes
            return
        b.top_casts.add(weight[0], ev.nbytes)  # charged to the weight's owner, wherever the cast happened
        if self.casts.repeated(weight[1], ev.nbytes):
            m["repeated_cast_bytes"] += ev.nbytes
            m["repeated_casts"] += 1

    def _sync(self, ev: OpEvent) -> None:
        self._b.m["syncs"] += 1
        self._b.top_syncs.add(self.stack.current, 0)

    def _compute(self, ev: OpEvent) -> None:
        if ev.host and self.expects_accelerator:
            b = self._b
            b.m["cpu_ops"] += 1
            b.cpu_flops += ev.flops
            b.top_cpu.add(self.stack.current, ev.nbytes)

    def _attention(self, ev: OpEvent) -> None:
        b = self._b
        b.attention[ev.kernel] += 1
        if ev.kernel == "math":
            b.m["attention_math_bytes"] += ev.nbytes

    def metrics(self, scale: float = 1.0) -> dict[str, Any]:
        """The step's deep fields: loop counts plus forward counts times ``scale`` (1: everything was seen)."""
        loop, fwd = self.loop, self.forward
        m: defaultdict[str, int] = defaultdict(int, {key: 0 for key in COUNTED})
        m.update(loop.m)
        for key, value in fwd.m.items():
            m[key] += round(value * scale)
        attention: defaultdict[str, int] = defaultdict(int, loop.attention)
        for kernel, calls in fwd.attention.items():
            attention[kernel] += round(calls * scale)
        out: dict[str, Any] = {**m, "cpu_flops": loop.cpu_flops + fwd.cpu_flops * scale, "attention": dict(attention)}
        for key in _VOLUMES:
            out[key] = getattr(loop, key).merged(getattr(fwd, key), scale).top()
        return out


class InspectMode(TorchDispatchMode):
    """Runs each op, then hands the registry's events for it to the collector; never changes a result."""

    def __init__(self, sink: Callable[[OpEvent], None]) -> None:
        super().__init__()
        self._sink = sink
        self.errors = 0
        self.ops = 0  # ops seen: the inspection's cost is about this many times the per-op cost

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        self.ops += 1
        out = func(*args, **kwargs) if kwargs else func(*args)
        handler = handler_for(func)
        if handler is not None:
            try:
                for ev in handler(args, kwargs or {}, out):
                    self._sink(ev)
            except Exception:  # a classification bug must never break the user's run
                self.errors += 1
        return out


_OP_COST: list[float] = []


def warm_up() -> float:
    """Pay the one-time cost of a first dispatch mode (torch imports its compiler stack lazily, about a second)
    before the run, so step 0 does not look like a cold start because of the guard. Returns what inspecting one
    op costs the host, in seconds, measured once per process on a small model inspected as a step is, against the
    same model uninspected (hooks, mode, registry and collector included)."""
    if _OP_COST:
        return _OP_COST[0]
    with InspectMode(lambda ev: None):
        torch.zeros(1).add_(1)
    for _ in range(3):  # a machine busy with other work can hide the difference: measure again
        cost = _op_cost()
        if cost > 0:
            break
    _OP_COST.append(cost)
    return cost


def _op_cost() -> float:
    """A small model inspected as a step is (module hooks, the mode, the registry and the collector) against the
    same model uninspected: the fastest of each over a few rounds, per op seen."""
    model = nn.Sequential(*(nn.Sequential(nn.Linear(8, 8), nn.SiLU(), nn.LayerNorm(8)) for _ in range(8)))
    x, bare, seen, ops = torch.zeros(2, 8), [], [], 1
    with torch.no_grad():
        for _ in range(12):  # the first of each pays one-time costs
            t0 = time.perf_counter()
            model(x)
            bare.append(time.perf_counter() - t0)
            session = DeepSession([("", "model", model)], CastTracker(), expects_accelerator=True)
            session.start()
            try:
                t0 = time.perf_counter()
                model(x)
                seen.append(time.perf_counter() - t0)
            finally:
                session.stop()
            ops = max(session.mode.ops, 1)
    return max(min(seen[1:]) - min(bare[1:]), 0.0) / ops


def module_names(models: Sequence[Model]) -> dict[int, str]:
    return {id(m): path for path, m in module_paths(models)}


class DeepSession:
    """One inspected step: module stack, weight index and dispatch mode, installed together, removed together.

    Module paths and weights are read afresh for each session (about 2 ms for Wan-1.3B on a CPU): a module may
    have been replaced since the last one (a LoRA layer, a patched block), and offload moves weights around.
    """

    def __init__(
        self,
        models: Sequence[Model],
        casts: CastTracker,
        expects_accelerator: bool,
        *,
        meta_run: bool = False,
        late: Callable[[nn.Module], bool] | None = None,
    ) -> None:
        """``late(module)``: give a module with forward hooks of its own a late pop hook; True when it has one."""
        paths = module_paths(models)
        hooked = [m for _, m in paths if m._forward_hooks]
        late_ids = frozenset(id(m) for m in hooked if late is not None and late(m))
        self.stack = ModuleStack({id(m): path for path, m in paths}, late_ids)
        self.chosen_casts = frozenset(path for path, m in paths if layerwise_casting(m))
        self.collector = StepCollector(
            self.stack,
            WeightIndex(paths=paths),
            casts,
            expects_accelerator,
            meta_run=meta_run,
            chosen_casts=self.chosen_casts,
        )
        self.mode = InspectMode(self.collector.add)
        self.inspected = 0  # denoiser forwards seen from start to end
        self.skipped = 0  # denoiser forwards run while paused
        self._active = False
        self._paused = False
        self._in_forward = False

    @property
    def errors(self) -> int:
        return self.mode.errors

    def start(self) -> None:
        self.stack.install()
        try:
            self.mode.__enter__()
        except BaseException:
            self.stack.remove()
            raise
        self._active = True

    def _take_out(self) -> None:
        try:
            self.mode.__exit__(None, None, None)
        finally:
            self.stack.remove()

    def forward_begins(self, root: nn.Module) -> None:
        """A denoiser forward starts (from its own pre-hook): count in the forward bucket."""
        if self._active and not self._paused:
            self.stack.enter(root)
            self._in_forward = True
            self.collector.in_forward(True)

    def forward_ends(self) -> None:
        if self._paused:
            self.skipped += 1
            self.resume()
        elif self._active:
            if self._in_forward:
                self.inspected += 1
            self._in_forward = False
            self.collector.in_forward(False)

    def pause(self) -> None:
        """Stop seeing ops until ``resume`` (called before a denoiser forward that is not inspected)."""
        if self._active and not self._paused:
            self._paused = True
            self._take_out()

    def resume(self) -> None:
        if self._active and self._paused:
            self._paused = False
            self.start()

    def stop(self, forwards: int | None = None) -> dict[str, Any]:
        """Remove everything (safe to call twice) and return the step's deep metrics, the inspected forwards'
        counts scaled to ``forwards`` when some were skipped."""
        if self._active:
            self._active = False
            if not self._paused:
                self._take_out()
            self._paused = False
        scale = 1.0
        if self.skipped and self.inspected and forwards:
            scale = forwards / self.inspected
        return self.collector.metrics(scale)
