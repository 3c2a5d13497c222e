"""What the user sees while the run goes: one status line per step, and each finding the moment it first fires.

On a terminal the status is a rich Live line with findings printed above it; piped to a file or CI log it
becomes plain lines, one per step. ``quiet`` keeps the findings and drops the per-step status. A line reads
``step 3 · 4/8 done · 0.412 s · ETA 0:02 at 0.398 s/step (median) · VRAM ... · cast 140.8 MB/step (step 1)``:
the step's number (from 0, as everywhere), the progress as a count done, the step's own time, and an ETA from
the median step time (``wandoc.metrics.step_median``, the one the report gives).
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from wandoc.engine import Finding
from wandoc.metrics import StepMetrics, step_median
from wandoc.render.text import print_finding

MB = 1e6


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LiveView:
    def __init__(
        self,
        console: Console | None = None,
        *,
        quiet: bool = False,
        total: int = 0,
        gpu: bool = True,
        waiting: str = "starting…",
    ) -> None:
        self.console = console or Console()
        self.quiet = quiet
        self.total = total
        self.gpu = gpu  # a CPU run has no host-device traffic to show
        self.waiting = waiting  # the live line until the first step ends
        self._timed: list[tuple[float, bool]] = []
        self._last_deep: StepMetrics | None = None
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if not self.quiet and self.console.is_terminal:
            self._live = Live(Text(self.waiting), console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def status(self, step: StepMetrics) -> str:
        """The one-line status after ``step``."""
        done = len(self._timed)
        parts = [f"step {step.index} · {done}/{self.total} done" if self.total else f"step {step.index}"]
        parts.append(f"{step.seconds:.3f} s")
        median = step_median(self._timed)[0]
        if self.total and median is not None:
            parts.append(f"ETA {_eta(median * max(self.total - done, 0))} at {median:.3f} s/step (median)")
        if step.vram_used_bytes or step.vram_peak_bytes:
            parts.append(f"VRAM {(step.vram_used_bytes or step.vram_peak_bytes or 0) / 2**30:.1f} GiB")
        if step.gpu_util is not None:
            parts.append(f"GPU {step.gpu_util:.0f}%")
        deep = self._last_deep
        if deep is not None:
            tag = "" if deep is step else f" (step {deep.index})"
            if self.gpu:
                parts.append(f"H2D {(deep.h2d_bytes or 0) / MB:.1f} MB/step{tag}")
                tag = ""
            parts.append(f"cast {(deep.cast_bytes or 0) / MB:.1f} MB/step{tag}")
            parts.append(f"CPU ops {deep.cpu_ops or 0}")
        return " · ".join(parts)

    def on_step(self, step: StepMetrics) -> None:
        self._timed.append((step.seconds, step.deep))
        if step.deep:
            self._last_deep = step
        if self.quiet:
            return
        line = self.status(step)
        if self._live is not None:
            self._live.update(Text(line))
        else:
            text = line + (" · inspected" if step.deep else "")
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def on_finding(self, finding: Finding) -> None:
        print_finding(self.console, finding, indent=0, evidence=False)
