"""One fixture fork per kind of condition, each with both sides: the site that runs every forward is a warning,
its guarded twin is not (a note, or facts only).

Each fork is a small Wan-shaped checkout: generate.py parses flags and runs a pipeline whose sampling loop calls
a model; the model's blocks call ``attention_hot`` (every forward) and ``attention_guarded`` (behind the
condition under test), both in ``wan/modules/attention.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from wanrepo import write_files

from wandoc import rulebook
from wandoc.checklist import checklist
from wandoc.code.probe import probe_repo
from wandoc.engine import evaluate
from wandoc.facts import CodeSite, Facts, RepoFacts

GENERATE = """\
import argparse

from wan.pipeline import Pipeline


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", type=str, default="t2v-1.3B")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    Pipeline().generate(steps=args.steps)


if __name__ == "__main__":
    main()
"""

PIPELINE = """\
import torch

from .modules.model import WanModel


class Pipeline:
    def __init__(self):
        self.model = WanModel()

    def generate(self, steps):
        x = torch.randn(1, 16, 64)
        for _ in range(steps):
            x = x - 0.1 * self.model(x)
        return x
"""

MODEL = """\
import torch.nn as nn

from .attention import attention_guarded, attention_hot


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self._logged = False

    def forward(self, x):
        x = attention_hot(x, x, x)
        return attention_guarded(x, x, x)


class WanModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(2)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
"""

HOT_MASK = """\
def attention_hot(q, k, v):
    mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""

HEADER = "import os\nimport sys\n\nimport torch\nimport torch.nn.functional as F\n\n"
OTHER_PLATFORM = "win32" if sys.platform != "win32" else "linux"


def make_fork(root: Path, attention: str, files: dict[str, str] | None = None) -> Path:
    write_files(
        root,
        {
            "generate.py": GENERATE,
            "wan/__init__.py": "",
            "wan/pipeline.py": PIPELINE,
            "wan/modules/__init__.py": "",
            "wan/modules/model.py": MODEL,
            "wan/modules/attention.py": HEADER + attention,
            **(files or {}),
        },
    )
    return root


def site(repo: RepoFacts, kind: str, function: str) -> CodeSite:
    found = [s for s in repo.sites if s.kind == kind and s.function == function]
    assert found, (kind, function, [(s.kind, s.function) for s in repo.sites])
    return found[0]


def warned(repo: RepoFacts) -> dict[str, set[str]]:
    """Rule -> functions named by warnings and errors."""
    out: dict[str, set[str]] = {}
    by_line = {(s.file, s.line): s.function for s in repo.sites}
    for f in evaluate(rulebook.load(), Facts(repo=repo).as_tree()):
        if f.severity in ("error", "warning") and f.area in ("CODE", "ATTN"):
            where = (f.evidence.get("file"), f.evidence.get("line"))
            out.setdefault(f.rule, set()).add(by_line.get(where, str(where)))
    return out


def notes(repo: RepoFacts) -> list[str]:
    facts = Facts(repo=repo).as_tree()
    return [f.message for f in evaluate(rulebook.load(), facts) if f.rule == "CODE-CONDITIONAL-SITE"]


def test_platform_branch(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + f"""
IS_OTHER = sys.platform == "{OTHER_PLATFORM}"


def attention_guarded(q, k, v):
    if IS_OTHER:
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v)
"""
    )
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    hot, guarded = site(repo, "mask_per_call", "attention_hot"), site(repo, "mask_per_call", "attention_guarded")
    assert hot.reach == "forward" and hot.module == "model.blocks.*"
    assert guarded.reach == "never" and guarded.reach_why.startswith("another platform: `IS_OTHER`")
    assert warned(repo) == {"CODE-MASK-PER-CALL": {"attention_hot"}}


def test_except_fallback(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + """

def attention_guarded(q, k, v):
    try:
        return F.scaled_dot_product_attention(q, k, v)
    except RuntimeError:
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""
    )
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    guarded = site(repo, "mask_per_call", "attention_guarded")
    assert guarded.reach == "never" and guarded.reach_why.startswith("fallback in `except RuntimeError`")
    assert warned(repo) == {"CODE-MASK-PER-CALL": {"attention_hot"}}


def test_causal_flag_default(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + """

def attention_guarded(q, k, v, causal=False):
    mask = None
    if causal:
        mask = torch.tril(torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""
    )
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    guarded = site(repo, "mask_per_call", "attention_guarded")
    assert guarded.reach == "never" and guarded.reach_why == "branch false for this run: `causal`"
    assert warned(repo) == {"CODE-MASK-PER-CALL": {"attention_hot"}}
    # the same helper called with causal=True from the model: now it runs every forward
    fork = make_fork(tmp_path / "causal", attention)
    model = (
        (fork / "wan/modules/model.py")
        .read_text()
        .replace("attention_guarded(x, x, x)", "attention_guarded(x, x, x, causal=True)")
    )
    (fork / "wan/modules/model.py").write_text(model)
    repo = probe_repo(fork, environ={})
    assert site(repo, "mask_per_call", "attention_guarded").reach == "forward"
    assert warned(repo)["CODE-MASK-PER-CALL"] == {"attention_hot", "attention_guarded"}


def test_per_sample_loop_only_for_a_batch(tmp_path: Path) -> None:
    attention = """\
def attention_hot(q, k, v):
    outs = []
    for start in range(0, q.shape[1], 64):
        outs.append(torch.softmax(q[:, start : start + 64] @ k.transpose(-1, -2), dim=-1) @ v)
    return torch.cat(outs, dim=1)


def attention_guarded(q, k, v):
    b = q.size(0)
    if b > 1:
        outs = [torch.softmax(q[i] @ k[i].transpose(-1, -2), dim=-1) @ v[i] for i in range(b)]
        return torch.stack(outs)
    return F.scaled_dot_product_attention(q, k, v)
"""
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    guarded = site(repo, "python_loop_kernel", "attention_guarded")
    assert guarded.reach == "never" and "one sample per forward" in guarded.reach_why
    assert site(repo, "python_loop_kernel", "attention_hot").reach == "forward"
    assert warned(repo) == {"CODE-CHUNKED-ATTENTION-LOOP": {"attention_hot"}}


def test_first_call_log(tmp_path: Path) -> None:
    attention = """\
def attention_hot(q, k, v):
    print("scale", q.abs().max().item())
    return F.scaled_dot_product_attention(q, k, v)


_LOGGED = False


def attention_guarded(q, k, v):
    global _LOGGED
    if not _LOGGED:
        print("first call", q.abs().max().item())
        _LOGGED = True
    return F.scaled_dot_product_attention(q, k, v)
"""
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    assert site(repo, "item_in_forward", "attention_guarded").reach == "once"
    assert site(repo, "item_in_forward", "attention_hot").reach == "forward"
    assert warned(repo) == {"CODE-SYNC-IN-FORWARD": {"attention_hot"}}


def test_never_called_function(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + """

def attention_guarded(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def attention_unused(q, k, v):
    mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""
    )
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    unused = site(repo, "mask_per_call", "attention_unused")
    assert unused.on_path and unused.reach == "never" and unused.reach_why == "not called from the entry"
    assert warned(repo) == {"CODE-MASK-PER-CALL": {"attention_hot"}}


DISPATCH_GENERATE = """\
import argparse

from wan.pipeline import CpuPipeline, Pipeline

PIPELINES = {"fast": Pipeline, "debug": CpuPipeline}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", type=str, default="fast", choices=["fast", "debug"])
    args = parser.parse_args()
    pipe = PIPELINES[args.mode]()
    pipe.generate(steps=4)


if __name__ == "__main__":
    main()
"""

DISPATCH_PIPELINE = (
    PIPELINE
    + """

class CpuPipeline(Pipeline):
    def generate(self, steps):
        x = torch.randn(1, 16, 64)
        for _ in range(steps):
            x = self.model(x).cpu()
        return x
"""
)


def test_dict_dispatch(tmp_path: Path) -> None:
    attention = "def attention_hot(q, k, v):\n    return q\n\n\ndef attention_guarded(q, k, v):\n    return q\n"
    files = {"generate.py": DISPATCH_GENERATE, "wan/pipeline.py": DISPATCH_PIPELINE}
    fork = make_fork(tmp_path, attention, files)
    fast = probe_repo(fork, given_args=["--mode", "fast"], environ={})
    cpu = site(fast, "cpu_in_forward", "CpuPipeline.generate")
    assert cpu.reach == "never" and cpu.reach_why == "not called from the entry"
    assert "CODE-CPU-IN-FORWARD" not in warned(fast)
    debug = probe_repo(fork, given_args=["--mode", "debug"], environ={})
    assert site(debug, "cpu_in_forward", "CpuPipeline.generate").reach == "forward"
    assert warned(debug)["CODE-CPU-IN-FORWARD"] == {"CpuPipeline.generate"}


ARGS_MODULE = """\
import argparse


def parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--attention", type=str, default="sdpa", choices=["sdpa", "chunked"])
    parser.add_argument("--steps", type=int, default=4)
    return parser.parse_args()
"""

ARGS_GENERATE = """\
from wan.cli import parse
from wan.pipeline import Pipeline
from wan.modules import attention

if __name__ == "__main__":
    args = parse()
    attention.CHUNKED = args.attention == "chunked"
    Pipeline().generate(steps=args.steps)
"""


def test_args_parsed_in_another_module(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + """

def attention_guarded(q, k, v):
    if args_say_chunked():
        outs = []
        for start in range(0, q.shape[1], 64):
            outs.append(F.scaled_dot_product_attention(q[:, start : start + 64], k, v))
        return torch.cat(outs, dim=1)
    return F.scaled_dot_product_attention(q, k, v)


def args_say_chunked():
    return False
"""
    )
    fork = make_fork(tmp_path, attention, {"wan/cli.py": ARGS_MODULE, "generate.py": ARGS_GENERATE})
    repo = probe_repo(fork, given_args=["--attention", "chunked", "--steps", "8"], environ={})
    assert repo.args_file == "wan/cli.py" and repo.args_error is None
    assert repo.effective == {"attention": "chunked", "steps": 8}
    assert site(repo, "mask_per_call", "attention_hot").reach == "forward"
    rejected = probe_repo(fork, given_args=["--attention", "flash"], environ={})
    assert rejected.args_error is not None and "invalid choice: 'flash'" in rejected.args_error


def test_undecidable_condition_is_a_note(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + """

def attention_guarded(q, k, v):
    if q.shape[1] > 4096:
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v)
"""
    )
    repo = probe_repo(make_fork(tmp_path, attention), environ={})
    guarded = site(repo, "mask_per_call", "attention_guarded")
    assert guarded.reach == "conditional" and "q.shape[1] > 4096" in guarded.reach_why
    assert warned(repo) == {"CODE-MASK-PER-CALL": {"attention_hot"}}
    assert any("attention_guarded" in n and "q.shape[1] > 4096" in n for n in notes(repo))


def test_env_switch(tmp_path: Path) -> None:
    attention = (
        HOT_MASK
        + """

def attention_guarded(q, k, v):
    if os.environ.get("WAN_DENSE_MASK", "0") == "1":
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v)
"""
    )
    fork = make_fork(tmp_path, attention)
    off = probe_repo(fork, environ={})
    assert site(off, "mask_per_call", "attention_guarded").reach == "never"
    on = probe_repo(fork, environ={"WAN_DENSE_MASK": "1"})
    assert site(on, "mask_per_call", "attention_guarded").reach == "forward"
    assert warned(on)["CODE-MASK-PER-CALL"] == {"attention_hot", "attention_guarded"}


@pytest.mark.parametrize(
    "files",
    [
        {
            "wan/modules/attention.py": HEADER
            + HOT_MASK
            + "\ndef attention_guarded(q, k, v):\n    return attention_guarded(q, k, v)\n"
        },
        {
            "wan/modules/__init__.py": "from . import model\n",
            "wan/modules/model.py": "from .. import pipeline\n" + MODEL,
        },
    ],
    ids=["recursion", "import-cycle"],
)
def test_recursion_and_import_cycles_end(tmp_path: Path, files: dict[str, str]) -> None:
    fork = make_fork(tmp_path, HOT_MASK + "\ndef attention_guarded(q, k, v):\n    return q\n", files)
    repo = probe_repo(fork, environ={})
    assert repo.error is None and repo.call_graph.cut is None
    assert site(repo, "mask_per_call", "attention_hot").reach == "forward"


def test_an_argument_check_is_assumed_to_pass(tmp_path: Path) -> None:
    checked = GENERATE.replace(
        "    args = parser.parse_args()\n",
        '    parser.add_argument("--ckpt_dir", type=str, default=None)\n    args = parser.parse_args()\n'
        '    if args.ckpt_dir is None:\n        raise SystemExit("--ckpt_dir is required")\n',
    )
    repo = probe_repo(make_fork(tmp_path, HOT_MASK + "\ndef attention_guarded(q, k, v):\n    return q\n",
                                {"generate.py": checked}), environ={})  # fmt: skip
    assert repo.effective["ckpt_dir"] is None  # no --ckpt_dir given: the run that passes the check is judged
    assert site(repo, "mask_per_call", "attention_hot").reach == "forward"


# -- the shapes the official VACE and every Wan block have -----------------------------------------------------

SHAPED_MODEL = """\
import torch.nn as nn

from .attention import attention_guarded, attention_hot


class Attn(nn.Module):
    def forward(self, x):
        return attention_hot(x, x, x)


class OtherAttn(nn.Module):
    def forward(self, x):
        return attention_guarded(x, x, x)


ATTENTIONS = {"self": Attn, "other": OtherAttn}


class Block(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.attn = ATTENTIONS[kind]()

    def forward(self, x):
        def attn_ffn(x):  # Wan's cross_attn_ffn: a function inside forward
            return self.attn(x)

        return attn_ffn(x)


class HintBlock(Block):  # VACE's BaseWanAttentionBlock: the work is in the base class
    def forward(self, x):
        return super().forward(x)


class WanModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([HintBlock("self") for _ in range(2)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
"""


def test_super_nested_functions_and_attributes_built_from_a_dict_are_followed(tmp_path: Path) -> None:
    """A subclass's ``super().forward``, a function defined and called inside forward, and ``self.attn`` built
    from a dict of classes by a key the doctor cannot read: each is followed. The dict's entries are conditional
    (the key decides), never 'never': a line the doctor could not rule out is not said not to run."""
    attention = HOT_MASK + "\n\ndef attention_guarded(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v)\n"
    repo = probe_repo(make_fork(tmp_path, attention, {"wan/modules/model.py": SHAPED_MODEL}), environ={})
    hot = site(repo, "mask_per_call", "attention_hot")
    assert hot.reach == "conditional" and "self.attn is 'self'" in hot.reach_why, (hot.reach, hot.reach_why)
    assert "CODE-MASK-PER-CALL" not in warned(repo)
    assert any("attention_hot" in n for n in notes(repo))


def test_a_front_end_with_a_wan_model_and_no_entry_is_unchecked_not_foreign(tmp_path: Path) -> None:
    """A node pack or library holding its own WanModel (no generate.py) is a Wan checkout whose code was not
    checked (CODE-NO-ENTRY), not a folder without Wan code (CODE-REPO-NOT-WAN); a folder without one is."""
    write_files(tmp_path / "nodes", {"__init__.py": "", "wanvideo/modules/model.py": SHAPED_MODEL.replace(
        "from .attention import attention_guarded, attention_hot\n", "")})  # fmt: skip
    write_files(tmp_path / "other", {"app.py": "print('hello')\n"})
    rules = rulebook.load()
    for folder, expected, absent in (("nodes", "CODE-NO-ENTRY", "CODE-REPO-NOT-WAN"),
                                     ("other", "CODE-REPO-NOT-WAN", "CODE-NO-ENTRY")):  # fmt: skip
        repo = probe_repo(tmp_path / folder, environ={})
        repo.given = True
        found = {f.rule for f in evaluate(rules, Facts(repo=repo).as_tree())}
        assert expected in found and absent not in found, (folder, found)
        # and the checklist claims no walk that did not happen, nor a Wan version nothing on a run's path told
        code = next(i for i in checklist(Facts(repo=repo), [], {}) if i.key == "code")
        assert code.state == "not_checked" and "it imports" not in code.detail, code
        assert repo.wan_version == ""
