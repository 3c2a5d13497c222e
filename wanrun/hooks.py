"""The seam between a generation and the guards: the pipeline says where it is, the guards measure.

The pipeline calls these at fixed points (phases, scheduler steps, the denoiser once loaded) and knows nothing of
what is measured; the guards know nothing of how the pipeline works. `NullHooks` runs a pipeline unguarded.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

PHASES = ("load", "encode", "denoise", "decode", "save", "other")


@runtime_checkable
class RunHooks(Protocol):
    """What a pipeline tells its observer. Exceptions raised inside a context propagate through it."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Around one phase of the run: one of `PHASES`."""
        ...

    def step(self, index: int) -> AbstractContextManager[None]:
        """Around one scheduler step: every denoiser forward of that step (both CFG passes) and the update."""
        ...

    def attach_model(self, model: torch.nn.Module, name: str) -> None:
        """A denoiser, once loaded and placed, before its first forward."""
        ...

    def progress(self, index: int, total: int) -> None:
        """After step `index - 1` finished: `index` of `total` steps are done."""
        ...


class NullHooks:
    """Observes nothing: the pipeline unguarded."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()

    def step(self, index: int) -> AbstractContextManager[None]:
        return nullcontext()

    def attach_model(self, model: torch.nn.Module, name: str) -> None:
        return None

    def progress(self, index: int, total: int) -> None:
        return None
