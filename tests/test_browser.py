"""The HTML pages in a real headless browser (Debian's chromium): each loads without a console error, its script
runs under the page's own content policy, the plots have their points, and a screenshot shows a page.

Skipped where chromium is not installed (Debian: ``apt-get install chromium``; .ci/run tries to install it).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from wandoc.cli import main as wandoc_main
from wanrun.cli import main as wanrun_main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MACHINES = Path(__file__).resolve().parent / "fixtures" / "machines"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"),
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless chromium run with a profile of its own, nothing fetched, console messages on stderr."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-extensions", "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr", "--v=0", *args,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run report and a comparison, from real runs of the built-in pipeline on the CPU."""
    folder = tmp_path_factory.mktemp("pages")
    rules = folder / "rules"
    rules.mkdir()
    (rules / "TEST-STEP-ONE.toml").write_text(
        'id = "TEST-STEP-ONE"\ntitle = "step one reached"\nseverity = "warning"\nscope = "step"\n'
        'when = "step.index >= 1"\nmessage = "step {step.index} ran"\nmodule = "\'blocks.0.ffn.0\'"\n'
    )
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        base = ("generate", "--preset", "tiny", "--steps", "6", "--quiet", "--out", "c.npy", "--deep-every", "2")
        assert wanrun_main([*base, "--report", "a.json"]) == 0
        assert wanrun_main([*base, "--weights-dtype", "fp32", "--dtype", "bf16", "--rules", str(rules),
                            "--report", "b.json"]) == 0  # fmt: skip
        assert wanrun_main(["report", "b.json", "--html", "run.html"]) == 0
        assert wanrun_main(["compare", "a.json", "b.json", "--html", "compare.html"]) == 1
    finally:
        os.chdir(cwd)
    return {"run": folder / "run.html", "compare": folder / "compare.html"}


@pytest.fixture(scope="module")
def check_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The doctor's page for the recorded Windows desktop."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer), pytest.raises(SystemExit):
        wandoc_main(["check", "--facts", str(MACHINES / "win-4090-desktop.json"), "--format", "html"])
    path = tmp_path_factory.mktemp("check") / "check.html"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.parametrize("name", ["run", "compare", "check"])
def test_page_loads_cleanly_and_its_script_runs(
    name: str, pages: dict[str, Path], check_page: Path, tmp_path: Path
) -> None:
    page = check_page if name == "check" else pages[name]
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = result.stdout
    assert '<html lang="en" data-ready="1">' in dom, result.stderr[-3000:]  # the script ran: the policy allows it
    assert console_errors(result.stderr) == []
    tips = re.findall(r"<(?:rect|g) [^>]*data-tip=[^>]*>(<title>)?", dom)
    assert tips and not any(tips)  # native tooltips gave way to the script's own


@pytest.mark.parametrize("name", ["run", "compare"])
def test_plots_have_their_points(name: str, pages: dict[str, Path], tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", pages[name].as_uri()).stdout
    charts = re.findall(r'<svg class="chart".*?</svg>', dom, re.S)
    assert len(charts) == 2  # a CPU run plots what it measures: step time and casts (fp32 weights in B)
    assert "Not plotted: VRAM, GPU use" in dom
    for chart in charts:
        counts = [len(p.split()) for p in re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', chart)]
        assert counts and max(counts) >= 3, chart[:300]  # 6 steps, 3 of them inspected
    step_time = next(c for c in charts if "Step time" in c)
    assert max(len(p.split()) for p in re.findall(r'points="([^"]+)"', step_time)) == 6


def test_screenshot_shows_a_page(pages: dict[str, Path], tmp_path: Path) -> None:
    shot = tmp_path / "run.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2400", "--hide-scrollbars",
                      pages["run"].as_uri())  # fmt: skip
    assert shot.is_file(), result.stderr[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 2400)
    assert len(data) > 60_000  # a blank page of this size compresses to about 10 kB


def test_the_check_page_starts_with_the_checklist(check_page: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", check_page.as_uri()).stdout
    checklist = re.search(r'<table class="checklist">.*?</table>', dom, re.S)
    assert checklist and dom.index('class="checklist"') < dom.index("<h2>Findings</h2>")
    rows = re.findall(r"<tr>(.*?)</tr>", checklist.group(0), re.S)[1:]
    assert len(rows) == 13 and "GPUs (NVML)" in rows[3] and "GPU-MODEL-EXCEEDS-FREE-VRAM" in rows[3]
    assert '<a href="#finding-GPU-MODEL-EXCEEDS-FREE-VRAM">' in rows[3]  # a line's findings link to them
