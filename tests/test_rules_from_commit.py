"""wandoc rules new ID --from COMMIT: a rule built from a commit's evidence, that passes its own tests out of the box
and judges other checkouts: it fires on the slow side's facts and stays quiet on the fast side's."""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import run_wandoc as run
from wanrepo import (
    FAST_ATTENTION_PY,
    GENERATE_PY,
    SLOW_ATTENTION_PY,
    SLOW_KINDS_HERE,
    FoundingStory,
    commit_all,
    git,
    make_simple_wan_repo,
    write_files,
)

from wandoc.code.probe import probe_repo
from wandoc.engine import Rule, evaluate, load_rule_file
from wandoc.facts import CodeSite, Facts, RepoFacts
from wandoc.probes.git_compare import probe_ref


def fires(rule: Rule, repo: RepoFacts) -> list[str]:
    return [f.message for f in evaluate([rule], Facts(repo=repo).as_tree())]


def assert_nothing_left(top: Path, temp_root: Path, worktrees: int = 1) -> None:
    assert len(git(top, "worktree", "list", "--porcelain").split("\n\n")) == worktrees
    assert list(temp_root.iterdir()) == []


def test_the_slow_commit_of_the_founding_story(
    story: FoundingStory, tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = git(story.app, "status", "--porcelain"), git(story.app, "rev-parse", "HEAD")
    out_dir = tmp_path / "rules"
    out_dir.mkdir()
    args = ["rules", "new", "code-from-slow", "--from", story.slow_sha, "--repo", str(story.checkout)]
    code, out, err = run([*args, "--dir", str(out_dir)], capsys)
    assert code == 0, err
    path = out_dir / "CODE-FROM-SLOW.toml"
    n = len(SLOW_KINDS_HERE)
    assert out.startswith(f"wrote {path} from commit {story.slow_sha[:7]} ({n} conditions, examples pass)")
    text = path.read_text()
    assert text.startswith(f"# A wandoc rule written from commit {story.slow_sha[:7]} against its parent.")
    assert "[[example.facts.repo.sites]]" in text and 'kind = "sdpa_flash_disabled"' in text

    code, out, _ = run(["rules", "test", str(path)], capsys)
    assert code == 0 and "ok    CODE-FROM-SLOW (2 examples)" in out

    (rule,) = load_rule_file(path)
    slow = probe_ref(story.checkout, story.slow_sha)
    found = fires(rule, slow)
    assert len(found) == 1
    for site in ("sdpa_flash_disabled at wan/modules/attention.py:", "mask_per_call at wan/modules/attention.py:"):
        assert site in found[0]
    assert fires(rule, probe_ref(story.checkout, "well")) == []
    # main's tip kept the slow file as a backup nothing imports: the rule stays quiet there too
    assert fires(rule, probe_repo(story.checkout)) == []
    assert (git(story.app, "status", "--porcelain"), git(story.app, "rev-parse", "HEAD")) == before
    assert_nothing_left(story.app, temp_root, worktrees=2)  # the story's own "well" worktree stays


def test_a_default_that_changed(tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_simple_wan_repo(tmp_path)
    fast = git(root, "rev-parse", "HEAD")
    t5 = '"--t5_cpu", action="store_true", default='
    write_files(root, {"generate.py": GENERATE_PY.replace(t5 + "False", t5 + "True")})
    slow = commit_all(root, "T5 on the CPU by default")
    code, _, err = run(
        ["rules", "new", "ARGS-T5", "--from", "HEAD", "--repo", str(root), "--dir", f"{tmp_path}"], capsys
    )
    assert code == 0, err
    path = tmp_path / "ARGS-T5.toml"
    (rule,) = load_rule_file(path)
    assert "a.name == 't5_cpu' and a.default == true" in rule.when
    assert run(["rules", "test", str(path)], capsys)[0] == 0
    assert fires(rule, probe_ref(root, slow)) == [
        f"The code this run executes has what commit {slow[:7]} (\u201cT5 on the CPU by default\u201d) changed "
        "against its parent, the change that made generation slower: --t5_cpu defaults to true."
    ]
    assert fires(rule, probe_ref(root, fast)) == []
    assert_nothing_left(root, temp_root)


ENV_ATTENTION = FAST_ATTENTION_PY.replace(
    "import torch\n", 'import os\n\nimport torch\n\nCHUNK = int(os.environ.get("WAN_ATTN_CHUNK", "0"))\n', 1
)


def test_an_env_default_and_a_subject_full_of_toml_and_template_characters(
    tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_simple_wan_repo(tmp_path, attention=ENV_ATTENTION)
    fast = git(root, "rev-parse", "HEAD")
    write_files(root, {"wan/modules/attention.py": ENV_ATTENTION.replace('"0"))', '"64"))')})
    subject = 'Attention: chunk "64" by {default} \\ \u00e9t\u00e9 """ \t done'
    slow = commit_all(root, subject)
    args = ["rules", "new", "ENV-CHUNK", "--from", slow[:10], "--repo", str(root), "--dir", str(tmp_path)]
    code, _, err = run(args, capsys)
    assert code == 0, err
    (rule,) = load_rule_file(tmp_path / "ENV-CHUNK.toml")
    assert "r.var == 'WAN_ATTN_CHUNK' and (r.default == '64')" in rule.when
    assert run(["rules", "test", str(tmp_path / "ENV-CHUNK.toml")], capsys)[0] == 0
    (message,) = fires(rule, probe_ref(root, slow))
    assert f"(\u201c{subject}\u201d)" in message
    assert message.endswith("WAN_ATTN_CHUNK read at wan/modules/attention.py:5 with default 64.")
    assert fires(rule, probe_ref(root, fast)) == []


# -- refusals: one line, exit 2, nothing written --------------------------------------------------------


def test_refuses_to_overwrite(tmp_path: Path, story: FoundingStory, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "CODE-X.toml"
    path.write_text("mine\n")
    code, _, err = run(["rules", "new", "CODE-X", "--from", story.slow_sha, "--repo", str(story.checkout),
                        "--dir", str(tmp_path)], capsys)  # fmt: skip
    assert code == 2 and err == f"wandoc: {path} exists; not overwriting it\n"
    assert path.read_text() == "mine\n"


def test_refusals(story: FoundingStory, tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def refused(commit: str, repo: Path = story.checkout) -> str:
        code, out, err = run(["rules", "new", "CODE-X", "--from", commit, "--repo", str(repo), "--dir", str(tmp_path)],
                             capsys)  # fmt: skip
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert not (tmp_path / "CODE-X.toml").exists()
        return err

    assert refused("nope") == "wandoc: --from nope: unknown commit: nope\n"
    root_commit = git(story.app, "rev-list", "--max-parents=0", "HEAD")
    no_parent = f"wandoc: --from {root_commit}: commit {root_commit[:7]} has no parent to compare with\n"
    assert refused(root_commit) == no_parent
    diag = git(story.app, "rev-parse", "well")  # changed diag_gpu.py, which the run never imports
    assert refused(diag).startswith(
        f"wandoc: --from {diag}: commit {diag[:7]} changes no code fact the doctor reads on the run's path "
        "(files changed on the path: none; off the path: diag_gpu.py)"
    )
    # the revert removes the slow sites: nothing on the commit's side for a condition to test
    assert "changes no code fact" in refused(story.revert_sha)
    plain = tmp_path / "plain"
    write_files(plain, {"generate.py": "", "wan/__init__.py": ""})
    assert refused("HEAD", plain) == f"wandoc: --from HEAD: not a git repository: {plain.resolve()}\n"
    assert_nothing_left(story.app, temp_root, worktrees=2)


def test_without_from_the_template_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["rules", "new", "CODE-PLAIN", "--dir", str(tmp_path)], capsys)
    path = tmp_path / "CODE-PLAIN.toml"
    assert code == 0 and out == f"wrote {path}; edit it, then: wandoc rules test {path}\n"
    assert 'when = "nvml.available and any(g.memory_free_bytes < gib(4) for g in nvml.gpus)"' in path.read_text()


def test_more_of_a_kind_is_tested_in_the_files_that_gained_it(
    tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model's own .tolist() calls were there before; the commit added one in attention.py. The rule tests
    attention.py, so a checkout with many syncs in model.py and a clean attention stays quiet."""
    root = make_simple_wan_repo(tmp_path)
    model = (root / "wan/modules/model.py").read_text()
    synced = model.replace(
        "        for block in self.blocks:\n", "        n = seq_lens.tolist()\n        for block in self.blocks:\n"
    )
    write_files(root, {"wan/modules/model.py": synced})
    commit_all(root, "log the sequence lengths")
    write_files(root, {"wan/modules/attention.py": SLOW_ATTENTION_PY})
    slow = commit_all(root, "slow attention")
    code, _, err = run(
        ["rules", "new", "CODE-SYNC", "--from", slow, "--repo", str(root), "--dir", str(tmp_path)], capsys
    )
    assert code == 0, err
    (rule,) = load_rule_file(tmp_path / "CODE-SYNC.toml")
    assert (
        "len([s for s in repo.sites if s.on_path and s.kind == 'item_in_forward' "
        "and s.file == 'wan/modules/attention.py']) >= 1" in rule.when
    )
    assert len(fires(rule, probe_ref(root, slow))) == 1
    assert fires(rule, probe_ref(root, f"{slow}^")) == []
    many = [CodeSite(kind="item_in_forward", file="wan/modules/model.py", line=n) for n in range(40, 45)]
    assert fires(rule, RepoFacts(sites=many)) == []
