"""``wanrun generate --repo`` on a GPU: the runnable Wan-like checkout at the Wan-1.3B shape, fast and regressed.

The checkout runs the official WanModel and UniPC solver (tests/runnable_wan.py). The fast commit must run
clean; the tip of ``main`` carries three regressions planted the way forks get them, and each must be named in
the first step with its module: fp32 weights re-cast under bf16 autocast, the text embedding computing on the
CPU, and an attention that syncs with ``.item()`` on every call.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runnable_wan import WAN_1_3B_MODEL, RunnableRepo, make_runnable_repo

from tests import wanrepo
from wandoc.metrics import Report
from wanrun.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ARGS = ("--task", "t2v-1.3B", "--size", "832*480", "--frame_num", "21", "--offload_model", "False")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> RunnableRepo:
    wheel = wanrepo.fetch_wan22_wheel()
    if wheel is None:
        pytest.skip("the wan22 wheel is not available")
    return make_runnable_repo(wheel, tmp_path_factory.mktemp("wan13"), WAN_1_3B_MODEL, dtype="bfloat16")


def run(checkout: RunnableRepo, ref: str, tmp: Path, *extra: str) -> tuple[int, Report]:
    repo = checkout.checkout_at(ref, tmp / ref[:8])
    report = tmp / f"{ref[:8]}.json"
    code = main(["generate", "--repo", str(repo), "-q", "--fail-on", "never", "--report", str(report), "--",
                 *checkout.args(*ARGS, *extra, steps=4)])  # fmt: skip
    return code, Report.model_validate(json.loads(report.read_text()))


def first_step_findings(report: Report) -> dict[str, str | None]:
    return {f.rule: f.module for f in report.findings if f.step == 0 and f.severity != "info"}


def test_fast_commit_runs_clean(checkout: RunnableRepo, tmp_path: Path) -> None:
    code, report = run(checkout, checkout.fast, tmp_path, "--convert_model_dtype")
    assert code == 0, report.summary.error
    assert report.run.denoiser == "WanModel" and report.run.model_param_dtype == "bfloat16"
    assert report.run.autocast_dtype == "bfloat16" and report.run.expects_gpu
    assert [f.rule for f in report.findings if f.severity != "info"] == []
    assert report.summary.output_bytes > 0 and len(report.steps) == 4


def test_regressions_are_named_in_the_first_step(checkout: RunnableRepo, tmp_path: Path) -> None:
    code, report = run(checkout, checkout.cpu_module, tmp_path, "--convert_model_dtype")
    assert code == 0, report.summary.error
    found = first_step_findings(report)
    assert report.run.model_param_dtype == "float32"
    assert "RUN-REPEATED-CASTS" in found, found
    assert "RUN-CPU-COMPUTE" in found and "text_embedding" in (found["RUN-CPU-COMPUTE"] or ""), found
    step0 = report.steps[0]
    assert step0.syncs > 0 and step0.repeated_cast_bytes > 0 and step0.cpu_ops > 0
    assert any("text_embedding" in c for c in step0.cpu_resident)


def test_each_commit_is_slower_than_the_fast_one(checkout: RunnableRepo, tmp_path: Path) -> None:
    _, fast = run(checkout, checkout.fast, tmp_path, "--convert_model_dtype")
    _, slow = run(checkout, checkout.slow_attention, tmp_path, "--convert_model_dtype")
    assert slow.summary.median_step_seconds > 1.1 * fast.summary.median_step_seconds
    assert slow.steps[0].syncs > fast.steps[0].syncs
