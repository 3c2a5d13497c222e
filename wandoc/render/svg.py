"""Charts as inline SVG, drawn in Python: a report page opens offline, years later, with no plotting library.

Line charts (per-step metrics, one or several series, with finding markers and shaded inspected steps) and
horizontal bar charts (phases, memory, top modules). Every string that reaches the SVG is escaped here; hover
text goes into ``data-tip`` attributes that the page's small script shows, and into ``<title>`` where no
script runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2")
SEVERITY_COLORS = {"error": "#dc2626", "warning": "#d97706", "info": "#0891b2"}
MAX_DOTS = 80  # beyond this many points a series is drawn as a line alone


@dataclass(frozen=True)
class Series:
    """One line: (x, y) points in x order; a missing value is simply left out."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    width: float = 2.0  # a series drawn over another is drawn thinner, so both stay visible where they meet


@dataclass(frozen=True)
class Marker:
    """A vertical line at one x (a step where a finding fired), with the text a hover shows."""

    x: float
    tip: str
    color: str = SEVERITY_COLORS["error"]


@dataclass(frozen=True)
class RefLine:
    """A horizontal line at a known limit (the VRAM total, the power limit)."""

    y: float
    label: str


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    color: str = PALETTE[0]
    tip: str = ""


@dataclass(frozen=True)
class _Frame:
    """Maps data to pixels inside the plot area."""

    x0: float
    x1: float
    y1: float
    left: float
    right: float
    top: float
    bottom: float

    def px(self, x: float) -> float:
        span = self.x1 - self.x0
        return self.left + (self.right - self.left) * ((x - self.x0) / span if span else 0.5)

    def py(self, y: float) -> float:
        return self.bottom - (self.bottom - self.top) * (y / self.y1 if self.y1 else 0.0)


def _a(text: object) -> str:
    return escape(str(text), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4, 6, 8 x 10^k at or above ``value``: an axis top whose quarters read well."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 4, 6, 8, 10):
        if m * base >= value * (1 - 1e-9):
            return m * base
    return 10 * base


def _x_ticks(x0: float, x1: float, most: int = 10) -> list[float]:
    if x1 <= x0:
        return [x0]
    step = max(1, math.ceil((x1 - x0) / most))
    first = math.ceil(x0 / step) * step
    return [float(v) for v in range(int(first), int(x1) + 1, step)]


def _legend(series: Sequence[Series], left: float, y: float) -> list[str]:
    """A row of swatches under the title, left to right."""
    out, x = [], left
    for s in series:
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        out.append(
            f'<g class="legend"><line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 16:.1f}" y2="{y - 4:.1f}" '
            f'stroke="{_a(s.color)}" stroke-width="2.5"{dash}/>'
            f'<text x="{x + 20:.1f}" y="{y:.1f}">{_a(s.name)}</text></g>'
        )
        x += 34 + 6.2 * len(s.name)
    return out


def line_chart(
    title: str,
    series: Sequence[Series],
    fmt_y: Callable[[float], str],
    *,
    x_label: str = "step",
    markers: Sequence[Marker] = (),
    bands: Sequence[float] = (),
    ref_lines: Sequence[RefLine] = (),
    x_notes: Mapping[float, str] | None = None,
    x_range: tuple[float, float] | None = None,
    y_max: float | None = None,
    legend: bool | None = None,
    width: int = 640,
    height: int = 230,
) -> str:
    """One chart as an ``<svg>`` element. ``bands`` shade the x values given (the inspected steps); each x gets
    a hover column whose tip names every series' value there, plus ``x_notes``. ``x_range`` keeps the axes of a
    page's charts aligned when a series has points at a few x only; ``legend`` defaults to several series."""
    xs = sorted({x for s in series for x, _ in s.points} | {m.x for m in markers} | set(bands))
    ys = [y for s in series for _, y in s.points] + [r.y for r in ref_lines]
    x0, x1 = x_range or ((xs[0], xs[-1]) if xs else (0.0, 1.0))
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    top_value = y_max if y_max is not None else nice_ceiling(max(ys, default=0.0) * 1.05)
    show_legend = legend if legend is not None else len(series) > 1
    top = 50 if show_legend else 32
    f = _Frame(x0=x0, x1=x1, y1=top_value, left=66, right=width - 14, top=top, bottom=height - 30)
    half = (f.px(x0 + 1) - f.px(x0)) / 2 if x1 - x0 >= 1 else (f.right - f.left) / 2
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_a(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{_a(title)}</title>',
        f'<text class="title" x="{f.left}" y="18">{_a(title)}</text>',
    ]
    for x in bands:  # inspected steps: a pale column behind everything
        parts.append(
            f'<rect class="band" x="{f.px(x) - half:.1f}" y="{f.top}" width="{2 * half:.1f}" '
            f'height="{f.bottom - f.top:.1f}"/>'
        )
    for i in range(5):  # horizontal grid and y labels
        value = top_value * i / 4
        y = f.py(value)
        parts.append(f'<line class="grid" x1="{f.left}" y1="{y:.1f}" x2="{f.right}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">{_a(fmt_y(value))}</text>')
    for x in _x_ticks(x0, x1):
        parts.append(
            f'<text class="tick" x="{f.px(x):.1f}" y="{f.bottom + 16:.1f}" text-anchor="middle">{_num(x)}</text>'
        )
    parts.append(f'<text class="tick" x="{f.right}" y="{height - 2}" text-anchor="end">{_a(x_label)}</text>')
    parts.append(f'<line class="axis" x1="{f.left}" y1="{f.bottom}" x2="{f.right}" y2="{f.bottom}"/>')
    for r in ref_lines:
        y = f.py(r.y)
        parts.append(f'<line class="ref" x1="{f.left}" y1="{y:.1f}" x2="{f.right}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="ref-label" x="{f.right - 4}" y="{y - 4:.1f}" text-anchor="end">{_a(r.label)}</text>'
        )
    for m in markers:
        x = f.px(m.x)
        parts.append(
            f'<g class="marker" data-tip="{_a(m.tip)}"><title>{_a(m.tip)}</title>'
            f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{f.bottom}" stroke="{_a(m.color)}"/>'
            f'<path d="M{x - 5:.1f},{f.top - 7} L{x + 5:.1f},{f.top - 7} L{x:.1f},{f.top + 1} Z" '
            f'fill="{_a(m.color)}"/></g>'
        )
    for s in series:
        pts = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(
            f'<polyline class="series" data-series="{_a(s.name)}" points="{pts}" stroke="{_a(s.color)}" '
            f'stroke-width="{s.width:g}"{dash}/>'
        )
        if len(s.points) <= MAX_DOTS:
            parts.extend(
                f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2.6" fill="{_a(s.color)}"/>' for x, y in s.points
            )
    if show_legend:
        parts.extend(_legend(series, f.left, 34))
    by_x = [{x: y for x, y in s.points} for s in series]
    for x in xs:  # hover columns, last so they are on top
        values = [f"{s.name} {fmt_y(v[x])}" for s, v in zip(series, by_x, strict=True) if x in v]
        note = (x_notes or {}).get(x)
        tip = "; ".join([f"{x_label} {_num(x)}", *values, *([note] if note else [])])
        parts.append(
            f'<rect class="hover" data-tip="{_a(tip)}" x="{f.px(x) - half:.1f}" y="{f.top}" '
            f'width="{2 * half:.1f}" height="{f.bottom - f.top:.1f}"><title>{_a(tip)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Sequence[Bar], fmt: Callable[[float], str], *, width: int = 760) -> str:
    """Horizontal bars, longest value full width; labels left, values at the bar's end."""
    row, label_w = 22, min(260, 24 + 6.6 * max((len(b.label) for b in bars), default=4))
    height = 30 + row * len(bars) + 6
    top = max((b.value for b in bars), default=0.0) or 1.0
    span = width - label_w - 90
    parts = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
        f'aria-label="{_a(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{_a(title)}</title>',
        f'<text class="title" x="4" y="18">{_a(title)}</text>',
    ]
    for i, b in enumerate(bars):
        y = 30 + i * row
        w = max(1.0, span * b.value / top) if b.value > 0 else 0.0
        tip = b.tip or f"{b.label}: {fmt(b.value)}"
        label = b.label if len(b.label) <= 40 else "…" + b.label[-39:]
        parts.append(
            f'<g class="bar" data-tip="{_a(tip)}"><title>{_a(tip)}</title>'
            f'<text class="tick" x="{label_w - 8:.1f}" y="{y + 14}" text-anchor="end">{_a(label)}</text>'
            f'<rect x="{label_w:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 7}" rx="2" fill="{_a(b.color)}"/>'
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 14}">{_a(fmt(b.value))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class Legend:
    """The key shared by a page's charts, drawn once above them."""

    series: list[Series] = field(default_factory=list)
    band: str = ""  # what a shaded column means
    marker: str = ""  # what a marker means

    def html(self) -> str:
        items = [f'<span class="key"><i style="background:{_a(s.color)}"></i>{_a(s.name)}</span>' for s in self.series]
        if self.band:
            items.append(f'<span class="key"><i class="key-band"></i>{_a(self.band)}</span>')
        if self.marker:
            items.append(f'<span class="key"><i class="key-marker"></i>{_a(self.marker)}</span>')
        return f'<p class="legend">{"".join(items)}</p>' if items else ""
