"""The step clock without device syncs: steps timed by events that complete when the device gets there, judged
once their time is known, and what that means for strict mode.

A stand-in device runs behind the host (an event completes only when waited for), the way a GPU with queued work
does, so the lag the guard must live with shows on a CPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_guards import clean_state as clean_state  # the fixture: the guard left nothing behind
from test_guards import small_dit
from torch import nn

from wandoc.engine import Finding, Rule
from wanrun.guard import Guard, GuardStop
from wanrun.guards.clock import StepClock

pytestmark = pytest.mark.usefixtures("clean_state")


class LaggingDevice:
    """Events on one stream that the device reaches only when the host waits for them; step ``k`` lasts
    ``ms[k]`` milliseconds of device time (10 by default)."""

    def __init__(self, ms: dict[int, float] | None = None) -> None:
        self.ms = ms or {}
        self.recorded = 0
        self.reached = 0
        self.waits = 0
        self.made = 0

    def event(self) -> FakeEvent:
        self.made += 1
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, device: LaggingDevice) -> None:
        self.device = device
        self.seq = 0

    def record(self, stream: Any = None) -> None:
        self.device.recorded += 1
        self.seq = self.device.recorded

    def query(self) -> bool:
        return self.seq <= self.device.reached

    def synchronize(self) -> None:
        self.device.waits += 1
        self.device.reached = max(self.device.reached, self.seq)

    def elapsed_time(self, end: FakeEvent) -> float:
        return self.device.ms.get(end.seq // 2 - 1, 10.0)  # step k records events 2k+1 and 2k+2


def slow_rule(severity: str = "warning") -> Rule:
    return Rule(
        id="RUN-TEST-SLOW",
        title="a slow plain step",
        severity=severity,
        scope="step",
        when="not step.deep and step.seconds >= 0.05",
        message="step {step.index} took {step.seconds} s",
    )


def lagging_guard(device: LaggingDevice, **kw: Any) -> Guard:
    g = Guard("meta", [slow_rule(kw.pop("severity", "warning"))], nvml=False, deep_steps=1, deep_every=0, **kw)
    g._clock = StepClock(g.device, events=device.event)
    return g


def run(g: Guard, model: nn.Module, steps: int, seen: list[tuple[str, int, int]]) -> None:
    """Steps of two forwards; ``seen`` gets (rule, its step, steps closed when it was reported)."""
    g.on_finding = lambda f: seen.append((f.rule, f.step or 0, len(g.steps)))
    x = torch.empty(1, 4, 64, device="meta")
    with g.phase("denoise"):
        for i in range(steps):
            with g.step(i):
                model(x)
                model(x)


def test_plain_steps_are_timed_by_events_and_judged_one_step_late() -> None:
    device = LaggingDevice({2: 80.0})
    model = small_dit().to("meta")
    seen: list[tuple[str, int, int]] = []
    with lagging_guard(device, model=model) as g:
        run(g, model, steps=5, seen=seen)
    assert [s.seconds for s in g.report.steps] == [0.01, 0.01, 0.08, 0.01, 0.01]  # the device's, not the host's
    assert seen == [("RUN-TEST-SLOW", 2, 4)]  # step 2, reported when step 3 closed
    assert device.waits == 5 and device.made <= 4  # no step waited for twice; events are reused
    assert "device time from CUDA events" in " ".join(g.report.summary.checked)


def test_strict_stops_one_step_after_a_plain_step_finding() -> None:
    device = LaggingDevice({2: 80.0})
    model = small_dit().to("meta")
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(GuardStop) as stop, lagging_guard(device, model=model, severity="error", strict=True) as g:
        run(g, model, steps=8, seen=seen)
    assert (stop.value.finding.rule, stop.value.finding.step) == ("RUN-TEST-SLOW", 2)
    assert len(g.report.steps) == 4 and g.report.summary.interrupted  # raised as step 3 closed


def test_an_inspected_step_is_judged_at_once_and_stops_there() -> None:
    """Findings of the per-op inspection do not wait for the next step: strict mode stops at the step itself."""
    device = LaggingDevice()
    model = small_dit(dim=256, hidden=1024, blocks=2)  # on the CPU in a run that expects an accelerator
    g = Guard("cuda", nvml=False, strict=True)
    g._clock = StepClock(g.device, events=device.event)
    with pytest.raises(GuardStop) as stop, g:
        g.attach_model(model, "dit")
        for i in range(5):
            with g.step(i), torch.no_grad():
                model(torch.randn(1, 64, 256))
                model(torch.randn(1, 64, 256))
    assert (stop.value.finding.rule, stop.value.finding.step, len(g.report.steps)) == ("RUN-CPU-COMPUTE", 0, 1)
    assert g.report.steps[0].seconds == 0.01


def test_the_phase_end_judges_the_last_step() -> None:
    device = LaggingDevice({4: 80.0})
    model = small_dit().to("meta")
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(GuardStop) as stop, lagging_guard(device, model=model, severity="error", strict=True) as g:
        run(g, model, steps=5, seen=seen)
        raise AssertionError("the denoise phase should have stopped the run")
    assert stop.value.finding.step == 4 and len(g.report.steps) == 5
    assert [p.name for p in g.report.phases] == ["denoise"]


def test_a_phase_after_the_loop_judges_the_last_step_before_it_runs() -> None:
    """A runner that times the decode but not the loop: strict mode stops before the decode starts."""
    device = LaggingDevice({2: 80.0})
    model = small_dit().to("meta")
    decoded: list[bool] = []
    with pytest.raises(GuardStop) as stop, lagging_guard(device, model=model, severity="error", strict=True) as g:
        x = torch.empty(1, 4, 64, device="meta")
        for i in range(3):
            with g.step(i):
                model(x)
        with g.phase("decode"):
            decoded.append(True)
    assert stop.value.finding.step == 2 and decoded == []
    assert [p.name for p in g.report.phases] == ["denoise"]  # the loop, timed; the decode never ran


def test_the_guards_exit_judges_what_is_left_without_raising() -> None:
    device = LaggingDevice({4: 80.0})
    model = small_dit().to("meta")
    seen: list[tuple[str, int, int]] = []
    with lagging_guard(device, model=model, strict=True) as g:  # a warning: strict does not stop for it
        x = torch.empty(1, 4, 64, device="meta")
        for i in range(5):
            with g.step(i):
                model(x)
        g.on_finding = lambda f: seen.append((f.rule, f.step or 0, len(g.steps)))
    assert seen == [("RUN-TEST-SLOW", 4, 5)] and not g.report.summary.interrupted
    assert [s.seconds for s in g.report.steps][-1] == 0.08


def test_a_failed_event_falls_back_to_the_host_time() -> None:
    class Broken(FakeEvent):
        def synchronize(self) -> None:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        def query(self) -> bool:
            return False

    device = LaggingDevice()
    g = Guard("meta", [slow_rule()], nvml=False, deep_steps=0, deep_every=0)
    g._clock = StepClock(g.device, events=lambda: Broken(device))
    with g:
        for i in range(3):
            with g.step(i):
                pass
    steps = g.report.steps
    assert len(steps) == 3 and all(0 <= s.seconds < 0.05 for s in steps)


def test_a_host_clock_knows_each_step_at_its_end() -> None:
    clock = StepClock(torch.device("cpu"))
    timing = clock.start()
    clock.stop(timing)
    assert not clock.on_device and timing.seconds is not None and timing.seconds == timing.host_seconds >= 0
    assert clock.poll(timing) and timing.peak is None  # no allocator to read


def test_findings_name_the_step_that_made_them() -> None:
    """A finding judged late still carries its own step, not the step during which it was reported."""
    device = LaggingDevice({1: 90.0})
    model = small_dit().to("meta")
    seen: list[tuple[str, int, int]] = []
    with lagging_guard(device, model=model) as g:
        run(g, model, steps=3, seen=seen)
    findings: list[Finding] = [f for f in g.report.findings if f.rule == "RUN-TEST-SLOW"]
    assert [(f.step, f.message) for f in findings] == [(1, "step 1 took 0.09 s")]
    assert seen == [("RUN-TEST-SLOW", 1, 3)]
