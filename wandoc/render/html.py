"""Self-contained HTML pages: the doctor's verdict (``wandoc check --format html``), and the page shell, styles
and findings tables that the run reports (``wanrun report --html``) share with it.

A page needs nothing at view time: styles and a small hover script are inline, charts are inline SVG, and the
page's Content-Security-Policy forbids every fetch and every script but its own (pinned by hash), so even a
string that slipped through escaping could not run. Every string from a report or the facts is escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Iterable, Sequence
from html import escape

from wandoc.checklist import CheckItem
from wandoc.engine import Finding
from wandoc.facts import Facts
from wandoc.render.shared import area_name, by_area, evidence_text, fmt_bytes, item_mark, key_facts, split_fix
from wandoc.render.svg import PALETTE, Bar, bar_chart
from wandoc.render.text import counts_line

CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa;--err:#dc2626;--warn:#b45309;
--info:#0e7490;--ok:#15803d;--band:#fde68a}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 10px;padding-bottom:4px;
border-bottom:1px solid var(--line)}h3{font-size:15px;margin:18px 0 8px}
p.lead{margin:0 0 14px;color:var(--muted)}
code,pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:6px 9px;margin:6px 0 0;
white-space:pre-wrap;word-break:break-word}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px;margin:14px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:9px 12px;background:var(--soft)}
.card b{display:block;font-size:19px}.card span{color:var(--muted);font-size:12px}
.card.error b{color:var(--err)}.card.warning b{color:var(--warn)}.card.info b{color:var(--info)}
.banner{border-radius:8px;padding:10px 14px;margin:12px 0;font-weight:600}
.banner.bad{background:#fef2f2;color:#991b1b;border:1px solid #fecaca}
.banner.good{background:#f0fdf4;color:#166534;border:1px solid #bbf7d0}
.banner.note{background:#fffbeb;color:#92400e;border:1px solid #fde68a}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{text-align:left;vertical-align:top;padding:6px 9px;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;background:var(--soft)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv td:first-child{color:var(--muted);white-space:nowrap;width:1%}
table.runs tr.differs td{background:#fffbeb}table.modules{max-width:900px}
div.meter{min-width:180px}div.meter i{display:block;height:10px;margin-top:5px;background:#93c5fd;
border-radius:2px}
tr.worse td{background:#fef2f2}
.sev{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;
white-space:nowrap}
.sev.error{background:var(--err)}.sev.warning{background:var(--warn)}.sev.info{background:var(--info)}
.new{display:inline-block;border-radius:10px;padding:0 7px;font-size:11px;font-weight:700;color:#991b1b;
background:#fee2e2;margin-left:6px}
.rule{color:var(--muted);font-size:12px}
table.checklist td:first-child{width:28px;text-align:center;font-weight:700}
table.checklist td:nth-child(2){white-space:nowrap}table.checklist td:last-child a{white-space:nowrap}
table.checklist td:last-child{width:26%}
.mark.passed{color:var(--ok)}.mark.not_checked{color:var(--muted)}.mark.error{color:var(--err)}
.mark.warning{color:var(--warn)}.mark.info{color:var(--info)}.msg{margin-top:2px}.where{white-space:nowrap}
dl.ev{margin:6px 0 0;display:grid;grid-template-columns:max-content 1fr;gap:0 10px;font-size:12.5px}
dl.ev dt{color:var(--muted)}dl.ev dd{margin:0;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,
Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px}
table.findings{table-layout:fixed}table.findings th:first-child{width:84px}
table.findings th:last-child{width:36%}table.findings th.where{width:180px}
table.findings td{overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
.panel{border:1px solid var(--line);border-radius:8px;padding:6px 8px 2px}
p.legend{margin:4px 0 10px;color:var(--muted);font-size:12.5px}
.key{margin-right:16px;white-space:nowrap}.key i{display:inline-block;width:16px;height:4px;margin:0 6px 3px 0;
vertical-align:middle;border-radius:2px}
.key i.key-band{height:12px;background:var(--band);opacity:.55}
.key i.key-marker{width:3px;height:12px;background:var(--err)}
svg text{font:11px system-ui,-apple-system,"Segoe UI","DejaVu Sans",sans-serif;fill:#57606a}
svg text.title{font-size:13px;font-weight:600;fill:#1f2328}
svg text.value{fill:#1f2328}svg text.ref-label{fill:#9a3412}
svg .grid{stroke:#eaeef2}svg .axis{stroke:#8c959f}svg .ref{stroke:#ea580c;stroke-dasharray:6 4}
svg .band{fill:var(--band);opacity:.45}
svg polyline.series{fill:none;stroke-linejoin:round;stroke-linecap:round}
svg .marker line{stroke-width:1.5;stroke-dasharray:4 3}
svg rect.hover{fill:transparent}svg rect.hover:hover{fill:rgba(37,99,235,.08)}
.small{color:var(--muted);font-size:12.5px}ul.plain{margin:4px 0;padding-left:20px}
details>summary{cursor:pointer;color:var(--muted);margin:6px 0}
#tip{position:fixed;display:none;pointer-events:none;z-index:9;max-width:440px;background:#1f2328;color:#fff;
padding:5px 9px;border-radius:6px;font-size:12px;line-height:1.4;white-space:pre-line}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"""

# Hover tooltips for elements with data-tip; native <title> tips are removed once this runs. Every statement is
# guarded, and the page reads the same without it. It marks the page ready last (tests look for that).
TIP_JS = """(function(){
var root=document.documentElement;
try{
var tip=document.getElementById("tip");
var els=document.querySelectorAll("[data-tip]");
for(var i=0;i<els.length;i++){for(var c=els[i].firstChild;c;c=c.nextSibling){
if(c.nodeName==="title"){els[i].removeChild(c);break;}}}
document.addEventListener("mousemove",function(e){try{
var el=e.target&&e.target.closest?e.target.closest("[data-tip]"):null;
if(!el||!tip){if(tip){tip.style.display="none";}return;}
tip.textContent=el.getAttribute("data-tip");tip.style.display="block";
var x=e.clientX+14,y=e.clientY+14;
if(x+tip.offsetWidth>window.innerWidth-8){x=Math.max(4,e.clientX-tip.offsetWidth-14);}
if(y+tip.offsetHeight>window.innerHeight-8){y=Math.max(4,e.clientY-tip.offsetHeight-14);}
tip.style.left=x+"px";tip.style.top=y+"px";}catch(err){}});
}catch(err){}
root.setAttribute("data-ready","1");
})();"""

_JS_HASH = base64.b64encode(hashlib.sha256(TIP_JS.encode("utf-8")).digest()).decode("ascii")
CSP = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{_JS_HASH}'"


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def page(title: str, body: str, *, footer: str = "") -> str:
    """A whole document around ``body`` (already HTML); ``title`` is escaped here."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body><main>\n{body}\n"
        + (f"<footer>{footer}</footer>" if footer else "")
        + f'</main><div id="tip"></div><script>{TIP_JS}</script></body></html>\n'
    )


def card(value: str, label: str, cls: str = "") -> str:
    return f'<div class="card {esc(cls)}"><b>{esc(value)}</b><span>{esc(label)}</span></div>'


def count_cards(findings: Sequence[Finding]) -> str:
    n = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    words = {"error": ("error", "errors"), "warning": ("warning", "warnings"), "info": ("note", "notes")}
    return "".join(card(str(n[s]), words[s][n[s] != 1], s if n[s] else "") for s in ("error", "warning", "info"))


def findings_card(findings: Sequence[Finding]) -> str:
    """All findings in one card, coloured by the worst."""
    worst = max(findings, key=lambda f: f.rank).severity if findings else ""
    return card(str(len(findings)), f"findings: {counts_line(findings)}", worst)


def kv_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    cls: str = "",
    num: Collection[int] = (),
    row_classes: Sequence[str] = (),
) -> str:
    """``head`` is text (escaped here); each row's cells are HTML already. Columns in ``num`` align right."""

    def align(i: int) -> str:
        return ' class="num"' if i in num else ""

    thead = "".join(f"<th{align(i)}>{esc(h)}</th>" for i, h in enumerate(head))
    body = []
    for r, cells in enumerate(rows):
        rc = f' class="{esc(row_classes[r])}"' if r < len(row_classes) and row_classes[r] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td{align(i)}>{c}</td>" for i, c in enumerate(cells)) + "</tr>")
    table_cls = f' class="{esc(cls)}"' if cls else ""
    return f"<table{table_cls}><thead><tr>{thead}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def bullet_list(items: Iterable[str]) -> str:
    return '<ul class="plain">' + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def _evidence(f: Finding) -> str:
    if not f.evidence:
        return ""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(evidence_text(k, v, 300))}</dd>" for k, v in f.evidence.items())
    return f'<dl class="ev">{rows}</dl>'


def _fix(f: Finding) -> str:
    prose, command = split_fix(f)
    out = esc(prose) if prose else ""
    if command:
        out += f"<pre><code>{esc(command)}</code></pre>"
    return out


def finding_row(f: Finding, *, where: bool, new: bool = False) -> str:
    badge = '<span class="new">new</span>' if new else ""
    cells = [
        f'<td><span class="sev {esc(f.severity)}">{esc(f.severity)}</span></td>',
        f'<td><b>{esc(f.title)}</b>{badge}<div class="rule">{esc(f.rule)}</div>'
        f'<div class="msg">{esc(f.message)}</div>{_evidence(f)}</td>',
    ]
    if where:
        place = [f"step {f.step}"] if f.step is not None else []
        place += [f"<code>{esc(f.module)}</code>"] if f.module else []
        cells.append(f'<td class="where">{"<br>".join(place) or "-"}</td>')
    cells.append(f'<td class="fix">{_fix(f)}</td>')
    row_id = f"finding-{f.rule}" + (f"-{f.step}" if f.step is not None else "")
    return f'<tr class="finding" id="{esc(row_id)}">{"".join(cells)}</tr>'


def findings_section(
    findings: Sequence[Finding], *, where: bool, new_rules: frozenset[str] = frozenset(), grouped: bool = True
) -> str:
    """Findings, by area when ``grouped``, each with its evidence and fix; ``where`` adds the step and module."""
    if not findings:
        return '<p class="banner good">No findings.</p>'
    head = ["", "finding and evidence", *(["where"] if where else []), "fix"]
    thead = "".join(f'<th class="{esc(h)}">{esc(h)}</th>' if h == "where" else f"<th>{esc(h)}</th>" for h in head)
    out = []
    groups = by_area(findings) if grouped else [("", sorted(findings, key=lambda f: (-f.rank, f.step or 0, f.rule)))]
    for area, group in groups:
        rows = "".join(finding_row(f, where=where, new=f.rule in new_rules) for f in group)
        table = f'<table class="findings"><thead><tr>{thead}</tr></thead><tbody>{rows}</tbody></table>'
        out.append(f"<h3>{esc(area_name(area))}</h3>{table}" if grouped else table)
    return "".join(out)


def _size(value: float) -> str:
    return fmt_bytes(value) or "0 B"


def memory_chart(facts: Facts) -> str:
    """What the run will need against what the GPUs and RAM have, when the doctor could estimate it."""
    e, n, s = facts.estimate, facts.nvml, facts.system
    if not e.known:
        return ""
    bars = [
        Bar("VRAM needed, no offload", e.peak_vram_no_offload, PALETTE[1]),
        Bar("VRAM needed, with offload", e.peak_vram_offload, "#fdba74"),
    ]
    for g in n.gpus if n.available else []:
        bars += [
            Bar(f"GPU {g.index} free", g.memory_free_bytes, PALETTE[2]),
            Bar(f"GPU {g.index} total", g.memory_total_bytes, "#9ca3af"),
        ]
    if e.offloaded_bytes:
        bars.append(Bar("parked in RAM by offload", e.offloaded_bytes, PALETTE[3]))
    if not s.error and s.ram_available_bytes:
        bars.append(Bar("RAM available", s.ram_available_bytes, "#c4b5fd"))
    return bar_chart(f"Memory: what {e.task or 'the run'} needs and what the machine has", bars, _size)


def checklist_table(items: Sequence[CheckItem]) -> str:
    """The doctor's checklist: a line per area, its mark, what it saw (or how to check it), its findings."""
    rows = []
    for item in items:
        mark, cls = item_mark(item)
        said = esc(item.detail)
        if not item.checked:
            how = f' <span class="small">to check: {esc(item.how)}</span>' if item.how else ""
            said = f"not checked: {said}.{how}"
        links = ", ".join(f'<a href="#finding-{esc(r)}">{esc(r)}</a>' for r in item.rules)
        rows.append([f'<span class="mark {esc(cls)}">{esc(mark)}</span>', esc(item.label), said, links])
    return table(["", "area", "what the doctor saw", "findings"], rows, cls="checklist")


def render_check_html(
    findings: Sequence[Finding],
    *,
    facts: Facts,
    rules_evaluated: int,
    checklist: Sequence[CheckItem],
    source: str,
    shell: str,
) -> str:
    """The doctor's verdict as one page: counts, memory, findings by area with evidence and fix, key facts."""
    worst = max((f.rank for f in findings), default=0)
    verdict = (
        '<p class="banner bad">Fix the errors before you launch: each makes the run fail or many times slower.</p>'
        if any(f.severity == "error" for f in findings)
        else '<p class="banner note">Warnings only: the run will work, slower than it could.</p>'
        if worst
        else ""
    )
    chart = memory_chart(facts)
    body = [
        "<h1>wandoc check</h1>",
        f'<p class="lead">{esc(counts_line(findings))} from {rules_evaluated} rules over {esc(source)}; '
        f"fixes written for {esc(shell)}.</p>",
        f'<div class="cards">{count_cards(findings)}</div>',
        verdict,
        "<h2>Checks</h2>",
        checklist_table(checklist),
        "<h2>Findings</h2>",
        findings_section(findings, where=False),
        *([f'<h2>Memory</h2><div class="panel">{chart}</div>'] if chart else []),
        "<h2>What each check saw</h2>",
        kv_table(key_facts(facts, source, checklist)),
        *([f'<p class="small">probe failed: {esc("; ".join(facts.probe_errors))}</p>'] if facts.probe_errors else []),
    ]
    stamp = f" at {esc(facts.collected_at)}" if facts.collected_at else ""
    return page("wandoc check", "\n".join(b for b in body if b), footer=f"wandoc check{stamp}")
