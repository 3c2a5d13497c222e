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
