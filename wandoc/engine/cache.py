"""Parsed rule files kept between runs, so the doctor skips the TOML parser for files it has read before.

An entry is keyed by the SHA-256 of a file's text, so an edited file is a miss whatever its timestamps say.
Entries are JSON, never pickle: loading a cache must not run code. The cache file is as untrusted as a rule
file: what it returns goes through the same validation as freshly parsed TOML (every key checked, every
expression compiled), anything malformed in it reads as a miss, and a failure to read or write it is
silent, so a read-only or full home folder never breaks the doctor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

SCHEMA = "wandoc.rule-cache/1"
FILE_NAME = "rules.json"
MAX_BYTES = 16 * 1024 * 1024  # a larger file is not one we wrote
MAX_ENTRIES = 256  # the latest run's entries, then the most recent others: stale versions of files age out
# tomllib may change with Python: an entry is only reused by the version that parsed it
_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"

Tables = list[dict[str, Any]]  # one file's rule tables, as TOML parsed them


class RuleCache:
    """One JSON file of parsed rule files, read on first use and written back only when something was added."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / FILE_NAME
        self._entries: dict[str, Any] | None = None
        self._used: set[str] = set()
        self._added = False

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, key: str) -> Tables | None:
        """The rule tables stored for a file's text, or None (unknown, or not shaped like rule tables)."""
        if self._entries is None:
            self._entries = self._read()
        self._used.add(key)
        tables = self._entries.get(key)
        if isinstance(tables, list) and tables and all(isinstance(t, dict) for t in tables):
            return tables
        return None

    def put(self, key: str, tables: Tables) -> None:
        """Remember a file's tables; a file whose values JSON cannot hold (TOML dates) is simply not kept."""
        try:
            json.dumps(tables, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return
        if self._entries is None:
            self._entries = self._read()
        self._entries[key] = tables
        self._used.add(key)
        self._added = True

    def save(self) -> None:
        """Write the cache if this run added to it: a temp file renamed into place, or nothing at all."""
        if not self._added or self._entries is None:
            return
        others = [k for k in self._entries if k not in self._used]
        kept = others[max(0, len(others) - (MAX_ENTRIES - len(self._used))) :]
        entries = {k: self._entries[k] for k in kept + [k for k in self._entries if k in self._used]}
        tmp: str | None = None
        try:
            import tempfile

            text = json.dumps({"schema": SCHEMA, "python": _PYTHON, "entries": entries}, allow_nan=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
            tmp = None
            self._added = False
        except (OSError, ValueError, RecursionError):
            pass  # a cache that cannot be written is no cache, never an error
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _read(self) -> dict[str, Any]:
        try:
            if self.path.stat().st_size > MAX_BYTES:
                return {}
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError, RecursionError):  # missing, unreadable, not JSON (ValueError covers Unicode)
            return {}
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("python") != _PYTHON:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}
