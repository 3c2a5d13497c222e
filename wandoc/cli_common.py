"""What both command lines (wandoc, wanrun) do the same way: ``-h`` beside ``--help`` on every command and
subcommand, ``--version``, a switch shown as a switch in ``--help``, and a usage error as one line with exit 2.

Imported by both CLI modules before anything else of theirs, and light: typer and click only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.exceptions import TyperException

HELP_OPTIONS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}  # inherited by every subcommand
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def _switch_has_no_type(display: Callable[[Any, Any], str | None]) -> Callable[[Any, Any], str | None]:
    def shown(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else display(self, ctx)

    return shown


def show_switches_as_switches() -> None:
    """typer's rich help (0.2x) prints a switch's type as ``<bool>``, as if ``--offload`` took a value: a switch
    shows no type. Done once, on typer's option class; a typer without the method is left alone."""
    from typer.core import TyperOption

    display = getattr(TyperOption, "display_type_rich", None)
    if display is not None and not getattr(display, "_switch_aware", False):
        shown = _switch_has_no_type(display)
        shown._switch_aware = True  # type: ignore[attr-defined]
        TyperOption.display_type_rich = shown  # type: ignore[method-assign]


def version_option(name: str, version: str) -> Any:
    """A ``--version`` option for a command's root callback: prints ``NAME VERSION`` and exits 0."""

    def show(value: bool) -> None:
        if value:
            typer.echo(f"{name} {version}")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Show the version and exit.")


def usage_line(exc: TyperException) -> str:
    """A click usage error as the one line both commands print: no usage block, no "Try --help", and no
    pydantic "Value error," in front of the reason."""
    return " ".join(exc.format_message().replace("Value error, ", "").split())


def run(app: typer.Typer, args: Sequence[str], prog: str, say: Callable[[str], None]) -> int:
    """Run ``app`` and return its exit code: a usage error is one line (through ``say``) and exit 2, Ctrl-C
    (SIGTERM, SIGHUP) outside a run one line and 128 + the signal."""
    try:
        code = app(args=list(args), prog_name=prog, standalone_mode=False)
    except typer.Abort as exc:
        code = getattr(exc.__cause__, "exit_code", EXIT_INTERRUPTED)
        say(f"interrupted ({getattr(exc.__cause__, 'reason', 'SIGINT')})")
    except TyperException as exc:  # an unknown option, a missing value, a bad choice
        if type(exc).__name__ == "NoArgsIsHelpError":  # `wandoc`, `wandoc rules`: the help, as asked
            typer.echo(exc.ctx.get_help() if getattr(exc, "ctx", None) is not None else exc.format_message())
            return 0
        say(usage_line(exc))
        code = EXIT_USAGE if exc.exit_code in (1, 2) else exc.exit_code
    return code if isinstance(code, int) else 0
