"""``wandoc``: judge a Wan setup before launch. Thin: parse, call, render, exit code.

Exit codes: 0 nothing at or above --fail-on; 1 findings at or above it; 2 bad input or usage, with a one-line
reason and no traceback.

Annotations here are evaluated when the functions are defined (no ``from __future__ import annotations``): typer
reads every command's parameters on each run, and would otherwise ``eval`` each annotation string.
"""

import contextlib
import gc
import json
import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from wandoc import __version__
from wandoc.cli_common import HELP_OPTIONS, run, show_switches_as_switches, version_option

show_switches_as_switches()
app = typer.Typer(
    name="wandoc",
    help=(
        "Find what will make a Wan video generation slow, before you launch it.\n\n"
        "\b\nExamples:\n"
        "  wandoc check                          # this machine and the Wan checkout here\n"
        "  wandoc check --repo ~/Wan2.2 -- --task t2v-A14B --ckpt_dir ./Wan2.2-T2V-A14B\n"
        "  wandoc check --repo . --compare well  # differences the run executes\n"
        "  wandoc facts > facts.json             # share; replay: wandoc check --facts facts.json\n"
        "  wandoc bisect --good well --bad main --steps 4 -- ARGS   # the commit that made the run slow\n"
        "  wandoc rules new CODE-MY-REGRESSION   # a rule for a regression you found"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
)
rules_app = typer.Typer(help="Write and test rule files.", no_args_is_help=True, add_completion=False)
app.add_typer(rules_app, name="rules")

_generate_args: list[str] = []  # what followed "--" on the command line: the run's own generate.py arguments


class Format(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    html = "html"


class FailOn(StrEnum):
    error = "error"
    warning = "warning"
    never = "never"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    cmd = "cmd"
    powershell = "powershell"


def fail(message: str, code: int = 2) -> NoReturn:
    from wandoc.render.text import safe  # a message may quote a rule file or a checkout

    typer.echo(f"wandoc: {safe(message, markup=False)}", err=True)
    raise typer.Exit(code)


def _settings():
    from wandoc.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))


def _rules(extra: list[Path] | None, disabled: list[str], checked: tuple[str, ...] = ("facts", "step", "run")):
    from wandoc import rulebook
    from wandoc.engine import RuleFileError

    try:
        return rulebook.load(extra or [], disabled, checked=checked)
    except RuleFileError as exc:
        fail(str(exc))


RulesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--rules", metavar="PATH", help="Extra rule file or folder (repeatable); a rule with a shipped id replaces it."
    ),
]
RepoOpt = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        metavar="DIR",
        help="The Wan checkout (default: this folder, when it holds generate.py and wan/, or the --script named).",
    ),
]
ScriptOpt = Annotated[str, typer.Option("--script", metavar="FILE", help="The entry script inside the checkout.")]
CkptOpt = Annotated[
    Path | None,
    typer.Option("--ckpt-dir", metavar="DIR", help="Checkpoint folder (default: the --ckpt_dir given after --)."),
]
CompareOpt = Annotated[
    str | None,
    typer.Option("--compare", metavar="REF", help="A git ref to compare the checkout with (nothing is checked out)."),
]
DeepOpt = Annotated[
    bool,
    typer.Option(
        "--deep",
        help="Also import torch (and the attention packages) in a subprocess, run a tiny matmul on the GPU, "
        "and time a short uncached read of the checkpoints.",
    ),
]


def _request(repo: Path | None, script: str, ckpt_dir: Path | None, compare: str | None, deep: bool):
    from wandoc.collect import Request

    settings = _settings()
    repo = repo or settings.repo
    ckpt_dir = ckpt_dir or settings.ckpt_dir
    if repo is not None and not repo.is_dir():
        fail(f"--repo {repo}: no such folder")
    if ckpt_dir is not None and not ckpt_dir.is_dir():
        fail(f"--ckpt-dir {ckpt_dir}: no such folder")
    return Request(repo=repo, script=script, ckpt_dir=ckpt_dir, compare=compare, generate_args=_generate_args,
                   deep=deep)  # fmt: skip


def _check_user_input(facts, req) -> None:
    """Problems with what the user named (not with the machine) end the command with exit 2."""
    if req.repo is not None and not facts.repo.found:
        fail(f"--repo {req.repo}: {facts.repo.error or 'not a checkout'}")
    if req.script != "generate.py":  # named by the user; a checkout without the default one is a fact instead
        where = Path(facts.repo.path) if facts.repo.found else (req.repo or Path.cwd())
        if not (where / req.script).is_file():
            fail(f"--script {req.script}: no such file in {where}")
    if req.compare:
        if not facts.git.available:
            fail(f"--compare needs git, which was not found ({facts.git.error or 'not on PATH'})")
        if not facts.git.is_repo:
            fail(f"--compare {req.compare}: {facts.git.error or 'the checkout is not in a git repository'}")
        if facts.git.compare_error:
            fail(f"--compare {req.compare}: {facts.git.compare_error}")


@app.command()
def check(
    repo: RepoOpt = None,
    script: ScriptOpt = "generate.py",
    ckpt_dir: CkptOpt = None,
    compare: CompareOpt = None,
    rules: RulesOpt = None,
    facts_file: Annotated[
        Path | None,
        typer.Option(
            "--facts", metavar="FILE", help="Judge recorded facts (from `wandoc facts`) instead of this machine."
        ),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option("--format", help="text for people, json for scripts, markdown for an issue, html for a page."),
    ] = Format.text,
    fail_on: Annotated[
        FailOn | None, typer.Option("--fail-on", help="Exit 1 when a finding reaches this severity.")
    ] = None,
    shell: Annotated[
        Shell | None, typer.Option("--shell", help="Write fixes for this shell (default: detected).")
    ] = None,
    deep: DeepOpt = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show what each check saw, the passed ones too.")
    ] = False,
) -> None:
    """Judge this machine and a Wan checkout before launch.

    Put the arguments you will give generate.py after `--`, and the doctor judges that exact run
    (e.g. the effective value of --offload_model).

    Nothing of your checkout or environment is changed, and no file is written.
    """
    from wandoc.checklist import checklist, conditions_of, coverage
    from wandoc.collect import collect, load_facts_file
    from wandoc.engine import at_or_above, evaluate
    from wandoc.render.text import comparison_lines, make_console, print_check

    settings = _settings()
    if facts_file is not None:
        rule_list = _rules([*settings.rules_dirs, *(rules or [])], settings.disabled_rules, ("facts",))
        try:
            facts = load_facts_file(facts_file)
        except ValueError as exc:
            fail(f"--facts {exc}")
        source = f"facts recorded in {facts_file}"
    else:
        req = _request(repo, script, ckpt_dir, compare, deep)
        loaded: list = []  # the rules, read while the threaded probes wait on NVML, git and disks
        facts = collect(req, meanwhile=lambda: loaded.append(
            _rules([*settings.rules_dirs, *(rules or [])], settings.disabled_rules, ("facts",))
        ))  # fmt: skip
        rule_list = loaded[0]
        _check_user_input(facts, req)
        source = "this machine"
    chosen_shell = (shell.value if shell else None) or settings.shell or facts.platform.shell or "bash"
    findings = evaluate(rule_list, facts.as_tree(), scope_kind="facts", shell=chosen_shell)
    n_rules = sum(1 for r in rule_list if r.scope == "facts")
    items = checklist(facts, findings, conditions_of(rule_list))
    level = (fail_on.value if fail_on else None) or settings.fail_on
    if fmt is Format.json:
        out = {
            "schema": "wandoc.check/1",
            "findings": [f.model_dump(exclude={"step", "module"}) for f in findings],
            "facts": facts.as_tree(),
            "rules": {"evaluated": n_rules, "files": sorted({r.source for r in rule_list if r.scope == "facts"})},
            "summary": {
                **dict(zip(("checked", "not_checked"), coverage(items, facts.probe_errors), strict=True)),
                "checklist": [item.model_dump() for item in items],
                "shell": chosen_shell,
                "fail_on": level,
            },
        }
        typer.echo(json.dumps(out, indent=2, default=str))
    elif fmt in (Format.markdown, Format.html):  # renderers imported here: text and json runs never load them
        if fmt is Format.html:
            from wandoc.render.html import render_check_html as render_page
        else:
            from wandoc.render.markdown import render_check_markdown as render_page
        page = render_page(findings, facts=facts, rules_evaluated=n_rules, checklist=items, source=source,
                           shell=chosen_shell)  # fmt: skip
        from wandoc.render.text import safe

        typer.echo(safe(page, markup=False), nl=False)
    else:
        print_check(make_console(), findings, rules_evaluated=n_rules, checklist=items, probe_errors=facts.probe_errors,
                    source=source, comparison=comparison_lines(facts.git), verbose=verbose)  # fmt: skip
    raise typer.Exit(1 if at_or_above(findings, level) else 0)


@app.command()
def facts(
    repo: RepoOpt = None,
    script: ScriptOpt = "generate.py",
    ckpt_dir: CkptOpt = None,
    compare: CompareOpt = None,
    deep: DeepOpt = False,
) -> None:
    """Print the facts alone, as JSON: to share in an issue, or to replay with `wandoc check --facts`."""
    from wandoc.collect import collect

    req = _request(repo, script, ckpt_dir, compare, deep)
    result = collect(req)
    _check_user_input(result, req)
    typer.echo(json.dumps(result.as_tree(), indent=2, default=str))


@app.command("bisect")
def bisect_cmd(
    good: Annotated[
        str | None, typer.Option("--good", metavar="REF", help="A commit or branch where the run was fast.")
    ] = None,
    bad: Annotated[str | None, typer.Option("--bad", metavar="REF", help="A later one where it is slow.")] = None,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help="Only remove what a killed bisect left (its temp worktree, run logs and git's record of it).",
        ),
    ] = False,
    repo: RepoOpt = None,
    script: ScriptOpt = "generate.py",
    steps: Annotated[
        int | None,
        typer.Option("--steps", metavar="N", help="Sampling steps of each test run (sets the run's --sample_steps)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", metavar="X", help="A per-step median this many times the good ref's is bad (default 1.10)."
        ),
    ] = None,
) -> None:
    """Find the commit that made the run slow: git bisect, each commit judged by a short guarded run.

    Everything runs in a temporary git worktree: your checkout, branch, index and stash are left alone, and
    uncommitted changes are not part of the search. Each commit runs `wanrun generate --repo` with the
    arguments after `--`, and `wanrun compare` against the good ref's run calls it bad (slower per step, or
    findings the good ref lacks); a commit whose run does not start is skipped.

    A bisect killed by SIGKILL or a power cut leaves its temporary worktree behind; the next bisect removes
    such leftovers (those whose process is gone) before it starts, and --cleanup does only that.

    \b
    Exit codes: 0 found; 1 no answer (the bad ref is not slower, the good ref does not run, skips hide it);
    2 bad input; 130 interrupted.
    Example:
      wandoc bisect --good well --bad main --steps 4 -- --task ti2v-5B --ckpt_dir ./Wan2.2-TI2V-5B
      wandoc bisect --cleanup
    """
    import shlex

    from wandoc.bisect import BisectError, BisectStop, bisect, check_range
    from wandoc.judge import RunJudge
    from wandoc.render.bisect import header, result_lines, step_end, step_start
    from wandoc.render.text import safe
    from wandoc.rule_from_commit import suggested_id
    from wandoc.worktree import leftovers, remove_leftover

    if not cleanup and (good is None or bad is None):
        fail(f"{'--bad' if good else '--good'} REF is needed (or --cleanup alone)")
    for item in leftovers():
        remove_leftover(item)
        typer.echo(safe(f"removed what a killed bisect left: {item.base}", markup=False))
    if cleanup:
        raise typer.Exit(0)
    assert good is not None and bad is not None
    if steps is not None and steps < 1:
        fail("--steps: must be 1 or more")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 1.0):
        fail(f"--threshold: must be a finite number of 1.0 or more, not {threshold}")
    repo = repo or _settings().repo
    try:
        rng = check_range(repo, good, bad, script)
    except BisectError as exc:
        fail(str(exc))
    for line in header(rng):
        typer.echo(safe(line, markup=False))  # commit subjects are the checkout's text
    open_line = [False]  # a progress line waits for its verdict

    def show(step) -> None:
        open_line[0] = step.judgement is None
        typer.echo(safe(step_start(step) if open_line[0] else step_end(step), markup=False), nl=not open_line[0])

    judge = RunJudge(rng.checkout, _generate_args, script, steps, threshold)
    try:
        result = bisect(rng, judge, show, script, _generate_args)
    except (BisectError, BisectStop, KeyboardInterrupt) as exc:
        if open_line[0]:
            typer.echo()
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted; the temporary worktree was removed", 130)
        fail(str(exc), 2 if isinstance(exc, BisectError) else 1)
    rule_id = suggested_id(result.first_bad) if result.first_bad else "CODE-SLOW-REGRESSION"
    for line in result_lines(result, rule_id, f" --repo {shlex.quote(str(repo))}" if repo else ""):
        typer.echo(safe(line, markup=False))
    raise typer.Exit(0 if result.first_bad else 1)


@rules_app.command("list")
def rules_list(rules: RulesOpt = None) -> None:
    """List every rule: id, severity, scope and title."""
    from rich.table import Table

    from wandoc.render.text import make_console, safe

    settings = _settings()
    table = Table("id", "severity", "scope", "title", box=None, header_style="bold")
    for r in sorted(_rules([*settings.rules_dirs, *(rules or [])], []), key=lambda r: r.id):
        off = " (disabled)" if r.id in settings.disabled_rules else ""
        table.add_row(r.id, r.severity, r.scope, safe(r.title + off))
    make_console().print(table)


@rules_app.command("show")
def rules_show(rule_id: Annotated[str, typer.Argument(metavar="ID")], rules: RulesOpt = None) -> None:
    """Show one rule: what it checks, why, the fix, and its examples."""
    from wandoc.render.text import make_console, safe

    settings = _settings()
    found = [r for r in _rules([*settings.rules_dirs, *(rules or [])], []) if r.id == rule_id.upper()]
    if not found:
        fail(f"no rule {rule_id!r}; `wandoc rules list` shows them all")
    r = found[0]
    c = make_console()  # no highlighter: rich's takes quadratic time on a long line
    c.print(f"[bold]{r.id}[/bold]  {r.severity}  ({r.scope})  [dim]{safe(r.source)}[/dim]")
    c.print(safe(r.title))
    if r.explain:
        c.print(f"\n{safe(r.explain.strip())}")
    each = f"\n[bold]each[/bold]  {safe(r.each)} as {r.as_}" if r.each else ""
    c.print(f"\n[bold]when[/bold]  {safe(r.when)}{each}")
    c.print(f"[bold]message[/bold]  {safe(r.message)}")
    for shell_name in ("text", "bash", "cmd", "powershell"):
        value = getattr(r.fix, shell_name)
        if value:
            c.print(f"[bold]fix ({shell_name})[/bold]  {safe(value)}")
    for ex in r.example:
        c.print(f"[dim]example: {'fires' if ex.fires else 'quiet'}: {safe(ex.name)}[/dim]")
    if r.refs:
        c.print(f"[dim]refs: {safe(', '.join(r.refs))}[/dim]")


@rules_app.command("test")
def rules_test(
    files: Annotated[
        list[Path] | None, typer.Argument(metavar="[FILE]...", help="Rule files or folders (default: all).")
    ] = None,
    rules: RulesOpt = None,
) -> None:
    """Run rules' own examples, and check that every path they read exists in the facts schema."""
    from wandoc import rulebook
    from wandoc.engine import RuleFileError, load_rules
    from wandoc.render.text import safe

    settings = _settings()
    try:
        # paths are checked by each rule's test below, so every rule with a problem is listed, not the first
        rule_list = load_rules(files) if files else rulebook.load([*settings.rules_dirs, *(rules or [])], checked=())
    except RuleFileError as exc:
        fail(str(exc))
    failed = 0
    for r in sorted(rule_list, key=lambda r: r.id):
        res = rulebook.test_rule(r)
        if res.ok:
            typer.echo(f"ok    {r.id} ({len(res.passed)} examples)")
        else:
            failed += 1
            typer.echo(f"FAIL  {r.id}  {safe(r.source, markup=False)}")
            for line in res.failed:
                typer.echo(f"        {safe(line, markup=False)}")
    typer.echo(f"{len(rule_list) - failed} passed, {failed} failed")
    raise typer.Exit(1 if failed else 0)


@rules_app.command("doc")
def rules_doc(rules: RulesOpt = None) -> None:
    """Print the rule reference as markdown (docs/rules.md is this output for the shipped rules)."""
    from wandoc.render.rules_doc import rules_markdown

    settings = _settings()
    typer.echo(rules_markdown(_rules([*settings.rules_dirs, *(rules or [])], [])), nl=False)


RULE_TEMPLATE = '''# A wandoc rule. Test it with: wandoc rules test {path}
# Expressions read the facts tree (see `wandoc facts`): dotted paths, comparisons, and/or/not,
# comprehensions, and helpers such as len, any, first, get, gib, bytes, contains, version_lt.
id = "{id}"
title = "What is wrong, in a few words"
severity = "warning"          # error: many times slower or fails; warning: noticeably slower; info
when = "nvml.available and any(g.memory_free_bytes < gib(4) for g in nvml.gpus)"
# each = "nvml.gpus"          # judge a list item by item: one finding per item (named by `as`)
# as = "gpu"
message = "Cite the evidence: only {{bytes(first(nvml.gpus).memory_free_bytes)}} free."
explain = """Why this makes Wan slow, with the figures you measured."""
refs = []

[evidence]
free = "[g.memory_free_bytes for g in nvml.gpus]"

[fix]
text = "What to do, in prose."
bash = "export EXAMPLE=1"
cmd = "set EXAMPLE=1"
powershell = '$env:EXAMPLE="1"'

[[example]]
name = "a machine where it must fire"
fires = true
[example.facts.nvml]
available = true
gpus = [{{ index = 0, name = "NVIDIA GeForce RTX 3090", memory_free_bytes = 1073741824 }}]

[[example]]
name = "a machine where it must stay quiet"
fires = false
[example.facts.nvml]
available = true
gpus = [{{ index = 0, name = "NVIDIA GeForce RTX 3090", memory_free_bytes = 20000000000 }}]
'''


@rules_app.command("new")
def rules_new(
    rule_id: Annotated[str, typer.Argument(metavar="ID", help="AREA-NAME in capitals, e.g. CODE-MY-REGRESSION.")],
    directory: Annotated[Path, typer.Option("--dir", metavar="DIR", help="Where to write ID.toml.")] = Path("."),
    from_commit: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="COMMIT",
            help="Build the condition and examples from what this commit changed on the run's path against its "
            "parent (e.g. the commit `wandoc bisect` found).",
        ),
    ] = None,
    repo: RepoOpt = None,
    script: ScriptOpt = "generate.py",
) -> None:
    """Write a commented rule template with example slots, ready for `wandoc rules test`.

    With --from COMMIT the rule is written from that commit's evidence instead: its condition tests what the
    commit changed (a site kind on the run's path, a default), its examples are the commit's and its parent's facts.
    """
    import re

    from wandoc.engine.rules import parse_rule_text

    rule_id = rule_id.upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9]*-[A-Z0-9][A-Z0-9-]*", rule_id):
        fail(f"{rule_id!r} is not a rule id: use AREA-NAME in capitals, e.g. CODE-MY-REGRESSION")
    if not directory.is_dir():
        fail(f"--dir {directory}: no such folder")
    path = directory / f"{rule_id}.toml"
    if path.exists():
        fail(f"{path} exists; not overwriting it")
    if from_commit is not None:
        from wandoc.rule_from_commit import ChangeError, rule_from_commit

        try:
            text, change = rule_from_commit(rule_id, path, from_commit, repo or _settings().repo, script)
        except ChangeError as exc:
            fail(f"--from {from_commit}: {exc}")
        _write_new(path, text)
        n = len(change.conditions)
        typer.echo(f"wrote {path} from commit {change.info.short} ({n} condition{'s' * (n != 1)}, examples pass)")
        typer.echo(f"adjust its wording, then: wandoc rules test {path}")
        return
    text = RULE_TEMPLATE.format(id=rule_id, path=path)
    parse_rule_text(text, str(path))  # the template itself must load
    _write_new(path, text)
    typer.echo(f"wrote {path}; edit it, then: wandoc rules test {path}")


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``, never replacing a file (one that appeared since the check included), and
    say in one line why a folder does not take it (``--dir /proc``, a read-only disk)."""
    try:
        fh = open(path, "x", encoding="utf-8")  # noqa: SIM115 (closed below, whatever the write does)
    except FileExistsError:
        fail(f"{path} exists; not overwriting it")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    try:
        with fh:
            fh.write(text)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()  # created here, then the write failed (a full disk): leave nothing half-written
        fail(f"cannot write {path}: {exc.strerror or exc}")


@app.callback()
def _root(version: Annotated[bool, version_option("wandoc", __version__)] = False) -> None:
    """Find what will make a Wan video generation slow, before you launch it."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point; everything after a bare `--` is kept for the run's own generate.py."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" in args:
        i = args.index("--")
        _generate_args[:] = args[i + 1 :]
        args = args[:i]
    else:
        _generate_args.clear()
    # A command lives under a second and frees what it builds by reference counting; the cycle collector would
    # only walk the imported modules again and again, and once more at exit (a third of `wandoc check`). Long
    # work runs in child processes. Run as the program (no argv), the process ends here: freezing what exists
    # lets the exit skip that last walk. Called with argv (tests, other tools), the collector is given back.
    from wandoc.streams import tolerate_encoding

    tolerate_encoding()
    collecting = gc.isenabled()
    gc.disable()
    try:
        code = run(app, args, "wandoc", lambda line: typer.echo(f"wandoc: {line}", err=True))
    finally:
        if argv is None:
            gc.freeze()
        elif collecting:
            gc.enable()
    sys.exit(code)


if __name__ == "__main__":
    main()
