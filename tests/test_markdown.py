"""`wandoc check --format markdown | html`: the shape of what users paste into an issue or open in a browser,
escaping of what the facts carry, unchanged exit codes, and a doctor that stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_wandoc as run

from wandoc.checklist import checklist
from wandoc.engine import Finding
from wandoc.facts import Facts
from wandoc.render.markdown import code, render_check_markdown, text

MACHINES = Path(__file__).resolve().parent / "fixtures" / "machines"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def win_desktop(tmp_path: Path) -> Path:
    """The recorded Windows desktop (errors and warnings), with a hostile string where the facts hold text."""
    data = json.loads((MACHINES / "win-4090-desktop.json").read_text(encoding="utf-8"))
    data["platform"]["release"] = HOSTILE
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_markdown_groups_findings_with_evidence_and_the_fix_for_the_shell(
    win_desktop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code_, out, _ = run(["check", "--facts", str(win_desktop), "--format", "markdown"], capsys)
    assert code_ == 1
    lines = out.splitlines()
    assert lines[0].startswith("### wandoc check: 2 errors, ")
    areas = [line for line in lines if line.startswith("#### ")]
    assert areas[:2] == ["#### Attention kernels", "#### GPU and driver"]  # the area of the worst finding first
    assert "**✖ error: The run needs more VRAM than the GPU has free** `GPU-MODEL-EXCEEDS-FREE-VRAM`" in lines
    assert any(line.startswith("- evidence: peak_vram_bytes `59.4 GiB`") for line in lines)  # sizes in GiB
    fence = lines.index("  ```powershell")  # the fix command, for the shell the facts recorded
    assert lines[fence + 1].startswith("  nvidia-smi --query-compute-apps") and lines[fence + 2] == "  ```"
    assert re.search(r"^\*\*2 errors, \d+ warnings, \d+ notes\*\* from \d+ rules over facts recorded in", out, re.M)
    details = out[out.index("<details><summary>Key facts</summary>") :]
    assert "| fact | value |" in details and "| GPU 0 | NVIDIA GeForce RTX 4090" in details
    assert details.rstrip().endswith("</details>") and "C:\\Users\\ana\\Wan2.2" in details
    assert HOSTILE not in out and "&lt;script>alert(1)&lt;/script>" in out


def test_html_shows_the_verdict_the_memory_and_the_machine(
    win_desktop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code_, out, _ = run(["check", "--facts", str(win_desktop), "--format", "html"], capsys)
    assert code_ == 1 and out.startswith("<!DOCTYPE html>")
    assert "<h3>GPU and driver</h3>" in out and 'id="finding-GPU-MODEL-EXCEEDS-FREE-VRAM"' in out
    assert "<pre><code>nvidia-smi --query-compute-apps" in out
    assert "Memory: what t2v-A14B needs and what the machine has" in out and "GPU 0 free" in out
    assert HOSTILE not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out and out.count("<script") == 1


@pytest.mark.parametrize("machine", ["win-4090-desktop", "h100-server", "laptop-8gb"])
@pytest.mark.parametrize("fail_on", [None, "never", "warning"])
def test_every_format_gives_the_same_exit_code(
    machine: str, fail_on: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["check", "--facts", str(MACHINES / f"{machine}.json"), *(["--fail-on", fail_on] if fail_on else [])]
    codes = {fmt: run([*base, "--format", fmt], capsys)[0] for fmt in ("text", "json", "markdown", "html")}
    assert len(set(codes.values())) == 1, codes


def test_a_clean_machine_says_so_and_what_was_not_checked(capsys: pytest.CaptureFixture[str]) -> None:
    facts = Facts()
    out = render_check_markdown([], facts=facts, rules_evaluated=3, checklist=checklist(facts, [], {}), source="x",
                                shell="bash")  # fmt: skip
    assert out.startswith("### wandoc check: 0 errors, 0 warnings, 0 notes\n\n- ✓ **Environment variables**")
    assert "- ○ **GPUs (NVML)**: not checked: NVML not available" in out  # the checklist, one line per area
    assert "No findings in what was checked" in out and "| judged | x |" in out


def test_a_fix_without_a_command_is_prose_alone() -> None:
    finding = Finding(rule="R-X", severity="warning", title="t", message="m", fix="Do the thing.", area="ENV")
    out = render_check_markdown([finding], facts=Facts(), rules_evaluated=1, checklist=[], source="s",
                                shell="cmd")  # fmt: skip
    assert "- fix: Do the thing." in out and "```" not in out


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>"),
        ("1280*720 | x", "1280\\*720 \\| x"),
        ("# not a heading", "\\# not a heading"),
        ("1. not a list", "1\\. not a list"),
        ("52.0 GiB free", "52.0 GiB free"),
        ("PYTORCH_CUDA_ALLOC_CONF and __init__", "PYTORCH_CUDA_ALLOC_CONF and \\_\\_init\\_\\_"),
        ("C:\\Users\\ana and a\\*b", "C:\\Users\\ana and a\\\\\\*b"),
        ("[link](http://x)", "\\[link\\](http://x)"),
        ("two\nlines", "two lines"),
    ],
)
def test_text_reads_as_written(raw: str, shown: str) -> None:
    assert text(raw) == shown


def test_code_spans_hold_any_text() -> None:
    assert code("a`b") == "``a`b``"
    assert code("`x") == "`` `x ``"
    assert code("a|b") == "`a\\|b`"


def test_check_in_markdown_or_html_never_imports_torch(win_desktop: Path) -> None:
    for fmt in ("markdown", "html"):
        program = (
            "import sys\nfrom wandoc.cli import main\n"
            f"try:\n    main(['check', '--facts', {str(win_desktop)!r}, '--format', {fmt!r}])\nexcept SystemExit:\n"
            "    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
        )
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip().endswith("NO-TORCH"), result.stderr[-2000:]
