"""What docs/troubleshooting.md promises `wandoc check` says, said: a missing or empty checkpoint folder, a folder
that is not a Wan checkout, arguments the checkout rejects, a --deep run on a machine without CUDA; and the
checklist that comes before the findings, every area the doctor looked at (or could not), one line each."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.clirun import run_wandoc as run
from tests.wanrepo import make_simple_wan_repo
from wandoc import rulebook
from wandoc.checklist import checklist, conditions_of, coverage
from wandoc.engine import Finding
from wandoc.facts import Facts, TorchDeep


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_simple_wan_repo(tmp_path_factory.mktemp("co"))


def _json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code, out, _ = run([*args[:1], "--format", "json", *args[1:]], capsys)
    return code, json.loads(out)


def _rules(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"]}


def _line(report: dict, key: str) -> dict:
    return next(item for item in report["summary"]["checklist"] if item["key"] == key)


def test_the_runs_own_ckpt_dir_that_does_not_exist_is_a_blocker(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _json(["check", "--repo", str(checkout), "--", "--ckpt_dir", "./Wan2.2-TI2V-5B"], capsys)
    assert code == 1 and "CKPT-DIR-NOT-FOUND" in _rules(report)
    finding = next(f for f in report["findings"] if f["rule"] == "CKPT-DIR-NOT-FOUND")
    # looked for where generate.py runs: in the checkout, not where the doctor was started
    assert str(checkout / "Wan2.2-TI2V-5B") in finding["message"] and "run's own --ckpt_dir" in finding["message"]
    assert _line(report, "checkpoints")["state"] == "issues"

    weights = checkout / "Wan2.2-TI2V-5B"
    weights.mkdir()
    save_file({"blocks.0.ffn.0.weight": np.ones((4, 4), dtype=np.float32)}, str(weights / "dit.safetensors"))
    try:
        _, report = _json(["check", "--repo", str(checkout), "--", "--ckpt_dir", "./Wan2.2-TI2V-5B"], capsys)
    finally:
        (weights / "dit.safetensors").unlink()
        weights.rmdir()
    assert not _rules(report) & {"CKPT-DIR-NOT-FOUND", "CKPT-NO-WEIGHTS"}
    assert _line(report, "checkpoints")["state"] == "passed"
    assert "1 weight file(s)" in _line(report, "checkpoints")["detail"]


@pytest.mark.parametrize("option", ["--ckpt-dir", "--repo", "--facts"])
def test_the_doctors_own_path_typo_is_bad_input(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """troubleshooting.md: a path given to the doctor's own options that does not exist is one line, exit 2."""
    code, out, err = run(["check", option, str(tmp_path / "nope")], capsys)
    assert code == 2 and not out
    assert err.count("\n") == 1 and option in err and "nope" in err


def test_the_blockers_troubleshooting_lists_are_errors() -> None:
    """'It does not start at all' promises exit 1 for each rule it names: each must be an error."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    section = text.split("## It does not start at all")[1].split("\n## ")[0].split("A path given")[0]
    named = set(re.findall(r"`([A-Z]+-[A-Z0-9-]+)`", section))
    assert {"CKPT-DIR-NOT-FOUND", "CKPT-NO-WEIGHTS", "CODE-REPO-NOT-WAN", "ARGS-DO-NOT-PARSE"} <= named
    severity = {r.id: r.severity for r in rulebook.load()}
    assert {rule: severity[rule] for rule in named} == dict.fromkeys(named, "error")


def test_an_empty_checkpoint_folder_is_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, report = _json(["check", "--ckpt-dir", str(tmp_path / "empty")], capsys)
    assert code == 1 and "CKPT-NO-WEIGHTS" in _rules(report)
    assert _line(report, "checkpoints")["rules"] == ["CKPT-NO-WEIGHTS"]
    assert not any("checkpoint file(s)" in line for line in report["summary"]["checked"])  # no "0 file(s)"


def test_a_folder_that_is_not_a_wan_checkout_is_a_blocker(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "app.py").write_text("print('hello')\n", encoding="utf-8")
    code, report = _json(["check", "--repo", str(tmp_path / "notes")], capsys)
    assert code == 1 and "CODE-REPO-NOT-WAN" in _rules(report)
    assert next(f for f in report["findings"] if f["rule"] == "CODE-REPO-NOT-WAN")["severity"] == "error"
    assert "CODE-NO-ENTRY" not in _rules(report)  # one finding says it, not two
    _, report = _json(["check", "--repo", str(checkout)], capsys)
    assert not _rules(report) & {"CODE-REPO-NOT-WAN", "CODE-NO-ENTRY"}


def test_rejected_arguments_say_why_the_memory_estimate_is_missing(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _json(["check", "--repo", str(checkout), "--", "--task", "t2v-A15B"], capsys)
    assert code == 1 and "ARGS-DO-NOT-PARSE" in _rules(report)
    estimate = _line(report, "estimate")
    assert estimate["state"] == "not_checked" and "do not parse" in estimate["detail"]
    assert any(
        line.startswith("Memory estimate:") and "do not parse" in line for line in report["summary"]["not_checked"]
    )
    _, report = _json(["check", "--repo", str(checkout), "--", "--task", "t2v-A14B"], capsys)
    assert _line(report, "estimate")["state"] == "passed" and "t2v-A14B" in _line(report, "estimate")["detail"]


def _deep(**seen: object) -> Facts:
    facts = Facts()
    facts.torch.installed, facts.torch.version = True, "2.6.0+cu124"
    facts.torch.deep = TorchDeep(ran=True, import_ok=True, seconds=2.0, **seen)  # type: ignore[arg-type]
    return facts


def test_deep_without_cuda_says_no_gpu_matmul_was_possible() -> None:
    items = checklist(_deep(cuda_available=False), [], {})
    line = next(i for i in items if i.key == "torch_runtime")
    assert line.state == "not_checked" and "no GPU matmul was possible" in line.detail
    seen, unseen = coverage(items)
    assert not any("matmul" in s for s in seen) and any("no GPU matmul" in s for s in unseen)

    items = checklist(_deep(cuda_available=True, matmul_ok=True, device_name="NVIDIA H100", matmul_ms=0.4), [], {})
    line = next(i for i in items if i.key == "torch_runtime")
    assert line.state == "passed" and "a matmul ran on NVIDIA H100" in line.detail


def test_deep_on_this_cpu_machine_says_what_was_not_possible(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--deep"], capsys)
    assert code == 0
    assert re.search(r"^\[○\] torch at run time \(--deep\): not checked: torch imported .* no GPU matmul", out, re.M)
    assert "No findings in what was checked" in out and "areas were not" in out


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        ("TORCH-IMPORT-CRASHED", "torch_runtime"),  # a TORCH rule about the --deep import
        ("TORCH-29-CUDNN-CONV3D", "torch"),  # a TORCH rule about the build
        ("ARGS-ULYSSES-HEADS", "parallel"),  # an ARGS rule about the split over GPUs
        ("ARGS-OFFLOAD-WHERE-MODEL-FITS", "args"),  # an ARGS rule that only guards on parallel.requested
        ("SYS-WSL-CKPT-ON-WINDOWS-DRIVE", "platform"),
        ("SYS-OFFLOAD-WILL-SWAP", "ram"),
        ("ENV-ALLOC-CONF-NO-EXPANDABLE", "env"),  # reads platform.os, but is about an env var
    ],
)
def test_each_finding_lands_on_the_line_of_what_its_rule_reads(rule: str, line: str) -> None:
    rules = rulebook.load()
    shipped = next(r for r in rules if r.id == rule)
    finding = Finding(rule=rule, severity=shipped.severity, title="t", message="m", area=shipped.area)
    items = checklist(Facts(), [finding], conditions_of(rules))
    assert [i.key for i in items if i.rules] == [line]
    assert next(i for i in items if i.key == line).state == "issues"


def test_the_checklist_comes_first_and_verbose_shows_what_passed_checks_saw(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(["check", "--repo", str(checkout), "--", "--task", "t2v-A15B"], capsys)
    lines = out.splitlines()
    assert lines[0].startswith("Doctor summary") and lines[1].startswith("[✓] Environment variables")
    areas = [m.group(1) for line in lines if (m := re.match(r"\[[✓✖▲•○]\] ([^:]+):", line))]
    assert areas == ["Environment variables", "Platform", "RAM and swap", "GPUs (NVML)", "torch build",
                     "torch at run time (--deep)", "Attention packages", "Checkout code", "generate.py arguments",
                     "Memory estimate", "Checkpoints", "Branch comparison", "Several GPUs"]  # fmt: skip
    assert re.search(r"^\[✖\] generate.py arguments: .*\[ARGS-DO-NOT-PARSE\]$", out, re.M)
    assert out.index("Doctor summary") < out.index("✖ The generate.py arguments do not parse")
    assert "    functions walked:" not in out
    _, verbose, _ = run(["check", "--repo", str(checkout), "-v", "--", "--task", "t2v-A15B"], capsys)
    assert "    functions walked:" in verbose and "    Python:" in verbose  # a passed check's evidence


def test_piped_output_keeps_the_rule_id_on_the_titles_line(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["check", "--repo", str(checkout), "--", "--task", "t2v-A15B"], capsys)
    assert "  ✖ The generate.py arguments do not parse ARGS-DO-NOT-PARSE\n" in out
    assert not any(line.strip() == "ARGS-DO-NOT-PARSE" for line in out.splitlines())
    assert max(len(line) for line in out.splitlines()) <= 120
    message = next(line for line in out.splitlines() if line.startswith("    The arguments given after --"))
    assert len(message) > 100  # not rich's 80 columns when piped


def test_evidence_is_in_human_units_in_text_and_raw_in_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    facts = json.loads((Path(__file__).parent / "fixtures" / "machines" / "laptop-8gb.json").read_text())
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts), encoding="utf-8")
    _, out, _ = run(["check", "--facts", str(path)], capsys)
    _, page, _ = run(["check", "--facts", str(path), "--format", "html"], capsys)
    _, report = _json(["check", "--facts", str(path)], capsys)
    sized = [(f["rule"], k, v) for f in report["findings"] for k, v in f["evidence"].items() if k.endswith("_bytes")]
    assert sized, "the laptop's findings cite sizes"
    shown = dict(re.findall(r"<dt>([^<]*_bytes)</dt><dd>([^<]*)</dd>", page))  # the page's evidence rows
    for _, key, value in sized:
        assert isinstance(value, int | float | list)  # the JSON keeps the number
        if isinstance(value, int) and value >= 2**30:
            assert f"{key}: {value}" not in out and re.search(rf"{key}: [\d.]+ GiB", out)
            assert re.fullmatch(r"[\d.]+ GiB", shown[key]), (key, shown.get(key))


# facts fields that hold a size: named with "bytes" (memory_free_bytes, dit_bytes_on_disk), and the estimate's
# peak_vram_* figures
_SIZE_FIELD = re.compile(r"(^|_)bytes(_|$)|^peak_vram_")


def _reads_bytes(node: object) -> bool:
    import ast

    if isinstance(node, ast.Attribute):
        return bool(_SIZE_FIELD.search(node.attr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        return _reads_bytes(node.left) and _reads_bytes(node.right)
    if isinstance(node, ast.ListComp):
        return _reads_bytes(node.elt)
    if isinstance(node, ast.IfExp):
        return _reads_bytes(node.body) and _reads_bytes(node.orelse)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("first", "max", "min", "sum")
    ):
        return bool(node.args) and _reads_bytes(node.args[0])
    return False


def test_every_evidence_of_a_size_says_so_in_its_key() -> None:
    """Views show a size in GiB by its evidence key (``*_bytes``): a rule that names a size otherwise would show
    125720000000 to the user."""
    import ast

    unnamed = [
        f"{r.id}: {key} = {source}"
        for r in rulebook.load()
        for key, source in r.evidence.items()
        if _reads_bytes(ast.parse(source, mode="eval").body) and not (key == "bytes" or key.endswith("_bytes"))
    ]
    assert unnamed == []
