"""The guards on CPU: op classification, casts, residency, the step clock, offload traffic on a stand-in
accelerator, runtime rules, strict mode, NVML sampling with a stand-in library, and cleanup on every exit path.

A CPU has no host-device copies, so copies are exercised on the ``meta`` device (any non-CPU device counts as
the accelerator): moving a host tensor there is a host-to-device copy with real byte counts and no memory.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.modules import module as nn_module

from wandoc import rulebook
from wandoc.metrics import StepMetrics
from wanrun.guard import Guard, GuardStop, guard
from wanrun.guards.casts import CastTracker, WeightIndex
from wanrun.guards.dispatch import LOOP, ModuleStack, StepCollector
from wanrun.guards.nvml_sampler import NvmlSampler
from wanrun.guards.ops import OpEvent, handler_for
from wanrun.guards.residency import Residency
from wanrun.hooks import RunHooks

aten = torch.ops.aten
SAMPLER_THREAD = "wanrun-nvml-sampler"


# -- models ------------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.q(x)
        return x + self.ffn(self.norm(x))


class SmallDiT(nn.Module):
    """Wan's anatomy in miniature: an fp32 time embedding run outside autocast, blocks, a head."""

    def __init__(self, dim: int = 64, hidden: int = 256, blocks: int = 3) -> None:
        super().__init__()
        self.time_embedding = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(Block(dim, hidden) for _ in range(blocks))
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda" if x.is_cuda else "cpu", enabled=False):
            e = self.time_embedding(torch.ones(1, x.shape[-1], device=x.device))
        x = x + e
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def small_dit(dtype: torch.dtype = torch.float32, **kw: Any) -> SmallDiT:
    model = SmallDiT(**kw).eval().requires_grad_(False)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not name.startswith("time_embedding"):
            module.to(dtype)  # norms and the time embedding stay fp32, as in Wan
    return model


def linear_cast_bytes(model: nn.Module, itemsize: int = 2) -> int:
    """Bytes autocast writes when it casts every weight of the linear layers it runs (not the time embedding)."""
    return sum(
        p.numel() * itemsize
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and not name.startswith("time_embedding")
        for p in m.parameters(recurse=False)
    )


def run_steps(g: Guard, model: nn.Module, x: torch.Tensor, steps: int, forwards: int = 2, autocast: bool = False):
    for i in range(steps):
        with g.step(i), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for _ in range(forwards):
                model(x)
        g.progress(i + 1, steps)


@pytest.fixture
def clean_state() -> Iterator[None]:
    """Asserts the guard left nothing behind: dispatch modes, global module hooks, sampler threads."""
    pre, post = dict(nn_module._global_forward_pre_hooks), dict(nn_module._global_forward_hooks)
    yield
    assert torch._C._len_torch_dispatch_stack() == 0
    assert dict(nn_module._global_forward_pre_hooks) == pre
    assert dict(nn_module._global_forward_hooks) == post
    assert not [t for t in threading.enumerate() if t.name == SAMPLER_THREAD]


def assert_no_model_hooks(model: nn.Module) -> None:
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks


# -- the op registry ---------------------------------------------------------------------------------------


def test_registry_tells_copies_casts_and_syncs_apart() -> None:
    with FakeTensorMode():
        dev = torch.empty(256, device="cuda")
        host = torch.empty(256)
        dev_bf16 = torch.empty(256, device="cuda", dtype=torch.bfloat16)
        mask = torch.ones(256, device="cuda", dtype=torch.bool)

    (d2h,) = handler_for(aten._to_copy.default)((dev,), {"device": torch.device("cpu")}, host)
    assert (d2h.kind, d2h.direction, d2h.nbytes, d2h.blocking) == ("copy", "d2h", 1024, True)
    (h2d,) = handler_for(aten._to_copy.default)((host,), {"non_blocking": True}, dev)
    assert (h2d.direction, h2d.blocking, h2d.src is host) == ("h2d", False, True)
    copy, cast = handler_for(aten._to_copy.default)((host,), {}, dev_bf16)  # .to("cuda", torch.bfloat16)
    assert (copy.kind, cast.kind, cast.nbytes) == ("copy", "cast", 512)
    (only_cast,) = handler_for(aten._to_copy.default)((dev,), {"dtype": torch.bfloat16}, dev_bf16)
    assert only_cast.kind == "cast"
    (copy_back,) = handler_for(aten.copy_.default)((host, dev), {}, host)
    assert copy_back.direction == "d2h"

    assert [e.kind for e in handler_for(aten._local_scalar_dense.default)((dev,), {}, 1.0)] == ["sync"]
    assert [e.kind for e in handler_for(aten.nonzero.default)((dev,), {}, None)] == ["sync"]
    assert [e.kind for e in handler_for(aten.index.Tensor)((dev, [mask]), {}, dev)] == ["sync"]
    assert handler_for(aten._local_scalar_dense.default)((torch.zeros(1),), {}, 0.0) == []  # host: no wait
    assert handler_for(aten.add.Tensor) is None


def test_registry_counts_heavy_compute_with_flops() -> None:
    a, b = torch.randn(8, 32), torch.randn(32, 16)
    (mm,) = handler_for(aten.mm.default)((a, b), {}, a @ b)
    assert (mm.kind, mm.host, mm.flops) == ("compute", True, 2 * 8 * 32 * 16)
    bias = torch.zeros(16)
    (addmm,) = handler_for(aten.addmm.default)((bias, a, b), {}, a @ b)
    assert addmm.flops == 2 * 8 * 32 * 16
    x, w = torch.randn(1, 4, 10), torch.randn(6, 4, 3)
    (conv,) = handler_for(aten.convolution.default)(
        (x, w, None, [1], [0], [1], False, [0], 1), {}, torch.nn.functional.conv1d(x, w)
    )
    assert conv.flops == 2 * (6 * 8) * (4 * 3)
    with FakeTensorMode():
        da, db = torch.empty(8, 32, device="cuda"), torch.empty(32, 16, device="cuda")
        device_out = torch.empty(8, 16, device="cuda")
    assert handler_for(aten.mm.default)((da, db), {}, device_out) == []  # compute on the accelerator: no event
    assert handler_for(aten.mm.default) is handler_for(aten.mm.default)  # cached by the overload


# -- casts -------------------------------------------------------------------------------------------------


def test_fp32_weights_under_bf16_autocast_repeat_every_forward(clean_state: None) -> None:
    model = small_dit(torch.float32)
    x = torch.randn(2, 16, 64)
    with guard(device="cpu", nvml=False, deep_every=0) as g:
        g.attach_model(model, "dit")
        run_steps(g, model, x, steps=3, autocast=True)
    steps = g.report.steps
    assert [s.deep for s in steps] == [True, True, False]
    expected = linear_cast_bytes(model)
    # step 0: the second forward repeats the first; step 1: both forwards repeat
    assert steps[0].repeated_cast_bytes == pytest.approx(expected, rel=0.1)
    assert steps[1].repeated_cast_bytes / steps[1].forwards == pytest.approx(expected, rel=0.1)
    assert steps[1].activation_cast_bytes > 0  # the input, cast fresh each forward, is not "repeated"
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)} - {"time_embedding"}
    assert {v.module for v in steps[1].top_casts} <= linears
    assert steps[1].top_casts[0].module.endswith(("ffn.0", "ffn.2"))  # the largest layers first
    assert g.report.run.model_param_dtype == "float32" and g.report.run.autocast_dtype == "bfloat16"


def test_bf16_weights_are_not_recast(clean_state: None) -> None:
    model = small_dit(torch.bfloat16)
    with guard(device="cpu", nvml=False) as g:
        g.attach_model(model, "dit")
        run_steps(g, model, torch.randn(2, 16, 64), steps=2, autocast=True)
    assert all(s.repeated_cast_bytes == 0 and not s.top_casts for s in g.report.steps)
    assert g.report.steps[0].cast_bytes > 0  # activations are still cast, and counted apart


def test_cast_tracker_and_weight_index() -> None:
    tracker = CastTracker()
    assert not tracker.repeated("blocks.0.q.weight", 128)
    assert tracker.repeated("blocks.0.q.weight", 128)
    assert not tracker.repeated("blocks.0.q.weight", 64)  # a cast to another size is another cast
    model = small_dit()
    index = WeightIndex([("", "dit", model)])
    w = model.blocks[1].ffn[0].weight
    assert index.lookup(w) == ("blocks.1.ffn.0", "blocks.1.ffn.0.weight")
    assert index.lookup(w.detach()) == ("blocks.1.ffn.0", "blocks.1.ffn.0.weight")  # same memory
    assert index.lookup(torch.randn(3)) is None


# -- step clock and sampling -------------------------------------------------------------------------------


def test_step_clock_counts_steps_forwards_and_phases(clean_state: None) -> None:
    model = small_dit()
    with guard(device="cpu", nvml=False, deep_steps=1, deep_every=0) as g:
        g.attach_model(model, "dit")
        with g.phase("load"):
            pass
        with g.phase("denoise"):
            run_steps(g, model, torch.randn(1, 4, 64), steps=4, forwards=2)
    r = g.report
    assert isinstance(g, RunHooks)
    assert [s.index for s in r.steps] == [0, 1, 2, 3]
    assert [s.forwards for s in r.steps] == [2, 2, 2, 2]
    assert all(s.seconds > 0 for s in r.steps)
    assert r.summary.deep_steps == [0]
    assert [p.name for p in r.phases] == ["load", "denoise"]
    assert r.summary.phases["denoise"] >= sum(s.seconds for s in r.steps)
    assert r.run.steps_total == 4
    assert_no_model_hooks(model)


def test_without_steps_a_forward_is_a_step(clean_state: None) -> None:
    model = small_dit()
    with guard(device="cpu", nvml=False, model=model) as g, torch.no_grad():
        for _ in range(3):
            model(torch.randn(1, 4, 64))
    r = g.report
    assert [(s.index, s.forwards) for s in r.steps] == [(0, 1), (1, 1), (2, 1)]
    assert r.run.denoiser == "SmallDiT"
    assert_no_model_hooks(model)


def test_deep_inspection_samples_steps_and_follows_a_slow_one(clean_state: None) -> None:
    model = small_dit(blocks=1)
    x = torch.randn(1, 2, 64)
    with guard(device="cpu", nvml=False, deep_steps=1, deep_every=4, deep_budget=None) as g:
        g.attach_model(model, "dit")
        for i in range(8):
            with g.step(i), torch.no_grad():
                model(x)
                if i == 5:
                    time.sleep(0.2)  # far over 1.5x the median of the plain steps before it
    assert g.report.summary.deep_steps == [0, 4, 6]
    assert "per-op inspection" in " ".join(g.report.summary.checked)


def test_sampled_inspection_stays_within_its_budget() -> None:
    g = Guard("cpu", nvml=False, deep_steps=2, deep_every=2, deep_budget=0.05)
    timed = [(True, 2.0), (True, 2.0), (False, 1.0), (False, 1.0)]  # an inspected step costs a whole extra step
    g.steps = [StepMetrics(index=i, seconds=s, deep=d) for i, (d, s) in enumerate(timed)]
    assert not g._want_deep(4)  # 2 s spent on the first two and 1 s more, against 5% of 5 s
    g.steps += [StepMetrics(index=i, seconds=1.0) for i in range(4, 60)]
    assert g._want_deep(60)  # 5% of 61 s now pays for all three
    assert not g._want_deep(61)  # not a sampled step
    known = Guard("cpu", nvml=False, deep_steps=2, deep_every=2, deep_budget=0.05)
    known.run.steps_total = 100  # the scheduler said how long the run is: 5% of 100 s is there from the start
    known.steps = [StepMetrics(index=i, seconds=s, deep=d) for i, (d, s) in enumerate(timed)]
    assert known._want_deep(4)
    cheap = Guard("cpu", nvml=False, deep_budget=0.05)  # at 480p an inspection costs about 1% of a step
    cheap.steps = [StepMetrics(index=i, seconds=s, deep=i < 2) for i, s in enumerate([1.01, 1.01, 1.0, 1.0])]
    assert cheap._want_deep(10)
    assert g._skipped == 1 and "skipped" in " ".join(g._not_checked())


# -- residency ---------------------------------------------------------------------------------------------


def test_residency_names_the_highest_modules_on_the_cpu() -> None:
    model = small_dit().to("meta")
    model.blocks[1].to_empty(device="cpu")
    residency = Residency([("", "dit", model)])
    modules, nbytes = residency.check()
    assert modules == ["blocks.1"]
    assert nbytes == sum(p.numel() * p.element_size() for p in model.blocks[1].parameters())

    layer = model.blocks[2].ffn[0]
    layer.weight = nn.Parameter(torch.empty_like(layer.weight, device="cpu"), requires_grad=False)
    assert residency.check()[0] == ["blocks.1", "blocks.2.ffn.0"]  # half a layer: the layer itself

    whole = small_dit()
    assert Residency([("", "dit", whole)]).check()[0] == ["dit"]
    assert Residency([("", "dit", whole.to("meta"))]).check() == ([], 0)


# -- GPU expected, CPU used: CPU compute, residency, strict mode, dedupe -------------------------------------


def test_cpu_compute_in_a_gpu_run_is_an_error_named_by_module(clean_state: None) -> None:
    model = small_dit(dim=256, hidden=1024, blocks=2)
    with guard(device="cuda", nvml=False) as g:
        g.attach_model(model, "dit")
        run_steps(g, model, torch.randn(1, 64, 256), steps=3)
    r = g.report
    assert r.run.expects_gpu and r.steps[0].cpu_ops > 0 and r.steps[0].cpu_flops > 2e7
    assert r.steps[0].top_cpu[0].module.startswith("blocks.")
    assert r.steps[0].cpu_resident == ["dit"]
    by_rule = {f.rule: f for f in r.findings}
    compute = by_rule["RUN-CPU-COMPUTE"]
    assert (compute.severity, compute.step) == ("error", 0)
    assert compute.module and compute.module.startswith("blocks.")
    assert by_rule["RUN-CPU-RESIDENT"].module == "dit"
    assert [f.rule for f in r.findings].count("RUN-CPU-COMPUTE") == 1  # once, at its first step


def test_strict_stops_at_the_first_error(clean_state: None) -> None:
    model = small_dit(dim=256, hidden=1024, blocks=2)
    seen = []
    with pytest.raises(GuardStop) as stop, guard(device="cuda", nvml=False, strict=True, on_finding=seen.append) as g:
        g.attach_model(model, "dit")
        run_steps(g, model, torch.randn(1, 64, 256), steps=5)
    assert stop.value.finding.rule == "RUN-CPU-COMPUTE"
    assert len(g.report.steps) == 1 and g.report.summary.interrupted
    assert "RUN-CPU-COMPUTE" in [f.rule for f in seen]
    assert_no_model_hooks(model)


# -- offload and host copies on a stand-in accelerator --------------------------------------------------------


class AlignHook:
    """The attributes of accelerate's offload hook that the guard reads."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        self.offload = True
        self.weights_map = weights


def offload_like_accelerate(block: nn.Module) -> int:
    """Park ``block``'s weights on the host; copy them to the block's device before each use."""
    moved = 0
    for module in block.modules():
        own = {n: p for n, p in module.named_parameters(recurse=False)}
        if not own:
            continue
        store = {n: p.detach().to("cpu") for n, p in own.items()}
        moved += sum(t.numel() * t.element_size() for t in store.values())
        module._hf_hook = AlignHook(store)

        def fetch(mod: nn.Module, args: Any, store: dict[str, torch.Tensor] = store) -> None:
            for name, host in store.items():
                mod._parameters[name].data = host.to("meta")

        module.register_forward_pre_hook(fetch)
    return moved


def test_offload_traffic_is_weights_in_bytes_by_module(clean_state: None) -> None:
    model = small_dit(dim=1024, hidden=4096, blocks=3)
    moved = offload_like_accelerate(model.blocks[1])
    model.to("meta")
    with guard(device="meta", nvml=False) as g:
        g.attach_model(model, "dit")
        run_steps(g, model, torch.empty(1, 8, 1024, device="meta"), steps=2)
    step = g.report.steps[0]
    assert step.weight_h2d_bytes == 2 * moved  # both forwards of the step
    assert step.h2d_bytes == step.weight_h2d_bytes and step.pageable_copy_bytes == step.weight_h2d_bytes
    assert all(v.module.startswith("blocks.1.") for v in step.top_h2d)
    assert step.offload_hooks and step.syncs == 0
    by_rule = {f.rule: f for f in g.report.findings}
    traffic = by_rule["RUN-OFFLOAD-TRAFFIC"]
    assert traffic.step == 0 and traffic.module and traffic.module.startswith("blocks.1.")
    assert "offload hooks" in traffic.message
    assert "RUN-CPU-RESIDENT" not in by_rule and "RUN-HOST-COPY-IN-LOOP" not in by_rule


def test_host_copy_in_the_loop_is_flagged_at_the_loop(clean_state: None) -> None:
    model = small_dit().to("meta")
    latents = torch.zeros(1, 4096, 64)  # 1 MiB on the host, copied in every step
    with guard(device="meta", nvml=False) as g:
        g.attach_model(model, "dit")
        for i in range(2):
            with g.step(i):
                model(latents.to("meta"))
    step = g.report.steps[0]
    assert (step.h2d_bytes, step.weight_h2d_bytes, step.h2d_copies) == (latents.nbytes, 0, 1)
    finding = {f.rule: f for f in g.report.findings}["RUN-HOST-COPY-IN-LOOP"]
    assert finding.module == LOOP and finding.step == 0


class LazyTable(nn.Module):
    """Keeps a table in a plain attribute and moves it to the input's device on first use, as Wan does with
    its RoPE ``freqs``: model state crossing once, not data crossing every step."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 64)
        self.table = torch.zeros(4096, 64)  # 1 MiB on the host

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table.device != x.device:
            self.table = self.table.to(x.device)
        return self.proj(x) + self.table[: x.shape[-2]]


def test_model_state_moved_on_first_use_is_not_a_host_copy(clean_state: None) -> None:
    model = LazyTable().to("meta")
    with guard(device="meta", nvml=False, model=model) as g:
        model(torch.empty(1, 8, 64, device="meta"))
    step = g.report.steps[0]
    assert step.h2d_bytes == step.weight_h2d_bytes == 4096 * 64 * 4
    assert [v.module for v in step.top_h2d] == ["denoiser"]
    assert not g.report.findings


def test_collector_charges_syncs_and_weight_copies() -> None:
    model = small_dit()
    stack = ModuleStack({id(model.blocks[0].q): "blocks.0.q"})
    collector = StepCollector(stack, WeightIndex([("", "dit", model)]), CastTracker(), expects_accelerator=True)
    stack._push(model.blocks[0].q, ())
    collector.add(OpEvent("sync"))
    collector.add(OpEvent("copy", 40, torch.zeros(10), direction="d2h", blocking=True))  # a .cpu() of a value
    collector.add(OpEvent("copy", 64, model.head.weight, direction="d2h"))  # offload moving a weight back
    stack._pop(model.blocks[0].q, (), None)
    collector.add(OpEvent("sync"))
    m = collector.metrics()
    assert m["syncs"] == 3 and m["d2h_bytes"] == 104 and m["blocking_copies"] == 2
    assert [(v.module, v.count) for v in m["top_syncs"]] == [("blocks.0.q", 2), (LOOP, 1)]


# -- rules ---------------------------------------------------------------------------------------------------


def test_every_runtime_rule_loads_and_passes_its_examples() -> None:
    rules = [r for r in rulebook.load() if r.scope in ("step", "run")]
    ids = {r.id for r in rules}
    assert {"RUN-CPU-COMPUTE", "RUN-OFFLOAD-TRAFFIC", "RUN-REPEATED-CASTS", "RUN-DECODE-DOMINATES"} <= ids
    assert all(rulebook.test_rule(r).ok for r in rules)


def test_run_rules_judge_the_whole_run(tmp_path: Any, clean_state: None) -> None:
    with guard(device="cpu", nvml=False, model=small_dit()) as g:
        g.record_output(tmp_path / "missing.mp4")
    assert [f.rule for f in g.report.findings] == ["RUN-NO-OUTPUT"]
    assert g.report.findings[0].step is None


# -- cleanup on every exit path ------------------------------------------------------------------------------


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kernel exploded")


def test_an_exception_inside_a_deep_step_cleans_up_and_is_reported(clean_state: None) -> None:
    model = small_dit()
    with pytest.raises(RuntimeError, match="step failed"), guard(device="cpu", nvml=False) as g:
        g.attach_model(model, "dit")
        with g.step(0):
            model(torch.randn(1, 2, 64))
            assert torch._C._len_torch_dispatch_stack() == 1  # inspecting
            raise RuntimeError("step failed")
    assert g.report.summary.error == "RuntimeError: step failed"
    assert len(g.report.steps) == 1
    assert_no_model_hooks(model)


def test_an_exception_inside_a_forward_without_steps_cleans_up(clean_state: None) -> None:
    model = small_dit()
    model.blocks[1] = Boom()
    with pytest.raises(RuntimeError, match="exploded"), guard(device="cpu", nvml=False, model=model) as g:
        model(torch.randn(1, 2, 64))
    assert g.report.steps[0].deep and "exploded" in (g.report.summary.error or "")
    assert_no_model_hooks(model)


def test_ctrl_c_leaves_a_partial_report(clean_state: None) -> None:
    model = small_dit()
    with pytest.raises(KeyboardInterrupt), guard(device="cpu", nvml=False) as g:
        g.attach_model(model, "dit")
        for i in range(5):
            with g.step(i):
                model(torch.randn(1, 2, 64))
                if i == 2:
                    raise KeyboardInterrupt
    r = g.report
    assert r.summary.interrupted and r.summary.error is None and len(r.steps) == 3


# -- NVML ------------------------------------------------------------------------------------------------------


def fake_nvml(util: int = 87, mine: int = 5 * 2**30, broken: bool = False) -> types.ModuleType:
    """A stand-in for the NVML bindings: one GPU, this process on it, and another process."""
    nv = types.ModuleType("pynvml")
    proc = types.SimpleNamespace

    def refuse(*args: Any) -> Any:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetHandleByUUID = refuse
    nv.nvmlDeviceGetHandleByPciBusId = refuse
    nv.nvmlDeviceGetHandleByIndex = lambda i: "gpu0"
    nv.nvmlDeviceGetName = lambda h: b"Stand-in GPU 24GB"
    nv.nvmlDeviceGetMemoryInfo = lambda h: proc(total=24 * 2**30, used=12 * 2**30)
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 450_000
    nv.nvmlDeviceGetUtilizationRates = refuse if broken else (lambda h: proc(gpu=util))
    nv.nvmlDeviceGetPowerUsage = lambda h: 300_000
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        proc(pid=os.getpid(), usedGpuMemory=mine),
        proc(pid=1, usedGpuMemory=3 * 2**30),
    ]
    return nv


def test_nvml_sampler_reads_this_process_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    sampler = NvmlSampler(interval=0.01)
    t0 = time.perf_counter()
    assert sampler.start() and sampler.running
    time.sleep(0.08)
    window = sampler.window(t0, time.perf_counter())
    sampler.stop()
    assert not sampler.running
    assert (window.gpu_util, window.vram_used_bytes, window.power_w) == (87.0, 5 * 2**30, 300.0)
    assert (sampler.name, sampler.total_bytes, sampler.power_limit_w) == ("Stand-in GPU 24GB", 24 * 2**30, 450.0)
    assert sampler.process_vram is True


def test_nvml_sampler_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(broken=True))
    sampler = NvmlSampler(interval=0.01)
    assert sampler.start()
    time.sleep(0.03)
    assert sampler.window(0.0, time.perf_counter()).gpu_util is None
    sampler.stop()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the library is not installed
    missing = NvmlSampler()
    assert not missing.start() and "NVML not available" in missing.reason


def test_guard_fills_gpu_signals_from_nvml_and_stops_the_thread(
    monkeypatch: pytest.MonkeyPatch, clean_state: None
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(util=12))
    model = small_dit()
    with guard(device="cuda") as g:
        assert [t for t in threading.enumerate() if t.name == SAMPLER_THREAD]
        g.attach_model(model, "dit")
        run_steps(g, model, torch.randn(1, 2, 64), steps=2)
    r = g.report
    assert r.run.gpu_name == "Stand-in GPU 24GB" and r.run.power_limit_w == 450.0
    assert all(s.gpu_util == 12.0 and s.vram_used_bytes == 5 * 2**30 for s in r.steps)
    assert any("NVML on Stand-in GPU 24GB" in c for c in r.summary.checked)


@pytest.mark.parametrize("stays", [True, False], ids=["loaded once", "loaded every forward"])
def test_a_model_loaded_at_its_first_forward_and_kept_is_no_offload_traffic(clean_state: None, stays: bool) -> None:
    """A whole-model offload (diffusers' enable_model_cpu_offload) moves the denoiser in inside its first forward
    and leaves it there: one move, not traffic every step pays. The same move undone after every forward is."""
    model = small_dit(dim=1024, hidden=4096, blocks=3)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    inner = model.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        model.to("meta")  # what the offload hook does inside the call, after every pre-hook ran
        out = inner(x)
        if not stays:
            model.to_empty(device="cpu")  # back to the host (meta holds no data to copy back)
        return out

    model.forward = forward  # type: ignore[method-assign]
    with guard(device="meta", nvml=False) as g:
        g.attach_model(model, "dit")
        run_steps(g, model, torch.empty(1, 8, 1024, device="meta"), steps=3, forwards=2)
    first = g.report.steps[0]
    assert first.weight_h2d_bytes and first.weight_h2d_bytes >= weights
    found = {f.rule for f in g.report.findings}
    if stays:
        assert first.weights_kept_bytes == weights and "RUN-OFFLOAD-TRAFFIC" not in found
    else:
        assert first.weights_kept_bytes == 0 and "RUN-OFFLOAD-TRAFFIC" in found
