"""Bad and hostile checkouts: a fact or a warning in bounded time and memory, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_wandoc
from wanrepo import FAST_ATTENTION_PY, make_simple_wan_repo, write_files

from wandoc.code.probe import probe_repo
from wandoc.code.reach import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[1]


def _check_json(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    code, out, err = run_wandoc(["check", "--repo", str(repo), "--format", "json", *extra], capsys)
    assert "Traceback" not in err
    return code, json.loads(out)


def test_syntax_error_on_the_path_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_simple_wan_repo(tmp_path)
    (root / "wan/modules/attention.py").write_text(FAST_ATTENTION_PY.replace("def attention(q,", "def attention(q,,"))
    code, report = _check_json(root, capsys, "--fail-on", "warning", "--", "--offload_model", "False")
    found = [f for f in report["findings"] if f["rule"] == "CODE-SYNTAX-ERROR-ON-PATH"]
    assert code == 1 and len(found) == 1
    assert found[0]["message"].startswith("wan/modules/attention.py:12 SyntaxError: invalid syntax")


def test_merge_conflict_markers_are_named(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    conflicted = FAST_ATTENTION_PY.replace(
        "    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)\n",
        "<<<<<<< HEAD\n    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)\n=======\n"
        "    out = F.scaled_dot_product_attention(q, k, v)\n>>>>>>> fast\n",
    )
    (root / "wan/modules/attention.py").write_text(conflicted)
    facts = probe_repo(root, environ={})
    assert facts.import_path.errors_on_path == [
        "wan/modules/attention.py:14 SyntaxError: invalid syntax (merge conflict markers)"
    ]


def test_a_nargs_bomb_is_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "import argparse\np = argparse.ArgumentParser()\n"
            "p.add_argument('--bomb', nargs=300000000)\np.add_argument('--task', default='t2v-A14B')\n"
            "p.add_argument('--ckpt_dir')\n"
            "args = p.parse_args()\n",
            "wan/__init__.py": "",
        },
    )
    facts = probe_repo(tmp_path, given_args=["--task", "t2v-A14B"], environ={})
    assert facts.args_error is None and facts.effective == {}
    assert facts.args_note == "--bomb takes nargs=300,000,000: the parser was not replayed"
    code, report = _check_json(tmp_path, capsys, "--", "--task", "t2v-A14B")
    assert code == 0 and not any(f["rule"] == "ARGS-DO-NOT-PARSE" for f in report["findings"])
    note = next(f for f in report["findings"] if f["rule"] == "ARGS-NOT-REPLAYED")
    assert note["severity"] == "info" and note["message"].startswith("--bomb takes nargs=300,000,000")


_MEASURE = """
import json, resource, sys
from pathlib import Path
from wandoc.code.probe import probe_repo
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t = cpu()  # CPU seconds, not wall: the bound must hold on a machine busy with other work
f = probe_repo(Path(sys.argv[1]), script=sys.argv[2], environ={})
try:  # this process's own high-water mark: ru_maxrss can start at the parent's (the test runner's) on Linux
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    peak = int(hwm.split()[1]) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
path = f.import_path
print(json.dumps({"s": cpu() - t, "mb": peak, "skipped": len(path.skipped), "error": f.error,
                  "modules": len(path.modules), "cut": f.call_graph.cut}))
"""


def _measure(root: Path, script: str = "generate.py") -> dict:
    """The probe in a fresh process: CPU seconds and peak memory (MB)."""
    cmd = [sys.executable, "-c", _MEASURE, str(root), script]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_three_thousand_sparse_files_are_not_read_whole(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    junk = root / "junk"
    junk.mkdir()
    for i in range(3000):
        with (junk / f"blob_{i}.py").open("wb") as fh:
            fh.truncate(1_999_999)  # sparse: under the size bound, all NUL bytes
    got = _measure(root)
    assert got["skipped"] == 3000 and got["error"] is None
    assert got["mb"] < 400 and got["s"] < 20, got


def test_three_thousand_files_on_the_path(tmp_path: Path) -> None:
    files = {"generate.py": "import pkg\n", "pkg/__init__.py": "from . import m0\n"}
    for i in range(3000):
        nxt = f"from . import m{i + 1}\n" if i < 2999 else ""
        files[f"pkg/m{i}.py"] = nxt + f"def f{i}(x):\n    return f{i}(x) + 1\n\n\nf{i}(1)\n"
    write_files(tmp_path, files)
    got = _measure(tmp_path)
    assert got["modules"] == 3002 and got["error"] is None and got["cut"] is None
    assert got["s"] < 20 and got["mb"] < 600, got


def test_a_deep_call_chain_stops_and_says_so(tmp_path: Path) -> None:
    body = "\n".join(f"def f{i}(x):\n    return f{i + 1}(x)\n" for i in range(2000)) + "\ndef f2000(x):\n    return x\n"
    write_files(tmp_path, {"generate.py": body + "\nif __name__ == '__main__':\n    f0(1)\n"})
    facts = probe_repo(tmp_path, environ={})
    assert facts.error is None and facts.call_graph.functions_walked == MAX_DEPTH
    assert facts.call_graph.cut == f"calls nested deeper than {MAX_DEPTH} were not followed; lines below are undecided"


@pytest.mark.skipif(os.name == "nt", reason="sparse files")
def test_a_file_over_the_bound_is_recorded(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    with (root / "wan/weights_table.py").open("wb") as fh:
        fh.truncate(3_000_000)
    (root / "wan/__init__.py").write_text((root / "wan/__init__.py").read_text() + "from . import weights_table\n")
    facts = probe_repo(root, environ={})
    assert facts.import_path.skipped == [
        "wan/weights_table.py: 3,000,000 bytes, over the 2,000,000-byte bound (not read)"
    ]
    assert facts.error is None
