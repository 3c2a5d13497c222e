"""`wanrun compare`: what got worse between two runs, and report files it must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wandoc.engine import Finding
from wandoc.metrics import Report, StepMetrics
from wanrun.compare import ReportError, compare, load_report


def report(seconds: float, h2d: int = 0, findings: tuple[str, ...] = (), util: float | None = 90.0,
           severity: str = "warning") -> Report:  # fmt: skip
    """Five steps of which the first two were inspected: copies are measured there only, as the guard does."""
    steps = [StepMetrics(index=i, seconds=seconds * (1.5 if i == 0 else 1.0), h2d_bytes=h2d if i < 2 else 0,
                         deep=i < 2, gpu_util=util) for i in range(5)]  # fmt: skip
    found = [Finding(rule=r, severity=severity, title=r, message=r, step=1, module="blocks.3") for r in findings]
    return Report(steps=steps, findings=found)


def test_slower_run_with_new_offload_is_worse() -> None:
    a = report(0.5)
    b = report(1.1, h2d=5 * 2**30, findings=("RUN-OFFLOAD-TRAFFIC",), util=40.0)
    cmp = compare(a, b, threshold=1.10)
    rows = {r.metric: r for r in cmp.rows}
    assert rows["s/step"].worse and rows["s/step"].ratio == pytest.approx(2.2)
    assert rows["H2D bytes/step"].worse
    assert rows["GPU use"].worse and rows["GPU use"].ratio == pytest.approx(90 / 40)
    assert cmp.new_findings == ["RUN-OFFLOAD-TRAFFIC (step 1, blocks.3)"]
    assert cmp.regressed


def test_copies_are_judged_on_the_inspected_steps() -> None:
    """Three of five steps were not inspected (0 bytes seen): the median must not call the offload gone."""
    rows = {r.metric: r for r in compare(report(0.5), report(0.5, h2d=5 * 2**30)).rows}
    assert rows["H2D bytes/step"].b == 5 * 2**30 and rows["H2D bytes/step"].worse


def test_a_new_note_is_not_a_regression() -> None:
    cmp = compare(report(0.5), report(0.5, findings=("RUN-STEP0-COLD",), severity="info"))
    assert cmp.new_findings == [] and not cmp.regressed


def test_same_run_within_threshold_is_not_worse() -> None:
    cmp = compare(report(0.50, h2d=1000), report(0.53, h2d=2000), threshold=1.10)
    assert not cmp.regressed  # 6% slower and 1 KB more copied is noise at this threshold


def test_fixed_regression_shows_as_gone() -> None:
    cmp = compare(report(1.0, findings=("RUN-CPU-COMPUTE",)), report(0.5))
    assert cmp.gone_findings == ["RUN-CPU-COMPUTE (step 1, blocks.3)"] and not cmp.regressed


@pytest.mark.parametrize(
    ("content", "needle"),
    [("{", "not a JSON report"), ('{"schema": "wandoc.check/1"}', "expected one of"), ("[]", "schema"),
     ('{"schema": "wanrun.report/1", "steps": [{"seconds": "slow"}]}', "steps.0.seconds")],
)  # fmt: skip
def test_bad_report_files(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=needle):
        load_report(path)
    with pytest.raises(ReportError, match="cannot read"):
        load_report(tmp_path / "missing.json")


def test_report_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(report(0.5, findings=("RUN-SYNCS",)).to_json())
    loaded = load_report(path)
    assert loaded.steps[0].seconds == 0.75 and loaded.findings[0].rule == "RUN-SYNCS"
    assert json.loads(path.read_text())["schema"] == "wanrun.report/2"


def test_step_time_leaves_out_the_inspected_steps() -> None:
    """Inspected steps pay for the inspection: a run with more of them is not slower for it."""
    a = report(0.5)
    b = report(0.5)
    for step in b.steps[2:4]:
        step.deep, step.seconds = True, 1.5
    rows = {r.metric: r for r in compare(a, b).rows}
    assert rows["s/step"].b == 0.5 and not rows["s/step"].worse


def _run(seconds: float, decode: float = 2.0, **run: object) -> Report:
    r = report(seconds, util=None)
    r.summary.phases = {"load": 5.0, "encode": 1.0, "denoise": seconds * 5, "decode": decode, "save": 0.2}
    r.run = r.run.model_copy(update={"device": "cuda:0", "gpu_name": "NVIDIA H100", "torch_version": "2.6.0+cu124",
                                     "wandoc_version": "0.1.0", "driver_version": "550.54", "args": {"steps": 5},
                                     **run})  # fmt: skip
    return r


def test_worse_says_why_starting_with_what_differs() -> None:
    a = _run(0.5)
    b = _run(0.9, torch_version="2.9.0+cu128", args={"steps": 5, "offload": True})
    cmp = compare(a, b)
    assert cmp.regressed and cmp.why()[0].startswith("s/step 0.500 s → 0.900 s (1.80x)")
    assert [(d.kind, d.name, d.a, d.b) for d in cmp.differences] == [
        ("arguments", "offload", "-", "True"), ("versions", "torch", "2.6.0+cu124", "2.9.0+cu128")
    ]  # fmt: skip
    assert "machine" in cmp.same and "NVIDIA H100" in cmp.same["machine"]
    text = _printed(cmp)
    assert text.index("B is worse") < text.index("arguments: offload - → True") < text.index("per step")
    assert "versions: torch 2.6.0+cu124 → 2.9.0+cu128" in text and "machine: the same" in text


def test_where_each_run_wrote_its_video_is_no_difference() -> None:
    a = _run(0.5, args={"out": "clean.gif", "save_file": "a.mp4", "sample_shift": 5})
    b = _run(0.9, args={"out": "fp32.gif", "save_file": "b.mp4", "sample_shift": 8})
    assert [(d.name, d.a, d.b) for d in compare(a, b).differences] == [("sample_shift", "5", "8")]


def test_a_decode_twice_as_slow_shows() -> None:
    cmp = compare(_run(0.5, decode=30.0), _run(0.5, decode=60.0))
    decode = next(r for r in cmp.phases if r.metric == "decode phase")
    assert decode.worse and decode.ratio == pytest.approx(2.0) and cmp.regressed
    assert "the decode phase 30.0 s → 60.0 s (2.00x)" in cmp.why()
    assert not any(r.metric == "denoise phase" for r in cmp.phases)  # the steps are judged per step
    # twice a blink is no regression
    assert not compare(_run(0.5, decode=0.01), _run(0.5, decode=0.02)).regressed


def _printed(cmp) -> str:
    import io

    from rich.console import Console

    from wanrun.report_view import render_comparison

    console = Console(file=io.StringIO(), width=120)
    render_comparison(cmp, console, "a.json", "b.json")
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_rows_nothing_was_measured_in_are_folded_not_printed_as_zero() -> None:
    text = _printed(compare(_run(0.5), _run(0.5)))  # H2D 0 in both; D2H, casts, VRAM, GPU use never read
    assert not any(line.startswith(("H2D", "D2H", "VRAM", "GPU use")) or "0 B │" in line for line in text.splitlines())
    assert "none in either run: H2D bytes/step\n" in text
    assert "not measured in either run: D2H bytes/step, copies/step," in text and text.count("VRAM peak") == 1
    assert "nothing got worse" in text


def test_one_median_for_report_compare_and_bisect() -> None:
    """`wanrun report`, `wanrun compare`, the summary and `wandoc bisect` give one median step time."""
    from wandoc.judge import _median_step
    from wanrun.report_view import headline

    r = report(0.5)
    r.steps[3].seconds = 0.9  # plain steps 2, 3, 4: 0.5, 0.9, 0.5; all five: 0.75, 0.5, 0.5, 0.9, 0.5
    row = next(x for x in compare(r, r).rows if x.metric == "s/step")
    assert row.a == 0.5
    assert "median 0.500 s/step (of 3 steps not inspected)" in headline(r)
    assert _median_step(json.loads(r.to_json())) == 0.5
