"""One line for a user: the first thing pydantic refused (``where: why``), or an exception with where it was raised."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}"


def failure_line(exc: BaseException) -> str:
    """``Type: message (at file:line)``, the line being the innermost frame: where a run failed, without the
    traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""
    return f"{type(exc).__name__}: {exc}{where}"
