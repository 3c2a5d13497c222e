"""Every snippet of docs/python-api.md runs here, read from the doc so the two cannot drift, on tiny random models
(diffusers' ``WanPipeline`` with two experts, a small Wan-shaped DiT, a ComfyUI-style wrapper and sampler). The
CPU has no CUDA: ``"cuda"`` in a snippet is read as ``"cpu"``. Each snippet's own promise is checked after it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tiny_diffusers
import torch
from test_guards import clean_state as clean_state  # the fixture: the guard left nothing behind
from torch import nn

from wanrun.cli import main as wanrun_main

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
pytestmark = pytest.mark.usefixtures("clean_state")


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


class TinyDiT(nn.Module):
    """Wan's call shape, ``dit(x, t, context)``, at toy size; a class name the targets do not know."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.time = nn.Linear(1, dim)
        self.context = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
                                    for _ in range(2))  # fmt: skip
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: Any, context: torch.Tensor) -> torch.Tensor:
        h = x + self.time(torch.as_tensor(t, dtype=x.dtype).reshape(1, 1, 1)) + self.context(context).mean(1, True)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


class BaseModel(nn.Module):
    """ComfyUI's model wrapper: samplers call ``apply_model``, never its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.diffusion_model = TinyDiT()

    def apply_model(self, x: torch.Tensor, sigma: Any, context: torch.Tensor) -> torch.Tensor:
        return self.diffusion_model(x, sigma, context)


def sample_euler(model: BaseModel, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any],
                 callback: Callable[[dict[str, Any]], Any]) -> torch.Tensor:  # fmt: skip
    """k-diffusion's Euler sampler, shortened: one call of the model and one callback per step."""
    x = x * sigmas[0]
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            denoised = model.apply_model(x, sigmas[i], **extra_args)
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def namespace() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "dit": TinyDiT().eval(),
        "latents": torch.randn(1, 16, 32),
        "context": torch.randn(1, 8, 32),
        "timesteps": [999, 800, 600, 400, 200],
        "model": BaseModel().eval(),
        "noise": torch.randn(1, 16, 32),
        "sigmas": torch.linspace(1.0, 0.1, 5),
        "sample_euler": sample_euler,
    }


def run(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    scope = {**namespace(), **extra}
    exec(compile(snippets()[index].replace('"cuda"', '"cpu"'), f"python-api.md#{index}", "exec"), scope)
    return scope


def test_the_doc_has_the_snippets_these_tests_check() -> None:
    assert len(snippets()) == 8


def test_nothing_watched_is_never_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = run(0, tmp_path, monkeypatch)["g"]
    assert [f.rule for f in g.report.findings] == ["RUN-NOTHING-WATCHED"]
    assert any("nothing watched" in line for line in g.report.summary.not_checked)


def test_a_notebook_loop_with_marked_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = run(1, tmp_path, monkeypatch)["g"]
    r = g.report
    assert [s.forwards for s in r.steps] == [1] * 5 and r.run.steps_total == 5
    assert r.summary.deep_steps == [0, 1] and r.run.found_by == "model"
    assert [p.name for p in r.phases] == ["denoise"]  # the loop, timed though nobody named it


def test_a_notebook_loop_finds_its_denoiser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = run(2, tmp_path, monkeypatch)["g"]
    r = g.report
    assert r.run.found_by == "size" and r.run.denoiser == "TinyDiT"
    assert r.steps and all(s.forwards == 1 for s in r.steps)  # found at its third call: steps from there on
    assert "RUN-NOTHING-WATCHED" not in [f.rule for f in r.findings]


def test_a_diffusers_pipeline_with_two_experts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = tiny_diffusers.pipeline(two_experts=True)
    g = run(3, tmp_path, monkeypatch, pipe=pipe)["g"]
    r = g.report
    assert r.run.denoiser == "WanTransformer3DModel" and r.run.experts == 2 and r.run.steps_total == 6
    assert r.run.found_by == "class WanTransformer3DModel"
    assert [s.forwards for s in r.steps] == [2] * 6  # CFG: two forwards, one step
    assert [p.name for p in r.phases] == ["encode", "denoise", "decode"]
    ran = [s.experts_run for s in r.steps]
    assert ran[0] == ["transformer"] and ran[-1] == ["transformer_2"]  # the boundary falls inside the run
    assert r.summary.denoisers == 2 and not r.findings


def test_a_comfyui_wrapper_called_through_apply_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = run(4, tmp_path, monkeypatch)["g"]
    r = g.report
    assert [s.forwards for s in r.steps] == [1] * 4 and r.run.experts == 1
    assert r.steps[0].deep and r.steps[0].cpu_ops == 0  # a CPU run: CPU compute is no finding
    assert "RUN-NOTHING-WATCHED" not in [f.rule for f in r.findings]


def test_a_callback_only_sampler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = run(5, tmp_path, monkeypatch)["g"]
    assert [s.forwards for s in g.report.steps] == [1] * 4


def test_a_compiled_denoiser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch._dynamo.reset()
    g = run(6, tmp_path, monkeypatch)["g"]
    r = g.report
    assert r.run.compiled and len(r.steps) == 5
    assert all(s.compiles and s.compiles >= 1 for s in r.steps)  # a Python number for t: compiled again each step
    recompiles = {f.rule: f for f in r.findings}["RUN-RECOMPILES"]
    assert recompiles.step == 1 and recompiles.severity == "warning"
    assert any("compiled denoiser" in line for line in r.summary.not_checked)


def test_the_report_written_as_a_user_would_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(7, tmp_path, monkeypatch)
    assert '"schema": "wanrun.report/2"' in (tmp_path / "run.json").read_text()
    assert wanrun_main(["report", str(tmp_path / "run.json")]) == 0
    assert "TinyDiT" in capsys.readouterr().out
