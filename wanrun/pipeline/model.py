"""A Wan-style video DiT with seeded random weights, built straight on its device.

Same anatomy and module names as Wan's `WanModel`, so the guards' module paths read the same on both: a (1, 2, 2)
patch embedding of a 16-channel latent; an fp32 time embedding producing six modulation vectors per block;
blocks of self-attention (q/k RMSNorm, 3D RoPE), cross-attention to the text and a GELU FFN; a modulated head.
The residual stream is fp32 (modulation promotes it) and every linear layer casts its input to the compute dtype
under autocast, as in Wan. Time embedding, modulation and norm weights stay fp32, so a clean bf16 run re-casts no
weight; fp32 weights everywhere (the regression) make autocast re-cast each one in every forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from wanrun.pipeline.config import FREQ_DIM, LATENT_CHANNELS, PATCH, PresetSpec

M = TypeVar("M", bound=nn.Module)
TORCH_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
WEIGHTS_SEED = 2025  # the stand-in for a checkpoint: every run of a preset gets the same weights


def materialize(
    factory: Callable[[], M],
    device: torch.device,
    seed: int,
    dtype_for: Callable[[str], torch.dtype],
    std_for: Callable[[str, nn.Parameter], float],
) -> M:
    """Build `factory()` on the meta device, allocate it on `device` in its final dtypes, then fill it in place.

    The model is allocated once, where it will run, and filled there (no CPU fp32 detour), so a 1.3B model loads
    in seconds on a GPU.
    Values are drawn in fp32 and cast, so the same seed gives the same weights (up to rounding) in any dtype.
    Biases start at zero, 1-D weights (norms) at one, everything else from N(0, std_for(name, param)).
    """
    with torch.device("meta"):
        module = factory()
    for prefix, sub in module.named_modules():
        for pname, param in list(sub.named_parameters(recurse=False)):
            full = f"{prefix}.{pname}" if prefix else pname
            setattr(sub, pname, nn.Parameter(param.detach().to(dtype_for(full)), requires_grad=False))
    module = module.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:
                param.fill_(1.0)
            else:
                draw = torch.empty(param.shape, dtype=torch.float32, device=device)
                draw.normal_(0.0, std_for(name, param), generator=generator)
                param.copy_(draw)
    return module.eval().requires_grad_(False)


class RMSNorm(nn.Module):
    """RMS normalisation in fp32 (the q/k norm of Wan's attention); the output stays fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps in [0, 1000] -> (B, dim) fp32 cos/sin features, built on the timesteps' device."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def rope_tables(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Real cos/sin tables (tokens, head_dim/2) of a 3D RoPE over (frames, height, width).

    The rotary pairs are split between the axes the way Wan splits them: height and width get a third each,
    frames the rest.
    """
    pairs = head_dim // 2
    p_hw = pairs // 3
    splits = (pairs - 2 * p_hw, p_hw, p_hw)
    axes = []
    for axis, (n, n_pairs) in enumerate(zip(grid, splits, strict=True)):
        inv_freq = 1.0 / (10000.0 ** (torch.arange(n_pairs, device=device, dtype=torch.float32) / n_pairs))
        angles = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
        shape = [1, 1, 1, n_pairs]
        shape[axis] = n
        axes.append(angles.view(shape).expand(*grid, n_pairs))
    angles = torch.cat(axes, dim=-1).reshape(-1, pairs)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, L, heads, head_dim) by the tables, pairing adjacent channels; computed and returned in fp32."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA over (B, L, heads, head_dim) inputs; q/k come out of RoPE/RMSNorm in fp32 and meet v's dtype here."""
    dtype = v.dtype
    out = F.scaled_dot_product_attention(q.to(dtype).transpose(1, 2), k.to(dtype).transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        heads = (self.num_heads, -1)
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, heads), cos, sin)
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, heads), cos, sin)
        return self.o(attention(q, k, self.v(x).unflatten(-1, heads)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k = self.norm_k(self.k(context)).unflatten(-1, heads)
        return self.o(attention(q, k, self.v(context).unflatten(-1, heads)))


class DiTBlock(nn.Module):
    """Modulated self-attention, cross-attention to the text, modulated FFN; the six vectors come from `e0`."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(
        self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e0).chunk(6, dim=1)
        x = x + self.self_attn(self.norm1(x).float() * (1 + scale1) + shift1, cos, sin) * gate1
        x = x + self.cross_attn(self.norm3(x), context)
        return x + self.ffn(self.norm2(x).float() * (1 + scale2) + shift2) * gate2


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 2, dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation + e[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x).float() * (1 + scale) + shift)


def dit_init_std(spec: PresetSpec, name: str, param: nn.Parameter) -> float:
    """Fan-in scaling; residual outputs shrunk by depth and a damped time projection keep activations finite."""
    std = 1.0 / math.sqrt(param[0].numel())
    if name.endswith(("attn.o.weight", "ffn.2.weight")):
        std /= math.sqrt(2 * spec.num_blocks)
    elif name.startswith("time_projection."):
        std *= 0.25
    return std


class WanStyleDiT(nn.Module):
    """The denoiser: (B, 16, F, H, W) latent, (B,) timesteps in [0, 1000], (B, text_len, text_dim) text -> velocity."""

    def __init__(self, spec: PresetSpec) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.dim
        self.patch_embedding = nn.Conv3d(LATENT_CHANNELS, dim, kernel_size=PATCH, stride=PATCH)
        self.text_embedding = nn.Sequential(
            nn.Linear(spec.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(DiTBlock(dim, spec.num_heads, spec.ffn_dim) for _ in range(spec.num_blocks))
        self.head = Head(dim, LATENT_CHANNELS * math.prod(PATCH))
        self._rope_cache: dict[tuple[int, int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def keeps_fp32(name: str) -> bool:
        """Parameters that stay fp32 whatever the weights dtype: time embedding, modulation, norms (all small)."""
        return (
            name.startswith(("time_embedding.", "time_projection.")) or name.endswith("modulation") or ".norm" in name
        )

    def rope(self, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The RoPE tables for a token grid, built on the device once and reused by every forward."""
        key = (*grid, str(device))
        if key not in self._rope_cache:
            if len(self._rope_cache) >= 8:
                self._rope_cache.clear()
            self._rope_cache[key] = rope_tables(grid, self.spec.head_dim, device)
        return self._rope_cache[key]

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(x)
        grid = (x.shape[2], x.shape[3], x.shape[4])
        x = x.flatten(2).transpose(1, 2)
        cos, sin = self.rope(grid, x.device)
        with torch.autocast(x.device.type, enabled=False):
            e = self.time_embedding(sinusoidal_embedding(t, FREQ_DIM))
            e0 = self.time_projection(e).unflatten(1, (6, self.spec.dim))
        context = self.text_embedding(context)
        for block in self.blocks:
            x = block(x, e0, context, cos, sin)
        return self.unpatchify(self.head(x, e), grid).float()

    @staticmethod
    def unpatchify(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, tokens, 16 * patch volume) -> (B, 16, frames, height, width)."""
        f, h, w = grid
        pt, ph, pw = PATCH
        x = x.reshape(x.shape[0], f, h, w, LATENT_CHANNELS, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(x.shape[0], LATENT_CHANNELS, f * pt, h * ph, w * pw)


def build_dit(
    spec: PresetSpec, device: torch.device, weights_dtype: torch.dtype, seed: int = WEIGHTS_SEED
) -> WanStyleDiT:
    """The denoiser on `device`, its large weights in `weights_dtype`, eval mode, no gradients (as Wan loads it)."""

    def dtype_for(name: str) -> torch.dtype:
        return torch.float32 if WanStyleDiT.keeps_fp32(name) else weights_dtype

    return materialize(lambda: WanStyleDiT(spec), device, seed, dtype_for, lambda name, p: dit_init_std(spec, name, p))
