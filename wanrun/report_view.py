"""A finished run report as a terminal summary: phases, per-step costs, findings, and what was (not) checked.

Used at the end of ``wanrun generate``, by ``wanrun report FILE`` and (the comparison table) by ``wanrun compare``.
It renders and decides nothing: every number comes from the report, and the findings are the rules' own words.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wandoc.engine.expr import HELPERS
from wandoc.metrics import Report, StepMetrics, Summary, median_basis, step_median
from wandoc.render.text import counts_line, print_findings, print_indented, safe
from wanrun.compare import Comparison, Row, show

fmt_bytes: Callable[[object], str | None] = HELPERS["bytes"]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _per_step(steps: list[StepMetrics], read: Callable[[StepMetrics], float | None]) -> float | None:
    """The median over the steps that measured it (null: not measured there)."""
    return _median([v for s in steps if (v := read(s)) is not None])


def _b(value: float | None) -> str:
    return (fmt_bytes(value) or "-") if value is not None else "-"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def steps_table(report: Report) -> tuple[Table, list[str]]:
    """Medians per step; copy, cast, sync and CPU figures come from the inspected (deep) steps only. A figure a
    CPU run cannot measure, or one that was zero on every inspected step, is named in a line instead of a row
    of zeros (the lines are returned beside the table)."""
    steps, deep = report.steps, [s for s in report.steps if s.deep]
    s = report.summary
    table = Table(title="per step (median)", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("measure")
    table.add_column("per step", justify="right")
    table.add_column("whole run", justify="right")
    seconds = step_median((m.seconds, m.deep) for m in steps)[0]
    table.add_row("time", f"{seconds:.3f} s" if seconds is not None else "-", f"{s.seconds_total:.1f} s")
    if s.vram_peak_bytes:
        peak = _per_step(steps, lambda m: m.vram_peak_bytes)
        table.add_row("VRAM peak (allocator)", _b(peak), _b(s.vram_peak_bytes))
    used = [m.vram_used_bytes for m in steps if m.vram_used_bytes]
    if used:
        table.add_row("VRAM used (NVML)", _b(_median(used)), _b(max(used)))
    utils = [m.gpu_util for m in steps if m.gpu_util is not None]
    if utils and s.gpu_util_mean is not None:
        table.add_row("GPU busy", f"{_median(utils):.0f}%", f"{s.gpu_util_mean:.0f}%")
    # (label, read, bytes, whole-run total, only a GPU run has it)
    rows: list[tuple[str, Callable[[StepMetrics], float | None], bool, float | None, bool]] = [
        ("host→device", lambda m: m.h2d_bytes, True, s.h2d_bytes_total, True),
        ("  of it weights", lambda m: m.weight_h2d_bytes, True, None, True),
        ("device→host", lambda m: m.d2h_bytes, True, s.d2h_bytes_total, True),
        ("casts", lambda m: m.cast_bytes, True, s.cast_bytes_total, False),
        ("  repeated", lambda m: m.repeated_cast_bytes, True, s.repeated_cast_bytes_total, False),
        ("syncs", lambda m: m.syncs, False, s.syncs_total, True),
        ("heavy ops on CPU", lambda m: m.cpu_ops, False, s.cpu_ops_total, True),
    ]
    moved = [m.weights_in_bytes for m in steps if m.weights_in_bytes]
    if moved:  # an expert switch, a model moved between steps: read from where the weights live, on every step
        table.add_row("weights moved in between steps", _b(_median(moved)), _b(s.weights_in_bytes_total))
    cpu_run, zero, unmeasurable = report.run.cpu_run, [], []
    for label, read, is_bytes, total, gpu_only in rows:
        if cpu_run and gpu_only:
            unmeasurable.append(label.strip())
            continue
        values = [v for m in deep if (v := read(m)) is not None]
        if deep and values and not any(values):
            zero.append(label.strip())
            continue
        value = _per_step(deep, read)
        table.add_row(
            f"{label} (inspected)", _b(value) if is_bytes else _n(value), _b(total) if is_bytes else _n(total)
        )
    lines = [f"none in the inspected steps: {', '.join(zero)}"] if zero else []
    lines += [f"a CPU run measures none of: {', '.join(unmeasurable)}"] if unmeasurable else []
    return table, lines


def phases_table(report: Report) -> Table:
    table = Table(title="phases", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    total = sum(report.summary.phases.values()) or 1.0
    for name, seconds in report.summary.phases.items():
        table.add_row(safe(name), f"{seconds:.2f}", f"{100 * seconds / total:.0f}%")
    return table


def headline(report: Report) -> str:
    run, s = report.run, report.summary
    gpu = f" ({run.gpu_name})" if run.gpu_name else ""
    what = run.denoiser or "run"
    shape = f", {run.size} x {run.frames} frames" if run.size else ""
    median, count, plain = step_median((m.seconds, m.deep) for m in report.steps)
    per_step = f"median {median:.3f} s/step (of {median_basis(count, plain)})" if median is not None else "no step"
    return f"{what} on {run.device}{gpu}{shape}: {s.steps} step{'s' * (s.steps != 1)}, {per_step}, " + (
        f"{s.seconds_total:.1f} s in all"
    )


def render(report: Report, console: Console) -> None:
    """The summary of one run report."""
    s = report.summary
    console.print(f"[bold]{safe(headline(report))}[/bold]", highlight=False)
    if s.phases:
        console.print(phases_table(report))
    if report.steps:
        table, folded = steps_table(report)
        console.print(table)
        for line in folded:
            console.print(Text(line, style="dim"), soft_wrap=True)
    console.print()
    if report.doctor:
        console.print(Text("Before launch (wandoc check)", style="bold"))
        print_findings(console, report.doctor, verbose=False)
        console.print(Text("During the run", style="bold"))
    if report.findings:
        print_findings(console, report.findings, verbose=False)
    else:
        console.print("[green]No findings during the run.[/green]" if report.doctor else "[green]No findings.[/green]")
    before = f" ({len(report.doctor)} of them before launch)" if report.doctor else ""
    console.print(f"[bold]{counts_line(report.verdict)}[/bold]{before}")
    if s.deep_steps:
        console.print(f"[dim]inspected steps: {', '.join(str(i) for i in s.deep_steps)}[/dim]")
    for label, items in (("checked", s.checked), ("not checked", s.not_checked)):
        if items:
            print_indented(console, Text(f"{label}: {safe('; '.join(items), markup=False)}", style="dim"), 4, first=0)
    if s.output:
        console.print(f"output: {safe(s.output)} ({_b(s.output_bytes)})", highlight=False)
    if (ended := ending(s)) is not None:
        console.print(f"[yellow]{safe(ended)}[/yellow]")
    if s.error:
        console.print(f"[red]the generation failed: {safe(s.error)}[/red]", highlight=False)


def ending(s: Summary) -> str | None:
    """How a run that did not finish ended, in the words the terminal and the HTML page both show."""
    if s.partial:
        how = s.ended_by or "the process was killed, or is still running"
        return (
            f"partial report: saved while the run went on and never finished ({how}); it covers the steps judged "
            "until then"
        )
    if s.interrupted:
        how = f" ({s.ended_by})" if s.ended_by and s.ended_by != "strict" else ""
        return f"stopped early{how}: the report covers the steps that ran"
    return None


def _comparison_table(title: str, rows: list[Row]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col, justify in (("measure", "left"), ("A", "right"), ("B", "right"), ("B/A", "right"), ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        ratio = "-" if row.ratio is None else ("from 0" if row.ratio == float("inf") else f"{row.ratio:.2f}x")
        mark = "[red]worse[/red]" if row.worse else ""
        table.add_row(safe(row.metric), show(row.a, row.unit), show(row.b, row.unit), ratio, mark)
    return table


def phase_rule(cmp: Comparison) -> str:
    return (
        f"a phase counts as worse past {cmp.threshold:.2f}x and {cmp.phase_floor:g} s longer; the denoise phase is "
        "the steps, judged per step"
    )


def differences_lines(cmp: Comparison) -> list[str]:
    """What differs between the runs, kind by kind (arguments, versions, machine): the first place to look."""
    lines = []
    for kind in ("arguments", "versions", "machine"):
        diffs = [d for d in cmp.differences if d.kind == kind]
        if diffs:
            lines.append(f"  {kind}: " + "; ".join(f"{d.name} {d.a} → {d.b}" for d in diffs))
        else:
            shared = cmp.same.get(kind, "the same")
            lines.append(f"  {kind}: the same" + (f" ({shared})" if shared != "the same" else ""))
    return lines


def render_comparison(cmp: Comparison, console: Console, a: str, b: str) -> None:
    """Why B is worse (or that nothing is), what differs between the runs, the medians and phases that were
    measured side by side (rows nothing was measured in, or that are zero in both, folded into one line each),
    and the findings that came or went."""
    console.print(Text(f"{safe(a, markup=False)} → {safe(b, markup=False)}", style="bold"))
    why = cmp.why()
    if why:
        verdict = Text("B is worse", style="bold red").append(f" (threshold {cmp.threshold:.2f}x): ")
        print_indented(console, verdict.append(safe("; ".join(why), markup=False)), 4, first=0)
    console.print("what differs between the runs:")
    for line in differences_lines(cmp):
        print_indented(console, Text(safe(line, markup=False)), 4, first=0)
    shown = [r for r in cmp.rows if not r.unmeasured and not r.zero]
    if shown:
        console.print(_comparison_table("per step (median)", shown))
    phases = [r for r in cmp.phases if not r.unmeasured]
    if phases:
        console.print(_comparison_table("phases", phases))
        console.print(Text(phase_rule(cmp), style="dim"), soft_wrap=True)
    for label, rows in (
        ("none in either run", [r for r in cmp.rows if r.zero]),
        ("not measured in either run", [r for r in cmp.rows if r.unmeasured]),
    ):
        if rows:
            console.print(Text(f"{label}: {', '.join(r.metric for r in rows)}", style="dim"), soft_wrap=True)
    for label, items, style in (("new in B", cmp.new_findings, "red"), ("gone in B", cmp.gone_findings, "green")):
        if items:
            console.print(f"[{style}]{label}:[/{style}] {safe(', '.join(items))}", highlight=False)
    for note in cmp.notes:
        console.print(f"[yellow]note:[/yellow] {safe(note)}")
    verdict_line = "[red]B is worse[/red]" if cmp.regressed else "[green]nothing got worse[/green]"
    console.print(f"{verdict_line} (threshold {cmp.threshold:.2f}x)")
