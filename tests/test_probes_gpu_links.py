"""NVLink, topology and WDDM's hidden per-process memory, from a fake NVML (no GPU here)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from test_probes_machine import GIB, install_fake_nvml

from wandoc.facts import GpuFacts, GpuProcess
from wandoc.probes import gpu


def nvlink_fake(up: dict[int, int], links: int, broken: int | None = None) -> Any:
    """``up[h]`` links up out of ``links`` per GPU; link ``broken`` answers an unknown error."""

    def state(h: int, link: int) -> int:
        if link == broken:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        if link >= links:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(link < up[h])

    return state


def test_nvlink_links_and_an_nvswitch_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetNvLinkState", nvlink_fake({0: 18, 1: 12}, links=18))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTopologyCommonAncestor", lambda a, b: pynvml.NVML_TOPOLOGY_INTERNAL)
    facts = gpu.probe_nvml({})
    assert [g.nvlink_active for g in facts.gpus] == [18, 12]
    assert [(t.a, t.b, t.level) for t in facts.topology] == [(0, 1, "same_board")]
    assert all(not any(e.startswith("nvlink") for e in g.errors) for g in facts.gpus)


def test_nvlink_that_cannot_be_read_is_unknown_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetNvLinkState", nvlink_fake({0: 4, 1: 4}, links=12, broken=2))

    def refuse(a: int, b: int) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTopologyCommonAncestor", refuse)
    facts = gpu.probe_nvml({})
    assert [g.nvlink_active for g in facts.gpus] == [None, None]
    assert any(e.startswith("nvlink:") for e in facts.gpus[0].errors)
    assert facts.topology == []  # a pair NVML will not describe is left out


@pytest.mark.parametrize(
    ("level", "name"),
    [(10, "single_switch"), (20, "multiple_switches"), (30, "host_bridge"), (40, "numa_node"), (50, "system")],
)
def test_topology_levels(monkeypatch: pytest.MonkeyPatch, level: int, name: str) -> None:
    install_fake_nvml(monkeypatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTopologyCommonAncestor", lambda a, b: level)
    assert [t.level for t in gpu.probe_nvml({}).topology] == [name]


def card(used: int, processes: list[GpuProcess]) -> GpuFacts:
    return GpuFacts(memory_total_bytes=24 * GIB, memory_used_bytes=used, processes=processes)


ME, BROWSER, DWM = 10, 20, 30


@pytest.mark.parametrize(
    ("facts", "hidden", "wddm", "reserved", "expected"),
    [
        # Linux: every process has a figure; the list is the truth
        (card(9 * GIB, [GpuProcess(pid=BROWSER, used_bytes=3 * GIB)]), False, False, 0, (3 * GIB, "processes")),
        # WDDM: processes listed without figures -> the device's used memory minus ours and the reserve
        (
            card(7 * GIB, [GpuProcess(pid=ME, used_bytes=2 * GIB, is_self=True), GpuProcess(pid=DWM)]),
            True, True, GIB // 2, (int(4.5 * GIB), "device"),
        ),
        # WDDM listing nobody at all
        (card(5 * GIB, []), False, True, 0, (5 * GIB, "device")),
        # hidden, but the device figure is below what is listed: keep the list
        (card(GIB, [GpuProcess(pid=BROWSER, used_bytes=2 * GIB), GpuProcess(pid=DWM)]), True, True, 0,
         (2 * GIB, "processes")),
        # memory unreadable: nothing to subtract from
        (GpuFacts(processes=[GpuProcess(pid=DWM)]), True, True, 0, (0, "processes")),
    ],
)  # fmt: skip
def test_held_by_others(facts: GpuFacts, hidden: bool, wddm: bool, reserved: int, expected: tuple[int, str]) -> None:
    assert gpu.held_by_others(facts, hidden, wddm, reserved) == expected


def test_wddm_card_with_a_reserve_reported_by_the_v2_memory_query(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch)

    def memory(h: int, version: Any = None) -> SimpleNamespace:
        if version is None:
            raise AssertionError("the v2 query answers first")
        return SimpleNamespace(total=24 * GIB, used=6 * GIB, free=17 * GIB, reserved=GIB)  # v2: used lacks the reserve

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: [])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetGraphicsRunningProcesses", lambda h: [])
    facts = gpu._gpu(pynvml, 1, wddm=True)
    assert (facts.memory_used_bytes, facts.memory_free_bytes) == (7 * GIB, 17 * GIB)  # as the v1 query counts
    assert (facts.other_processes_bytes, facts.other_processes_from) == (6 * GIB, "device")
