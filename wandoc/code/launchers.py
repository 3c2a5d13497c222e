"""Env vars that launch files set: batch files, PowerShell, shell scripts, Electron/Node apps, package.json.

Found by regex per file kind, in the checkout and the app repo around it; they are how users start the run, so
they count as "set" just like the environment does.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path

from wandoc.code.env_reads import REDACTED, is_secret_name
from wandoc.code.source import skip_dir
from wandoc.facts import LauncherSet

LAUNCHER_SUFFIXES = frozenset(
    {".bat", ".cmd", ".ps1", ".sh", ".bash", ".zsh", ".command", ".js", ".mjs", ".cjs", ".ts", ".mts", ".cts",
     ".jsx", ".tsx"}
)  # fmt: skip
_LAUNCHER_SKIP_DIRS = frozenset({"dist", "out", "release", "releases", "coverage"})
_MAX_LAUNCHER_BYTES = 512_000
_MAX_ENTRIES = 20_000

_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
_BAT_SET = re.compile(
    rf'(?im)(?:^|[&(]|\bdo\b|\belse\b)[ \t]*@?set[ \t]+(?!/[ap]\b)(?:"({_VAR})=([^"\r\n]*)"|({_VAR})=([^&|)\r\n]*))'
)
_BAT_SETX = re.compile(rf'(?im)^[ \t]*@?setx[ \t]+({_VAR})[ \t]+(?:"([^"\r\n]*)"|(\S+))')
_PS_ENV = re.compile(rf"""(?i)\$env:({_VAR})[ \t]*=[ \t]*(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s;#]+))""")
_PS_SETVAR = re.compile(
    rf"""(?i)\[(?:System\.)?Environment\]::SetEnvironmentVariable\(\s*["']({_VAR})["']\s*,\s*(?:"([^"]*)"|'([^']*)')"""
)
_SH_VALUE = r"""(?:"[^"]*"|'[^']*'|[^\s;&|]*)"""
_SH_ASSIGN = re.compile(rf"({_VAR})=({_SH_VALUE})")
_SH_PREFIX = re.compile(rf"^(?:env[ \t]+)?((?:{_VAR}={_SH_VALUE}[ \t]+)+)[^\s=]")
_JS_ENV_OBJ = re.compile(
    r"(?i)\b\w*env\w*\s*[:=]\s*(?:Object\.assign\s*\(\s*(?:\{\s*\}\s*,\s*)?(?:process\.env\s*,\s*)?)?\{"
)
_JS_VALUE = r"""(?:'([^'\n]*)'|"([^"\n]*)"|`([^`\n]*)`|(-?\d+(?:\.\d+)?|true|false)\b)"""
_JS_PAIR = re.compile(rf"""(?:^|[\s,{{])['"]?([A-Z_][A-Z0-9_]*)['"]?\s*:\s*{_JS_VALUE}""")
_JS_ASSIGN = re.compile(rf"""(?i:\b\w*env)(?:\.({_VAR})|\[\s*['"]({_VAR})['"]\s*\])\s*=(?!=)\s*{_JS_VALUE}""")
_JSON_SCRIPT_ASSIGN = re.compile(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s&;]+)")


def _unquote(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _blank_comments(text: str, prefixes: tuple[str, ...]) -> str:
    """Empty the comment lines (keeping line numbers), so commented-out settings are not taken as set."""
    return "\n".join("" if ln.lstrip().lower().startswith(prefixes) else ln for ln in text.split("\n"))


def parse_launcher(name: str, text: str) -> list[tuple[int, str, str]]:
    """(line, var, value) for every env var a launch file sets; regex, by file kind."""
    suffix = posixpath.splitext(name.lower())[1]
    out: list[tuple[int, str, str]] = []
    if name.lower().endswith("package.json"):
        return _parse_package_json(text)
    if suffix in (".bat", ".cmd"):
        text = _blank_comments(text, ("rem ", "rem\t", "::"))
        for m in _BAT_SET.finditer(text):
            var, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            out.append((_line_of(text, m.start()), var, value.rstrip("\r")))
        for m in _BAT_SETX.finditer(text):
            out.append((_line_of(text, m.start()), m.group(1), m.group(2) if m.group(2) is not None else m.group(3)))
    elif suffix == ".ps1":
        text = _blank_comments(text, ("#",))
        for m in _PS_ENV.finditer(text):
            value = next(g for g in m.groups()[1:] if g is not None)
            out.append((_line_of(text, m.start()), m.group(1), value))
        for m in _PS_SETVAR.finditer(text):
            out.append((_line_of(text, m.start()), m.group(1), m.group(2) if m.group(2) is not None else m.group(3)))
    elif suffix in (".sh", ".bash", ".zsh", ".command"):
        out.extend(_parse_sh(text))
    elif suffix in LAUNCHER_SUFFIXES:
        out.extend(_parse_js(_blank_comments(text, ("//", "/*", "*"))))
    return sorted(set(out))


def _parse_sh(text: str) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    plain: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("export "):
            rest = s[7:].strip()
            assigns = list(_SH_ASSIGN.finditer(rest))
            out.extend((i, m.group(1), _unquote(m.group(2))) for m in assigns)
            if not assigns:
                out.extend((i, n, plain[n]) for n in rest.split() if n in plain)
            continue
        m = _SH_PREFIX.match(s)
        if m:
            out.extend((i, a.group(1), _unquote(a.group(2))) for a in _SH_ASSIGN.finditer(m.group(1)))
            continue
        m = re.fullmatch(rf"({_VAR})=({_SH_VALUE})", s)
        if m:
            plain[m.group(1)] = _unquote(m.group(2))
    return out


def _parse_js(text: str) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []

    def value_of(groups: Sequence[str | None]) -> str | None:
        value = next((g for g in groups if g is not None), None)
        return None if value is None or "${" in value else value

    for m in _JS_ENV_OBJ.finditer(text):
        start = m.end() - 1
        depth, end = 0, min(len(text), start + 20_000)
        for j in range(start, end):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    end = j
                    break
        block = text[start:end]
        for p in _JS_PAIR.finditer(block):
            if (value := value_of(p.groups()[1:])) is not None:
                out.append((_line_of(text, start + p.start(1)), p.group(1), value))
    for m in _JS_ASSIGN.finditer(text):
        if (value := value_of(m.groups()[2:])) is not None:
            out.append((_line_of(text, m.start()), m.group(1) or m.group(2), value))
    return out


def _parse_package_json(text: str) -> list[tuple[int, str, str]]:
    try:
        scripts = json.loads(text).get("scripts") or {}
    except (ValueError, AttributeError):
        return []
    out: list[tuple[int, str, str]] = []
    for cmd in scripts.values() if isinstance(scripts, dict) else []:
        if not isinstance(cmd, str):
            continue
        for m in _JSON_SCRIPT_ASSIGN.finditer(cmd):
            pos = text.find(f"{m.group(1)}=")
            out.append((_line_of(text, max(pos, 0)), m.group(1), _unquote(m.group(2))))
    return out


def enclosing_repo_root(checkout: Path, levels: int = 3) -> Path | None:
    """The git work tree the checkout sits in (itself or up to ``levels`` folders up), or None."""
    p = checkout
    for _ in range(levels + 1):
        if (p / ".git").exists():
            return p
        if p.parent == p:
            break
        p = p.parent
    return None


def scan_launchers(checkout: Path) -> list[LauncherSet]:
    """Env vars set by launch files in the checkout and in the app repo around it (paths relative to the latter)."""
    base = enclosing_repo_root(checkout) or checkout
    out: list[LauncherSet] = []
    for path in _launcher_files(base):
        try:
            if path.stat().st_size > _MAX_LAUNCHER_BYTES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        rel = path.relative_to(base).as_posix()
        for line, var, value in parse_launcher(path.name, text):
            out.append(LauncherSet(file=rel, line=line, var=var, value=REDACTED if is_secret_name(var) else value))
    return out


def _launcher_files(base: Path) -> list[Path]:
    out: list[Path] = []
    stack: list[tuple[Path, int]] = [(base, 0)]
    seen = 0
    while stack and seen < _MAX_ENTRIES:
        d, depth = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        if depth and any(e.name in ("pyvenv.cfg", "conda-meta") for e in entries):
            continue
        for e in entries:
            seen += 1
            try:
                if e.is_dir(follow_symlinks=False):
                    if depth < 6 and not skip_dir(e.name) and e.name.lower() not in _LAUNCHER_SKIP_DIRS:
                        stack.append((Path(e.path), depth + 1))
                    continue
                name = e.name.lower()
                suffix = posixpath.splitext(name)[1]
                if name == "package.json" or (
                    suffix in LAUNCHER_SUFFIXES and not name.endswith((".min.js", ".d.ts")) and e.is_file()
                ):
                    out.append(Path(e.path))
            except OSError:
                continue
    return sorted(out)
