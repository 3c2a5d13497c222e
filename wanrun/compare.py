"""What got worse between two run reports: per-metric ratios, and findings that are new in the second run.

Per-step metrics are compared as medians over steps, so a run of 10 steps compares with a run of 50 and one
slow first step (compile, cold caches) does not decide the verdict. Copies, casts, syncs and CPU ops are medians
over the inspected steps only: the other steps were not looked at op by op (their figures are null; reports of
schema /1 wrote 0 there, and are read with those zeros as nulls). Step time is the median of the other steps,
whose time is the run's own (an inspected step also pays for the inspection). Notes (``info``) never count as new
findings.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from wandoc.bounded import FileRefused, load_json
from wandoc.errors import first_error
from wandoc.metrics import REPORT_SCHEMAS, Report, StepMetrics


class ReportError(ValueError):
    """A report file that cannot be compared; the message is one line for the user."""


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # "s", "bytes", "count", "%"
    read: Callable[[StepMetrics], float | None]
    higher_is_worse: bool = True
    inspected_only: bool = False  # measured by per-op inspection: null on the other steps
    plain_only: bool = False  # a time: inspected steps carry the inspection's own cost, so they are left out


METRICS: tuple[Metric, ...] = (
    Metric("s/step", "s", lambda s: s.seconds, plain_only=True),
    Metric("H2D bytes/step", "bytes", lambda s: s.h2d_bytes, inspected_only=True),
    Metric("D2H bytes/step", "bytes", lambda s: s.d2h_bytes, inspected_only=True),
    Metric("copies/step", "count", lambda s: s.copies, inspected_only=True),
    Metric("cast bytes/step", "bytes", lambda s: s.cast_bytes, inspected_only=True),
    Metric("repeated cast bytes/step", "bytes", lambda s: s.repeated_cast_bytes, inspected_only=True),
    Metric("CPU ops/step", "count", lambda s: s.cpu_ops, inspected_only=True),
    Metric("syncs/step", "count", lambda s: s.syncs, inspected_only=True),
    Metric("VRAM peak", "bytes", lambda s: s.vram_peak_bytes),
    Metric("GPU use", "%", lambda s: s.gpu_util, higher_is_worse=False),
)


@dataclass
class Row:
    metric: str
    unit: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a, oriented so that > 1 means worse
    worse: bool


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    new_findings: list[str] = field(default_factory=list)  # "RULE-ID (step N, module)"
    gone_findings: list[str] = field(default_factory=list)
    threshold: float = 1.10
    notes: list[str] = field(default_factory=list)  # what was left out of the medians, and why

    @property
    def regressed(self) -> bool:
        return any(r.worse for r in self.rows) or bool(self.new_findings)


def load_report(path: Path) -> Report:
    """A run report from disk: a regular file under the size cap, plain JSON of sane depth, the report schema."""
    try:
        data = load_json(path, kind="a JSON report")
    except FileRefused as exc:
        raise ReportError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") not in REPORT_SCHEMAS:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        expected = ", ".join(REPORT_SCHEMAS)
        raise ReportError(f"{path}: schema {found!r}, expected one of {expected} (a `wanrun generate --report` file)")
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        raise ReportError(f"{path}: {first_error(exc)}") from None


def _measured(value: float | None) -> bool:
    """A value a median can use: a finite, non-negative number (NaN, infinity or a negative time in a report
    is a broken measurement, and one NaN would make every comparison with the median false)."""
    return value is not None and math.isfinite(value) and value >= 0


def _median(report: Report, metric: Metric) -> tuple[float | None, int]:
    """The median of the metric over the steps it is read from, and how many of them held no usable value."""
    steps = report.steps
    if metric.inspected_only:
        steps = [s for s in steps if s.deep]
    elif metric.plain_only:
        steps = [s for s in steps if not s.deep] or steps  # a run inspected throughout has only those
    read = [metric.read(s) for s in steps]
    values = [v for v in read if _measured(v)]
    broken = sum(1 for v in read if v is not None and not _measured(v))
    return (float(statistics.median(values)) if values else None), broken


def _ratio(a: float | None, b: float | None, higher_is_worse: bool) -> float | None:
    if a is None or b is None:
        return None
    if not higher_is_worse:
        a, b = b, a
    if a == 0:
        return None if b == 0 else float("inf")
    return b / a


def _finding_keys(report: Report) -> dict[str, str]:
    """Warnings and errors only, the doctor's before launch included (a commit that turns off the flash kernel is
    new there): a note (a cold first step) is context, not a regression."""
    return {
        f.rule: f"{f.rule} (step {f.step}, {f.module})" if f.module else f.rule
        for f in report.verdict
        if f.severity != "info"
    }


def check_threshold(value: float) -> str | None:
    """Why ``value`` cannot be a threshold, or None: it must be a finite number of at least 1.0 (NaN compares
    false with everything, so a NaN threshold would call every run fine)."""
    if not math.isfinite(value) or value < 1.0:
        return f"must be a finite number of 1.0 or more, not {value}"
    return None


def compare(a: Report, b: Report, threshold: float = 1.10, min_bytes: int = 1 << 20) -> Comparison:
    """Compare run B against baseline A; a metric is worse when its ratio exceeds ``threshold`` and, for byte
    metrics, the difference is at least ``min_bytes`` (a few kilobytes more is noise, not a regression)."""
    if (problem := check_threshold(threshold)) is not None:
        raise ValueError(f"threshold {problem}")
    out = Comparison(threshold=threshold)
    for m in METRICS:
        (va, broken_a), (vb, broken_b) = _median(a, m), _median(b, m)
        for run, broken in (("A", broken_a), ("B", broken_b)):
            if broken:
                out.notes.append(
                    f"{m.name}: {broken} step{'s' * (broken != 1)} of {run} held no usable value (NaN, infinite or "
                    "negative) and were left out as unmeasured"
                )
        ratio = _ratio(va, vb, m.higher_is_worse)
        worse = ratio is not None and ratio > threshold
        if worse and m.unit == "bytes" and va is not None and vb is not None:
            worse = abs(vb - va) >= min_bytes
        if worse and m.unit == "count" and va is not None and vb is not None:
            worse = vb - va >= 1
        out.rows.append(Row(m.name, m.unit, va, vb, ratio, worse))
    ka, kb = _finding_keys(a), _finding_keys(b)
    out.new_findings = [kb[r] for r in sorted(set(kb) - set(ka))]
    out.gone_findings = [ka[r] for r in sorted(set(ka) - set(kb))]
    return out
