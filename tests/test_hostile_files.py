"""Files the user names, read or written by the CLIs: one line and exit 2 for what cannot be used, never a hang,
a traceback or a wrong verdict; and the sane twin of each still works.

Reads that could hang or eat memory on a regression (a FIFO, /dev/zero, huge files) run in a child process under
a memory limit and a timeout (tests/limits.py).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from clirun import run_wandoc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits import WANDOC, WANRUN, child_env, run_limited

from wandoc.bounded import JSON_DEPTH, FileRefused, parse_json
from wandoc.metrics import Report, StepMetrics, Summary
from wandoc.render.text import safe
from wanrun.cli import main as wanrun_main
from wanrun.compare import compare

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "machines"
TINY = ["generate", "--preset", "tiny", "-q", "--out", "c.npy"]  # the smallest built-in run
posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs, /dev/zero and /proc")


def run_report(steps: list[float], findings: int = 0) -> Report:
    return Report(steps=[StepMetrics(index=i, seconds=s) for i, s in enumerate(steps)], summary=Summary())


def write(path: Path, report: Report) -> Path:
    path.write_text(report.to_json())
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- reading reports and facts ---------------------------------------------------------------------------------


def _hostile(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "nested":
        path.write_text('{"schema": "wanrun.report/1", "run": {"args": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}}")
    elif kind == "deep-but-parses":  # under Python's recursion limit, over what any report holds
        path.write_text('{"schema": "wanrun.report/1", "run": {"args": {"a": ' + "[" * 500 + "]" * 500 + "}}}")
    elif kind == "huge-int":
        path.write_text('{"schema": "wanrun.report/1", "steps": [{"index": ' + "9" * 5000 + "}]}")
    elif kind == "huge-file":
        with open(path, "wb") as fh:  # sparse: nothing is written to disk
            fh.truncate(200 << 20)
    return path


BLOCKING = ["fifo", "dev-zero", "huge-file"]  # a regression would hang or eat memory: read in a limited child
PARSED = ["folder", "nested", "deep-but-parses", "huge-int"]  # a regression raises: read in this process
WHY = {"fifo": "not a regular file", "dev-zero": "not a regular file", "folder": "is a folder",
       "nested": "nested more than", "deep-but-parses": "nested more than", "huge-int": "4300 digits",
       "huge-file": "more than the 64 MiB"}  # fmt: skip


@posix_only
@pytest.mark.parametrize("kind", BLOCKING)
def test_reports_that_would_block_are_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    bad = _hostile(tmp_path, kind)
    good = write(tmp_path / "good.json", run_report([1.0, 1.0]))
    runs = [["report", str(bad)], ["compare", str(good), str(bad)]] if kind == "fifo" else [["report", str(bad)]]
    for args in runs:
        proc = run_limited([*WANRUN, *args], timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_line(proc.stderr)
        assert line.startswith(f"wanrun: {bad}: ") and WHY[kind] in line


@pytest.mark.parametrize("kind", PARSED)
def test_reports_that_would_crash_the_parser_are_one_line_and_exit_2(tmp_path: Path, kind: str, capsys) -> None:
    bad = _hostile(tmp_path, kind)
    good = write(tmp_path / "good.json", run_report([1.0, 1.0]))
    for args in (["report", str(bad)], ["compare", str(good), str(bad)]):
        assert wanrun_main(args) == 2
        line = one_line(capsys.readouterr().err)
        assert line.startswith(f"wanrun: {bad}: ") and WHY[kind] in line


@posix_only
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "nested", "huge-int"])
def test_hostile_facts_files_are_one_line_and_exit_2(tmp_path: Path, kind: str, capsys) -> None:
    bad = _hostile(tmp_path, kind)
    if kind in BLOCKING:
        proc = run_limited([*WANDOC, "check", "--facts", str(bad)], timeout=60)
        code, err = proc.returncode, proc.stderr
    else:
        code, _, err = run_wandoc(["check", "--facts", str(bad)], capsys)
    assert code == 2 and WHY[kind] in one_line(err)


def test_sane_reports_and_facts_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.json", run_report([1.0, 1.1, 0.9]))
    assert wanrun_main(["report", str(good)]) == 0
    assert wanrun_main(["compare", str(good), str(good)]) == 0
    code, out, _ = run_wandoc(["check", "--facts", str(FIXTURES / "win-4090-desktop.json")], capsys)
    assert code == 1 and "ATTN-FLASH-ATTN-MISSING" in out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=st.integers(min_value=0, max_value=3000),
    digits=st.integers(min_value=1, max_value=9000),
    opener=st.sampled_from(["[", '{"a":']),
)
def test_the_json_reader_on_nested_and_huge_input(depth: int, digits: int, opener: str) -> None:
    """Whatever the nesting and the size of a number: parsed data within the limits, or FileRefused; never
    another exception."""
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" * digits + closer * depth
    try:
        value = parse_json(text.encode())
    except FileRefused as exc:
        assert "nested" in str(exc) or "digits" in str(exc)
        assert depth > JSON_DEPTH or digits > 4300
        return
    assert depth <= JSON_DEPTH and digits <= 4300
    while isinstance(value, list | dict):
        value = value[0] if isinstance(value, list) else value["a"]
    assert value == int("1" * digits)


# -- writing the report ----------------------------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("kind", ["fifo", "folder", "under-a-file", "proc"])
def test_a_report_path_that_cannot_be_written_fails_before_the_run(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 in a second, not after the whole run; a FIFO is neither opened (a hang) nor replaced."""
    monkeypatch.chdir(tmp_path)
    target = {"fifo": tmp_path / "r.json", "folder": tmp_path / "r.json", "under-a-file": tmp_path / "f" / "r.json",
              "proc": Path("/proc/wanrun-report.json")}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    elif kind == "under-a-file":
        (tmp_path / "f").write_text("a file")
    import wanrun.cli

    started: list[object] = []
    monkeypatch.setattr(wanrun.cli, "_run", lambda *a, **k: started.append(a))
    assert wanrun_main([*TINY, "--steps", "2", "--report", str(target)]) == 2
    assert not started
    assert one_line(capsys.readouterr().err).startswith(f"wanrun: cannot write the report {target}: ")
    if kind == "fifo":
        assert target.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == {"fifo": ["r.json"], "folder": ["r.json"],
                                                          "under-a-file": ["f"], "proc": []}[kind]  # fmt: skip


def test_a_report_in_a_new_folder_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert wanrun_main([*TINY, "--steps", "2", "--report", "runs/today/r.json"]) == 0
    s = Report.model_validate_json((tmp_path / "runs" / "today" / "r.json").read_text()).summary
    assert (s.partial, s.ended_by, s.steps) == (False, "finished", 2)


# -- settings in the current folder ---------------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("name", ["pyproject.toml", "wandoc.toml"])
def test_a_fifo_or_a_deep_toml_as_settings_is_one_line(tmp_path: Path, name: str) -> None:
    os.mkfifo(tmp_path / name)
    for program in ([*WANDOC, "rules", "list"], [*WANRUN, "compare", "a.json", "b.json"]):
        proc = run_limited(program, timeout=60, cwd=tmp_path)
        assert proc.returncode == 2 and f"cannot read {name}: not a regular file" in one_line(proc.stderr)
    (tmp_path / name).unlink()
    table = "[tool.wandoc]\n" if name == "pyproject.toml" else ""
    (tmp_path / name).write_text(table + "x = " + "[" * 600 + "]" * 600)
    proc = run_limited([*WANDOC, "rules", "list"], timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and f"cannot read {name}: not valid TOML" in one_line(proc.stderr)
    (tmp_path / name).write_text(table + 'fail_on = "never"\n')
    proc = run_limited([*WANDOC, "check", "--facts", str(FIXTURES / "win-4090-desktop.json")], timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the sane twin: the setting is read (errors no longer fail)


# -- verdicts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0.5"])
def test_compare_refuses_thresholds_that_pass_everything(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write(tmp_path / "a.json", run_report([1.0] * 5))
    b = write(tmp_path / "b.json", run_report([10.0] * 5))
    assert wanrun_main(["compare", str(a), str(b), "--threshold", value]) == 2
    assert "--threshold: must be a finite number of 1.0 or more" in one_line(capsys.readouterr().err)
    assert wanrun_main(["compare", str(a), str(b), "--threshold", "1.5"]) == 1  # the sane twin: 10x slower is worse


def test_a_nan_regress_threshold_setting_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wandoc.toml").write_text("regress_threshold = nan\n")
    a = write(tmp_path / "a.json", run_report([1.0] * 5))
    assert wanrun_main(["compare", str(a), str(a)]) == 2
    assert "regress_threshold: Value error, must be a finite number" in one_line(capsys.readouterr().err)


def test_non_finite_step_times_are_unmeasured_and_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NaN compares false: one NaN step made a 10x slower run look fine. Such steps are left out, stated."""
    base = run_report([1.0, 1.0, math.nan, 1.0])
    slow = run_report([10.0, math.inf, 10.0, -5.0, 10.0])
    result = compare(base, slow)
    row = next(r for r in result.rows if r.metric == "s/step")
    assert (row.a, row.b, row.worse) == (1.0, 10.0, True) and result.regressed
    assert result.notes == [
        "s/step: 1 step of A held no usable value (NaN, infinite or negative) and were left out as unmeasured",
        "s/step: 2 steps of B held no usable value (NaN, infinite or negative) and were left out as unmeasured",
    ]
    # through the CLI, from JSON that says NaN and Infinity (as Python's json writes them; pydantic would write null)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, report in ((a, base), (b, slow)):
        path.write_text(json.dumps(report.model_dump(by_alias=True)))
    assert "NaN" in a.read_text() and "Infinity" in b.read_text()
    assert wanrun_main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "B is worse" in out and "left out as unmeasured" in out
    only_nan = run_report([math.nan] * 3)
    assert next(r for r in compare(only_nan, slow).rows if r.metric == "s/step").a is None  # unmeasured, not 0


# -- output ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["wandoc", "wanrun"])
def test_a_stream_that_cannot_encode_a_mark_gets_a_replacement(tmp_path: Path, program: str) -> None:
    """``PYTHONIOENCODING=cp1252``, what a Windows user gets with ``wandoc check > check.md``."""
    if program == "wandoc":
        args = [*WANDOC, "check", "--facts", str(FIXTURES / "win-4090-desktop.json")]
    else:
        report = run_report([1.0]).model_copy(update={"findings": []})
        report.summary.not_checked = ["tokens → 1,560"]
        args = [*WANRUN, "report", str(write(tmp_path / "r.json", report))]
    for encoding, expect in (("cp1252", "?"), ("utf-8", "")):
        proc = run_limited(args, timeout=60, env=child_env(PYTHONIOENCODING=encoding), encoding=encoding)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        mark = "✖" if program == "wandoc" else "→"
        assert (mark in proc.stdout) == (encoding == "utf-8") and expect in proc.stdout


def test_rules_new_into_a_folder_that_takes_no_file_is_one_line(tmp_path: Path, capsys) -> None:
    if os.name == "posix" and Path("/proc").is_dir():
        code, _, err = run_wandoc(["rules", "new", "TEST-X", "--dir", "/proc"], capsys)
        assert code == 2 and one_line(err).startswith("wandoc: cannot write /proc/TEST-X.toml: ")
    code, out, _ = run_wandoc(["rules", "new", "TEST-X", "--dir", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "TEST-X.toml").is_file() and "wrote" in out


ESC = "\x1b]0;owned\x07\x1b[2J"


def test_escape_sequences_from_a_run_never_reach_the_terminal(tmp_path: Path, capsys) -> None:
    """Module names, errors and paths come from the user's code; shown with their escapes visible."""
    report = run_report([1.0, 1.0])
    report.summary.error = f"RuntimeError: {ESC}boom"
    report.summary.output = f"/tmp/{ESC}clip.mp4"
    report.summary.not_checked = [f"module {ESC}blocks.0"]
    path = write(tmp_path / "r.json", report)
    assert wanrun_main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07\\x1b[2J" in out and "boom" in out
    assert safe("plain text, tabs\tand\nlines") == "plain text, tabs\tand\nlines"  # the sane twin
    assert safe("\u202eevil\u2066") == "\\u202eevil\\u2066"  # a bidi override would reorder the line


def test_an_exception_message_with_escapes_is_printed_safely(tmp_path: Path, monkeypatch, capsys) -> None:
    import wanrun.pipeline.run as run_module

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(f"disk {ESC}gone")

    monkeypatch.setattr(run_module, "write_video", failing)
    monkeypatch.chdir(tmp_path)
    assert wanrun_main([*TINY, "--steps", "1", "--report", "r.json"]) == 3
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "disk \\x1b]0;owned" in captured.err
    assert ESC in json.loads((tmp_path / "r.json").read_text())["summary"]["error"]  # the report keeps the data
