"""`wandoc` as a user drives it: exit codes, JSON contract, replayed facts, bad input, rule authoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_wandoc as run

from wandoc import rulebook
from wandoc.render.rules_doc import rules_markdown

ROOT = Path(__file__).resolve().parents[1]
HIDDEN_GPU = {
    "schema": "wandoc.facts/1",
    "platform": {"os": "Windows", "shell": "powershell"},
    "env": {"vars": {"CUDA_VISIBLE_DEVICES": ""}},
    "nvml": {"available": True, "gpu_count": 1, "visible_indices": [], "gpus": [{"name": "NVIDIA GeForce RTX 4090"}]},
}


@pytest.fixture
def facts_file(tmp_path: Path) -> Path:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(HIDDEN_GPU))
    return path


def test_replayed_facts_give_findings_and_exit_1(facts_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--facts", str(facts_file)], capsys)
    assert code == 1
    assert "ENV-VISIBLE-DEVICES-HIDES-GPU" in out
    assert "Remove-Item Env:CUDA_VISIBLE_DEVICES" in out  # the fix for the shell the facts recorded


def test_json_contract(facts_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--facts", str(facts_file), "--format", "json", "--shell", "bash"], capsys)
    report = json.loads(out)
    assert code == 1
    assert report["schema"] == "wandoc.check/1"
    assert set(report) >= {"schema", "findings", "facts", "rules"}
    assert report["rules"]["evaluated"] >= 1 and report["rules"]["files"]
    finding = next(f for f in report["findings"] if f["rule"] == "ENV-VISIBLE-DEVICES-HIDES-GPU")
    assert set(finding) >= {"rule", "severity", "title", "message", "fix", "evidence"}
    assert finding["severity"] == "error" and "unset CUDA_VISIBLE_DEVICES" in finding["fix"]
    assert report["facts"]["nvml"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 4090"


def test_fail_on_levels(facts_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", "--facts", str(facts_file), "--fail-on", "never"], capsys)[0] == 0
    clean = facts_file.parent / "clean.json"
    clean.write_text(json.dumps({"schema": "wandoc.facts/1"}))
    assert run(["check", "--facts", str(clean), "--fail-on", "warning"], capsys)[0] == 0


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not JSON"),
        ('{"schema": "other/9"}', "schema 'other/9'"),
        ('{"nvml": {"gpu_count": "many"}}', "nvml.gpu_count"),
        ("[1, 2]", "not a facts object"),
    ],
)
def test_bad_facts_files_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    path = tmp_path / "f.json"
    path.write_text(content)
    code, _, err = run(["check", "--facts", str(path)], capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_paths_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["check", "--facts", str(tmp_path / "none.json")], "none.json"),
        (["check", "--repo", str(tmp_path / "nope")], "nope"),
        (["check", "--ckpt-dir", str(tmp_path / "nope")], "nope"),
        (["facts", "--repo", str(tmp_path / "nope")], "nope"),
    ]
    for args, needle in cases:
        code, _, err = run(args, capsys)
        assert code == 2, args
        assert "Traceback" not in err and needle in err


def test_broken_rule_file_exits_2_naming_it(
    tmp_path: Path, facts_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.toml").write_text('id = "X-Y"\ntitle = "t"\nseverity = "loud"\n')
    code, _, err = run(["check", "--facts", str(facts_file), "--rules", str(tmp_path)], capsys)
    assert code == 2 and "bad.toml" in err and "Traceback" not in err


def test_bad_settings_exit_2(tmp_path: Path, facts_file: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wandoc.toml").write_text('fail_on = "sometimes"\n')
    code, _, err = run(["check", "--facts", str(facts_file)], capsys)
    assert code == 2 and "fail_on" in err


def test_settings_disable_a_rule(tmp_path: Path, facts_file: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wandoc.toml").write_text('disabled_rules = ["ENV-VISIBLE-DEVICES-HIDES-GPU"]\n')
    _, out, _ = run(["check", "--facts", str(facts_file)], capsys)
    assert "ENV-VISIBLE-DEVICES-HIDES-GPU" not in out


def test_rules_new_then_test_then_refuses_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rules", "new", "code-my-regression", "--dir", str(tmp_path)], capsys)
    path = tmp_path / "CODE-MY-REGRESSION.toml"
    assert code == 0 and path.exists()
    assert run(["rules", "test", str(path)], capsys)[0] == 0
    code, _, err = run(["rules", "new", "CODE-MY-REGRESSION", "--dir", str(tmp_path)], capsys)
    assert code == 2 and "not overwriting" in err
    path.write_text(path.read_text().replace("fires = false", "fires = true"))
    code, out, _ = run(["rules", "test", str(path)], capsys)
    assert code == 1 and "expected to fire" in out


def test_rules_show_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rules", "show", "env-visible-devices-hides-gpu"], capsys)
    assert code == 0 and "CUDA_VISIBLE_DEVICES" in out
    assert run(["rules", "show", "NO-SUCH-RULE"], capsys)[0] == 2
    code, out, _ = run(["rules", "list"], capsys)
    assert code == 0 and "ENV-VISIBLE-DEVICES-HIDES-GPU" in out


def test_rule_reference_is_current() -> None:
    """docs/rules.md is generated from the shipped rules; regenerate it with `wandoc rules doc > docs/rules.md`."""
    expected = rules_markdown(rulebook.load())
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == expected


def test_check_never_imports_torch(facts_file: Path) -> None:
    code = (
        "import sys\nfrom wandoc.cli import main\n"
        f"try:\n    main(['check', '--facts', {str(facts_file)!r}])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip().endswith("NO-TORCH")
