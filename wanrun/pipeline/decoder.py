"""A cheap stand-in for Wan's VAE decoder: latent (1, 16, F, h, w) -> uint8 frames (frames, 8h, 8w, 3).

Time is restored first, by interpolating the latent so that latent frame i lands on video frame 4i (Wan's causal
VAE maps latent frame 0 to frame 0 and each later one to four frames). Each frame is then decoded in 2D: a smooth
colour base (1x1 conv, bilinear x8) plus detail (3x3 conv, 1x1 conv to 192 channels, pixel shuffle x8). At 480p,
81 frames this is a few GFLOP: the decode phase stays small next to the denoising, unlike a real VAE's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wanrun.pipeline.config import LATENT_CHANNELS, VAE_STRIDE
from wanrun.pipeline.model import materialize

DECODER_SEED = 11
_UP = VAE_STRIDE[1]


class ToyVideoDecoder(nn.Module):
    def __init__(self, hidden: int = 64, chunk: int = 16) -> None:
        super().__init__()
        self.chunk = chunk  # frames decoded at once: bounds the memory of long clips
        self.to_base = nn.Conv2d(LATENT_CHANNELS, 3, kernel_size=1)
        self.conv_in = nn.Conv2d(LATENT_CHANNELS, hidden, kernel_size=3, padding=1)
        self.to_detail = nn.Conv2d(hidden, 3 * _UP * _UP, kernel_size=1)

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """(N, 16, h, w) latent frames -> (N, 3, 8h, 8w) in [-1, 1]."""
        base = F.interpolate(self.to_base(z), scale_factor=_UP, mode="bilinear", align_corners=False)
        detail = F.pixel_shuffle(self.to_detail(F.silu(self.conv_in(z))), _UP)
        return torch.tanh(base + detail)

    def forward(self, latent: torch.Tensor, frames: int) -> torch.Tensor:
        """(1, 16, F, h, w) -> uint8 (frames, 8h, 8w, 3) on the latent's device."""
        latent = latent.float()
        if latent.shape[2] != frames:
            latent = F.interpolate(latent, size=(frames, *latent.shape[3:]), mode="trilinear", align_corners=True)
        z = latent[0].transpose(0, 1)  # (frames, 16, h, w)
        out = [self.decode_frames(z[i : i + self.chunk]) for i in range(0, frames, self.chunk)]
        rgb = torch.cat(out).permute(0, 2, 3, 1)
        return ((rgb + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def _init_std(name: str, param: nn.Parameter) -> float:
    """Gains that keep a unit-variance latent mostly inside tanh's linear range: colours, not saturated noise."""
    gain = {"to_base.weight": 0.5, "to_detail.weight": 0.25}.get(name, 1.0)
    return gain / math.sqrt(param[0].numel())


def build_decoder(device: torch.device) -> ToyVideoDecoder:
    """The decoder, fp32 on `device`, with fixed weights."""
    return materialize(ToyVideoDecoder, device, DECODER_SEED, lambda _: torch.float32, _init_std)
