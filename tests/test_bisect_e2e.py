"""``wandoc bisect`` with the real runner: each commit of the runnable checkout judged by a guarded CPU run.

The history (tests/runnable_wan.py): fast, a README commit, the slow attention (first bad), fp32 weights, a CPU
module. On one CPU thread the slow attention's chunk loop makes a step about 2.5x slower at 64x64, while commits
with the same code differ by a few percent; with several threads a busy machine's contention swamps both, so
the runs keep to one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import run_wandoc as run_cli
from runnable_wan import RunnableRepo
from test_bisect import assert_clean, user_state
from wanrepo import git

pytestmark = pytest.mark.slow


def test_bisect_names_the_slow_attention_commit_and_a_rule_follows(
    runnable: RunnableRepo,
    tmp_path: Path,
    temp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = tmp_path / "wan"
    git(tmp_path, "clone", "-q", str(runnable.root), "wan")
    git(repo, "checkout", "-q", "main")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the judge's runs inherit it
    before = user_state(repo)

    code, out, err = run_cli(["bisect", "--good", runnable.fast, "--bad", "main", "--repo", str(repo), "--steps", "8",
                              "--threshold", "1.5", "--", "--ckpt_dir", str(runnable.ckpt_dir), "--size", "64*64"],
                             capsys)  # fmt: skip
    assert code == 0, out + err
    assert f"first bad commit: {runnable.slow_attention}" in out, out
    for line in out.splitlines():  # the README commit, when bisect visits it, is judged without a run
        if line.startswith("testing ") and "README" in line:
            assert "not run: changes only files the run never reads (README" in line, line
    assert "sdpa_flash_disabled" in out and "mask_per_call" in out
    assert f"--from {runnable.slow_attention[:7]}" in out
    assert_clean(repo, before, temp_root)

    rule = tmp_path / "CODE-MY-SLOW-ATTENTION.toml"
    code, _, err = run_cli(["rules", "new", "CODE-MY-SLOW-ATTENTION", "--dir", str(tmp_path), "--from",
                            runnable.slow_attention, "--repo", str(repo)], capsys)  # fmt: skip
    assert code == 0 and rule.is_file(), err
    assert run_cli(["rules", "test", str(rule)], capsys)[0] == 0
    # the new rule fires on the tip of main and stays quiet on the fast commit
    check = ["check", "--repo", str(repo), "--rules", str(rule), "--format", "json", "--fail-on", "never"]

    def fired() -> set[str]:
        return {f["rule"] for f in json.loads(run_cli(check, capsys)[1])["findings"]}

    assert "CODE-MY-SLOW-ATTENTION" in fired()
    git(repo, "checkout", "-q", runnable.fast)
    assert "CODE-MY-SLOW-ATTENTION" not in fired()
