"""What got worse between two run reports, and why: what differs between the runs (arguments, versions,
machine), per-metric ratios, phases, and findings that are new in the second run.

Per-step metrics are compared as medians over steps, so a run of 10 steps compares with a run of 50 and one
slow first step (compile, cold caches) does not decide the verdict. Copies, casts, syncs and CPU ops are medians
over the inspected steps only: the other steps were not looked at op by op (their figures are null; reports of
schema /1 wrote 0 there, and are read with those zeros as nulls). Step time is ``wandoc.metrics.step_median``, the
one definition every view uses. Phases outside the loop (load, encode, decode, save) are compared as totals; the
denoise phase is the steps, judged per step. Notes (``info``) never count as new findings.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from wandoc.bounded import FileRefused, load_json
from wandoc.engine.expr import HELPERS
from wandoc.errors import first_error
from wandoc.metrics import REPORT_SCHEMAS, Report, StepMetrics, step_median

fmt_bytes: Callable[[object], str | None] = HELPERS["bytes"]


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

    @property
    def unmeasured(self) -> bool:
        """Measured in neither run (a CPU run's VRAM, steps never inspected)."""
        return self.a is None and self.b is None

    @property
    def zero(self) -> bool:
        """Measured, and nothing in either run: no row to read."""
        return not self.unmeasured and not self.a and not self.b


@dataclass
class Difference:
    """One way the two runs were not the same run: an argument, a version, the machine."""

    kind: str  # "arguments", "versions", "machine"
    name: str
    a: str
    b: str


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    phases: list[Row] = field(default_factory=list)  # seconds per phase outside the loop
    differences: list[Difference] = field(default_factory=list)
    same: dict[str, str] = field(default_factory=dict)  # kind -> what both runs share, in a few words
    new_findings: list[str] = field(default_factory=list)  # "RULE-ID (step N, module)"
    gone_findings: list[str] = field(default_factory=list)
    threshold: float = 1.10
    phase_floor: float = 0.5  # seconds a phase must grow by, past the threshold, to count as worse
    notes: list[str] = field(default_factory=list)  # what was left out of the medians, and why

    @property
    def regressed(self) -> bool:
        return any(r.worse for r in [*self.rows, *self.phases]) or bool(self.new_findings)

    def why(self) -> list[str]:
        """What got worse, in words, most telling first: per-step metrics, phases, then new findings."""
        out = [_said(r) for r in self.rows if r.worse]
        out += [f"the {_said(r)}" for r in self.phases if r.worse]
        if self.new_findings:
            n = len(self.new_findings)
            out.append(f"{n} finding{'s' * (n != 1)} new in B")
        return out


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
    if metric.plain_only:  # the step time: one definition for every view
        read = [metric.read(s) for s in report.steps]
        broken = sum(1 for v in read if v is not None and not _measured(v))
        return step_median((metric.read(s), s.deep) for s in report.steps)[0], broken
    steps = [s for s in report.steps if s.deep] if metric.inspected_only else report.steps
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


def compare(
    a: Report, b: Report, threshold: float = 1.10, min_bytes: int = 1 << 20, min_phase_seconds: float = 0.5
) -> Comparison:
    """Compare run B against baseline A; a metric is worse when its ratio exceeds ``threshold`` and, for byte
    metrics, the difference is at least ``min_bytes`` (a few kilobytes more is noise, not a regression); a phase
    when its ratio exceeds ``threshold`` and it took at least ``min_phase_seconds`` longer."""
    if (problem := check_threshold(threshold)) is not None:
        raise ValueError(f"threshold {problem}")
    out = Comparison(threshold=threshold, phase_floor=min_phase_seconds)
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
    for name in dict.fromkeys([*a.summary.phases, *b.summary.phases]):
        if name == "denoise":  # the steps: judged per step above, whatever the number of steps
            continue
        pa, pb = a.summary.phases.get(name), b.summary.phases.get(name)
        ratio = _ratio(pa, pb, True)
        worse = ratio is not None and ratio > threshold and (pb or 0) - (pa or 0) >= min_phase_seconds
        out.phases.append(Row(f"{name} phase", "s", pa, pb, ratio, worse))
    out.differences, out.same = differences(a, b)
    ka, kb = _finding_keys(a), _finding_keys(b)
    out.new_findings = [kb[r] for r in sorted(set(kb) - set(ka))]
    out.gone_findings = [ka[r] for r in sorted(set(ka) - set(kb))]
    return out


def _said(row: Row) -> str:
    """``s/step 0.213 s → 0.336 s (1.58x)``."""
    ratio = "" if row.ratio is None else (" (from 0)" if math.isinf(row.ratio) else f" ({row.ratio:.2f}x)")
    return f"{row.metric} {show(row.a, row.unit)} → {show(row.b, row.unit)}{ratio}"


def show(value: float | None, unit: str) -> str:
    """A figure as both views print it: seconds, sizes in binary units, counts, percent; "-" when unmeasured."""
    if value is None:
        return "-"
    if unit == "bytes":
        return fmt_bytes(value) or "0 B"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    return f"{value:.0f}%" if unit == "%" else f"{value:,.0f}"


def _flat(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "-" if value is None or value == "" else str(value)


def run_facts(report: Report) -> dict[str, dict[str, str]]:
    """What a run was, by kind: the arguments it was given, the versions it ran, the machine it ran on."""
    r = report.run
    args = {k: v for k, v in r.args.items() if k not in NOT_ARGUMENTS}
    arguments = {k: _flat(v) for k, v in args.items()}
    arguments |= {"steps": _flat(r.steps_total or None), "size": _flat(r.size), "frames": _flat(r.frames or None),
                  "autocast": _flat(r.autocast_dtype), "weights": _flat(r.model_param_dtype)}  # fmt: skip
    git = r.args.get("git") if isinstance(r.args.get("git"), dict) else {}
    versions = {"torch": _flat(r.torch_version), "wandoc": _flat(r.wandoc_version)}
    if git:
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        versions["checkout commit"] = f"{str(git.get('commit') or '-')[:12]}{dirty}"
    machine = {"device": _flat(r.device), "GPU": _flat(r.gpu_name), "driver": _flat(r.driver_version),
               "VRAM": fmt_bytes(r.vram_total_bytes) or "-" if r.vram_total_bytes else "-",
               "CPU": _flat(r.cpu_model), "OS": _flat(r.platform_os)}  # fmt: skip
    return {"arguments": arguments, "versions": versions, "machine": machine}


NOT_ARGUMENTS = frozenset({"git", "imported", "script_exit_code", "denoiser_found_by", "ranks_merged", "rank",
                           # where a run writes what it made: two runs compared always write to two places
                           "out", "save_file", "report", "html"})  # fmt: skip


def differences(a: Report, b: Report) -> tuple[list[Difference], dict[str, str]]:
    """How the runs differ, arguments first; and for each kind where they do not, what they share."""
    fa, fb = run_facts(a), run_facts(b)
    out: list[Difference] = []
    same: dict[str, str] = {}
    for kind in fa:
        names = list(dict.fromkeys([*fa[kind], *fb[kind]]))
        diff = [Difference(kind, n, fa[kind].get(n, "-"), fb[kind].get(n, "-")) for n in names
                if fa[kind].get(n, "-") != fb[kind].get(n, "-")]  # fmt: skip
        out += diff
        if not diff:
            shown = [f"{n} {v}" for n, v in fa[kind].items() if v != "-" and kind != "arguments"]
            same[kind] = ", ".join(shown[:4]) if shown else "the same"
    return out, same
