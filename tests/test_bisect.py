"""wandoc bisect: the search, skips and stops, bad input, and a user's checkout left exactly as it was.

The judge here is a fake that reads ``state.txt`` of the commit under test (fast, slow, or broken: the run does
not start), so these tests exercise the worktree, git bisect, cleanup and the subprocess contract without a GPU;
the run judge is driven through a stand-in for ``wanrun generate`` and the real ``wanrun compare``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clirun import run_wandoc as run_cli
from limits import as_from_a_terminal
from wanrepo import SLOW_ATTENTION_PY, SLOW_KINDS_HERE, commit_all, git, make_simple_wan_repo, write_files

from wandoc.bisect import (
    BisectError,
    BisectStop,
    Candidate,
    Judgement,
    Verdict,
    bisect,
    check_range,
)
from wandoc.judge import RunJudge, run_args, with_steps
from wandoc.render.bisect import result_lines

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class History:
    root: Path
    shas: list[str]  # shas[0] is the good end, shas[-1] the bad end


def make_history(tmp: Path, states: list[str], slow_attention_at: int | None = None) -> History:
    """A Wan checkout with one commit per state ("fast", "slow", "broken"); the first is the good end."""
    root = make_simple_wan_repo(tmp)
    shas: list[str] = []
    for i, state in enumerate(states):
        write_files(root, {"state.txt": f"{state}\ncommit {i}\n"})
        if i == slow_attention_at:
            write_files(root, {"wan/modules/attention.py": SLOW_ATTENTION_PY})
        shas.append(commit_all(root, f"change {i}: {state}"))
    return History(root, shas)


@dataclass
class FakeJudge:
    """good/bad/skip from the commit's state.txt; remembers what it saw."""

    seen: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def __call__(self, cand: Candidate) -> Judgement:
        self.seen.append(cand.sha)
        self.paths += [cand.checkout, cand.scratch]
        state = (cand.checkout / "state.txt").read_text().split()[0]
        verdict = {"fast": Verdict.GOOD, "slow": Verdict.BAD}.get(state, Verdict.SKIP)
        return Judgement(verdict, f"state {state}")


def user_state(root: Path) -> tuple[str, ...]:
    return (
        git(root, "rev-parse", "HEAD"),
        git(root, "rev-parse", "--abbrev-ref", "HEAD"),  # the branch, or HEAD when detached
        git(root, "status", "--porcelain", "--untracked-files=all"),
        git(root, "stash", "list"),
        git(root, "worktree", "list", "--porcelain"),
        git(root, "for-each-ref"),
    )


def assert_clean(root: Path, before: tuple[str, ...], temp_root: Path, judge: FakeJudge | None = None) -> None:
    assert user_state(root) == before
    assert git(root, "for-each-ref", "refs/bisect") == ""
    assert len(git(root, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert not (root / ".git" / "worktrees").exists() or not any((root / ".git" / "worktrees").iterdir())
    assert list(temp_root.iterdir()) == []
    for p in judge.paths if judge else []:
        assert not p.exists()


# -- the search ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_bad", [1, 2, 5, 8])
def test_finds_the_first_bad_commit(tmp_path: Path, temp_root: Path, first_bad: int) -> None:
    states = ["fast"] * first_bad + ["slow"] * (9 - first_bad)
    h = make_history(tmp_path, states, slow_attention_at=first_bad)
    before = user_state(h.root)
    judge = FakeJudge()
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    assert rng.commits == 8 and not rng.dirty
    result = bisect(rng, judge)
    assert result.first_bad is not None and result.first_bad.sha == h.shas[first_bad]
    assert result.first_bad.subject == f"change {first_bad}: slow"
    assert result.judgement == Judgement(Verdict.BAD, "state slow")
    assert judge.seen[:2] == [h.shas[0], h.shas[-1]]  # the baseline first, then the bad end
    assert len(judge.seen) <= 2 + math.ceil(math.log2(8)) + 1
    assert [s.role for s in result.steps][:2] == ["good", "bad"]
    assert result.change is not None and result.change.info.parent == h.shas[first_bad - 1]
    assert {d.label for d in result.change.differences if d.strong} == SLOW_KINDS_HERE
    assert result.change.git.changed_on_path == ["wan/modules/attention.py"]
    assert_clean(h.root, before, temp_root, judge)


def test_a_first_bad_commit_off_the_run_path_is_called_noise(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "slow", "slow"])  # state.txt: a file the run never imports
    result = bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge())
    assert result.change is not None and result.change.git.changed_off_path == ["state.txt"]
    text = "\n".join(result_lines(result, "CODE-X"))
    assert "files changed on the path: none" in text and "no code fact the doctor reads differs" in text
    assert "warning: this commit changes no file the run imports" in text
    assert text.endswith("next: wandoc rules new CODE-X  (a template: no code fact to build a condition from)")


def test_progress_events_come_in_pairs(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "fast", "slow", "slow", "slow"])
    events = []
    result = bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge(), events.append)
    assert len(events) == 2 * len(result.steps)
    for start, done in zip(events[::2], events[1::2], strict=True):
        assert start.judgement is None and done.judgement is not None and start.sha == done.sha
    candidates = [e for e in events if e.role == "candidate"]
    assert candidates and all(e.runs_left is not None and e.runs_left >= 1 for e in candidates)


def test_a_skipped_commit_elsewhere_does_not_hide_the_answer(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "broken", "fast", "fast", "fast", "slow", "slow", "slow", "slow"])
    result = bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge())
    assert result.first_bad is not None and result.first_bad.sha == h.shas[5]


def test_skips_next_to_the_change_leave_suspects(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "fast", "broken", "slow", "slow"])
    before = user_state(h.root)
    judge = FakeJudge()
    result = bisect(check_range(h.root, h.shas[0], h.shas[-1]), judge)
    assert result.first_bad is None and result.change is None
    assert [s.sha for s in result.suspects] == [h.shas[2], h.shas[3]]
    assert h.shas[2] in judge.seen
    assert result_lines(result, "CODE-X")[1:] == [
        f"  {h.shas[2][:7]} change 2: broken",
        f"  {h.shas[3][:7]} change 3: slow",
    ]
    assert_clean(h.root, before, temp_root, judge)


def test_the_bad_ref_must_judge_bad(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "fast", "fast"])
    before = user_state(h.root)
    with pytest.raises(BisectStop, match=r"the bad ref .* is not worse than .*: nothing to bisect"):
        bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge())
    assert_clean(h.root, before, temp_root)


@pytest.mark.parametrize(("states", "needle"), [
    (["broken", "slow"], "the good ref .* does not run, so there is no baseline"),
    (["fast", "broken"], "the bad ref .* does not run"),
])  # fmt: skip
def test_ends_that_do_not_run_stop_the_search(tmp_path: Path, temp_root: Path, states: list[str], needle: str) -> None:
    h = make_history(tmp_path, states)
    before = user_state(h.root)
    with pytest.raises(BisectStop, match=needle):
        bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge())
    assert_clean(h.root, before, temp_root)


# -- the user's checkout -------------------------------------------------------------------------------


def test_a_dirty_tree_is_left_alone_and_not_bisected(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "slow", "slow"])
    write_files(h.root, {"state.txt": "fast\n", "notes.txt": "mine\n"})  # uncommitted: would say "fast"
    git(h.root, "add", "notes.txt")
    git(h.root, "stash", "push", "-q", "--", "notes.txt")
    write_files(h.root, {"notes.txt": "still mine\n"})
    before = user_state(h.root)
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    assert rng.dirty
    result = bisect(rng, FakeJudge())
    assert result.first_bad is not None and result.first_bad.sha == h.shas[1]
    assert (h.root / "state.txt").read_text() == "fast\n" and (h.root / "notes.txt").read_text() == "still mine\n"
    assert_clean(h.root, before, temp_root)


def test_a_bisection_the_user_has_running_is_not_disturbed(tmp_path: Path, temp_root: Path) -> None:
    h = make_history(tmp_path, ["fast", "fast", "slow", "slow", "slow"])
    git(h.root, "bisect", "start", h.shas[-1], h.shas[0])
    git(h.root, "bisect", "good")
    theirs = (git(h.root, "bisect", "log"), git(h.root, "for-each-ref", "refs/bisect"))
    before = user_state(h.root)
    result = bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge())
    assert result.first_bad is not None and result.first_bad.sha == h.shas[2]
    assert user_state(h.root) == before
    assert (git(h.root, "bisect", "log"), git(h.root, "for-each-ref", "refs/bisect")) == theirs


def test_a_worktree_of_the_user_out_of_reach_is_not_forgotten(tmp_path: Path, temp_root: Path) -> None:
    """A worktree on a drive that is not mounted looks stale to git; a blanket prune would drop its record."""
    h = make_history(tmp_path, ["fast", "slow", "slow"])
    away = tmp_path / "usb" / "wan-experiment"
    git(h.root, "worktree", "add", "-q", "-b", "experiment", str(away), h.shas[0])
    away.parent.rename(tmp_path / "unmounted")
    before = user_state(h.root)
    assert "prunable" in before[4]
    bisect(check_range(h.root, h.shas[0], h.shas[-1]), FakeJudge())
    assert user_state(h.root) == before


def test_an_app_repo_with_the_checkout_in_a_subfolder(story, temp_root: Path) -> None:
    """The founding story's app repo: Wan lives under Wan2.2/; the slow commit is found and explained."""
    before = user_state(story.app)
    seen: list[Path] = []

    def judge(cand: Candidate) -> Judgement:
        seen.append(cand.checkout)
        slow = "enable_flash=False" in (cand.checkout / "wan/modules/attention.py").read_text()
        return Judgement(Verdict.BAD if slow else Verdict.GOOD)

    result = bisect(check_range(story.app, f"{story.slow_sha}~1", story.slow_sha), judge)
    assert result.first_bad is not None and result.first_bad.sha == story.slow_sha
    assert all(p.name == "Wan2.2" for p in seen)
    assert result.change is not None and set(result.change.git.sites_added) == SLOW_KINDS_HERE
    assert user_state(story.app) == before


# -- errors and interruptions clean up too -------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_error_in_the_judge_still_removes_everything(tmp_path: Path, temp_root: Path, error: type) -> None:
    h = make_history(tmp_path, ["fast", "fast", "fast", "slow", "slow", "slow"])
    before = user_state(h.root)
    inner = FakeJudge()

    def judge(cand: Candidate) -> Judgement:
        if len(inner.seen) == 3:
            raise error("stop")
        return inner(cand)

    with pytest.raises(error):
        bisect(check_range(h.root, h.shas[0], h.shas[-1]), judge)
    assert_clean(h.root, before, temp_root, inner)


SIGNALLED = """\
import sys, time
from pathlib import Path
from wandoc.bisect import Judgement, Verdict, bisect, check_range

marker = Path(sys.argv[2])

def judge(cand):
    if cand.baseline:
        return Judgement(Verdict.GOOD)
    part = marker.with_name("partial")
    part.write_text(str(cand.checkout))
    part.rename(marker)  # whole, or not there at all
    time.sleep(120)

try:
    bisect(check_range(Path(sys.argv[1]), "HEAD~3", "HEAD"), judge)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_removes_everything(tmp_path: Path, sig: signal.Signals) -> None:
    h = make_history(tmp_path, ["fast", "slow", "slow", "slow"])
    before = user_state(h.root)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script, marker = tmp_path / "signalled.py", tmp_path / "marker"
    script.write_text(SIGNALLED)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(h.root), str(marker)], env=env, preexec_fn=as_from_a_terminal
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the judge never ran"
        checkout = Path(marker.read_text())
        assert checkout.is_dir()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not checkout.exists()
    assert_clean(h.root, before, tmp)


# -- bad input -----------------------------------------------------------------------------------------


def test_bad_refs(tmp_path: Path) -> None:
    h = make_history(tmp_path, ["fast", "slow"])
    with pytest.raises(BisectError, match=r"^unknown --good ref: nope$"):
        check_range(h.root, "nope", h.shas[-1])
    with pytest.raises(BisectError, match=r"^unknown --bad ref: nada$"):
        check_range(h.root, h.shas[0], "nada")
    with pytest.raises(BisectError, match="are the same commit"):
        check_range(h.root, "HEAD", h.shas[-1])
    with pytest.raises(BisectError, match=r"^--good HEAD is not an ancestor of --bad HEAD~1"):
        check_range(h.root, "HEAD", "HEAD~1")
    git(h.root, "checkout", "-q", "-b", "side", h.shas[0])
    write_files(h.root, {"side.txt": "x"})
    side = commit_all(h.root, "side")
    with pytest.raises(BisectError, match="is not an ancestor"):
        check_range(h.root, side, h.shas[-1])


def test_not_a_repository_missing_folder_and_no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    write_files(plain, {"generate.py": "", "wan/__init__.py": ""})
    with pytest.raises(BisectError, match=f"^not a git repository: {plain.resolve()}$"):
        check_range(plain, "a", "b")
    with pytest.raises(BisectError, match=r"^no such directory: "):
        check_range(tmp_path / "gone", "a", "b")
    h = make_history(tmp_path / "h", ["fast", "slow"])
    monkeypatch.setenv("PATH", "")
    with pytest.raises(BisectError, match=r"^git not found on PATH$"):
        check_range(h.root, h.shas[0], h.shas[1])


# -- the run judge: wanrun generate and wanrun compare as subprocesses ----------------------------------

FAKE_WANRUN = """\
import json, sys
from pathlib import Path

args = sys.argv[1:]
if args[0] == "compare":
    from wanrun.cli import main
    sys.exit(main(args[1:] and args))
split = args.index("--")
opts, rest = args[1:split], args[split + 1 :]
repo = Path(opts[opts.index("--repo") + 1])
report = Path(opts[opts.index("--report") + 1])
with open(sys.argv[0] + ".calls", "a") as log:
    log.write(json.dumps({"opts": opts, "args": rest, "cwd": str(Path.cwd())}) + "\\n")
state = (repo / "state.txt").read_text().split()[0]
if state == "broken":
    print("@FAILED@")
    sys.exit(3)
if state == "interrupted":
    sys.exit(130)
steps = int(rest[rest.index("--sample_steps") + 1]) if "--sample_steps" in rest else 50
seconds = {"fast": 1.0, "leaky": 1.0, "slow": 2.0}[state]
findings = [{"rule": "RUN-SYNCS", "severity": "warning", "title": "syncs", "message": "m"}] if state == "leaky" else []
report.write_text(json.dumps({
    "schema": "wanrun.report/1",
    "steps": [{"index": i, "seconds": seconds} for i in range(steps)],
    "findings": findings,
}))
"""


FAILED_LINE = "wanrun: generate.py failed: ImportError: no module named flash_attn"


@pytest.fixture
def fake_wanrun(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_wanrun.py"
    script.write_text(FAKE_WANRUN.replace("@FAILED@", FAILED_LINE))
    return [sys.executable, str(script)]


def calls(fake: list[str]) -> list[dict]:
    path = Path(fake[1] + ".calls")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_with_steps_replaces_or_appends() -> None:
    assert with_steps(["--task", "t2v", "--sample_steps", "50"], 4) == ["--task", "t2v", "--sample_steps", "4"]
    assert with_steps(["--sample_steps=50", "--x"], 4) == ["--sample_steps=4", "--x"]
    assert with_steps(["--task", "t2v"], 4) == ["--task", "t2v", "--sample_steps", "4"]
    assert with_steps(["--sample_steps", "50"], None) == ["--sample_steps", "50"]


def test_run_args_rebase_untracked_paths_and_keep_outputs_in_scratch(tmp_path: Path) -> None:
    user, tree, scratch = tmp_path / "user", tmp_path / "tree", tmp_path / "scratch"
    write_files(user, {"ckpts/model.safetensors": "", "examples/in.jpg": ""})
    write_files(tree, {"examples/in.jpg": ""})
    args = ["--ckpt_dir", "./ckpts", "--image", "examples/in.jpg", "--save_file", "/home/me/out.mp4",
            "--size=1280*704", "--prompt", "a cat"]  # fmt: skip
    assert run_args(args, user, tree, scratch / "abc-out") == [
        "--ckpt_dir", str((user / "ckpts").resolve()), "--image", "examples/in.jpg",
        "--save_file", str(scratch / "abc-out.mp4"), "--size=1280*704", "--prompt", "a cat",
    ]  # fmt: skip
    assert run_args(["--ckpt_dir=ckpts"], user, tree, scratch / "o") == [f"--ckpt_dir={(user / 'ckpts').resolve()}"]
    prompt = "a cat surfing a wave at sunset, " * 20  # longer than any file name
    assert run_args(["--prompt", prompt, "--x", "a\0b"], user, tree, scratch / "o") == [
        "--prompt",
        prompt,
        "--x",
        "a\0b",
    ]


def test_the_run_judge_drives_wanrun(tmp_path: Path, temp_root: Path, fake_wanrun: list[str]) -> None:
    h = make_history(tmp_path, ["fast", "broken", "fast", "slow", "slow"], slow_attention_at=3)
    write_files(h.root, {"ckpts/model.safetensors": ""})  # untracked, like real checkpoints
    before = user_state(h.root)
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    user_args = ["--ckpt_dir", "ckpts", "--sample_steps", "50", "--save_file", "clip.mp4"]
    judge = RunJudge(rng.checkout, user_args, steps=3, wanrun=fake_wanrun)
    result = bisect(rng, judge)
    assert result.first_bad is not None and result.first_bad.sha == h.shas[3]
    assert result.judgement is not None and result.judgement.verdict is Verdict.BAD
    assert result.judgement.summary == "2 s/step, no new findings"
    assert "s/step" in result.judgement.detail  # wanrun compare's own table
    made = calls(fake_wanrun)
    assert len(made) == len(result.steps)
    for call in made:
        opts, args = call["opts"], call["args"]
        assert opts[opts.index("--script") + 1] == "generate.py" and "--quiet" in opts
        assert call["cwd"] == opts[opts.index("--repo") + 1] != str(h.root)
        assert args[:2] == ["--ckpt_dir", str((h.root / "ckpts").resolve())]
        assert args[2:4] == ["--sample_steps", "3"]
        assert Path(args[5]).parent.parent.name.startswith("wandoc-worktree-") and args[5].endswith(".mp4")
    assert_clean(h.root, before, temp_root)


def test_the_run_judge_skips_runs_that_fail(tmp_path: Path, temp_root: Path, fake_wanrun: list[str]) -> None:
    h = make_history(tmp_path, ["fast", "fast", "broken", "slow"])
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    result = bisect(rng, RunJudge(rng.checkout, wanrun=fake_wanrun))
    skipped = [s for s in result.steps if s.sha == h.shas[2]]
    assert skipped and skipped[0].judgement is not None
    j = skipped[0].judgement
    assert j.verdict is Verdict.SKIP and j.summary == "did not run (the generation failed)"
    assert j.detail == f"wanrun generate: the generation failed ({FAILED_LINE})"
    assert [s.sha for s in result.suspects] == [h.shas[2], h.shas[3]]


def test_new_findings_alone_make_a_commit_bad(tmp_path: Path, temp_root: Path, fake_wanrun: list[str]) -> None:
    h = make_history(tmp_path, ["fast", "fast", "leaky", "leaky"])
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    result = bisect(rng, RunJudge(rng.checkout, wanrun=fake_wanrun))
    assert result.first_bad is not None and result.first_bad.sha == h.shas[2]
    assert result.judgement is not None and result.judgement.summary == "1 s/step, 1 new finding"


def test_the_threshold_reaches_wanrun_compare(tmp_path: Path, temp_root: Path, fake_wanrun: list[str]) -> None:
    h = make_history(tmp_path, ["fast", "slow"])
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    with pytest.raises(BisectStop, match=r"is not worse .*\(2 s/step, no new findings\)"):
        bisect(rng, RunJudge(rng.checkout, threshold=2.5, wanrun=fake_wanrun))


def test_an_interrupted_run_interrupts_the_bisection(tmp_path: Path, temp_root: Path, fake_wanrun: list[str]) -> None:
    h = make_history(tmp_path, ["fast", "fast", "interrupted", "slow"])
    before = user_state(h.root)
    rng = check_range(h.root, h.shas[0], h.shas[-1])
    with pytest.raises(KeyboardInterrupt):
        bisect(rng, RunJudge(rng.checkout, wanrun=fake_wanrun))
    assert_clean(h.root, before, temp_root)


# -- the command ---------------------------------------------------------------------------------------


def test_the_command(tmp_path: Path, temp_root: Path, fake_wanrun: list[str], capsys, monkeypatch) -> None:
    monkeypatch.setattr("wandoc.judge.WANRUN", tuple(fake_wanrun))
    h = make_history(tmp_path, ["fast", "fast", "slow", "slow", "slow"], slow_attention_at=2)
    write_files(h.root, {"state.txt": "dirty\n"})
    before = user_state(h.root)
    args = ["bisect", "--good", h.shas[0], "--bad", "main", "--repo", str(h.root), "--steps", "2"]
    code, out, err = run_cli([*args, "--", "--task", "ti2v-5B"], capsys)
    assert code == 0, err
    short = h.shas[2][:7]
    assert "note: uncommitted changes in the checkout are not part of the bisection" in out
    assert f"baseline {h.shas[0][:7]} change 0: fast ... 1 s/step → ran" in out
    assert f"bad ref {h.shas[-1][:7]} change 4: slow ... 2 s/step, no new findings → bad" in out
    assert f"testing {h.shas[2][:7]} (~" in out
    assert f"first bad commit: {h.shas[2]}\n  change 2: slow\n  Fixture <fixture@example.invalid>, " in out
    assert "  verdict: 2 s/step, no new findings → bad against " in out
    assert "sdpa_flash_disabled: sdp_kernel/sdpa_kernel(enable_flash=False) or enable_flash_sdp(False): 0 -> 1" in out
    assert "files changed on the path: wan/modules/attention.py" in out
    assert f"next: wandoc rules new CODE-SLOW-{short.upper()} --from {short} --repo {h.root}" in out
    assert "warning" not in out
    assert all(c["args"] == ["--task", "ti2v-5B", "--sample_steps", "2"] for c in calls(fake_wanrun))
    assert user_state(h.root) == before


@pytest.mark.parametrize(("extra", "message", "code"), [
    (["--good", "nope", "--bad", "main"], "wandoc: unknown --good ref: nope\n", 2),
    (["--good", "main", "--bad", "main~1"], "wandoc: --good main is not an ancestor of --bad main~1; ", 2),
    (["--good", "main~1", "--bad", "main", "--steps", "0"], "wandoc: --steps: must be 1 or more\n", 2),
    (["--good", "main~1", "--bad", "main", "--threshold", "0.9"],
     "wandoc: --threshold: must be a finite number of 1.0 or more, not 0.9\n", 2),
    (["--good", "main~1", "--bad", "main", "--threshold", "nan"],  # NaN compares false: every commit would be good
     "wandoc: --threshold: must be a finite number of 1.0 or more, not nan\n", 2),
    (["--good", "main~1", "--bad", "main"], "wandoc: the bad ref main is not worse than main~1", 1),
])  # fmt: skip
def test_the_command_refuses_with_one_line(
    tmp_path: Path, temp_root: Path, fake_wanrun: list[str], capsys, monkeypatch, extra, message, code
) -> None:
    monkeypatch.setattr("wandoc.judge.WANRUN", tuple(fake_wanrun))
    h = make_history(tmp_path, ["fast", "fast"])
    got, _, err = run_cli(["bisect", "--repo", str(h.root), *extra], capsys)
    assert got == code
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_commits_that_change_nothing_the_run_reads_are_good_without_a_run(tmp_path: Path, temp_root: Path) -> None:
    """A README or a script off the run's path cannot make the run slower: judged good unrun, never by noise.
    A change to a data file, or to a file on the path, is still run."""
    root = make_simple_wan_repo(tmp_path)
    write_files(root, {"state.txt": "fast\n"})
    shas = [commit_all(root, "good")]
    write_files(root, {"README.md": "# how to run\n", "docs/shot.png": "png"})
    shas.append(commit_all(root, "docs"))
    write_files(root, {"tools/convert.py": "print('one-off')\n"})  # nothing imports it
    shas.append(commit_all(root, "a tool"))
    write_files(root, {"state.txt": "fast\nprompt\n"})  # a data file a script may read: run it
    shas.append(commit_all(root, "data"))
    write_files(root, {"state.txt": "slow\n", "wan/modules/attention.py": SLOW_ATTENTION_PY})
    shas.append(commit_all(root, "slow"))
    judge = FakeJudge()
    result = bisect(check_range(root, shas[0], shas[-1]), judge)
    assert result.first_bad is not None and result.first_bad.sha == shas[4]
    judged = {s.sha: s.judgement for s in result.steps if s.judgement}
    assert shas[2] in judged and shas[2] not in judge.seen  # git bisect tries the middle first: the tool commit
    assert judged[shas[2]] == Judgement(
        Verdict.GOOD,
        "not run: changes only files the run never reads (README.md, docs/shot.png, tools/convert.py)",
        "changes only files the run never reads (README.md, docs/shot.png, tools/convert.py): judged as the good ref",
    )
    assert shas[3] in judge.seen  # the data file's commit ran


@pytest.mark.parametrize(
    ("changed", "on_path", "unread"),
    [
        (["README.md", "docs/a.png", "LICENSE", ".github/workflows/ci.yml"], set(), True),
        (["tools/convert.py"], set(), True),
        (["wan/modules/attention.py"], {"wan/modules/attention.py"}, False),
        (["configs/t2v.json"], set(), False),
        (["prompts.txt"], set(), False),
        (["README.md", "wan/x.yaml"], set(), False),
    ],
)
def test_what_a_run_cannot_read(changed: list[str], on_path: set[str], unread: bool) -> None:
    from wandoc.bisect import unread_change

    assert (unread_change(changed, on_path) is not None) is unread
