"""A run report as one self-contained HTML page (``wanrun report FILE --html OUT``), and two runs overlaid with
what got worse (``wanrun compare A B --html OUT``).

The page shows what the report holds and nothing more: per-step plots with the steps where a finding fired
marked and the inspected (deep) steps shaded, the findings with their modules and fixes, and the modules that
copied, cast, synced or computed on the CPU most, summed from each inspected step's own top list. Copy, cast,
sync and CPU-op figures exist only for inspected steps, so those plots draw only those steps rather than zeros.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wandoc.atomic import write_text_atomic
from wandoc.engine import Finding
from wandoc.engine.expr import HELPERS
from wandoc.metrics import ModuleVolume, Report, StepMetrics, median_basis, step_median
from wandoc.render.html import card, esc, findings_card, findings_section, kv_table, page, table
from wandoc.render.svg import (
    PALETTE,
    SEVERITY_COLORS,
    Bar,
    Legend,
    Marker,
    RefLine,
    Series,
    bar_chart,
    line_chart,
    nice_ceiling,
)
from wanrun.compare import Comparison, Row, show
from wanrun.report_view import ending, headline, phase_rule

Read = Callable[[StepMetrics], float | None]
fmt_bytes: Callable[[object], str | None] = HELPERS["bytes"]
RUN_COLORS = (PALETTE[0], PALETTE[1])  # run A, run B in a comparison
TOP_MODULES = 10


def _size(value: float | None) -> str:
    return "-" if value is None else (fmt_bytes(value) or "-")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1000:.0f} ms" if value else "0 s"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


FORMATS: dict[str, Callable[[float | None], str]] = {
    "s": _seconds,
    "bytes": _size,
    "count": _count,
    "%": lambda v: "-" if v is None else f"{v:.0f}%",
    "W": lambda v: "-" if v is None else f"{v:.0f} W",
}


def _measured(read: Read) -> Read:
    """Zero VRAM or power means the figure was not taken (a CPU run, no NVML), not that none was used."""
    return lambda s: v if (v := read(s)) else None


def _vram_total(report: Report) -> RefLine | None:
    total = report.run.vram_total_bytes or max((s.vram_total_bytes or 0 for s in report.steps), default=0)
    return RefLine(float(total), f"dedicated total {_size(total)}") if total else None


def _power_limit(report: Report) -> RefLine | None:
    limit = report.run.power_limit_w
    return RefLine(limit, f"limit {limit:.0f} W") if limit else None


@dataclass(frozen=True)
class Plot:
    title: str
    unit: str
    series: tuple[tuple[str, Read], ...]  # the first is the one a comparison overlays
    inspected_only: bool = False
    empty: str = ""  # why a run may have no figures for it; no text: leave the plot out when empty
    ref: Callable[[Report], RefLine | None] | None = None  # the limit the figures run up against
    gpu_only: bool = False  # a CPU run has nothing of it to measure (no device memory, no host-device traffic)


PLOTS: tuple[Plot, ...] = (
    Plot("Step time", "s", (("seconds", lambda s: s.seconds),)),
    Plot(
        "VRAM",
        "bytes",
        (
            ("allocator peak", _measured(lambda s: s.vram_peak_bytes)),
            ("used, NVML", _measured(lambda s: s.vram_used_bytes)),
        ),
        empty="no CUDA allocator to read",
        ref=_vram_total,
        gpu_only=True,
    ),
    Plot("GPU use", "%", (("GPU busy", lambda s: s.gpu_util),), empty="no NVML", gpu_only=True),
    Plot("Power draw", "W", (("power", _measured(lambda s: s.power_w)),), ref=_power_limit, gpu_only=True),
    Plot(
        "Host↔device copies",
        "bytes",
        (
            ("host→device", lambda s: s.h2d_bytes),
            ("of it weights", lambda s: s.weight_h2d_bytes),
            ("device→host", lambda s: s.d2h_bytes),
        ),
        inspected_only=True,
        gpu_only=True,
    ),
    Plot(
        "Weights moved between steps",
        "bytes",
        (
            ("onto the device", _measured(lambda s: s.weights_in_bytes)),
            ("back to the CPU", _measured(lambda s: s.weights_out_bytes)),
        ),
        gpu_only=True,
    ),
    Plot(
        "Casts",
        "bytes",
        (("all casts", lambda s: s.cast_bytes), ("repeated (weights)", lambda s: s.repeated_cast_bytes)),
        inspected_only=True,
    ),
    Plot("Heavy ops on the CPU", "count", (("CPU ops", lambda s: s.cpu_ops),), inspected_only=True, gpu_only=True),
    Plot("Syncs", "count", (("syncs", lambda s: s.syncs),), inspected_only=True, gpu_only=True),
)


def _points(steps: Sequence[StepMetrics], read: Read, inspected_only: bool) -> list[tuple[float, float]]:
    return [
        (float(s.index), float(v))
        for s in steps
        if (s.deep or not inspected_only) and (v := read(s)) is not None and math.isfinite(v)
    ]


def _y_top(unit: str, highest: float) -> float:
    """An axis top whose quarter ticks read well: whole counts, sizes in one binary unit, 100% for utilisation."""
    target = highest * 1.05
    if unit == "%":
        return 100.0
    if unit == "count":
        return float(max(4, 4 * math.ceil(highest / 4)))
    if unit == "bytes":
        if target <= 0:
            return 1024.0
        scale = 1024 ** math.floor(math.log(target, 1024))
        return min(nice_ceiling(target / scale), 1024) * scale
    return nice_ceiling(target)


def _markers(findings: Sequence[Finding], color: str | None = None, prefix: str = "") -> list[Marker]:
    """One marker per step where findings fired, in the colour of the worst of them (or of the run)."""
    at: dict[int, list[Finding]] = {}
    for f in findings:
        if f.step is not None:
            at.setdefault(f.step, []).append(f)
    out = []
    for step, group in sorted(at.items()):
        worst = max(group, key=lambda f: f.rank)
        lines = [
            f"{prefix}{f.severity} {f.rule} at step {step}" + (f" in {f.module}" if f.module else "") for f in group
        ]
        out.append(
            Marker(x=float(step), tip="\n".join(lines), color=color or SEVERITY_COLORS.get(worst.severity, "#dc2626"))
        )
    return out


def _x_range(*reports: Report) -> tuple[float, float] | None:
    """All steps of the runs on one axis, so plots of inspected steps line up with the step time plot."""
    xs = [float(s.index) for r in reports for s in r.steps]
    return (min(xs), max(xs)) if xs and min(xs) < max(xs) else None


def _step_notes(report: Report) -> dict[float, str]:
    notes: dict[float, str] = {}
    for s in report.steps:
        fired = sorted({f.rule for f in report.findings if f.step == s.index})
        notes[float(s.index)] = "; ".join((["inspected op by op"] if s.deep else []) + fired)
    return notes


def _left_out(plot: Plot, reports: Sequence[Report]) -> str | None:
    """Why a plot is left out of the page, or None to draw it: a figure no step measured, one a CPU run cannot
    measure, or one that was zero on every step (a chart of a flat zero says nothing a line of text does not)."""
    if plot.gpu_only and all(r.run.cpu_run for r in reports):
        return "a CPU run measures none"
    points = [p for r in reports for _, read in plot.series for p in _points(r.steps, read, plot.inspected_only)]
    if not points:
        return "no step was inspected op by op" if plot.inspected_only else (plot.empty or "not measured")
    if not any(y for _, y in points):
        return "zero on every step" + (" inspected" if plot.inspected_only else "")
    return None


def left_out_note(missing: dict[str, list[str]]) -> str:
    """One line for the plots left out, grouped by why: "Not plotted: VRAM, GPU use (a CPU run measures none);
    Casts (zero on every step inspected)."""
    if not missing:
        return ""
    said = "; ".join(f"{', '.join(titles)} ({why})" for why, titles in missing.items())
    return f'<p class="small">Not plotted: {esc(said)}.</p>'


def step_plots(report: Report) -> str:
    """The per-step plots of one run; what was left out, and why, is said in one line under them."""
    steps = report.steps
    if not steps:
        return '<p class="small">The report has no steps: the run stopped before the first one.</p>'
    deep = [float(s.index) for s in steps if s.deep]
    markers, notes, x_range = _markers(report.findings), _step_notes(report), _x_range(report)
    panels: list[str] = []
    missing: dict[str, list[str]] = {}
    for plot in PLOTS:
        why = _left_out(plot, [report])
        if why is not None:
            missing.setdefault(why, []).append(plot.title)
            continue
        series = []
        for i, (name, read) in enumerate(plot.series):
            pts = _points(steps, read, plot.inspected_only)
            if pts and (i == 0 or any(y for _, y in pts)):
                series.append(Series(name, pts, PALETTE[i % len(PALETTE)], dashed=i > 0, width=3.2 - 0.9 * i))
        refs = [r for r in ([plot.ref(report)] if plot.ref else []) if r is not None]
        highest = max([y for s in series for _, y in s.points] + [r.y for r in refs])
        title = plot.title + (" (inspected steps)" if plot.inspected_only else "")
        chart = line_chart(
            title, series, FORMATS[plot.unit], markers=markers, bands=deep, ref_lines=refs, x_notes=notes,
            x_range=x_range, y_max=_y_top(plot.unit, highest),
        )  # fmt: skip
        panels.append(f'<div class="panel">{chart}</div>')
    legend = Legend(band="inspected step (copies, casts, syncs and CPU ops measured)", marker="a finding fired")
    return legend.html() + f'<div class="grid">{"".join(panels)}</div>' + left_out_note(missing)


def top_modules(
    steps: Sequence[StepMetrics], read: Callable[[StepMetrics], list[ModuleVolume]], by: str
) -> list[tuple[str, int, int, int]]:
    """(module, bytes, count, steps it appeared in), summed over the steps' top lists, largest ``by`` first."""
    totals: dict[str, list[int]] = {}
    for s in steps:
        for mv in read(s):
            t = totals.setdefault(mv.module, [0, 0, 0])
            t[0] += mv.bytes
            t[1] += mv.count
            t[2] += 1
    key = 0 if by == "bytes" else 1
    order = sorted(totals.items(), key=lambda kv: (-kv[1][key], -kv[1][1 - key], kv[0]))
    return [(m, b, c, n) for m, (b, c, n) in order[:TOP_MODULES]]


MODULE_TABLES: tuple[tuple[str, Callable[[StepMetrics], list[ModuleVolume]], str, str], ...] = (
    ("Host→device copies", lambda s: s.top_h2d, "bytes", "copies"),
    ("Weight casts", lambda s: s.top_casts, "bytes", "casts"),
    ("Heavy ops on the CPU", lambda s: s.top_cpu, "count", "ops"),
    ("Syncs and blocking reads", lambda s: s.top_syncs, "count", "syncs"),
)


def _meter(value: float, top: float) -> str:
    return f'<div class="meter"><i style="width:{100 * value / (top or 1):.1f}%"></i></div>'


def modules_section(report: Report) -> str:
    out = []
    for title, read, by, noun in MODULE_TABLES:
        rows = top_modules(report.steps, read, by)
        if not rows:
            continue
        top = max((b if by == "bytes" else c) for _, b, c, _ in rows)
        cells = [
            [f"<code>{esc(m)}</code>", esc(_size(b)), f"{c:,}", str(n), _meter(b if by == "bytes" else c, top)]
            for m, b, c, n in rows
        ]
        head = ["module", "bytes", noun, "steps", ""]
        out.append(f"<h3>{esc(title)}, by {esc(by if by == 'bytes' else noun)}</h3>")
        out.append(table(head, cells, cls="modules", num=(1, 2, 3)))
    resident: dict[str, int] = {}
    for s in report.steps:
        for m in s.cpu_resident:
            resident[m] = resident.get(m, 0) + 1
    if resident:
        ranked = sorted(resident.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_MODULES]
        out.append("<h3>Modules with weights on the CPU</h3>")
        cells = [[f"<code>{esc(m)}</code>", str(n)] for m, n in ranked]
        out.append(table(["module", "steps"], cells, cls="modules", num=(1,)))
    if not out:
        return '<p class="small">No module copied, cast, synced or computed on the CPU in the inspected steps.</p>'
    note = '<p class="small">Summed over the inspected steps, from the top modules each step recorded.</p>'
    return note + "".join(out)


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def run_rows(report: Report) -> list[tuple[str, str]]:
    r, s = report.run, report.summary
    rows = [("device", r.device or "-")]
    if r.gpu_name:
        rows.append(("GPU", r.gpu_name))
    if r.vram_total_bytes:
        rows.append(("VRAM", _size(r.vram_total_bytes)))
    if r.power_limit_w:
        rows.append(("power limit", f"{r.power_limit_w:.0f} W"))
    if r.driver_version:
        rows.append(("driver", r.driver_version))
    if r.cpu_model:
        rows.append(("CPU", r.cpu_model))
    rows += [("OS", r.platform_os or "-"), ("torch", r.torch_version or "-"), ("pipeline", r.pipeline or "-")]
    if r.wandoc_version:
        rows.append(("wandoc", r.wandoc_version))
    if r.denoiser:
        weights = f", {_size(r.model_weight_bytes)} of weights" if r.model_weight_bytes else ""
        dtype = f" in {r.model_param_dtype}" if r.model_param_dtype else ""
        rows.append(("denoiser", f"{r.denoiser}{weights}{dtype}"))
    if r.autocast_dtype:
        rows.append(("autocast", r.autocast_dtype))
    if r.size:
        rows.append(("shape", f"{r.size} x {r.frames} frames, {r.tokens:,} tokens"))
    rows.append(("steps", f"{s.steps} of {r.steps_total}" if r.steps_total else str(s.steps)))
    if s.deep_steps:
        rows.append(("inspected steps", ", ".join(str(i) for i in s.deep_steps)))
    if s.output:
        rows.append(("output", f"{s.output} ({_size(s.output_bytes)})"))
    return rows


def _cards(report: Report) -> str:
    s = report.summary
    median, count, plain = step_median((m.seconds, m.deep) for m in report.steps)
    used = max((m.vram_used_bytes or 0 for m in report.steps), default=0)
    items = [
        card(_seconds(median), f"median per step, of {median_basis(count, plain)}"),
        card(_seconds(s.seconds_total), "in all"),
        card(str(s.steps), f"steps, {len(s.deep_steps)} inspected"),
    ]
    if used:
        items.append(card(_size(used), "VRAM used at most (NVML)"))
    elif s.vram_peak_bytes:
        items.append(card(_size(s.vram_peak_bytes), "VRAM peak (allocator)"))
    if s.gpu_util_mean is not None:
        items.append(card(f"{s.gpu_util_mean:.0f}%", "GPU busy, mean"))
    return f'<div class="cards">{"".join(items)}{findings_card(report.verdict)}</div>'


def _banners(report: Report) -> str:
    s, out = report.summary, []
    if s.error:
        out.append(f'<p class="banner bad">The generation failed: {esc(s.error)}</p>')
    if (ended := ending(s)) is not None:
        out.append(f'<p class="banner note">{esc(ended[0].upper() + ended[1:])}.</p>')
    if any(f.severity == "error" for f in report.verdict):
        out.append('<p class="banner bad">Error-level findings: each makes a run fail or many times slower.</p>')
    return "".join(out)


def _phases(report: Report) -> str:
    total = sum(p.seconds for p in report.phases) or 1.0
    bars = [
        Bar(p.name + (f" ({p.label})" if p.label else ""), p.seconds, PALETTE[i % len(PALETTE)],
            tip=f"{p.name}: {_seconds(p.seconds)}, {100 * p.seconds / total:.0f}% of the run")
        for i, p in enumerate(report.phases)
    ]  # fmt: skip
    return f'<div class="panel">{bar_chart("Phases", bars, _seconds)}</div>' if bars else ""


def render_report_html(report: Report, *, title: str = "", doctor: Sequence[Finding] | None = None) -> str:
    """One run report as a page. ``doctor``: the pre-launch findings, when the caller has them apart from the
    report (a report written after a ``--repo`` doctor run carries them itself)."""
    before = list(doctor) if doctor is not None else list(getattr(report, "doctor", None) or [])
    s = report.summary
    args = report.run.args
    args_rows = [(k, _value(v)) for k, v in args.items()]
    body = [
        f"<h1>wanrun report{(': ' + esc(title)) if title else ''}</h1>",
        f'<p class="lead">{esc(headline(report))}</p>',
        _cards(report),
        _banners(report),
        "<h2>Run</h2>",
        kv_table(run_rows(report)),
        f"<details><summary>arguments ({len(args)})</summary>{kv_table(args_rows)}</details>" if args else "",
        *(["<h2>Phases</h2>", _phases(report)] if report.phases else []),
        "<h2>Per step</h2>",
        step_plots(report),
        "<h2>Findings during the run</h2>",
        findings_section(report.findings, where=True, grouped=False),
        *(["<h2>Findings before launch (wandoc check)</h2>", findings_section(before, where=False)] if before else []),
        "<h2>Modules</h2>",
        modules_section(report),
        "<h2>Coverage</h2>",
        *([f'<p class="small">checked: {esc("; ".join(s.checked))}</p>'] if s.checked else []),
        *([f'<p class="small">not checked: {esc("; ".join(s.not_checked))}</p>'] if s.not_checked else []),
    ]
    return page(
        f"wanrun report {title}".strip(), "\n".join(b for b in body if b), footer=f"schema {esc(report.schema_)}"
    )


def compare_plots(a: Report, b: Report, a_name: str, b_name: str) -> str:
    runs = ((a, a_name, RUN_COLORS[0]), (b, b_name, RUN_COLORS[1]))
    markers = [m for r, name, color in runs for m in _markers(r.findings, color, prefix=f"{name}: ")]
    x_range = _x_range(a, b)
    panels: list[str] = []
    missing: dict[str, list[str]] = {}
    for plot in PLOTS:
        name, read = plot.series[0]
        why = _left_out(Plot(plot.title, plot.unit, plot.series[:1], plot.inspected_only, plot.empty, None,
                             plot.gpu_only), [a, b])  # fmt: skip
        if why is not None:
            missing.setdefault(f"{why} in either run", []).append(plot.title)
            continue
        series = [Series(run_name, pts, color, dashed=i == 1) for i, (r, run_name, color) in enumerate(runs)
                  if (pts := _points(r.steps, read, plot.inspected_only))]  # fmt: skip
        what = f"{plot.title}: {name}" if len(plot.series) > 1 else plot.title
        title = what + (" (inspected steps)" if plot.inspected_only else "")
        highest = max(y for s in series for _, y in s.points)
        y_max = _y_top(plot.unit, highest)
        chart = line_chart(
            title, series, FORMATS[plot.unit], markers=markers, x_range=x_range, y_max=y_max, legend=False
        )
        panels.append(f'<div class="panel">{chart}</div>')
    legend = Legend(
        series=[Series(n, (), c, dashed=i == 1) for i, (_, n, c) in enumerate(runs)],
        marker="a finding fired (in the run's colour)",
    )
    return legend.html() + f'<div class="grid">{"".join(panels)}</div>' + left_out_note(missing)


def comparison_table(rows: Sequence[Row], head: str = "measure (median per step)") -> str:
    cells, marks = [], []
    for row in rows:
        ratio = "-" if row.ratio is None else ("from 0" if math.isinf(row.ratio) else f"{row.ratio:.2f}x")
        worse = '<span class="sev error">worse</span>' if row.worse else ""
        cells.append([esc(row.metric), esc(show(row.a, row.unit)), esc(show(row.b, row.unit)), esc(ratio), worse])
        marks.append("worse" if row.worse else "")
    return table([head, "A", "B", "B/A", ""], cells, num=(1, 2, 3), row_classes=marks)


def differences_table(cmp: Comparison) -> str:
    """What differs between the runs (arguments, versions, machine), the first place to look for why."""
    rows = []
    for kind in ("arguments", "versions", "machine"):
        diffs = [d for d in cmp.differences if d.kind == kind]
        if not diffs:
            shared = esc(cmp.same.get(kind, "the same"))
            rows.append([esc(kind), "the same", shared, shared])
        for d in diffs:
            rows.append([esc(kind), f"<code>{esc(d.name)}</code>", esc(d.a), esc(d.b)])
    marks = ["differs" if len(r) == 4 and r[1].startswith("<code>") else "" for r in rows]
    return table(["", "what", "A", "B"], rows, cls="kv runs", row_classes=marks)


def render_comparison_html(cmp: Comparison, a: Report, b: Report, a_name: str, b_name: str) -> str:
    """Two runs as one page: the verdict and why, what differs between them, the medians and phases side by
    side, overlaid per-step plots, and the findings."""
    threshold = f"threshold {cmp.threshold:.2f}x"
    why = cmp.why()
    verdict = (
        f'<p class="banner bad">B is worse than A ({threshold}): {esc("; ".join(why))}.</p>'
        if cmp.regressed
        else f'<p class="banner good">Nothing got worse ({threshold}).</p>'
    )
    ra, rb = dict(run_rows(a)), dict(run_rows(b))
    labels = list(dict.fromkeys([*ra, *rb]))
    runs = table(
        ["", f"A: {a_name}", f"B: {b_name}"],
        [[esc(k), esc(ra.get(k, "-")), esc(rb.get(k, "-"))] for k in labels],
        cls="kv runs",
        row_classes=["" if ra.get(k) == rb.get(k) else "differs" for k in labels],
    )
    new_rules = frozenset(x.split(" ", 1)[0] for x in cmp.new_findings)
    changes = [
        f"<p><b>{label}:</b> {esc(', '.join(items))}</p>"
        for label, items in (("New in B", cmp.new_findings), ("Gone in B", cmp.gone_findings))
        if items
    ]
    folded = [
        f'<p class="small">{label}: {esc(", ".join(r.metric for r in rows))}.</p>'
        for label, rows in (
            ("None in either run", [r for r in cmp.rows if r.zero]),
            ("Not measured in either run", [r for r in cmp.rows if r.unmeasured]),
        )
        if rows
    ]
    changes += [f'<p class="note">{esc(note)}</p>' for note in cmp.notes]
    older = findings_section(a.verdict, where=True, grouped=False)
    phases = [r for r in cmp.phases if not r.unmeasured]
    body = [
        f"<h1>wanrun compare: {esc(a_name)} → {esc(b_name)}</h1>",
        f'<p class="lead">A: {esc(headline(a))}<br>B: {esc(headline(b))}</p>',
        verdict,
        "<h2>What differs between the runs</h2>",
        differences_table(cmp),
        "<h2>Per step</h2>",
        comparison_table([r for r in cmp.rows if not r.unmeasured and not r.zero]),
        *folded,
        *(
            [
                "<h2>Phases</h2>",
                comparison_table(phases, "phase (seconds)"),
                f'<p class="small">{esc(phase_rule(cmp))}.</p>',
            ]
            if phases
            else []
        ),
        *changes,
        "<h2>Per step, plotted</h2>",
        compare_plots(a, b, a_name, b_name),
        "<h2>The runs</h2>",
        runs,
        f"<h2>Findings in B: {esc(b_name)}</h2>",
        findings_section(b.verdict, where=True, new_rules=new_rules, grouped=False),
        f"<details><summary>Findings in A: {esc(a_name)} ({len(a.verdict)})</summary>{older}</details>",
    ]
    return page(f"wanrun compare {a_name} {b_name}", "\n".join(x for x in body if x))


def write_html(text: str, path: Path) -> None:
    """Write a page atomically: a reader or a browser never sees half of it. Raises ``OSError``."""
    write_text_atomic(path, text)


def write_run_html(report: Report, path: Path, *, title: str = "") -> None:
    """Render one run report and write it to ``path`` (for ``wanrun generate --html``). Raises ``OSError``."""
    write_html(render_report_html(report, title=title or path.name), path)
