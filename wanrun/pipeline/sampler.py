"""Flow-matching (rectified flow) sampling with shifted sigmas and a second-order multistep update.

The model predicts the velocity dx/dsigma of the straight path from data (sigma 0) to noise (sigma 1). Sigmas
run from 1 to 0, bent by `shift` towards the noisy end (sigma' = shift*s / (1 + (shift-1)*s)), where Wan spends
its steps at high resolution. After the first (Euler) step, each update extrapolates the velocity linearly
from the last two (Adams-Bashforth 2 with uneven steps): second order for the price of one evaluation.

Nothing here crosses between host and device: the step sizes are Python floats and the timesteps fed to the
model are built on the device once, before the loop.
"""

from __future__ import annotations

import torch


def shift_sigma(s: float, shift: float) -> float:
    return shift * s / (1.0 + (shift - 1.0) * s)


def shifted_sigmas(steps: int, shift: float) -> list[float]:
    """steps + 1 sigmas from 1.0 down to 0.0."""
    return [shift_sigma(1.0 - i / steps, shift) for i in range(steps + 1)]


class FlowMatchSampler:
    def __init__(self, steps: int, shift: float, device: torch.device, order: int = 2) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.order = order
        self.sigmas = shifted_sigmas(steps, shift)
        s = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64)[:-1]
        self.timesteps = (shift * s / (1.0 + (shift - 1.0) * s) * 1000.0).float()
        self._prev: torch.Tensor | None = None

    def timestep(self, index: int) -> torch.Tensor:
        """(1,) model timestep in [0, 1000] for step `index`: a view of a device tensor, no copy."""
        return self.timesteps[index : index + 1]

    def step(self, index: int, x: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        """Move `x` from sigma[index] to sigma[index + 1] along the predicted velocity."""
        h = self.sigmas[index + 1] - self.sigmas[index]
        x_next = x + h * velocity
        if self.order == 2 and self._prev is not None and index > 0:
            h_prev = self.sigmas[index] - self.sigmas[index - 1]
            x_next = x_next + (h * h / (2.0 * h_prev)) * (velocity - self._prev)
        self._prev = velocity
        return x_next
