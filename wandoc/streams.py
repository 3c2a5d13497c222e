"""Standard streams that never fail on a character they cannot encode.

``wandoc check > check.md`` on Windows writes through the ANSI code page (cp1252), and so does any run with
``PYTHONIOENCODING=cp1252``; the product prints marks (✖ ▲ →) and the user's own text (paths, prompts,
commit subjects) in any script. A character the stream cannot encode is written as ``?`` (as ``\\N{...}``
would be unreadable in a check.md) instead of ending the command with a UnicodeEncodeError traceback.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import sys


def tolerate_encoding() -> None:
    """Switch stdout and stderr to ``errors="replace"`` where their encoding is not a Unicode one; the encoding
    itself is kept (whatever reads the output expects it)."""
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):
            continue  # captured (pytest), or replaced by a caller who chose its behaviour
        try:
            name = codecs.lookup(stream.encoding or "ascii").name
        except LookupError:
            name = ""
        if name.startswith("utf") or stream.errors not in ("strict", None):
            continue
        with contextlib.suppress(ValueError, OSError, io.UnsupportedOperation):
            stream.reconfigure(errors="replace")
