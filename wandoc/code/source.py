"""Read-only access to one side of a checkout: the working tree, or a git ref (``GitSource`` in the git probe).

The walk, the sites and the env reads all read code through a ``Source``, so one analysis serves both sides of a
branch comparison. Bounds live here: a file over ``MAX_FILE_BYTES`` is never read whole (generated data, not
code), and a tree over ``MAX_PY_FILES`` is cut, with both recorded by the caller as skipped.
"""

from __future__ import annotations

import codecs
import os
import tokenize
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Protocol

MAX_FILE_BYTES = 2_000_000  # larger .py files are generated data, not code worth walking
MAX_PY_FILES = 5000
KEPT_TEXT_CHARS = 48_000_000  # texts kept for the probes' later reads (several per file); past this, read again

# Folders that never hold the user's own code: environments, dependencies, caches, VCS data.
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "dist-packages", "venv", "env", "conda-meta"})


class Source(Protocol):
    """Read-only access to one side of a checkout; paths are posix, relative to the checkout root."""

    def read(self, relpath: str) -> str | None: ...

    def list_py(self) -> list[str]: ...


def decode_source(data: bytes) -> str:
    """Decode Python source as the interpreter would (PEP 263 cookie or BOM, else UTF-8), never failing."""
    first = data.find(b"\n")
    second = data.find(b"\n", first + 1) if first >= 0 else -1
    head = data if first < 0 or second < 0 else data[:second]  # a cookie can only be on the first two lines
    if not data.startswith(codecs.BOM_UTF8) and b"coding" not in head:
        return data.decode("utf-8", errors="replace")  # what the full detection below ends in, at a fraction
    try:
        encoding, _ = tokenize.detect_encoding(BytesIO(data).readline)
    except (SyntaxError, LookupError):
        encoding = "utf-8"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def skip_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIP_DIRS


def _is_env_dir(entries: Iterable[os.DirEntry[str]]) -> bool:
    """A virtualenv, a conda env or an embedded Python: thousands of files that are not the user's code."""
    for e in entries:
        n = e.name.lower()
        if n in ("pyvenv.cfg", "conda-meta") or n.endswith("._pth") or n in ("python.exe", "pythonw.exe"):
            return True
    return False


def skipped_note(relpath: str, size: int) -> str:
    return f"{relpath}: {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte bound (not read)"


class FsSource:
    """The working tree under ``root``, minus environments and caches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.truncated = False
        self.skipped: list[str] = []  # "big.py: 2,400,000 bytes, over the 2,000,000-byte bound"
        self._skipped_set: set[str] = set()
        self._files: list[str] | None = None
        self._texts: dict[str, str] = {}  # read once per run: the walk, the sites and the env reads each ask
        self._kept = 0

    def list_py(self) -> list[str]:
        if self._files is None:
            self._files = self._scan()
        return self._files

    def _scan(self) -> list[str]:
        out: list[str] = []
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                with os.scandir(self.root / rel if rel else self.root) as it:
                    entries = list(it)
            except OSError:
                continue
            if rel and _is_env_dir(entries):
                continue
            for e in sorted(entries, key=lambda e: e.name):
                child = f"{rel}/{e.name}" if rel else e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        if not skip_dir(e.name):
                            stack.append(child)
                    elif e.name.endswith(".py") and e.is_file():
                        out.append(child)
                except OSError:
                    continue
                if len(out) >= MAX_PY_FILES:
                    self.truncated = True
                    return sorted(out)
        return sorted(out)

    def _skip(self, note: str) -> None:
        if note not in self._skipped_set:
            self._skipped_set.add(note)
            self.skipped.append(note)

    def read(self, relpath: str) -> str | None:
        text = self._texts.get(relpath)
        if text is None:
            text = self._read(relpath)
            if text is not None and self._kept + len(text) <= KEPT_TEXT_CHARS:
                self._texts[relpath] = text
                self._kept += len(text)
        return text

    def _read(self, relpath: str) -> str | None:
        try:
            p = self.root / relpath
            size = p.stat().st_size
            if size > MAX_FILE_BYTES:
                self._skip(skipped_note(relpath, size))
                return None
            with p.open("rb") as fh:
                data = fh.read(65536)
                if b"\x00" in data:  # a binary or sparse file: found in its first block, the rest is never read
                    self._skip(f"{relpath}: holds NUL bytes, not Python source (not read)")
                    return None
                data += fh.read(MAX_FILE_BYTES + 1 - len(data))
            if b"\x00" in data:
                self._skip(f"{relpath}: holds NUL bytes, not Python source (not read)")
                return None
            return decode_source(data)
        except (OSError, ValueError):
            return None
