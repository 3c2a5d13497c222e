"""Which folder is the checkout, and which script in it is the run's entry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wandoc.code.source import skip_dir


@dataclass
class Checkout:
    root: Path | None
    given: bool
    error: str | None = None


def looks_like_wan(root: Path, script: str = "generate.py") -> bool:
    return (root / script).is_file() and (root / "wan").is_dir()


def find_checkout(path: Path | str | None, script: str = "generate.py", cwd: Path | None = None) -> Checkout:
    """The folder to read: the one named, a Wan folder inside it (an app repo with ``Wan2.2/``), or the cwd when it
    is a Wan checkout or holds the entry script the user named (a fork's ``wgp.py`` has no ``wan/`` beside it)."""
    if path is None:
        here = cwd or Path.cwd()
        named = script != "generate.py" and (here / script).is_file()
        return Checkout(here.resolve(), True) if named or looks_like_wan(here, script) else Checkout(None, False)
    p = Path(path).expanduser()
    try:
        if not p.exists():
            return Checkout(None, True, f"no such directory: {path}")
        if not p.is_dir():
            return Checkout(None, True, f"not a directory: {path}")
        p = p.resolve()
    except OSError as exc:
        return Checkout(None, True, f"cannot read {path}: {exc.strerror or exc}")
    if not (p / script).is_file():
        nested = [d for d in _subdirs(p, 2) if looks_like_wan(d, script)]
        if len(nested) == 1:
            return Checkout(nested[0], True)
    return Checkout(p, True)


def _subdirs(root: Path, depth: int) -> Iterable[Path]:
    if depth <= 0:
        return
    try:
        children = sorted(c for c in root.iterdir() if c.is_dir() and not skip_dir(c.name))
    except OSError:
        return
    for c in children:
        yield c
        yield from _subdirs(c, depth - 1)
