"""Which script the run starts from: ``--script``, ``generate.py``, else a known entry of a popular fork.

The known entries are data (``entries.toml`` beside the code rules), so a fork is added without code. With no
entry at all, no code verdict is made: the call graph needs a start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache

from wandoc.rulebook import shipped_rules_dir

ENTRIES_FILE = "entries.toml"


@dataclass(frozen=True)
class KnownEntry:
    name: str
    script: str
    marker: str


@lru_cache(maxsize=1)
def known_entries() -> tuple[KnownEntry, ...]:
    path = shipped_rules_dir() / "code" / ENTRIES_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return ()
    out = []
    for e in data.get("entry", []):
        if isinstance(e, dict) and isinstance(e.get("script"), str):
            out.append(KnownEntry(str(e.get("name", e["script"])), e["script"], str(e.get("marker", e["script"]))))
    return tuple(out)


def resolve_entry(files: set[str], dirs: set[str], script: str) -> tuple[str | None, str]:
    """(entry script or None, how it was found) among the checkout's ``files`` (posix, relative)."""
    if script in files:
        return script, script if script == "generate.py" else "--script"
    if script != "generate.py":
        return None, ""  # the user named a script that is not there: no guessing
    for e in known_entries():
        if e.script in files and (e.marker in files or e.marker in dirs):
            return e.script, f"known entry of {e.name}"
    return None, ""
