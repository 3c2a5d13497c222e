"""Reading the files a user names (reports, recorded facts, settings): regular files only, never more than a cap.

A FIFO would block the reader forever, ``/dev/zero`` never ends, and a few kilobytes of brackets or digits make
Python's parsers raise ``RecursionError`` or ``ValueError`` from deep inside. Everything here either returns
the parsed data or raises ``FileRefused`` with one line that says why.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

JSON_LIMIT = 64 << 20  # a 10,000-step run report is about 15 MB
TOML_LIMIT = 2 << 20  # settings files
JSON_DEPTH = 64  # reports and facts nest about 8 deep
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


class FileRefused(ValueError):
    """A file that cannot be read as asked; the message is one line for the user, without the path."""


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes. Opened without blocking
    (a FIFO answers at once) and checked on the open descriptor, so a swap after a check cannot fool it."""
    try:
        fd = os.open(path, _READ)
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileRefused("is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused("not a regular file (a FIFO, socket or device); give a file")
        if st.st_size > limit:
            raise FileRefused(f"{_size(st.st_size)}, more than the {_size(limit)} such a file may have")
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise FileRefused(f"grew past the {_size(limit)} such a file may have while it was read")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _depth_over(value: Any, limit: int) -> bool:
    """Whether lists and dicts nest deeper than ``limit``, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json(data: bytes, depth: int = JSON_DEPTH, kind: str = "JSON") -> Any:
    """JSON text to Python, refusing what later code could not handle: nesting past ``depth`` levels, numbers
    past Python's digit limit, text that is not UTF-8. ``kind`` names what was expected ("a JSON report")."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileRefused(f"not {kind}: {exc}") from None
    except RecursionError:
        raise FileRefused(f"not a JSON file this tool writes: nested more than {depth} levels deep") from None
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits()
        raise FileRefused(f"not a JSON file this tool writes: {str(exc).split(';')[0]}") from None
    if _depth_over(value, depth):
        raise FileRefused(f"not a JSON file this tool writes: nested more than {depth} levels deep")
    return value


def load_json(path: Path, limit: int = JSON_LIMIT, depth: int = JSON_DEPTH, kind: str = "JSON") -> Any:
    return parse_json(read_limited(path, limit), depth, kind)


def load_toml(path: Path, limit: int = TOML_LIMIT) -> dict[str, Any]:
    """A TOML file as a dict; ``FileRefused`` for an unreadable, oversized, malformed or absurdly nested one."""
    try:
        text = read_limited(path, limit).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileRefused(f"not valid TOML: {exc}") from None
    except RecursionError:
        raise FileRefused("not valid TOML: nested too deeply") from None
    except ValueError as exc:  # an integer past the digit limit
        raise FileRefused(f"not valid TOML: {str(exc).split(';')[0]}") from None
