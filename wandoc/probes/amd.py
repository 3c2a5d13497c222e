"""AMD GPUs as ROCm's kernel driver shows them: a ROCm build of torch with no GPU behind it computes on the CPU.

The KFD driver lists every compute agent under ``/sys/class/kfd/kfd/topology/nodes``; a GPU node carries a
non-zero ``gfx_target_version`` (110000 is gfx1100). ``/dev/kfd`` is the device torch opens: without it (no
amdgpu driver with compute, or a container started without ``--device=/dev/kfd``) ROCm sees nothing. Read from
files only, Linux only; elsewhere nothing is claimed.
"""

from __future__ import annotations

import os
from pathlib import Path

from wandoc.facts import AmdFacts, AmdGpu

KFD_TOPOLOGY = Path("/sys/class/kfd/kfd/topology/nodes")
KFD_DEVICE = Path("/dev/kfd")
MAX_NODES = 64


def gfx_name(target_version: int) -> str:
    """KFD's number to the ISA name: 110000 -> gfx1100, 100301 -> gfx1031, 90010 -> gfx90a, 90402 -> gfx942."""
    major, minor, step = target_version // 10000, target_version // 100 % 100, target_version % 100
    return f"gfx{major}{minor:x}{step:x}"


def _properties(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        try:
            out[key] = int(value.strip())
        except ValueError:
            continue
    return out


def _vram(node: Path) -> int:
    total = 0
    try:
        banks = sorted(node.joinpath("mem_banks").iterdir())[:8]
    except OSError:
        return 0
    for bank in banks:
        try:
            total += _properties((bank / "properties").read_text(errors="replace")).get("size_in_bytes", 0)
        except OSError:
            continue
    return total


def probe_amd(topology: Path = KFD_TOPOLOGY, device: Path = KFD_DEVICE) -> AmdFacts:
    facts = AmdFacts()
    if os.name != "posix" or not Path("/sys").is_dir():
        return facts
    try:
        facts.checked = True
        facts.kfd = device.exists()
        if not topology.is_dir():
            return facts
        nodes = sorted((p for p in topology.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for node in nodes[:MAX_NODES]:
            try:
                props = _properties((node / "properties").read_text(errors="replace"))
            except OSError:
                continue
            target = props.get("gfx_target_version", 0)
            if target > 0:
                facts.gpus.append(AmdGpu(node=int(node.name), gfx=gfx_name(target), vram_bytes=_vram(node)))
    except Exception as exc:
        facts.error = f"KFD topology unreadable: {type(exc).__name__}: {exc}"
    return facts
