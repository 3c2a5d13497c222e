"""``wanrun``: run a generation under the guards, and read run reports.

Thin on purpose: parse, call, render, exit code. torch and the pipeline are imported inside the command that
needs them, so ``wanrun --help`` and ``wanrun report`` start in a blink. Exit codes: 0 nothing at or above
``--fail-on``; 1 a finding at or above it (or ``--strict`` stopped the run); 2 bad input, one line, no
traceback; 3 the generation itself failed (the report is still written); 128 + the signal when a signal stopped
the run (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), with the report of the steps that ran.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from wandoc import __version__
from wandoc.cli_common import HELP_OPTIONS, run, show_switches_as_switches, version_option

if TYPE_CHECKING:
    from wandoc.engine import Finding
    from wandoc.metrics import Report
    from wanrun.ending import Ending
    from wanrun.report_file import ReportFile

EXIT_FINDINGS, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 1, 2, 3, 130

show_switches_as_switches()
app = typer.Typer(
    name="wanrun",
    help="Run Wan video generation under runtime guards that say, step by step, where the time goes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings=HELP_OPTIONS,
)


@app.callback()
def _root(version: Annotated[bool, version_option("wanrun", __version__)] = False) -> None:
    """Run Wan video generation under runtime guards that say, step by step, where the time goes."""


class FailOn(StrEnum):
    error = "error"
    warning = "warning"
    never = "never"


class UsageProblem(Exception):
    """Bad input found by a command: reported as one line, exit 2."""


def _out() -> Console:
    from wandoc.render.text import make_console

    return make_console()


def _err(message: str) -> None:
    from wandoc.render.text import safe

    typer.echo(f"wanrun: {safe(message, markup=False)}", err=True)


def _bail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    _err(message)
    raise typer.Exit(code)


def _report_file(path: Path | None) -> ReportFile | None:
    """``--report``, checked before anything runs: a path that cannot be written is exit 2 in a second, not
    after an hour of generation."""
    if path is None:
        return None
    from wanrun.report_file import ReportFile

    keeper = ReportFile(path)
    try:
        keeper.check()
    except OSError as exc:
        _bail(f"cannot write the report {path}: {exc.strerror or exc}")
    return keeper


def _check_html(path: Path | None) -> None:
    if path is None:
        return
    from wandoc.atomic import check_writable

    try:
        check_writable(path)
    except OSError as exc:
        _bail(f"cannot write {path}: {exc.strerror or exc}")


def _config_error(exc: Exception) -> str:
    """A pydantic ValidationError as one line naming the option."""
    errors = getattr(exc, "errors", None)
    if not callable(errors) or not errors():
        return str(exc).splitlines()[0]
    err = errors()[0]
    field = "-".join(str(p) for p in err.get("loc", ())[:1]).replace("_", "-")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"--{field}: {msg}" if field else msg


GENERATE_HELP = """Generate a clip under the guards: the built-in Wan-style pipeline, or your checkout's own \
generate.py with --repo DIR and its arguments after --.

Every step is timed and the denoiser's weights are checked for where they live. The first steps, every \
--deep-every-th step and any step that turns slow are inspected op by op: host-device copies, casts, syncs and \
heavy compute on the CPU, each charged to its module (blocks.7.ffn.0). Findings print the moment they first \
happen, with the fix; a summary follows, and the JSON report with --report.

[bold]Examples[/bold]

  wanrun generate                                  [dim]a clean run, seconds on any CPU[/dim]
  wanrun generate --weights-dtype fp32             [dim]a regression: weights re-cast every step (any machine)[/dim]
  wanrun generate --preset wan-1.3b --steps 20 --report run.json  [dim]the real model's shape (GPU)[/dim]
  wanrun generate --preset small --offload         [dim]weights cross PCIe every forward (GPU)[/dim]
  wanrun generate --preset small --cpu-block 3     [dim]a block left on the CPU (GPU)[/dim]
  wanrun generate --preset small --host-copy --strict --fail-on warning  [dim](GPU)[/dim]
  wanrun generate --weights-dtype fp32 --html run.html  [dim]one page with plots[/dim]
  wanrun generate --repo ~/Wan2.2 --report run.json -- --task t2v-A14B --ckpt_dir ./ckpt  [dim]your own checkout[/dim]
  wanrun report run.json                           [dim]read a report again[/dim]

Exit codes: 0 clean; 1 a finding at or above --fail-on, or --strict stopped the run; 2 bad input; 3 the \
generation failed (the report is still written); 130, 143, 129 stopped by Ctrl-C, SIGTERM, SIGHUP (the report \
covers the steps that ran). The report is saved as the run goes: a kill loses at most the step in flight.
"""


@app.command(help=GENERATE_HELP, no_args_is_help=False)
def generate(
    prompt: Annotated[str | None, typer.Option(help="What the clip shows.")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to steer away from (the CFG negative).")] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Model size: demo (the default: 36M parameters, seconds on a CPU), tiny, small or wan-1.3b."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, multiples of 16, e.g. 832x480.")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames, 4k+1 (5, 17, 81).")] = None,
    seed: Annotated[int | None, typer.Option(help="Noise seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    guide_scale: Annotated[
        float | None, typer.Option(help="Classifier-free guidance; 1 = one forward per step.")
    ] = None,
    shift: Annotated[float | None, typer.Option(help="Flow-matching sigma shift.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Compute dtype under autocast: bf16, fp16 or fp32.")] = None,
    weights_dtype: Annotated[
        str | None, typer.Option(help="Dtype the weights are stored in (fp32 re-casts every forward).")
    ] = None,
    offload: Annotated[bool, typer.Option("--offload", help="Per-block offload: weights move in and out.")] = False,
    cpu_block: Annotated[int | None, typer.Option(help="Leave block N on the CPU (a regression to see).")] = None,
    host_copy: Annotated[bool, typer.Option("--host-copy", help="Keep the latents on the host between steps.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output video (.mp4, .gif or .npy).")] = None,
    fps: Annotated[int | None, typer.Option(help="Frames per second of the output.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the JSON run report here.")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as one offline HTML page, with plots.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first error-level finding.")] = False,
    fail_on: Annotated[FailOn, typer.Option(help="Exit 1 on findings at or above this severity.")] = FailOn.error,
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="More rule files or folders (repeatable).")
    ] = None,
    deep_every: Annotated[
        int | None,
        typer.Option(
            help="Inspect every N-th step op by op, whatever it costs (0: the first steps only). "
            "Default: every 10th while that adds under 3% to the run."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-step status; findings and a line.")] = False,
    repo: Annotated[
        Path | None,
        typer.Option(
            help="Run this Wan checkout's own script instead of the built-in pipeline.", rich_help_panel="Your checkout"
        ),
    ] = None,
    script: Annotated[
        str, typer.Option(help="The checkout's entry script.", rich_help_panel="Your checkout")
    ] = "generate.py",
    script_args: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- ARGS]", help="Arguments for the checkout's script, after --.", show_default=False),
    ] = None,
) -> None:
    from pydantic import ValidationError

    from wandoc import rulebook
    from wandoc.engine import RuleFileError
    from wanrun.pipeline.config import PipelineConfig

    given: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "preset": preset,
        "steps": steps,
        "size": size,
        "frames": frames,
        "seed": seed,
        "device": device,
        "guide_scale": guide_scale,
        "shift": shift,
        "dtype": dtype,
        "weights_dtype": weights_dtype,
        "offload": offload or None,
        "cpu_block": cpu_block,
        "host_copy": host_copy or None,
        "out": out,
        "fps": fps,
    }
    if repo is not None:
        builtin = [k for k, v in given.items() if v is not None and k != "device"]
        if builtin:
            _bail(f"--{builtin[0].replace('_', '-')} belongs to the built-in pipeline; with --repo, give your "
                  "script's own arguments after --")  # fmt: skip
        _generate_repo(repo, script, script_args or [], device=device, report=report, html=html, strict=strict,
                       fail_on=fail_on, rules=rules, deep_every=deep_every, quiet=quiet)  # fmt: skip
    if script_args:
        _bail(f"unexpected argument {script_args[0]!r}: arguments after -- go to a checkout's script (--repo DIR)")
    try:
        cfg = PipelineConfig(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        _bail(_config_error(exc))
    if deep_every is not None and deep_every < 0:
        _bail("--deep-every: must be 0 or more")
    try:  # at once, before a model is built: the GPU-only switches on a machine without one
        cfg.check_device(cfg.resolved_device().split(":")[0])
    except ValueError as exc:
        _bail(str(exc))
    keeper = _report_file(report)
    _check_html(html)
    try:
        loaded = rulebook.load(rules or [])
    except RuleFileError as exc:
        _bail(str(exc))

    from wanrun.ending import Ending

    console = _out()
    with Ending(haste=keeper.emergency if keeper is not None else None) as ending:
        code, final, stop = _run(cfg, loaded, strict=strict, deep_every=deep_every, quiet=quiet, console=console,
                                 keeper=keeper)  # fmt: skip
        _finish(console, final, code, stop, keeper=keeper, html=html, quiet=quiet, fail_on=fail_on, ending=ending)


def _generate_repo(
    repo: Path, script: str, args: list[str], *, device: str | None, report: Path | None, html: Path | None,
    strict: bool, fail_on: FailOn, rules: list[Path] | None, deep_every: int | None, quiet: bool,
) -> NoReturn:  # fmt: skip
    """``--repo``: the checkout's own script under the guards (see wanrun.repo_job)."""
    from wandoc import rulebook
    from wandoc.engine import RuleFileError
    from wanrun.ending import Ending
    from wanrun.repo_job import RepoJob, RepoUsageError, rank_info, run_repo_job
    from wanrun.targets import TargetsError, load_targets

    if deep_every is not None and deep_every < 0:
        _bail("--deep-every: must be 0 or more")
    rank, world = rank_info()
    keeper = _report_file(report)
    if keeper is not None and world > 1:  # torchrun: each rank saves its own part; rank 0 merges them at the end
        from wanrun.ranks import part_path

        keeper.path = part_path(keeper.path, rank)
    _check_html(html)
    try:
        loaded, targets = rulebook.load(rules or []), load_targets(rules or [])
    except (RuleFileError, TargetsError) as exc:
        _bail(str(exc))
    console = _out()
    job = RepoJob(repo, script, args, loaded, targets, device=device or "auto", strict=strict,
                  deep_every=deep_every, quiet=quiet)  # fmt: skip
    with Ending(haste=keeper.emergency if keeper is not None else None) as ending:
        try:
            code, final, stop = run_repo_job(job, console, keeper)
        except RepoUsageError as exc:
            _bail(str(exc))
        if world > 1 and report is not None:  # rank 0 writes one report for all ranks
            from wanrun.ranks import gather
            from wanrun.report_file import ReportFile

            try:
                if keeper is not None:
                    keeper.finish(final)  # this rank's part, whole: no checkpoint may follow it
                merged = gather(final, report, rank, world)
            except OSError as exc:
                _bail(f"cannot write the report {report}: {exc}")
            ending.done()
            if merged is None:
                raise typer.Exit(code)
            final, keeper = merged, ReportFile(report)
        if final.summary.error:
            _err(f"{script} failed: {final.summary.error}")
        if rank != 0:
            raise typer.Exit(code)
        _finish(console, final, code, stop, keeper=keeper, html=html, quiet=quiet, fail_on=fail_on, ending=ending)


def _finish(
    console: Console, final: Report, code: int, stop: Finding | None, *, keeper: ReportFile | None,
    html: Path | None, quiet: bool, fail_on: FailOn, ending: Ending | None = None,
) -> NoReturn:  # fmt: skip
    """Write the report (JSON, and the page with --html), show the summary and exit with the contract's code."""
    from wandoc.engine import at_or_above
    from wandoc.render.text import counts_line, safe
    from wanrun.report_view import render

    if keeper is not None:
        try:
            keeper.finish(final)
        except OSError as exc:
            _bail(f"cannot write the report {keeper.path}: {exc.strerror or exc}")
    if ending is not None:
        ending.done()
    if html is not None:
        from wanrun.report_html import write_run_html

        try:
            write_run_html(final, html, title=keeper.path.name if keeper is not None else "")
        except OSError as exc:
            _bail(f"cannot write {html}: {exc.strerror or exc}")
    if quiet:
        steps, seconds = final.summary.steps, final.summary.seconds_total
        console.print(f"{counts_line(final.verdict)}; {steps} steps in {seconds:.1f} s")
    else:
        console.print()
        render(final, console)
    for label, path in (("report", keeper.path if keeper is not None else None), ("html", html)):
        if path is not None:
            console.print(f"[dim]{label}: {safe(path)}[/dim]", soft_wrap=True)
    if stop is not None:
        console.print(f"[red]stopped by --strict at step {stop.step}: {safe(stop.rule)}[/red] {safe(stop.message)}")
    if code == 0 and at_or_above(final.verdict, fail_on.value):  # the doctor's findings count too
        code = EXIT_FINDINGS
    raise typer.Exit(code)


def _run(
    cfg: Any, rules: list[Any], *, strict: bool, deep_every: int | None, quiet: bool, console: Console,
    keeper: ReportFile | None = None,
) -> tuple[int, Report, Finding | None]:  # fmt: skip
    """Run the pipeline under a guard: exit code, report, and the finding that stopped a strict run. With
    ``keeper`` the report is on disk before the first step and after each judged one."""
    import torch

    from wandoc.errors import failure_line
    from wandoc.metrics import RunInfo
    from wanrun.guard import Guard, GuardStop
    from wanrun.live import LiveView
    from wanrun.pipeline import model_summary, run_pipeline

    shape = model_summary(cfg)
    device = cfg.resolved_device()
    compute, _ = cfg.resolved_dtypes(torch.device(device).type)
    autocast = {"bf16": "bfloat16", "fp16": "float16"}.get(compute, "")
    run = RunInfo(
        pipeline="builtin",
        size=f"{cfg.size[0]}x{cfg.size[1]}",
        frames=cfg.frames,
        tokens=shape["tokens"],
        steps_total=cfg.steps,
        autocast_dtype=autocast,
        args=cfg.model_dump(mode="json"),
    )
    if not quiet:  # minutes may pass before step 0 ends (wan-1.3b on a CPU: hours): say what to expect first
        from wandoc.render.text import print_indented
        from wanrun.run_length import expected_length

        line = f"{cfg.preset} on {device}: {expected_length(shape, torch.device(device), compute)}"
        print_indented(console, Text(line, style="dim"), 4, first=0)
    view = LiveView(console, quiet=quiet, total=cfg.steps, gpu=torch.device(device).type != "cpu",
                    waiting="loading the model; step 0 comes next…")  # fmt: skip
    sampling: dict[str, Any] = {} if deep_every is None else {"deep_every": deep_every, "deep_budget": None}
    guard = Guard(device, rules, strict=strict, on_finding=view.on_finding, on_step=view.on_step, run=run,
                  on_progress=keeper.checkpoint if keeper is not None else None, **sampling)  # fmt: skip
    if keeper is not None:
        try:
            keeper.begin(guard.snapshot)
        except OSError as exc:
            _bail(f"cannot write the report {keeper.path}: {exc.strerror or exc}")
    code, stop = 0, None
    try:
        with view, guard:
            result = run_pipeline(cfg, guard)
            guard.record_output(result.out)
    except GuardStop as exc:
        code, stop = EXIT_FINDINGS, exc.finding
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)
        why = getattr(exc, "reason", "")
        if not guard.interrupted:  # stopped before the guard's context took it (the live view starting)
            guard.interrupted, guard.ended_by = True, why or "KeyboardInterrupt"
        _err(f"interrupted{f' ({why})' if why else ''}; the report covers the steps that ran")
    except Exception as exc:
        code = EXIT_FAILED
        _err(f"the generation failed: {failure_line(exc)}")
    return code, guard.report, stop


@app.command("report")
def report_cmd(
    file: Annotated[
        Path, typer.Argument(metavar="REPORT.json", help="A report written by `wanrun generate --report FILE`.")
    ],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the report as one self-contained HTML page, with plots.")
    ] = None,
) -> None:
    """Show a saved run report: phases, per-step costs, findings, and what was and was not checked.

    [bold]Examples[/bold]

      wanrun report run.json
      wanrun report run.json --html run.html       [dim]plots per step, opens offline[/dim]
    """
    from wandoc.render.text import safe
    from wanrun.compare import ReportError, load_report
    from wanrun.report_view import render

    try:
        loaded = load_report(file)
    except ReportError as exc:
        _bail(str(exc))
    if html is not None:
        from wanrun.report_html import render_report_html, write_html

        try:
            write_html(render_report_html(loaded, title=file.name), html)
        except OSError as exc:
            _bail(f"cannot write {html}: {exc.strerror or exc}")
    console = _out()
    render(loaded, console)
    if html is not None:
        console.print(f"[dim]html: {safe(html)}[/dim]", soft_wrap=True)


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(metavar="A.json", help="The baseline run report.")],
    b: Annotated[Path, typer.Argument(metavar="B.json", help="The run to judge against it.")],
    threshold: Annotated[
        float | None,
        typer.Option(help="A per-step median this many times worse counts (default: regress_threshold, 1.10)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write both runs' plots overlaid and the differences as HTML.")
    ] = None,
) -> None:
    """What got worse between two runs: per-step medians side by side, and findings new in the second.

    Exits 1 when something got worse, so a CI job can compare a branch's run with main's.

    [bold]Example[/bold]

      wanrun generate --preset small --report main.json
      wanrun generate --preset small --offload --report branch.json
      wanrun compare main.json branch.json --html compare.html
    """
    from wandoc.render.text import safe
    from wanrun.compare import ReportError, check_threshold, compare, load_report
    from wanrun.report_view import render_comparison

    if threshold is None:
        from wandoc.settings import SettingsError, load_settings

        try:
            threshold = load_settings().regress_threshold
        except SettingsError as exc:
            _bail(str(exc))
    if (problem := check_threshold(threshold)) is not None:
        _bail(f"--threshold: {problem}")
    try:
        base, other = load_report(a), load_report(b)
    except ReportError as exc:
        _bail(str(exc))
    result = compare(base, other, threshold=threshold)
    if html is not None:
        from wanrun.report_html import render_comparison_html, write_html

        try:
            write_html(render_comparison_html(result, base, other, a.name, b.name), html)
        except OSError as exc:
            _bail(f"cannot write {html}: {exc.strerror or exc}")
    console = _out()
    render_comparison(result, console, a.name, b.name)
    if html is not None:
        console.print(f"[dim]html: {safe(html)}[/dim]", soft_wrap=True)
    raise typer.Exit(EXIT_FINDINGS if result.regressed else 0)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: usage errors become one line and exit 2, like every other bad input. Output
    streams that cannot encode a character (``PYTHONIOENCODING=cp1252``, a redirect on Windows) write a
    replacement instead of failing. Run as the program, the process ends even if a script left threads."""
    from wandoc.streams import tolerate_encoding

    tolerate_encoding()
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    code = run(app, args, "wanrun", _err)
    if argv is None:
        from wanrun.ending import stop_stragglers

        stop_stragglers(code)
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
