"""Text that came from a run or a checkout, made safe to print on a terminal.

Module names, exception messages, paths and a script's output are the user's (or a downloaded checkout's) and
may hold escape sequences: ``ESC ] 0 ;`` retitles the window, ``ESC [ 2 J`` clears it, OSC 52 writes the
clipboard, a carriage return overwrites the line a finding was printed on, and bidirectional overrides reorder
what the reader sees. rich strips only a few of them (bell, backspace, carriage return, vertical tab, form
feed), so every such text goes through ``printable`` before it reaches a console: control characters other than
newline and tab become visible escapes (``\\x1b``), and the meaning of what is printed is kept.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional embeddings, overrides and isolates
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character that steers a terminal written out as an escape."""
    return _UNSAFE.sub(_visible, text) if _UNSAFE.search(text) else text


def printable_data(value: Any) -> Any:
    """``printable`` over every string in nested dicts and lists (a report's ``model_dump``), keys included."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_data(k): printable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_data(v) for v in value]
    return value
