"""What the guard looks at on which step, and what that costs: later inspections see only the first forward of a
step (plus the loop code) and scale it; residency is sampled and read in full only when something moved.

Copies run on the ``meta`` device (the stand-in accelerator of ``test_guards``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_guards import Boom, small_dit
from test_guards import clean_state as clean_state  # the fixture: the guard left nothing behind
from torch import nn

from wanrun.guard import Guard, guard
from wanrun.guards.residency import Residency

pytestmark = pytest.mark.usefixtures("clean_state")

MIB = 2**20
LOOP_IN, FORWARD, SECOND_ONLY, TAIL = MIB, 2 * MIB, 64 * 1024, 4096


class HostFeed(nn.Module):
    """Copies fresh host data in on every forward, and a little more on every second forward of a step: what
    a partial inspection cannot see, which shows it did not look."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 64)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        feed = torch.zeros(FORWARD // 4).to(x.device).sum()
        if self.calls % 2 == 0:
            feed = feed + torch.zeros(SECOND_ONLY // 4).to(x.device).sum()
        return self.proj(x) + feed


def host_fed_steps(g: Guard, model: nn.Module, steps: int) -> None:
    for i in range(steps):
        with g.step(i):
            x = torch.zeros(LOOP_IN // 4).to("meta").view(-1, 64)  # latents from the host
            model(x)
            model(x)
            torch.zeros(TAIL // 4).to("meta")  # after the last forward: the loop code is inspected again


def test_a_later_inspection_sees_the_first_forward_and_the_loop_and_scales() -> None:
    model = HostFeed().to("meta")
    with guard(device="meta", nvml=False, deep_steps=2, deep_every=0) as g:
        g.attach_model(model, "dit")
        host_fed_steps(g, model, steps=3)
    full, partial, plain = g.report.steps
    assert full.h2d_bytes == LOOP_IN + 2 * FORWARD + SECOND_ONLY + TAIL and full.h2d_copies == 5
    # the second forward ran uninspected: its own extra is not seen, the first forward counts twice
    assert partial.h2d_bytes == LOOP_IN + 2 * FORWARD + TAIL and partial.h2d_copies == 4
    assert {v.module: v.bytes for v in partial.top_h2d} == {"(loop)": LOOP_IN + TAIL, "dit": 2 * FORWARD}
    assert (full.deep, partial.deep, plain.deep, plain.h2d_bytes) == (True, True, False, None)  # not measured
    checked = " ".join(g.report.summary.checked)
    assert "on step 1, 1 of 2 forwards and the loop code" in checked
    assert g.report.findings and all(f.step == 0 for f in g.report.findings)


def test_deep_forwards_none_inspects_every_forward() -> None:
    model = HostFeed().to("meta")
    with guard(device="meta", nvml=False, deep_steps=2, deep_every=0, deep_forwards=None) as g:
        g.attach_model(model, "dit")
        host_fed_steps(g, model, steps=2)
    assert [s.h2d_bytes for s in g.report.steps] == [LOOP_IN + 2 * FORWARD + SECOND_ONLY + TAIL] * 2
    assert "forwards and the loop code" not in " ".join(g.report.summary.checked)


def test_an_exception_in_a_paused_forward_leaves_nothing_behind() -> None:
    model = small_dit()
    with pytest.raises(RuntimeError, match="exploded"), guard(device="cpu", nvml=False) as g:
        g.attach_model(model, "dit")
        for i in range(3):
            with g.step(i), torch.no_grad():
                model(torch.randn(1, 2, 64))
                if i == 1:
                    assert torch._C._len_torch_dispatch_stack() == 1  # inspecting the first forward
                    model.blocks[1] = Boom()
                    model(torch.randn(1, 2, 64))  # paused: nothing installed while it runs and fails
                else:
                    model(torch.randn(1, 2, 64))
    assert g.report.summary.error and "exploded" in g.report.summary.error
    assert [s.deep for s in g.report.steps] == [True, True]


def count_full_checks(g: Guard) -> list[int]:
    """Wraps the attached residency's full check to record the steps (by count so far) where it ran."""
    residency = g._residency
    assert residency is not None
    calls: list[int] = []
    check = residency.check

    def counted() -> Any:
        calls.append(len(g.steps))
        return check()

    residency.check = counted  # type: ignore[method-assign]
    return calls


def test_residency_is_read_in_full_only_when_something_moved() -> None:
    model = small_dit(blocks=12).to("meta")  # 50 modules hold parameters: a sample reads half of them a step
    with guard(device="meta", nvml=False, deep_steps=1, deep_every=0) as g:
        g.attach_model(model, "dit")
        assert g._residency is not None and g._residency.period == 2
        calls = count_full_checks(g)
        for i in range(10):
            if i == 3:
                model.blocks[5].to_empty(device="cpu")  # a whole block: seen by the next step's sample
            if i == 6:
                model.blocks[8].ffn[0].to_empty(device="cpu")  # one layer: seen within two steps
            with g.step(i):
                pass
    steps = g.report.steps
    # step 0, and the steps after each move (the layer's half was read at step 7), each read where it starts and
    # again where it ends: weights that came onto the device during an inspected step and stayed are no traffic
    assert calls == [0, 0, 3, 3, 7, 7]
    assert [s.index for s in steps if s.deep] == [0, 3, 7]
    assert [s.cpu_resident for s in steps][2:4] == [[], ["blocks.5"]]
    assert steps[7].cpu_resident == ["blocks.5", "blocks.8.ffn.0"] and steps[9].cpu_resident == steps[7].cpu_resident
    finding = {f.rule: f for f in g.report.findings}["RUN-CPU-RESIDENT"]
    assert (finding.step, finding.module) == (3, "blocks.5")
    assert "every layer within 2 steps" in " ".join(g.report.summary.checked)


def test_residency_sample_sees_whole_blocks_at_once_and_layers_in_turn() -> None:
    model = small_dit(blocks=40).to("meta")
    residency = Residency([("", "dit", model)])
    assert residency.moved(0)  # nothing read yet
    assert residency.check() == ([], 0) and not any(residency.moved(k) for k in range(residency.period))
    model.blocks[17].to_empty(device="cpu")
    assert all(residency.moved(k) for k in range(residency.period))
    residency.check()
    model.blocks[30].ffn[2].to_empty(device="cpu")
    assert sum(residency.moved(k) for k in range(residency.period)) == 1
    assert residency.check()[0] == ["blocks.17", "blocks.30.ffn.2"]
