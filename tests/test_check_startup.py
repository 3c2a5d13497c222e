"""What `wandoc check` spends its half second on, and what it must not: settings without pydantic-settings when
nothing is configured, no torch or step-metric models, the torch build without reading RECORD, the expression
checker's walk, and a --script that names no file."""

from __future__ import annotations

import ast
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from wanrepo import FoundingStory

from wandoc import rulebook, settings
from wandoc.cli import main
from wandoc.engine.expr import _nodes, compile_expr, template_exprs
from wandoc.probes import torch_build


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WANDOC_")}
    env.update(extra)
    return env


# -- settings ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.upper().startswith("WANDOC_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _full_loader_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Any:
        raise AssertionError("pydantic-settings was asked although nothing is configured")

    monkeypatch.setattr(settings, "_sourced", refuse)


def test_unconfigured_settings_are_the_full_loaders_defaults(no_settings: Path, monkeypatch) -> None:
    full = settings.Settings.model_validate(settings._sourced()().model_dump())
    _full_loader_refused(monkeypatch)
    assert settings.load_settings() == full


def test_a_pyproject_without_our_table_is_no_setting(no_settings: Path, monkeypatch) -> None:
    (no_settings / "pyproject.toml").write_text('[project]\nname = "wan"\n[tool.black]\nline-length = 120\n')
    _full_loader_refused(monkeypatch)
    assert settings.load_settings().fail_on == "error"


@pytest.mark.parametrize(
    "source",
    [
        ("env", "wandoc_fail_on", "never"),  # names match case-insensitively, as in pydantic-settings
        ("env", "WANDOC_FAIL_ON", "never"),
        ("wandoc.toml", 'fail_on = "never"\n'),
        ("pyproject.toml", '[tool.wandoc]\nfail_on = "never"\n'),
    ],
)
def test_each_source_reaches_the_full_loader(no_settings: Path, monkeypatch, source: tuple[str, ...]) -> None:
    if source[0] == "env":
        monkeypatch.setenv(source[1], source[2])
    else:
        (no_settings / source[0]).write_text(source[1])
    assert settings.load_settings().fail_on == "never"


@pytest.mark.parametrize("text", ["[tool\n", "tool = 1\n"])
def test_a_broken_pyproject_is_still_worded_by_the_full_loader(no_settings: Path, text: str) -> None:
    (no_settings / "pyproject.toml").write_text(text)
    with pytest.raises(settings.SettingsError, match=r"pyproject\.toml"):
        settings.load_settings()


# -- what a check imports ------------------------------------------------------------------------------------


def test_check_loads_neither_torch_nor_what_it_does_not_use(story: FoundingStory, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom wandoc.cli import main\n"
        "try:\n    main(['check', '--fail-on', 'never'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'pydantic_settings', 'wandoc.metrics') if m in sys.modules), "
        "file=sys.stderr)"
    )
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    env = _clean_env(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), LOCALAPPDATA=str(home / "cache"))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=story.checkout, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stderr.strip().splitlines()[-1] == "[]", out.stderr
    assert "ENV-DEAD-SETTING" in out.stdout
    assert [p.name for p in home.rglob("*")] == ["cache"]  # no file written: no cache to trust or forge


def test_the_program_prints_a_whole_report_and_callers_get_the_collector_back(
    story: FoundingStory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wandoc", "check", "--format", "json", "--fail-on", "never"],
        cwd=story.checkout, env=_clean_env(XDG_CACHE_HOME=str(tmp_path)), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert any(f["rule"] == "ENV-DEAD-SETTING" for f in json.loads(out.stdout)["findings"])
    assert gc.isenabled()
    with pytest.raises(SystemExit):
        main(["check", "--repo", str(story.checkout), "--fail-on", "never"])
    capsys.readouterr()
    assert gc.isenabled() and not gc.get_freeze_count()


# -- the torch build ------------------------------------------------------------------------------------------


def test_probe_torch_reads_no_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Dist(SimpleNamespace):
        @property
        def files(self) -> Any:
            raise AssertionError("RECORD was read: 15,000 lines for one path")

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text("__version__ = '2.6.0+cu124'\ncuda = '12.4'\n")
    monkeypatch.setattr(torch_build.md, "distribution", lambda name: Dist(version="2.6.0+cu124",
                        locate_file=lambda p: tmp_path / p))  # fmt: skip
    facts = torch_build.probe_torch()
    assert facts.error is None and facts.cuda_build == 12.4 and facts.location == str(tmp_path / "torch")


# -- the expression checker -----------------------------------------------------------------------------------


def _shipped_sources() -> list[str]:
    sources: set[str] = set()
    for rule in rulebook.load():
        sources.update(s for s in (rule.when, rule.each, rule.module, *rule.evidence.values()) if s)
        for text in (rule.message, rule.title, *(v for v in rule.fix.model_dump().values() if v)):
            sources.update(e.source for e in template_exprs(text))
    return sorted(sources)


def test_the_checkers_walk_is_ast_walk() -> None:
    hostile = ["().__class__.__bases__[0]", "[x for x in a for y in b]", "f(x=1)", "a[::-1]", "lambda: 1"]
    sources = _shipped_sources()
    assert len(sources) > 300
    for src in sources + hostile:
        tree = ast.parse(src, mode="eval")
        assert _nodes(tree) == list(ast.walk(tree)), src
    assert all(compile_expr(s).source == s.strip() for s in sources)


# -- --script -------------------------------------------------------------------------------------------------


def test_a_script_that_is_not_there_is_a_user_mistake(
    story: FoundingStory, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    def run(args: list[str]) -> int:
        with pytest.raises(SystemExit) as exc:
            main(args)
        return int(exc.value.code or 0)

    for command, repo in (("check", story.app), ("facts", story.checkout)):
        assert run([command, "--repo", str(repo), "--script", "generate_fast.py"]) == 2
        assert capsys.readouterr().err.strip() == f"wandoc: --script generate_fast.py: no such file in {repo}"
    monkeypatch.chdir(tmp_path)
    assert run(["check", "--script", "generate_fast.py"]) == 2
    assert f"no such file in {tmp_path}" in capsys.readouterr().err

    bare = tmp_path / "official"  # a checkout without the default generate.py: a fact the report names
    (bare / "wan").mkdir(parents=True)
    (bare / "wan" / "__init__.py").write_text("")
    (bare / "run.py").write_text("import wan\n")
    assert run(["check", "--repo", str(bare), "--fail-on", "never"]) == 0
    assert "generate.py not found in the checkout" in capsys.readouterr().out
    assert run(["facts", "--repo", str(bare), "--script", "run.py"]) == 0
    assert json.loads(capsys.readouterr().out)["repo"]["entry_script"] == "run.py"
