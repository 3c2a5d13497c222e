"""A guard driven from the outside, the way the in-process runner for users' scripts drives it.

The runner attaches the denoiser from a global forward pre-hook the first time one runs (so the guard's own hooks
miss that very forward's pre-hooks), opens ``guard.step(i)`` by hand at a denoiser's first forward of a step,
from a pre-hook that runs before the guard's, and closes it after the scheduler's ``step()``. Steps, forwards
and strict-mode stops must come out the same as with ``with guard.step(i):``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pytest
import torch
from test_guards import SmallDiT, small_dit
from test_guards import clean_state as clean_state  # the fixture: the guard left nothing behind
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from wanrun.guard import Guard, GuardStop, guard

pytestmark = pytest.mark.usefixtures("clean_state")


class Driver:
    """The runner's moves, and nothing else: attach on first sight, open at a first forward, close after the
    scheduler."""

    def __init__(self, g: Guard) -> None:
        self.g = g
        self.index = 0
        self.cm: AbstractContextManager[None] | None = None
        self.local: list[torch.utils.hooks.RemovableHandle] = []
        self.global_hook: torch.utils.hooks.RemovableHandle | None = register_module_forward_pre_hook(self._first)

    def _first(self, module: nn.Module, args: Any) -> None:
        if not isinstance(module, SmallDiT):
            return
        self.g.attach_model(module, "dit", denoiser=True)
        self.local.append(module.register_forward_pre_hook(self._forward, prepend=True))
        assert self.global_hook is not None
        self.global_hook.remove()
        self.global_hook = None
        self._open()

    def _forward(self, module: nn.Module, args: Any) -> None:
        if self.cm is None:
            self._open()

    def _open(self) -> None:
        self.cm = self.g.step(self.index)
        self.cm.__enter__()

    def scheduler_step(self) -> None:
        cm, self.cm = self.cm, None
        assert cm is not None
        self.index += 1
        cm.__exit__(None, None, None)  # may raise GuardStop

    def close(self) -> None:
        for handle in [*self.local, *([self.global_hook] if self.global_hook else [])]:
            handle.remove()


def sample(driver: Driver, model: nn.Module, x: torch.Tensor, steps: int) -> None:
    """A Wan-like loop that knows nothing of the guard: two CFG forwards and a scheduler update per step."""
    latents = x
    with torch.no_grad():
        for _ in range(steps):
            cond, uncond = model(latents), model(latents)
            latents = latents - 0.1 * (uncond + 2.0 * (cond - uncond))
            driver.scheduler_step()


def test_driven_steps_count_both_forwards_from_the_first_step() -> None:
    model = small_dit()
    with guard(device="cpu", nvml=False) as g:
        driver = Driver(g)
        try:
            sample(driver, model, torch.randn(1, 4, 64), steps=4)
        finally:
            driver.close()
    r = g.report
    assert [(s.index, s.forwards) for s in r.steps] == [(0, 2), (1, 2), (2, 2), (3, 2)]
    assert r.summary.deep_steps == [0, 1] and r.run.denoiser == "SmallDiT"
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_driven_step_0_is_inspected_in_full_and_charged_to_modules() -> None:
    """The session starts inside the denoiser's pre-hooks, after the global module hooks ran for that call."""
    model = small_dit(dim=256, hidden=1024, blocks=2)
    with guard(device="cuda", nvml=False) as g:
        driver = Driver(g)
        try:
            sample(driver, model, torch.randn(1, 64, 256), steps=2)
        finally:
            driver.close()
    first = g.report.steps[0]
    assert first.forwards == 2 and first.deep
    # the blocks and the head of both forwards: 2 × (2 blocks × 3 linears + head), the time embedding too
    assert first.cpu_ops == 2 * (2 * 3 + 2)
    assert {v.module.split(".")[0] for v in first.top_cpu} <= {"blocks", "head", "time_embedding"}


def test_strict_stop_comes_out_of_the_drivers_exit() -> None:
    model = small_dit(dim=256, hidden=1024, blocks=2)
    with pytest.raises(GuardStop) as stop, guard(device="cuda", nvml=False, strict=True) as g:
        driver = Driver(g)
        try:
            sample(driver, model, torch.randn(1, 64, 256), steps=5)
        finally:
            driver.close()
    assert stop.value.finding.rule == "RUN-CPU-COMPUTE" and stop.value.finding.step == 0
    assert driver.index == 1  # raised by the first step's __exit__, right after the scheduler's update
    assert [s.forwards for s in g.report.steps] == [2] and g.report.summary.interrupted
