"""The guard's verdicts wherever a Wan model runs: choices recognised as choices (offload hooks, layerwise casting,
parked experts), copies charged where they happen (forward hooks, the loop code between forwards), the expert
switch between steps, torch.compile left as it is, and what a guard costs. ``meta`` stands in for the GPU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import tiny_diffusers
import torch
from test_guards import clean_state as clean_state  # the fixture: the guard left nothing behind
from test_guards import small_dit
from test_python_api_doc import TinyDiT
from torch import nn

from wandoc.metrics import Report
from wanrun.compare import compare, load_report
from wanrun.guard import Guard, GuardReused, guard

pytestmark = pytest.mark.usefixtures("clean_state")
FIXTURES = Path(__file__).parent / "fixtures" / "reports"


def rules(g: Guard) -> dict[str, Any]:
    return {f.rule: f for f in g.report.findings}


# -- one guard, one run; what a guard costs ------------------------------------------------------------------


def test_a_guard_used_twice_says_so() -> None:
    g = guard(device="cpu", nvml=False)
    with g:
        pass
    with pytest.raises(GuardReused, match="make a new one"), g:
        pass


def test_a_second_guard_costs_milliseconds_and_a_plain_step_little() -> None:
    """Rules are parsed once per process: a second guard is a stat of the rule files. A step that is not
    inspected costs the host a fraction of a millisecond (the minimum over repeats: the machine is shared)."""
    with guard(device="cpu", nvml=False):
        pass
    costs = []
    for _ in range(20):  # the fastest of twenty: the machine is shared, the cost is the guard's own
        t0 = time.perf_counter()
        with guard(device="cpu", nvml=False):
            pass
        costs.append(time.perf_counter() - t0)
    assert min(costs) <= 0.005, costs
    model = small_dit(dim=8, hidden=8, blocks=2)
    x = torch.randn(1, 1, 8)
    bare, guarded = [], []
    with torch.no_grad():
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(50):
                model(x)
            bare.append((time.perf_counter() - t0) / 50)
        with guard(device="cpu", nvml=False, model=model, deep_steps=1, deep_every=0) as g:
            for i in range(251):
                t0 = time.perf_counter()
                with g.step(i):
                    model(x)
                if i:
                    guarded.append(time.perf_counter() - t0)
    per_step = min(guarded) - min(bare)  # the fastest of each: the step's own cost, not the machine's noise
    assert per_step <= 0.0002, per_step


# -- choices recognised as choices ----------------------------------------------------------------------------


def test_layerwise_casting_is_a_choice_not_repeated_casts() -> None:
    dit = tiny_diffusers.transformer()
    dit.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    x, t, ctx = torch.randn(1, 4, 2, 4, 4), torch.tensor([500]), torch.randn(1, 8, 16)
    with guard(device="cpu", nvml=False, model=dit) as g, torch.no_grad():
        for i in range(3):
            with g.step(i):
                dit(x, t, ctx)
    step = g.report.steps[1]
    assert step.layerwise_casting and step.chosen_cast_bytes and step.chosen_cast_bytes > 0
    assert step.repeated_cast_bytes == 0
    found = rules(g)
    assert "RUN-REPEATED-CASTS" not in found
    assert "RUN-LAYERWISE-CASTING" not in found or found["RUN-LAYERWISE-CASTING"].severity == "info"


def test_accelerate_dropping_weights_to_meta_is_not_an_upload() -> None:
    from accelerate import cpu_offload

    model = small_dit(dim=64, hidden=256, blocks=2)
    cpu_offload(model, execution_device=torch.device("cpu"))  # weights live in a map, dropped to meta after use
    with guard(device="cuda", nvml=False, model=model) as g, torch.no_grad():
        for i in range(2):
            with g.step(i):
                model(torch.randn(1, 4, 64))
    step = g.report.steps[0]
    assert step.offload_hooks and step.h2d_bytes == 0 and step.weight_h2d_bytes == 0
    assert "RUN-OFFLOAD-TRAFFIC" not in rules(g) and "RUN-HOST-COPY-IN-LOOP" not in rules(g)


class Hooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(64, 64)
        self.head = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.inner(x))


def test_a_copy_in_a_forward_hook_is_charged_to_the_hooked_module() -> None:
    model = Hooked().to("meta")
    host = torch.zeros(4096, 64)  # 1 MiB copied in by the hook, every call

    def add_bias(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output + host[: output.shape[-2]].to("meta")

    model.inner.register_forward_hook(add_bias)
    with guard(device="meta", nvml=False, model=model) as g, g.step(0):
        model(torch.empty(1, 8, 64, device="meta"))
    assert [v.module for v in g.report.steps[0].top_h2d] == ["inner"]


# -- the loop code between forwards ---------------------------------------------------------------------------


def test_latents_sent_to_the_host_between_forwards_are_caught_without_marked_steps() -> None:
    model = small_dit().to("meta")
    noise = torch.zeros(1, 4096, 64)  # kept on the host and sent in every step, as a notebook loop might
    with guard(device="meta", nvml=False, model=model) as g:
        x = torch.empty(1, 4096, 64, device="meta")
        for _ in range(3):
            x = model(x) + noise.to("meta")
    step = g.report.steps[1]
    assert step.h2d_bytes and step.h2d_bytes >= 4096 * 64 * 4
    finding = rules(g)["RUN-HOST-COPY-IN-LOOP"]
    assert finding.step == 1 and finding.module == "(loop)"


def test_a_clean_loop_without_marked_steps_is_quiet() -> None:
    model = small_dit().to("meta")
    with guard(device="meta", nvml=False, model=model) as g:
        x = torch.empty(1, 4096, 64, device="meta")
        for _ in range(3):
            x = model(x)
    assert [s.forwards for s in g.report.steps] == [1, 1, 1] and not g.report.findings


# -- two experts: the parked one, the switch -------------------------------------------------------------------


class TwoExperts:
    """Wan2.2's loop shape: the high-noise expert first, the low-noise one after the boundary; with
    ``init_on_cpu`` the idle one waits on the host and is moved in at the switch."""

    def __init__(self) -> None:
        self.high_noise_model = small_dit(dim=256, hidden=1024, blocks=2).to("meta")
        self.low_noise_model = small_dit(dim=256, hidden=1024, blocks=2)  # parked on the host

    def generate(self, steps: int, boundary: int) -> None:
        x = torch.empty(1, 8, 256, device="meta")
        for i in range(steps):
            if i == boundary:
                self.high_noise_model.to_empty(device="cpu")  # (meta has no data to copy back)
                self.low_noise_model.to("meta")
            model = self.high_noise_model if i < boundary else self.low_noise_model
            x = model(x) - model(x)
            self.scheduler_step()

    def scheduler_step(self) -> None:  # stands in for the scheduler a guard knows by name
        pass


def test_a_parked_expert_is_a_choice_and_the_switch_is_measured() -> None:
    pipe = TwoExperts()
    with guard(device="meta", nvml=False, model=pipe.high_noise_model) as g:
        done = g.step_callback()
        pipe.scheduler_step = lambda: done()  # type: ignore[method-assign]
        pipe.generate(steps=6, boundary=3)
    r = g.report
    assert {a.name for a in g._models} == {"high_noise_model", "low_noise_model"}  # found beside the given one
    assert [s.forwards for s in r.steps] == [2] * 6
    assert r.steps[0].parked == ["low_noise_model"] and r.steps[0].cpu_resident == []
    assert r.steps[4].parked == ["high_noise_model"] and r.steps[4].experts_run == ["low_noise_model"]
    expert = sum(p.nbytes for p in pipe.low_noise_model.parameters())
    assert r.steps[3].weights_in_bytes == expert and r.steps[3].weights_out_bytes == expert
    assert sum(s.weights_in_bytes for s in r.steps) == expert == r.summary.weights_in_bytes_total
    found = rules(g)
    assert "RUN-CPU-RESIDENT" not in found and found["RUN-EXPERT-PARKED"].severity == "info"
    assert "RUN-OFFLOAD-TRAFFIC" not in found  # the switch is not per-forward offload


# -- torch.compile ------------------------------------------------------------------------------------------------


def graphs_compiled(run: Any) -> int:
    import torch._dynamo.utils as dynamo_utils

    torch._dynamo.reset()
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    run()
    return dynamo_utils.counters["stats"]["unique_graphs"] - before


@pytest.mark.parametrize("how", ["wrapper", "in place"])
def test_the_guard_does_not_change_what_torch_compile_compiles(how: str) -> None:
    dits: list[nn.Module] = []

    def loop(g: Guard | None) -> None:
        dit = dits[0]
        x, ctx = torch.randn(1, 16, 32), torch.randn(1, 8, 32)
        with torch.no_grad():
            for i in range(4):
                t = torch.tensor(1000.0 - 100 * i)
                if g is None:
                    dit(x, t, ctx)
                    continue
                with g.step(i):
                    dit(x, t, ctx)
                    dit(x, t, ctx)

    def guarded() -> None:
        # a compile wrapper is found at its first call; a model compiled in place runs its hooks inside the
        # compiled code, so it is given (or found on the stack at a scheduler's set_timesteps)
        with guard(device="cpu", nvml=False, model=dits[0] if how == "in place" else None) as g:
            loop(g)
        assert [s.forwards for s in g.report.steps] == [2] * 4 and g.report.run.compiled
        assert g.report.steps[0].compiles and all(s.compiles == 0 for s in g.report.steps[1:])
        assert "RUN-RECOMPILES" not in rules(g)

    def fresh() -> None:
        dit: nn.Module = TinyDiT().eval()
        if how == "wrapper":
            dit = torch.compile(dit, backend="eager")
        else:
            dit.compile(backend="eager")
        dits[:] = [dit]

    fresh()
    unguarded = graphs_compiled(lambda: loop(None))
    fresh()
    assert unguarded == graphs_compiled(guarded) >= 1


# -- reports: schema 1 still reads, nulls are nulls --------------------------------------------------------


def test_a_schema_1_report_reads_with_its_unmeasured_zeros_as_nulls(capsys: pytest.CaptureFixture[str]) -> None:
    old = load_report(FIXTURES / "v1-run.json")
    assert old.schema_ == "wanrun.report/1"
    deep, plain = old.steps[0], old.steps[2]
    assert deep.deep and deep.h2d_bytes == 0 and deep.cpu_ops == 0  # inspected: a real zero
    assert not plain.deep and plain.h2d_bytes is None and plain.cpu_ops is None and plain.vram_peak_bytes is None
    new = Report.model_validate_json(Report(steps=old.steps, run=old.run).model_dump_json())
    assert new.schema_ == "wanrun.report/2" and new.steps[2].h2d_bytes is None
    assert compare(old, new).rows  # compare reads both versions
    from wanrun.cli import main

    assert main(["report", str(FIXTURES / "v1-run.json")]) == 0


def test_a_step_not_inspected_is_null_not_zero() -> None:
    model = small_dit()
    with guard(device="cpu", nvml=False, model=model, deep_steps=1, deep_every=0) as g, torch.no_grad():
        for i in range(2):
            with g.step(i):
                model(torch.randn(1, 2, 64))
    raw = json.loads(g.report.model_dump_json())
    assert raw["schema"] == "wanrun.report/2"
    inspected, plain = raw["steps"]
    assert inspected["h2d_bytes"] == 0 and inspected["inspect_seconds"] > 0
    assert plain["h2d_bytes"] is None and plain["cast_bytes"] is None and plain["inspect_seconds"] is None


def test_rules_skipped_on_plain_steps_could_not_fire_there() -> None:
    """A plain step judges only the rules that can fire without per-op figures; the others, given their own
    firing examples with those figures null (as a plain step has them), must indeed stay quiet."""
    from wandoc import rulebook
    from wandoc.engine import evaluate_rule
    from wandoc.metrics import INSPECTED_ONLY
    from wanrun.runtime import RuntimeRules

    runtime = RuntimeRules(rulebook.load(), shell="bash")
    skipped = [r for r in runtime.step_rules if r not in runtime.plain_rules]
    assert {"RUN-CPU-COMPUTE", "RUN-OFFLOAD-TRAFFIC", "RUN-REPEATED-CASTS"} <= {r.id for r in skipped}
    for rule in skipped:
        for example in (e for e in rule.example if e.fires):
            data = {k: dict(v) for k, v in example.facts.items()}
            data["step"] = {k: v for k, v in data.get("step", {}).items() if k not in INSPECTED_ONLY}
            assert not evaluate_rule(rule, rulebook.prepare_step(data), "bash"), (rule.id, example.name)


# -- steps ended by a scheduler known by name, and the loop code around it -------------------------------------


class UniPCMultistepScheduler:
    """Named like diffusers' scheduler (targets.toml): the guard patches it by name when it starts."""

    def __init__(self, host_noise: torch.Tensor | None = None) -> None:
        self.host_noise = host_noise
        self.timesteps: list[int] = []

    def set_timesteps(self, n: int) -> None:
        self.timesteps = list(range(999, 0, -999 // n))[:n]

    def step(self, noise: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        if self.host_noise is not None:  # a stochastic sampler drawing its noise on the host each step
            noise = noise + self.host_noise.to(noise.device)
        return x - 0.1 * noise


@pytest.mark.parametrize("host", [True, False])
def test_a_known_scheduler_ends_the_steps_and_its_host_copy_is_caught(host: bool) -> None:
    model = small_dit().to("meta")
    sched = UniPCMultistepScheduler(torch.zeros(1, 4096, 64) if host else None)
    with guard(device="meta", nvml=False, model=model) as g:
        sched.set_timesteps(4)
        x = torch.empty(1, 4096, 64, device="meta")
        for t in sched.timesteps:
            noise = model(x) - model(x)  # CFG: two forwards, one step
            x = sched.step(noise, t, x)
    r = g.report
    assert [s.forwards for s in r.steps] == [2] * 4 and r.run.steps_total == 4
    assert UniPCMultistepScheduler.step.__name__ == "step" and not hasattr(UniPCMultistepScheduler.step, "__wrapped__")
    found = rules(g)
    if host:
        assert found["RUN-HOST-COPY-IN-LOOP"].step == 0 and found["RUN-HOST-COPY-IN-LOOP"].module == "(loop)"
    else:
        assert not found


def test_a_wrapper_sampled_through_a_callback_is_found_unnamed() -> None:
    from test_python_api_doc import BaseModel, sample_euler

    model = BaseModel().eval()
    with guard(device="cpu", nvml=False) as g:
        sample_euler(model, torch.randn(1, 16, 32), torch.linspace(1.0, 0.1, 5), {"context": torch.randn(1, 8, 32)},
                     callback=g.step_callback())  # fmt: skip
    r = g.report
    assert r.run.found_by == "size" and r.run.denoiser == "TinyDiT" and r.summary.denoisers == 1
    assert [s.forwards for s in r.steps] == [1] * 4 and "RUN-NOTHING-WATCHED" not in rules(g)


def test_group_offload_hooks_are_a_chosen_offload() -> None:
    dit = tiny_diffusers.transformer()
    dit.enable_group_offload(torch.device("cpu"), offload_device=torch.device("cpu"), offload_type="block_level",
                             num_blocks_per_group=1)  # fmt: skip
    with guard(device="cpu", nvml=False, model=dit) as g, torch.no_grad(), g.step(0):
        dit(torch.randn(1, 4, 2, 4, 4), torch.tensor([500]), torch.randn(1, 8, 16))
    assert g.report.steps[0].offload_hooks


# -- what a step measures beyond copies and casts ------------------------------------------------------------------


def test_attention_kernels_are_read_from_the_op_names() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 128, 16)
    with guard(device="cpu", nvml=False, model=small_dit()) as g:
        with g.step(0):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        with g.step(1), sdpa_kernel(SDPBackend.MATH):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
    fused, math = g.report.steps
    assert fused.attention == {"cpu_flash": 1} and fused.attention_math_bytes == 0
    assert math.attention == {"math": 1} and math.attention_math_bytes == 1 * 2 * 128 * 128 * 4


def test_ram_swap_and_the_phases_reads_are_measured() -> None:
    model = small_dit()
    with guard(device="cpu", nvml=False, model=model) as g, torch.no_grad():
        with g.phase("load"):
            Path(__file__).read_bytes()
        with g.step(0):
            model(torch.randn(1, 2, 64))
    step, load = g.report.steps[0], g.report.phases[0]
    assert step.ram_total_bytes and step.ram_available_bytes and step.swap_used_bytes is not None
    assert g.report.run.swap_used_start_bytes is not None
    assert load.name == "load" and load.read_bytes is not None and "load" in g.report.summary.phase_read_bytes
