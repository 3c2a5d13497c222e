"""HTML run reports and comparisons: plots from real CPU runs, finding markers, escaping, atomic writes, the CLI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from wandoc import atomic
from wandoc.engine import Finding
from wandoc.metrics import ModuleVolume, Report, StepMetrics
from wandoc.render import svg
from wanrun.cli import main
from wanrun.compare import compare, load_report
from wanrun.report_html import (
    render_comparison_html,
    render_report_html,
    top_modules,
    write_html,
    write_run_html,
)

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ATTR = '"><img src=x onerror=alert(2)>'
FP32_UNDER_BF16 = ("--weights-dtype", "fp32", "--dtype", "bf16")  # weights cast again in every step


def step_rule(folder: Path) -> Path:
    """A user rule that fires at step 1 of any run, so a CPU run has a finding to mark."""
    folder.mkdir()
    (folder / "TEST-STEP-ONE.toml").write_text(
        'id = "TEST-STEP-ONE"\ntitle = "step one reached"\nseverity = "warning"\nscope = "step"\n'
        'when = "step.index >= 1"\nmessage = "step {step.index} ran"\nmodule = "\'blocks.0.ffn.0\'"\n'
    )
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real runs of the built-in pipeline on the CPU: a clean one, and one where a finding fired."""
    folder = tmp_path_factory.mktemp("runs")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        base = ("generate", "--preset", "tiny", "--steps", "4", "--quiet", "--out", "c.npy", "--deep-every", "3")
        assert main([*base, "--report", "clean.json"]) == 0
        rules = step_rule(folder / "rules")
        assert main([*base, *FP32_UNDER_BF16, "--rules", str(rules), "--report", "regressed.json"]) == 0
    finally:
        os.chdir(cwd)
    return {"clean": folder / "clean.json", "regressed": folder / "regressed.json"}


def polylines(page: str) -> dict[str, list[int]]:
    """Series name -> number of points of each of its polylines."""
    out: dict[str, list[int]] = {}
    for name, points in re.findall(r'<polyline class="series" data-series="([^"]*)" points="([^"]*)"', page):
        out.setdefault(name, []).append(len(points.split()))
    return out


def test_clean_run_page_is_self_contained_with_plots(runs: dict[str, Path]) -> None:
    report = load_report(runs["clean"])
    page = render_report_html(report, title="clean.json")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "WanStyleDiT on cpu" in page and report.run.torch_version in page
    lines = polylines(page)
    assert lines["seconds"] == [4]  # every step timed
    deep = len(report.summary.deep_steps)
    assert 0 < deep < 4 and page.count('class="band"') == deep * page.count('<svg class="chart"')
    assert 'class="marker"' not in page and "No findings." in page
    # a CPU run draws no chart of what it cannot measure, and no chart of a flat zero: one line says which
    assert set(lines) == {"seconds"} and page.count('<svg class="chart"') == 1
    assert ("Not plotted: VRAM, GPU use, Power draw, Host↔device copies, Weights moved between steps, Heavy ops on "
            "the CPU, Syncs (a CPU run measures none); Casts (zero on every step inspected).") in page  # fmt: skip
    # nothing to fetch: no external URL, stylesheet, image or script source; the policy forbids fetching anyway
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<link" not in page and "<img" not in page
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"] * page.count("<svg ")
    assert "default-src &#x27;none&#x27;" in page and page.count("<script") == 1


def test_regressed_run_marks_the_step_and_names_the_module(runs: dict[str, Path]) -> None:
    report = load_report(runs["regressed"])
    page = render_report_html(report)
    charts = page.count('<svg class="chart"')
    assert charts == 2 and page.count('<g class="marker"') == charts  # step time and casts, the step marked on each
    assert "warning TEST-STEP-ONE at step 1 in blocks.0.ffn.0" in page
    assert 'id="finding-TEST-STEP-ONE-1"' in page and "<code>blocks.0.ffn.0</code>" in page
    assert "Weight casts, by bytes" in page and re.search(r"<code>blocks\.\d+\.", page)  # fp32 weights re-cast
    assert polylines(page)["repeated (weights)"] == [len(report.summary.deep_steps)]


def test_every_user_string_is_escaped(runs: dict[str, Path]) -> None:
    report = load_report(runs["regressed"])
    report.run.args["prompt"] = HOSTILE
    report.run.gpu_name = HOSTILE_ATTR
    report.findings[0].message = HOSTILE
    report.findings[0].module = HOSTILE_ATTR
    report.findings[0].evidence = {HOSTILE: HOSTILE_ATTR}
    report.steps[0].top_casts = [ModuleVolume(module=HOSTILE, bytes=1, count=1)]
    report.summary.not_checked = [HOSTILE]
    for page in (
        render_report_html(report, title=HOSTILE, doctor=[Finding(rule="X", severity="error", title=HOSTILE,
                                                                  message=HOSTILE_ATTR, fix=HOSTILE)]),
        render_comparison_html(compare(report, report), report, report, HOSTILE, HOSTILE_ATTR),
    ):  # fmt: skip
        assert HOSTILE not in page and "<img" not in page and "onerror=alert(2)>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and page.count("<script") == 1


def test_doctor_findings_come_from_the_report_or_the_caller() -> None:
    pre = Finding(rule="ARGS-FP32-DIT-WITHOUT-CONVERT", severity="warning", title="fp32 DiT", message="m", area="ARGS")
    assert "Findings before launch" not in render_report_html(Report())
    assert "ARGS-FP32-DIT-WITHOUT-CONVERT" in render_report_html(Report(doctor=[pre]))
    assert "ARGS-FP32-DIT-WITHOUT-CONVERT" in render_report_html(Report(), doctor=[pre])
    assert "no steps" in render_report_html(Report())


def test_plots_of_inspected_figures_draw_only_inspected_steps() -> None:
    inspected = {"h2d_bytes": 3 << 30, "cast_bytes": 0, "repeated_cast_bytes": 0, "cpu_ops": 0, "syncs": 0}
    steps = [StepMetrics(index=i, seconds=1.0 + i / 10, deep=i in (0, 1, 5), vram_used_bytes=8 << 30, gpu_util=40.0,
                         **(inspected if i in (0, 1, 5) else {})) for i in range(10)]  # fmt: skip
    finding = Finding(rule="RUN-OFFLOAD-TRAFFIC", severity="warning", title="t", message="m", step=5, module="blocks.3")
    page = render_report_html(Report(steps=steps, findings=[finding]))
    lines = polylines(page)
    assert lines["seconds"] == [10] and lines["host→device"] == [3] and lines["used, NVML"] == [10]
    assert lines["GPU busy"] == [10] and "allocator peak" not in lines  # a figure never read is not drawn as 0
    assert page.count('<svg class="chart"') == 4  # step time, VRAM, GPU use, copies
    assert (
        "Not plotted: Power draw, Weights moved between steps (not measured); Casts, Heavy ops on the CPU, Syncs "
        + ("(zero on every step inspected).")
        in page
    )
    assert 'data-tip="step 5; seconds 1.50 s; inspected op by op; RUN-OFFLOAD-TRAFFIC"' in page


def test_top_modules_sum_each_inspected_steps_list() -> None:
    steps = [
        StepMetrics(index=0, deep=True, top_casts=[ModuleVolume(module="a", bytes=10, count=1),
                                                   ModuleVolume(module="b", bytes=30, count=2)]),
        StepMetrics(index=1, deep=True, top_casts=[ModuleVolume(module="a", bytes=25, count=1),
                                                   ModuleVolume(module="b", bytes=1, count=2)]),
    ]  # fmt: skip
    assert top_modules(steps, lambda s: s.top_casts, "bytes") == [("a", 35, 2, 2), ("b", 31, 4, 2)]
    assert top_modules(steps, lambda s: s.top_casts, "count")[0][0] == "b"


@pytest.mark.parametrize(("value", "top"), [(0.3, 0.4), (1.0, 1.0), (7.5, 8.0), (90, 100), (0, 1.0)])
def test_axis_tops_read_well(value: float, top: float) -> None:
    assert svg.nice_ceiling(value) == pytest.approx(top)


def test_report_html_from_the_cli(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pages" / "run.html"
    assert main(["report", str(runs["regressed"]), "--html", str(out)]) == 0
    assert f"html: {out}\n" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(out.parent.glob(".run.html.*"))  # the temp file of the atomic write is gone
    write_run_html(load_report(runs["clean"]), tmp_path / "again.html")
    assert "again.html" in (tmp_path / "again.html").read_text(encoding="utf-8")


def test_html_to_an_unwritable_path_is_one_line_and_exit_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (["report", str(runs["clean"])], ["compare", str(runs["clean"]), str(runs["regressed"])]):
        assert main([*args, "--html", str(blocker / "out.html")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot write" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_failed_write_leaves_the_old_page_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "run.html"
    page.write_text("old page")

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "_replace", full_disk)  # the real os.replace, as taken at import
    with pytest.raises(OSError, match="No space"):
        write_html("<!DOCTYPE html>new", page)
    assert page.read_text() == "old page" and [p.name for p in tmp_path.iterdir()] == ["run.html"]


def test_compare_html_overlays_both_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.html"
    code = main(["compare", str(runs["clean"]), str(runs["regressed"]), "--html", str(out)])
    assert code == 1  # a finding new in B: the exit code is the comparison's, the page changes nothing
    page = out.read_text(encoding="utf-8")
    lines = polylines(page)
    assert lines["clean.json"] and lines["regressed.json"] and len(lines["clean.json"]) == len(lines["regressed.json"])
    assert lines["clean.json"][0] == 4  # step time: every step of run A
    assert "measure (median per step)" in page and "s/step" in page and "cast bytes/step" in page
    assert "New in B:</b> TEST-STEP-ONE (step 1, blocks.0.ffn.0)" in page and '<span class="new">new</span>' in page
    assert "B is worse than A" in page
    same = render_comparison_html(compare(load_report(runs["clean"]), load_report(runs["clean"])),
                                  load_report(runs["clean"]), load_report(runs["clean"]), "a", "b")  # fmt: skip
    assert "Nothing got worse" in same and 'class="worse"' not in same
