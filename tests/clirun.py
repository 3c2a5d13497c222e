"""``wandoc ARGS`` run in-process, as the tests drive it: exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from wandoc.cli import main


def run_wandoc(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
