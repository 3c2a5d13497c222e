"""``wanrun`` end to end on the CPU: the built-in pipeline under the guards, reports, exit codes, strict mode."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from wandoc.engine import Finding
from wandoc.metrics import REPORT_SCHEMA, Report, StepMetrics
from wanrun.cli import main
from wanrun.live import LiveView

STEP_KEYS = {
    "index", "seconds", "h2d_bytes", "d2h_bytes", "copies", "cast_bytes", "repeated_cast_bytes", "cpu_ops",
    "cpu_resident", "syncs", "vram_peak_bytes", "gpu_util", "deep",
}  # fmt: skip
FINDING_KEYS = {"rule", "severity", "title", "message", "fix", "evidence", "step", "module"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def wanrun(*args: str) -> int:
    return main(list(args))


def rule_dir(tmp_path: Path, severity: str, when: str = "step.index >= 1") -> Path:
    """A user rule folder holding one step rule, to drive --strict and --fail-on on a clean CPU run."""
    folder = tmp_path / f"rules-{severity}"
    folder.mkdir()
    (folder / "TEST-STEP-ONE.toml").write_text(
        f'id = "TEST-STEP-ONE"\ntitle = "step one reached"\nseverity = "{severity}"\nscope = "step"\n'
        f'when = "{when}"\nmessage = "step {{step.index}} ran"\nmodule = "\'blocks.0\'"\n'
    )
    return folder


def test_generate_writes_the_video_and_a_valid_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = wanrun("generate", "--steps", "3", "--out", "clip.mp4", "--report", "run.json")
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "clip.mp4").stat().st_size > 0
    raw = json.loads((tmp_path / "run.json").read_text())
    assert {"schema", "run", "phases", "steps", "findings", "summary"} <= raw.keys()
    assert raw["schema"] == REPORT_SCHEMA
    assert all(s.keys() >= STEP_KEYS for s in raw["steps"]) and len(raw["steps"]) == 3
    assert {p["name"] for p in raw["phases"]} == {"load", "encode", "denoise", "decode", "save"}
    report = Report.model_validate(raw)
    assert report.summary.output_bytes == (tmp_path / "clip.mp4").stat().st_size
    assert report.run.pipeline == "builtin" and report.run.denoiser == "WanStyleDiT" and report.run.tokens > 0
    assert [s.forwards for s in report.steps] == [2, 2, 2]
    assert report.summary.deep_steps == [0, 1]
    assert (report.summary.partial, report.summary.ended_by) == (False, "finished")
    assert not list(tmp_path.glob(".run.json.*"))  # the temp file of the atomic write is gone
    assert "No findings." in out and "WanStyleDiT on cpu" in out


def test_fp32_weights_under_autocast_are_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("generate", "--steps", "2", "--dtype", "bf16", "--out", "c.npy", "--report", "r.json", "--quiet")
    assert wanrun(*args, "--weights-dtype", "fp32") == 0
    fp32 = Report.model_validate_json((tmp_path / "r.json").read_text())
    assert wanrun(*args) == 0
    bf16 = Report.model_validate_json((tmp_path / "r.json").read_text())
    assert fp32.steps[1].repeated_cast_bytes > 0 and fp32.steps[1].top_casts[0].module.startswith("blocks.")
    assert bf16.summary.repeated_cast_bytes_total == 0
    assert "steps in" in capsys.readouterr().out  # --quiet still ends with one line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--size", "100x7"], "--size"),
        (["--frames", "6"], "4k+1"),
        (["--cpu-block", "9"], "--cpu-block"),
        (["--fail-on", "sometimes"], "sometimes"),
        (["--no-such-option"], "no-such-option"),
        (["--rules", "missing-folder"], "missing-folder"),
        (["--deep-every", "-1"], "--deep-every"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], names: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert wanrun("generate", *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and names in err and "Traceback" not in err


def test_a_failed_generation_exits_3_and_still_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wanrun.pipeline.run as run_module

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module, "write_video", disk_full)
    assert wanrun("generate", "--steps", "2", "--out", "clip.mp4", "--report", "run.json") == 3
    report = Report.model_validate_json((tmp_path / "run.json").read_text())
    assert report.summary.error and "No space left on device" in report.summary.error
    assert len(report.steps) == 2 and not report.summary.interrupted
    err = capsys.readouterr().err
    assert "the generation failed" in err and "Traceback" not in err


def test_strict_stops_at_the_first_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = rule_dir(tmp_path, "error")
    code = wanrun("generate", "--steps", "6", "--strict", "--rules", str(rules), "--report", "r.json", "--out", "c.npy")
    assert code == 1
    report = Report.model_validate_json((tmp_path / "r.json").read_text())
    assert len(report.steps) == 2 and report.summary.interrupted
    assert [(f.rule, f.step, f.module) for f in report.findings] == [("TEST-STEP-ONE", 1, "blocks.0")]
    assert set(json.loads((tmp_path / "r.json").read_text())["findings"][0]) >= FINDING_KEYS
    assert "stopped by --strict at step 1" in capsys.readouterr().out
    assert not (tmp_path / "c.npy").exists()


def test_fail_on_sets_the_exit_code(tmp_path: Path) -> None:
    rules = str(rule_dir(tmp_path, "warning"))
    base = ("generate", "--steps", "2", "--quiet", "--out", "c.npy", "--rules", rules)
    assert wanrun(*base) == 0  # default: only errors fail
    assert wanrun(*base, "--fail-on", "warning") == 1
    assert wanrun(*base, "--fail-on", "never") == 0


def test_ctrl_c_exits_130_with_a_partial_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wanrun.pipeline.run as run_module

    real_step = run_module.FlowMatchSampler.step

    def step(self: object, index: int, *args: object) -> object:
        if index == 2:
            raise KeyboardInterrupt
        return real_step(self, index, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(run_module.FlowMatchSampler, "step", step)
    assert wanrun("generate", "--steps", "5", "--quiet", "--out", "c.npy", "--report", "r.json") == 130
    report = Report.model_validate_json((tmp_path / "r.json").read_text())
    assert report.summary.interrupted and len(report.steps) == 3 and report.summary.error is None
    assert (report.summary.partial, report.summary.ended_by) == (False, "KeyboardInterrupt")


def test_report_command_renders_a_report_and_refuses_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert wanrun("generate", "--steps", "2", "--quiet", "--out", "c.npy", "--report", "run.json") == 0
    capsys.readouterr()
    assert wanrun("report", "run.json") == 0
    assert "WanStyleDiT on cpu" in capsys.readouterr().out
    (tmp_path / "check.json").write_text(json.dumps({"schema": "wandoc.check/1", "findings": []}))
    (tmp_path / "junk.json").write_text("{not json")
    for name in ("check.json", "junk.json", "absent.json"):
        assert wanrun("report", name) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert wanrun("generate", "--help") == 0
    out = capsys.readouterr().out
    assert "Examples" in out and "--weights-dtype fp32" in out and "Exit codes" in out
    assert wanrun() == 0 and "generate" in capsys.readouterr().out


def test_the_cli_module_imports_without_torch() -> None:
    code = "import sys, wanrun.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_live_view_on_a_terminal_and_in_a_log() -> None:
    finding = Finding(
        rule="RUN-CPU-COMPUTE", severity="error", title="Heavy compute runs on the CPU", message="24 heavy ops",
        fix="Move the denoiser to the GPU.", step=0, module="blocks.3.ffn.0",
    )  # fmt: skip
    steps = [StepMetrics(index=0, seconds=0.5, deep=True, h2d_bytes=5_000_000), StepMetrics(index=1, seconds=0.5)]
    for terminal in (True, False):
        buffer = io.StringIO()
        with LiveView(Console(file=buffer, force_terminal=terminal, width=100, color_system=None), total=4) as view:
            view.on_step(steps[0])
            view.on_finding(finding)
            view.on_step(steps[1])
            assert view.status(steps[1]) == (
                "step 1 · 2/4 done · 0.500 s · ETA 0:01 at 0.500 s/step (median) · H2D 5.0 MB/step (step 0) · "
                "cast 0.0 MB/step · CPU ops 0"
            )
        text = buffer.getvalue()
        assert "Heavy compute runs on the CPU" in text and "blocks.3.ffn.0" in text and "Move the denoiser" in text
    # steps are numbered from 0 as in the findings and the report; the progress is a count done beside it
    assert "step 0 · 1/4 done" in text and "inspected" in text and "(step 0, blocks.3.ffn.0)" in text


def test_the_live_line_shows_the_steps_own_time() -> None:
    """A slow step shows its own time, not a running median; the ETA says it uses the median."""
    view = LiveView(Console(file=io.StringIO(), color_system=None), total=8, gpu=False)
    for i, seconds in enumerate((0.5, 0.5, 0.5, 4.0)):
        view.on_step(StepMetrics(index=i, seconds=seconds))
    line = view.status(StepMetrics(index=3, seconds=4.0))
    assert line.startswith("step 3 · 4/8 done · 4.000 s · ETA 0:02 at 0.500 s/step (median)")


def test_compare_says_what_got_worse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("generate", "--steps", "2", "--quiet", "--out", "c.npy")
    assert wanrun(*base, "--report", "a.json") == 0
    assert wanrun(*base, "--rules", str(rule_dir(tmp_path, "warning")), "--report", "b.json") == 0
    capsys.readouterr()
    assert wanrun("compare", "a.json", "a.json") == 0
    assert "nothing got worse" in capsys.readouterr().out
    assert wanrun("compare", "a.json", "b.json") == 1  # a finding that run A did not have
    assert "new in B: TEST-STEP-ONE (step 1, blocks.0)" in capsys.readouterr().out
    assert wanrun("compare", "a.json", "missing.json") == 2


def test_generate_writes_the_html_page_beside_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = wanrun("generate", "--steps", "2", "--out", "clip.npy", "--report", "run.json", "--html", "run.html", "-q")
    out = capsys.readouterr().out
    assert code == 0, out
    page = (tmp_path / "run.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "html: run.html" in out
    assert json.loads((tmp_path / "run.json").read_text())["schema"] == REPORT_SCHEMA


def test_generate_html_to_an_unwritable_place_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    code = wanrun("generate", "--steps", "1", "--out", "clip.npy", "--html", "file/run.html", "-q")
    err = capsys.readouterr().err
    assert code == 2 and "cannot write file/run.html" in err and "Traceback" not in err


def test_the_cpu_demo_shows_the_fp32_regression_and_refuses_the_gpu_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's CPU demo: fp32 weights are flagged with the module, the clean twin is quiet, and the switches
    that need a GPU refuse in one line before anything is built."""
    monkeypatch.chdir(tmp_path)
    assert wanrun("generate", "--weights-dtype", "fp32", "--steps", "2", "--out", "c.npy", "--report", "r.json") == 0
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    casts = [f for f in report["findings"] if f["rule"] == "RUN-REPEATED-CASTS"]
    assert casts and casts[0]["step"] == 0 and casts[0]["module"].startswith("blocks.")
    assert wanrun("generate", "--steps", "2", "--out", "c.npy", "--report", "clean.json") == 0
    assert json.loads((tmp_path / "clean.json").read_text(encoding="utf-8"))["findings"] == []
    capsys.readouterr()
    for flag in (["--offload"], ["--cpu-block", "1"], ["--host-copy"]):
        assert wanrun("generate", *flag, "--device", "cpu", "--out", "x.npy") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "only on a GPU" in err and flag[0] in err
    assert not (tmp_path / "x.npy").exists()


def test_the_run_says_what_to_expect_before_it_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert wanrun("generate", "--steps", "2", "--out", "c.npy") == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("demo on cpu: 2 steps x 2 forwards of 32 tokens through 36M parameters: about ")
    assert "expect about" in out.split("step 0 ·")[0]  # said before step 0 ends, not after
    assert wanrun("generate", "--steps", "2", "--out", "c.npy", "--quiet") == 0
    assert "expect about" not in capsys.readouterr().out


def test_the_wan_1_3b_shape_on_a_cpu_is_hours() -> None:
    """The README's wan-1.3b example, sized before anything is built: the user learns it is a GPU job."""
    import torch

    from wanrun.pipeline.config import PipelineConfig, model_summary
    from wanrun.run_length import expected_length

    cfg = PipelineConfig(preset="wan-1.3b", steps=20)
    shape = model_summary(cfg)
    assert shape["tokens"] == 32_760 and 2e14 < shape["flops_per_step"] / 2 < 4e14  # ~0.3 PFLOP a forward
    line = expected_length(shape, torch.device("cpu"), "fp32")
    assert line.startswith("20 steps x 2 forwards of 32,760 tokens through 1.4B parameters")
    assert re.search(r"expect about \d+ h", line), line


def test_the_summary_prints_no_rows_of_zeros() -> None:
    """A CPU run cannot measure copies or syncs, and a figure zero on every inspected step is one line, not a
    row of 0 B; what was measured keeps its row."""
    from wandoc.metrics import RunInfo, Summary
    from wanrun.report_view import render

    steps = [StepMetrics(index=i, seconds=0.3, deep=i < 2, cast_bytes=5 << 20 if i < 2 else None,
                         repeated_cast_bytes=0 if i < 2 else None, h2d_bytes=0 if i < 2 else None)
             for i in range(4)]  # fmt: skip
    buffer = io.StringIO()
    summary = Summary(steps=4, cast_bytes_total=10 << 20)
    render(Report(run=RunInfo(device="cpu"), steps=steps, summary=summary), Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert "casts (inspected)" in text and "5.0 MiB" in text
    assert "host→device (inspected)" not in text and "0 B" not in text
    assert "none in the inspected steps: repeated" in text
    assert "a CPU run measures none of: host→device, of it weights, device→host, syncs, heavy ops on CPU" in text
