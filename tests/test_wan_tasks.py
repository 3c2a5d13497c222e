"""Pristine official Wan code gets no code warnings: files serving other tasks are imported, not executed."""

from __future__ import annotations

from pathlib import Path

import pytest

from wandoc import rulebook
from wandoc.code.probe import probe_repo
from wandoc.code.tasks import other_task_files, scope_sites
from wandoc.engine import evaluate
from wandoc.facts import CodeSite, Facts


def test_other_task_files_by_family() -> None:
    files = ["wan/text2video.py", "wan/speech2video.py", "wan/modules/s2v/motioner.py", "wan/modules/model.py"]
    assert other_task_files(files, "t2v-A14B") == ["wan/modules/s2v/motioner.py", "wan/speech2video.py"]
    assert other_task_files(files, "s2v-14B") == ["wan/text2video.py"]
    assert other_task_files(files, None) == []  # unknown task: judge everything
    assert other_task_files(files, "my-fork-task") == []


def test_scope_sites_keeps_the_task_own_code() -> None:
    sites = [
        CodeSite(kind="python_loop_kernel", file="wan/modules/s2v/motioner.py", function="X.forward"),
        CodeSite(kind="mask_per_call", file="wan/modules/t5.py", function="T5Decoder.forward"),
        CodeSite(kind="mask_per_call", file="wan/modules/attention.py", function="attention"),
    ]
    scoped = scope_sites(sites, ["wan/modules/s2v/motioner.py"])
    assert [s.on_path for s in scoped] == [False, False, True]


@pytest.mark.parametrize("task", ["t2v-A14B", "t2v-1.3B"])
def test_official_code_raises_no_code_findings(official: Path, task: str) -> None:
    repo = probe_repo(official, "generate.py", ["--task", task], {})
    assert repo.is_wan and repo.effective["task"] == task
    findings = evaluate(rulebook.load(), Facts(repo=repo).as_tree())
    code = [f for f in findings if f.area == "CODE" and f.severity in ("error", "warning")]
    assert code == [], [f.message for f in code]
