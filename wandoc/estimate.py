"""How much GPU memory and system RAM the run about to start will need.

The numbers are estimates meant to tell "fits" from "will spill or offload" (the difference between minutes and
hours on Windows), not to predict an allocator's peak to the megabyte: each figure is documented where computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from wandoc.facts import CheckpointFacts, Estimate, RepoFacts

GB = 10**9


@dataclass(frozen=True)
class Family:
    """One DiT size. ``params`` are per expert, counted from the architecture (blocks x (attention + FFN) plus
    embeddings); ``vae_stride`` is the VAE's spatial compression; official DiT checkpoints ship in fp32."""

    params: int
    experts: int
    dim: int
    ffn_dim: int
    vae_stride: int
    default_size: str
    default_frames: int


FAMILIES: dict[str, Family] = {
    "A14B": Family(14_290_000_000, 2, 5120, 13824, 8, "1280*720", 81),
    "14B": Family(14_290_000_000, 1, 5120, 13824, 8, "1280*720", 81),
    "5B": Family(5_000_000_000, 1, 3072, 14336, 16, "1280*704", 121),
    "1.3B": Family(1_420_000_000, 1, 1536, 8960, 8, "832*480", 81),
}
OFFICIAL_DIT_DTYPE = "F32"
T5_BYTES = 5_700_000_000 * 2  # umt5-xxl encoder, bf16
VAE_BYTES = GB // 2
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_TRUE = {"1", "true", "yes", "y", "on"}


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE


def family_for_task(task: str) -> Family | None:
    """The size suffix decides: "t2v-A14B", "i2v-14B", "ti2v-5B", "vace-1.3B"."""
    _, _, suffix = task.strip().rpartition("-")
    return FAMILIES.get(suffix.upper())


def family_for_params(params: int) -> tuple[str, Family]:
    """The family whose expert size is nearest a checkpoint's parameter count (for a task the table lacks)."""
    name = min(("14B", "5B", "1.3B"), key=lambda k: abs(FAMILIES[k].params - params))
    return name, FAMILIES[name]


def parse_size(size: Any) -> tuple[int, int] | None:
    """ "1280*720" (Wan writes width*height) or "1280x720" -> (1280, 720)."""
    match = re.fullmatch(r"\s*(\d+)\s*[*xX]\s*(\d+)\s*", str(size))
    return (int(match.group(1)), int(match.group(2))) if match else None


def tokens_for(width: int, height: int, frames: int, vae_stride: int) -> int:
    """DiT sequence length: the VAE keeps 1 + (frames - 1) / 4 latent frames and divides height and width by
    its stride (8, or 16 for the 5B's VAE); the (1, 2, 2) patch then makes one token of 4 latent positions."""
    latent_frames = (max(frames, 1) - 1) // 4 + 1
    return latent_frames * (height // vae_stride // 2) * (width // vae_stride // 2)


def activation_bytes(tokens: int, family: Family) -> int:
    """Rough peak activations of one forward, one block at a time (no grad, so blocks do not accumulate).

    Per token: about 24 x ``dim`` bytes (the fp32 residual stream and modulated copies, bf16 q/k/v and attention
    output, RoPE's complex temporaries) plus 4 x ``ffn_dim`` bytes (the FFN's bf16 hidden layer and its
    activation). Good to tens of percent at best: it exists to see whether 81 frames at 720p fit next to the
    weights, not to size an allocation. The VAE decode's own peak is not included.
    """
    return tokens * (24 * family.dim + 4 * family.ffn_dim)


def _role_bytes(ckpt: CheckpointFacts, role: str) -> int:
    return max((m.bytes for m in ckpt.models if m.role == role), default=0)


def estimate(repo: RepoFacts, ckpt: CheckpointFacts) -> Estimate:
    """Memory for the effective args and checkpoints.

    ``peak_vram_no_offload``: every DiT expert resident, plus T5 (unless ``--t5_cpu``), the VAE and activations.
    ``peak_vram_offload``: the larger of the denoising phase (one expert, activations, VAE) and text encoding
    (T5 and VAE, the DiT still parked). ``offloaded_bytes``: what offload parks in system RAM when everything is
    off the GPU (every expert and T5), the figure to hold against free RAM.
    """
    eff = repo.effective
    task = str(eff.get("task") or "")
    out = Estimate(task=task)
    notes: list[str] = []
    family = family_for_task(task) if task else None
    if family is None:
        if not ckpt.dit_params:
            out.note = f"task {task!r} is not in the size table" if task else "no task in the run's arguments"
            out.note += " and no DiT checkpoint was read, so memory cannot be estimated"
            return out
        name, family = family_for_params(ckpt.dit_params)
        notes.append(f"task {task or 'unknown'}: sized as a {name} model from the checkpoint's parameter count")
        experts = max(ckpt.dit_experts, 1)
    else:
        experts = family.experts
    out.known = True
    out.dit_experts = experts
    out.dit_params = ckpt.dit_params or family.params
    notes.append("DiT size from checkpoint headers" if ckpt.dit_params else "DiT size from the task table")

    stored = ckpt.dit_main_dtype or OFFICIAL_DIT_DTYPE
    out.dit_runtime_dtype = "BF16" if _truthy(eff.get("convert_model_dtype", False)) else stored
    if out.dit_runtime_dtype == ckpt.dit_main_dtype and ckpt.dit_bytes_on_disk:
        out.dit_bytes = ckpt.dit_bytes_on_disk  # stored as it will run (also covers GGUF and other packed types)
    else:
        out.dit_bytes = out.dit_params * DTYPE_BYTES.get(out.dit_runtime_dtype, 2)

    out.t5_bytes = _role_bytes(ckpt, "t5") or T5_BYTES
    out.vae_bytes = _role_bytes(ckpt, "vae") or VAE_BYTES
    size = parse_size(eff.get("size") or family.default_size)
    if size is None:
        size = parse_size(family.default_size) or (1280, 720)
        notes.append(f"size {eff.get('size')!r} unreadable, {family.default_size} assumed")
    try:
        frames = int(eff.get("frame_num") or family.default_frames)
    except (TypeError, ValueError):
        frames = family.default_frames
        notes.append(f"frame_num {eff.get('frame_num')!r} unreadable, {frames} assumed")
    out.activations_bytes = activation_bytes(tokens_for(size[0], size[1], frames, family.vae_stride), family)

    t5_on_gpu = 0 if _truthy(eff.get("t5_cpu", False)) else out.t5_bytes
    out.peak_vram_no_offload = experts * out.dit_bytes + t5_on_gpu + out.vae_bytes + out.activations_bytes
    out.peak_vram_offload = max(out.dit_bytes + out.activations_bytes + out.vae_bytes, t5_on_gpu + out.vae_bytes)
    out.offloaded_bytes = experts * out.dit_bytes + out.t5_bytes
    notes.append("activations are a rough per-token estimate")
    out.note = "; ".join(notes)
    return out
