"""The code probe: dead env settings, values the code ignores, the run's effective args, sites, launchers."""

from __future__ import annotations

from pathlib import Path

import pytest
from wanrepo import (
    SLOW_ATTENTION_PY,
    SLOW_KINDS,
    FoundingStory,
    make_simple_wan_repo,
    write_files,
)

from wandoc.code.launchers import parse_launcher
from wandoc.code.probe import probe_repo

# -- the founding story --------------------------------------------------------------------------------


def test_the_fast_settings_are_dead(story: FoundingStory) -> None:
    facts = probe_repo(story.app, environ={})  # the app repo: the Wan folder inside it is found
    assert facts.found and facts.is_wan and facts.wan_version == "2.2"
    assert facts.path == str(story.checkout)
    fp16, compile_ = facts.env_vars["WAN_FORCE_FP16"], facts.env_vars["WAN_COMPILE"]
    for use in (fp16, compile_):
        assert not use.read_on_path and use.read_off_path
        assert use.set_by == ["main.js", "run_wan.bat"]
        assert use.launcher_values == ["1"]
        assert use.files_on_path == [] and use.compared_values == [] and not use.value_ignored
    assert fp16.files_off_path == ["wan/modules/attention_main_backup.py"]
    assert compile_.files_off_path == ["diag_gpu.py", "wan/modules/attention_main_backup.py"]
    backup = [r for r in facts.env_reads if r.file == "wan/modules/attention_main_backup.py"]
    assert {(r.var, tuple(r.compared_values), r.on_path) for r in backup} == {
        ("WAN_FORCE_FP16", ("1",), False), ("WAN_COMPILE", ("1",), False), ("USE_SDPA", ("1",), False),
    }  # fmt: skip


def test_slow_attention_sites_are_off_the_path_at_the_tip(story: FoundingStory) -> None:
    facts = probe_repo(story.checkout, environ={})
    on = {s.kind for s in facts.sites if s.on_path}
    off = {s.kind for s in facts.sites if not s.on_path}
    assert not (on & SLOW_KINDS)
    assert off >= SLOW_KINDS
    assert {s.file for s in facts.sites if s.kind in SLOW_KINDS} == {"wan/modules/attention_main_backup.py"}
    assert facts.sdpa_fallback and not facts.flash_attn_required and not facts.fa3_result_indexed
    offload = [s for s in facts.sites if s.kind == "model_offload"]
    assert [(s.function, s.snippet) for s in offload] == [("WanTI2V.generate", "self.model.cpu()")]


def test_launchers_of_the_app_repo(story: FoundingStory) -> None:
    facts = probe_repo(story.checkout, environ={})
    got = {(ls.file, ls.line, ls.var, ls.value) for ls in facts.launchers}
    assert got == {
        ("main.js", 9, "WAN_FORCE_FP16", "1"), ("main.js", 9, "WAN_COMPILE", "1"),
        ("run_wan.bat", 3, "WAN_FORCE_FP16", "1"), ("run_wan.bat", 4, "WAN_COMPILE", "1"),
    }  # fmt: skip


# -- arguments -----------------------------------------------------------------------------------------


def test_arg_facts(story: FoundingStory) -> None:
    args = {a.name: a for a in probe_repo(story.checkout, environ={}).args}
    assert args["offload_model"].type == "str2bool" and args["offload_model"].default is None
    assert args["offload_model"].flags == ["--offload_model"]
    assert args["convert_model_dtype"].action == "store_true" and args["convert_model_dtype"].default is False
    assert args["task"].choices == ["t2v-A14B", "i2v-A14B", "ti2v-5B"]
    assert args["sample_guide_scale"].type == "float" and args["sample_guide_scale"].default == 5.0


def test_offload_defaults_to_true_on_one_process(story: FoundingStory) -> None:
    facts = probe_repo(story.checkout, environ={})
    assert facts.effective["offload_model"] is True and facts.offload_defaulted
    assert facts.effective["sample_steps"] == 50  # a literal runtime default is applied
    assert facts.effective["frame_num"] is None  # one from the config is not (not literal)
    assert facts.args_error is None


def test_offload_given_false(story: FoundingStory) -> None:
    facts = probe_repo(story.checkout, given_args=["--offload_model", "False", "--frame_num", "81"], environ={})
    assert facts.effective["offload_model"] is False and not facts.offload_defaulted
    assert facts.effective["frame_num"] == 81
    assert facts.given_args == ["--offload_model", "False", "--frame_num", "81"]


def test_offload_under_several_processes(story: FoundingStory) -> None:
    facts = probe_repo(story.checkout, environ={"WORLD_SIZE": "2"})
    assert facts.effective["offload_model"] is False and facts.offload_defaulted


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frame_num", "many"], "argument --frame_num: invalid int value: 'many'"),
        (["--offload_model", "maybe"], "Boolean value expected"),
        (["--task", "t2v-1.3B"], "invalid choice: 't2v-1.3B'"),
        (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
        (["--help"], "help"),
    ],
)
def test_bad_args_are_a_fact_not_a_crash(
    story: FoundingStory, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = probe_repo(story.checkout, given_args=argv, environ={})
    assert facts.args_error is not None and message in facts.args_error
    assert facts.effective == {}
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_bool_type_behaves_like_python(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "import argparse\np = argparse.ArgumentParser()\n"
            "p.add_argument('--flag', type=bool, default=True)\np.add_argument('--n', default='5', type=int)\n"
            "p.add_argument('--mode', action=argparse.BooleanOptionalAction, default=False)\n"
        },
    )
    facts = probe_repo(tmp_path, given_args=["--flag", "False", "--mode"], environ={})
    assert facts.effective == {"flag": True, "n": 5, "mode": True}  # bool("False") is True: the classic trap


# -- env values the code ignores -----------------------------------------------------------------------


def test_value_compared_with_1_and_set_to_true(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path, attention=SLOW_ATTENTION_PY)
    ignored = probe_repo(root, environ={"WAN_FORCE_FP16": "true"}).env_vars["WAN_FORCE_FP16"]
    assert ignored.read_on_path and ignored.compared_values == ["1"]
    assert ignored.set_in_env and ignored.value == "true" and ignored.value_ignored
    heeded = probe_repo(root, environ={"WAN_FORCE_FP16": "1"}).env_vars["WAN_FORCE_FP16"]
    assert not heeded.value_ignored
    facts = probe_repo(root, environ={})
    assert {s.kind for s in facts.sites if s.on_path} >= SLOW_KINDS


def test_comparison_shapes(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": (
                "import os\nfrom os import environ as E, getenv\n"
                "A = os.environ.get('A', '').lower() == 'true'\n"
                "B = getenv('B', '0') in ('1', 'yes')\n"
                "C = int(os.getenv('C', '4'))\n"
                "D = E.get('D', '0') != '0'\n"
                "def f():\n    mode = os.environ['MODE'].strip()\n    if mode == 'fast':\n        return 1\n"
                "env = os.environ\nG = env.get('G') == '1'\n"
                "H = 'H' in os.environ and os.environ['H'] == 'on'\n"
                "FLAG = os.getenv('FLAG', '0')\n"
                "def g():\n    return 2 if FLAG == '1' else 3\n"
            )
        },
    )
    environ = {"A": "TRUE", "B": "true", "C": "8", "D": "true", "MODE": "Fast", "G": "1", "H": "off", "FLAG": "yes"}
    facts = probe_repo(tmp_path, environ=environ)
    uses = facts.env_vars
    compared = {r.var: r.compared_values for r in facts.env_reads}
    assert compared == {
        "A": ["true"],
        "B": ["1", "yes"],
        "C": [],
        "D": ["0"],
        "MODE": ["fast"],
        "G": ["1"],
        "H": ["on"],
        "FLAG": ["1"],
    }
    ignored = {var for var, use in uses.items() if use.value_ignored}
    assert ignored == {"B", "MODE", "H", "FLAG"}  # A is lowered first; C is a number; D only rejects "0"; G matches


def test_secrets_are_redacted(story: FoundingStory, tmp_path: Path) -> None:
    facts = probe_repo(story.checkout, environ={"DASH_API_KEY": "sk-live-123"})
    assert facts.env_vars["DASH_API_KEY"].value == "<redacted>"
    assert facts.env_vars["DASH_API_KEY"].read_on_path  # through a function-level import: still the run's code
    write_files(tmp_path, {"generate.py": "", "run.sh": "export HF_TOKEN=hf_abc\npython generate.py\n"})
    launched = probe_repo(tmp_path, environ={})
    assert [ls.value for ls in launched.launchers] == ["<redacted>"]
    assert launched.env_vars["HF_TOKEN"].launcher_values == ["<redacted>"]


# -- launchers -----------------------------------------------------------------------------------------


def test_batch_files() -> None:
    text = (
        '@echo off\nrem set IGNORED=1\n:: set ALSO_IGNORED=1\nset A=1\nset "B=two words"\nset /p C=Prompt?\n'
        "if exist x (set D=4) else (set D=5)\nset E=1 && python generate.py\nsetx F 6\n"
    )
    got = parse_launcher("go.bat", text)
    assert got == [(4, "A", "1"), (5, "B", "two words"), (7, "D", "4"), (7, "D", "5"), (8, "E", "1 "), (9, "F", "6")]


def test_powershell_and_shell() -> None:
    ps = '$env:WAN_X = "1"\n# $env:OFF = "1"\n$env:Y=\'yes\'\n[Environment]::SetEnvironmentVariable("Z", "3", "User")\n'
    assert parse_launcher("go.ps1", ps) == [(1, "WAN_X", "1"), (3, "Y", "yes"), (4, "Z", "3")]
    sh = (
        "#!/bin/bash\n# export OFF=1\nexport A=1 B='two'\nC=3 D=4 python generate.py\nPLAIN=5\n"
        'LATER="6"\nexport LATER\nenv E=7 torchrun generate.py\n'
    )
    assert parse_launcher("go.sh", sh) == [
        (3, "A", "1"), (3, "B", "two"), (4, "C", "3"), (4, "D", "4"), (7, "LATER", "6"), (8, "E", "7"),
    ]  # fmt: skip


def test_javascript_and_package_json() -> None:
    js = (
        "// env: { OFF: '1' }\n"
        "const env = { ...process.env, WAN_A: '1', 'WAN_B': \"2\", N: 3 };\n"
        "process.env.WAN_C = '1';\n"
        "childEnv['WAN_D'] = `4`;\n"
        "spawn(py, args, { env: Object.assign({}, process.env, { WAN_E: 'on', DYN: `${x}` }) });\n"
        "if (process.env.WAN_F === '1') {}\n"
    )
    assert parse_launcher("main.ts", js) == [
        (2, "N", "3"), (2, "WAN_A", "1"), (2, "WAN_B", "2"), (3, "WAN_C", "1"), (4, "WAN_D", "4"), (5, "WAN_E", "on"),
    ]  # fmt: skip
    pkg = '{\n  "scripts": {\n    "gen": "cross-env WAN_G=1 electron .",\n    "x": "echo"\n  }\n}\n'
    assert parse_launcher("package.json", pkg) == [(3, "WAN_G", "1")]
    assert parse_launcher("package.json", "{not json") == []


# -- flash attention, FA3 and friends ------------------------------------------------------------------

FLASH_ONLY_ATTENTION = """\
try:
    import flash_attn_interface
    FA3 = True
except ImportError:
    FA3 = False
import flash_attn


def flash_attention(q, k, v):
    assert FA3 or flash_attn is not None
    if FA3:
        return flash_attn_interface.flash_attn_func(q, k, v)[0]
    return flash_attn.flash_attn_func(q, k, v)


def attention(q, k, v):
    if FA3:
        return flash_attention(q, k, v)
    q = q.float()
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)
"""


def test_flash_required_and_fa3_index(tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path, attention=FLASH_ONLY_ATTENTION)
    model = (root / "wan/modules/model.py").read_text()
    (root / "wan/modules/model.py").write_text(model.replace("attention(q, k, v,", "flash_attention(q, k, v,"))
    (root / "wan/modules/model.py").write_text(
        (root / "wan/modules/model.py").read_text().replace("import attention", "import flash_attention")
    )
    facts = probe_repo(root, environ={})
    assert facts.flash_attn_required and facts.fa3_result_indexed
    assert not facts.sdpa_fallback  # attention()'s SDPA fallback is never called: the model calls flash_attention
    flash = [s for s in facts.sites if s.kind == "flash_attention_call"]
    assert [s.function for s in flash] == ["WanSelfAttention.forward"]  # the guarded call inside attention() is not
    assert any(s.kind == "float_upcast_in_attention" and s.function == "attention" for s in facts.sites)


def test_compile_and_offload_calls_anywhere(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "generate.py": "import torch\nimport pipe\nmodel = torch.compile(pipe.build())\n",
            "pipe.py": "def build(p):\n    p.enable_sequential_cpu_offload()\n    for _ in range(3):\n"
            "        torch.cuda.empty_cache()\n    return p\n",
        },
    )
    kinds = {(s.kind, s.function) for s in probe_repo(tmp_path, environ={}).sites}
    assert {("compile_call", "<module>"), ("sequential_offload", "build"), ("empty_cache_in_loop", "build")} <= kinds


# -- bad input -----------------------------------------------------------------------------------------


def test_missing_path_named_by_the_user(tmp_path: Path) -> None:
    facts = probe_repo(tmp_path / "nope", environ={})
    assert facts.given and not facts.found
    assert facts.error == f"no such directory: {tmp_path / 'nope'}"
    (tmp_path / "file.txt").write_text("x")
    assert probe_repo(tmp_path / "file.txt", environ={}).error == f"not a directory: {tmp_path / 'file.txt'}"


def test_no_checkout_in_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    facts = probe_repo(None, environ={})
    assert not facts.given and not facts.found and facts.error is None


def test_current_directory_checkout(story: FoundingStory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(story.checkout)
    facts = probe_repo(None, environ={})
    assert facts.given and facts.found and facts.is_wan


def test_current_directory_with_the_named_entry_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork run from its own folder with ``--script wgp.py`` has no ``wan/`` beside the script: the folder holding
    the script the user named is the checkout, not "no Wan checkout here"."""
    write_files(
        tmp_path,
        {
            "wgp.py": "import torch\nfrom models.wan.model import WanModel\n",
            "models/wan/model.py": "import torch\nclass WanModel(torch.nn.Module):\n    pass\n",
        },
    )
    monkeypatch.chdir(tmp_path)
    facts = probe_repo(None, script="wgp.py", environ={})
    assert facts.given and facts.found and facts.path == str(tmp_path.resolve())
    assert facts.call_graph.entry == "wgp.py"
    assert not probe_repo(None, script="other.py", environ={}).found  # a script that is not there names no folder


def test_missing_entry_script(tmp_path: Path) -> None:
    write_files(tmp_path, {"wan/modules/model.py": "import os\nX = os.getenv('WAN_X')\n"})
    facts = probe_repo(tmp_path, environ={"WAN_X": "1"})
    assert facts.found and facts.error == "generate.py not found in the checkout"
    assert facts.is_wan and facts.args == [] and facts.effective == {}
    assert facts.env_vars["WAN_X"].read_off_path and not facts.env_vars["WAN_X"].read_on_path
    assert facts.call_graph.entry == "" and all(s.reach == "unknown" for s in facts.sites if s.on_path)


def test_folder_with_no_python(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    facts = probe_repo(tmp_path, environ={})
    assert facts.found and not facts.is_wan and facts.error == "no Python files in the checkout"


def test_syntax_errors_on_and_off_the_path(story: FoundingStory, tmp_path: Path) -> None:
    root = make_simple_wan_repo(tmp_path)
    (root / "wan/utils/utils.py").write_text("def str2bool(v:\n    return v\n")
    (root / "tools_broken.py").write_text("import os\nos.getenv('X'\n")
    facts = probe_repo(root, environ={"X": "1"})  # a file that may read a variable someone set is parsed
    assert "wan/utils/utils.py:1 SyntaxError: '(' was never closed" in facts.import_path.errors
    assert facts.import_path.errors_on_path == [
        "wan/utils/utils.py:1 SyntaxError: '(' was never closed: `def str2bool(v:`"
    ]
    assert any(e.startswith("tools_broken.py:2 SyntaxError") for e in facts.import_path.errors)
    assert "wan/modules/attention.py" in facts.import_path.modules  # the rest of the walk went on
    assert facts.effective["offload_model"] is True


def test_not_wan(tmp_path: Path) -> None:
    write_files(tmp_path, {"generate.py": "import argparse\nargparse.ArgumentParser().add_argument('--x')\n"})
    facts = probe_repo(tmp_path, environ={})
    assert facts.found and not facts.is_wan and facts.wan_version == "" and facts.error is None


# -- the official package ------------------------------------------------------------------------------


def test_official_wan_package(official: Path) -> None:
    facts = probe_repo(official, environ={})
    path = facts.import_path
    assert {"wan/modules/attention.py", "wan/modules/model.py", "wan/text2video.py"} <= set(path.modules)
    assert {"torch", "flash_attn", "flash_attn_interface", "diffusers"} <= set(path.third_party)
    assert path.errors == [] and path.unresolved == []
    assert all(f.startswith("wan/modules/animate/preprocess/") for f in path.unimported) and path.unimported
    read_on = {r.var for r in facts.env_reads if r.on_path}
    assert {"RANK", "WORLD_SIZE", "LOCAL_RANK", "DASH_API_KEY", "DASH_API_URL", "FORCE_QWENVL_VIDEO_READER"} <= read_on
    assert "TOKENIZERS_PARALLELISM" not in facts.env_vars  # the configs set it; nothing reads it
    assert facts.is_wan and facts.wan_version == "2.2"
    assert facts.flash_attn_required and facts.fa3_result_indexed  # the blocks call flash_attention directly
    assert facts.effective["offload_model"] is True and facts.offload_defaulted
