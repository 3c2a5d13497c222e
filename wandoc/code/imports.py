"""The run's import path: which checkout files the entry script really imports, followed statically.

A setting, a branch difference or a slow attention only matters if the run imports the file that holds it. The
walk resolves module names among the checkout's own files the way Python's path finder would (packages,
namespace packages, relative imports, literal ``sys.path`` additions), without touching disk or importing.
"""

from __future__ import annotations

import ast
import posixpath
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wandoc.code.parse import ImportRef, ParsedFile, dotted, parse_text, quick_imports, str_const
from wandoc.code.source import MAX_PY_FILES, FsSource, Source
from wandoc.facts import ImportPath

_STDLIB = frozenset(sys.stdlib_module_names) | {"__future__", "__main__"}


# -- literal path expressions (sys.path tricks) --------------------------------------------------------


def eval_path(node: ast.AST, file_rel: str, names: dict[str, ast.expr], depth: int = 0) -> str | None:
    """Evaluate ``os.path.join(os.path.dirname(__file__), "x")`` and kin to a path relative to the checkout.

    Relative literals are taken against the checkout root (where the user runs ``python generate.py``).
    Returns "" for the root and None when the value is not literal or leaves the checkout.
    """
    raw = _eval_path(node, file_rel, names, depth)
    if raw is None:
        return None
    norm = posixpath.normpath(raw)
    if norm == ".":
        return ""
    return None if norm.startswith("..") or norm.startswith("/") else norm


def _eval_path(node: ast.AST, file_rel: str, names: dict[str, ast.expr], depth: int) -> str | None:
    if depth > 8:
        return None
    rec = lambda n: _eval_path(n, file_rel, names, depth + 1)  # noqa: E731
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        v = node.value.replace("\\", "/")
        return None if v.startswith("/") or (len(v) > 1 and v[1] == ":") else posixpath.join(".", v)
    if isinstance(node, ast.Name):
        if node.id == "__file__":
            return posixpath.join(".", file_rel)
        if node.id in names:
            return _eval_path(names[node.id], file_rel, names, depth + 1)
        return None
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        inner = rec(node.value)
        return posixpath.join(inner, "..") if inner is not None else None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
        inner, idx = rec(node.value.value), node.slice
        if inner is None or not (isinstance(idx, ast.Constant) and isinstance(idx.value, int)):
            return None
        return posixpath.join(inner, *([".."] * (idx.value + 1)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left, right = rec(node.left), str_const(node.right)
        return posixpath.join(left, right) if left is not None and right is not None else None
    if not isinstance(node, ast.Call):
        return None
    fname = dotted(node.func)
    last = node.func.attr if isinstance(node.func, ast.Attribute) else fname
    args = node.args
    if last in ("getcwd", "cwd") and not args:
        return "."
    if last == "dirname" and len(args) == 1:
        inner = rec(args[0])
        return posixpath.join(inner, "..") if inner is not None else None
    if last in ("abspath", "realpath", "normpath", "str", "Path", "fspath", "PurePath") and len(args) == 1:
        return rec(args[0])
    if last in ("resolve", "absolute") and isinstance(node.func, ast.Attribute) and not args:
        return rec(node.func.value)
    if last == "join" and args and fname.endswith("path.join"):
        parts = [rec(args[0])] + [str_const(a) for a in args[1:]]
        return posixpath.join(*parts) if all(p is not None for p in parts) else None  # type: ignore[arg-type]
    if last == "joinpath" and isinstance(node.func, ast.Attribute):
        parts = [rec(node.func.value)] + [str_const(a) for a in args]
        return posixpath.join(*parts) if all(p is not None for p in parts) else None  # type: ignore[arg-type]
    return None


# -- resolving module names to checkout files ----------------------------------------------------------


@dataclass
class Resolution:
    local: bool  # the top-level name lives in the checkout
    found: bool  # every part was found
    files: list[str]  # package __init__ files on the way and the module file itself
    dirs: list[str]  # package folders of the last part (empty for a plain module)


class Resolver:
    """Finds modules among the checkout's files the way Python's path finder would, without touching disk."""

    def __init__(self, files: Iterable[str]) -> None:
        self.files = set(files)
        self.dirs: set[str] = {""}
        for f in self.files:
            d = posixpath.dirname(f)
            while d and d not in self.dirs:
                self.dirs.add(d)
                d = posixpath.dirname(d)

    def _step(self, base: str, name: str) -> tuple[str, str | None]:
        d = f"{base}/{name}" if base else name
        if f"{d}/__init__.py" in self.files:
            return "pkg", f"{d}/__init__.py"
        if f"{d}.py" in self.files:
            return "mod", f"{d}.py"
        if d in self.dirs:
            return "ns", None
        return "", None

    def within(self, bases: list[str], parts: list[str]) -> Resolution:
        """Resolve ``parts`` below the package folders ``bases``."""
        files: list[str] = []
        for part in parts:
            found_kind, found_file, found_dirs = "", None, []
            for base in bases:
                kind, file = self._step(base, part)
                if kind in ("pkg", "mod"):
                    found_kind, found_file, found_dirs = kind, file, [f"{base}/{part}" if base else part]
                    break
                if kind == "ns":
                    found_kind = "ns"
                    found_dirs.append(f"{base}/{part}" if base else part)
            if not found_kind:
                return Resolution(True, False, files, [])
            if found_file:
                files.append(found_file)
            bases = found_dirs if found_kind != "mod" else []
        return Resolution(True, True, files, bases)

    def absolute(self, name: str, roots: list[str]) -> Resolution:
        parts = name.split(".")
        head = parts[0]
        ns_dirs: list[str] = []
        for root in roots:
            kind, file = self._step(root, head)
            d = f"{root}/{head}" if root else head
            if kind in ("pkg", "mod"):
                assert file is not None
                rest = self.within([d] if kind == "pkg" else [], parts[1:]) if len(parts) > 1 else None
                if rest is None:
                    return Resolution(True, True, [file], [d] if kind == "pkg" else [])
                return Resolution(True, rest.found, [file, *rest.files], rest.dirs)
            if kind == "ns":
                ns_dirs.append(d)
        if ns_dirs and head not in _STDLIB:
            if len(parts) == 1:
                return Resolution(True, True, [], ns_dirs)
            return self.within(ns_dirs, parts[1:])
        return Resolution(False, False, [], [])

    def relative(self, file_rel: str, level: int, name: str) -> Resolution:
        base = posixpath.dirname(file_rel)
        for _ in range(level - 1):
            if not base:
                return Resolution(True, False, [], [])
            base = posixpath.dirname(base)
        init = f"{base}/__init__.py" if base else "__init__.py"
        pre = [init] if init in self.files else []
        if not name:
            return Resolution(True, True, pre, [base])
        res = self.within([base], name.split("."))
        return Resolution(True, res.found, pre + res.files, res.dirs)


# -- the walk ------------------------------------------------------------------------------------------


@dataclass
class Walk:
    """The walk's result plus what the code probes need to follow calls across files."""

    source: Source
    path: ImportPath
    files: list[str]
    on_path: set[str]
    roots: list[str]
    resolver: Resolver
    _parsed: dict[str, ParsedFile | None] = field(default_factory=dict)
    _bindings: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    _quick: dict[str, list[ImportRef] | None] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)

    def parsed(self, rel: str) -> ParsedFile | None:
        if rel not in self._parsed:
            text = self.source.read(rel) if rel in self.resolver.files else None
            self._parsed[rel] = parse_text(text) if text is not None else None
        return self._parsed[rel]

    def imports(self, rel: str) -> tuple[list[ImportRef], ParsedFile | None]:
        """A file's imports, read without a full parse where that is safe (and the parse, when there was one)."""
        pf = self._parsed.get(rel)
        if pf is not None or rel == self.path.entry:
            pf = self.parsed(rel)
            return (pf.imports if pf else []), pf
        if rel not in self._quick:
            text = self.source.read(rel) if rel in self.resolver.files else None
            if text is None:
                self.unreadable.add(rel)
            self._quick[rel] = quick_imports(text) if text is not None else []
        refs = self._quick[rel]
        if refs is None:
            pf = self.parsed(rel)
            return (pf.imports if pf else []), pf
        return refs, None

    def cached(self, rel: str) -> ParsedFile | None:
        """The parse of ``rel`` if something already read it (no new read)."""
        return self._parsed.get(rel)

    def bindings(self, rel: str) -> dict[str, tuple[str, str | None]]:
        """Local name -> (checkout file, attribute or None for the module itself), from the file's imports."""
        if rel in self._bindings:
            return self._bindings[rel]
        out: dict[str, tuple[str, str | None]] = {}
        refs, _ = self.imports(rel)
        for ref in refs:
            if ref.kind == "import":
                for name, asname in ref.names:
                    res = self.resolver.absolute(name, self.roots)
                    if res.local and res.files:
                        out[asname or name.split(".")[0]] = (res.files[-1] if asname else res.files[0], None)
            elif ref.kind == "from":
                mod = self._resolve(rel, ref.level, ref.module)
                if not (mod.local and mod.found):
                    continue
                for name, asname in ref.names:
                    sub = self.resolver.within(mod.dirs, [name]) if mod.dirs else None
                    if sub is not None and sub.found and sub.files:
                        out[asname or name] = (sub.files[-1], None)
                    elif mod.files and name != "*":
                        out[asname or name] = (mod.files[-1], name)
        self._bindings[rel] = out
        return out

    def _resolve(self, rel: str, level: int, module: str) -> Resolution:
        if level:
            return self.resolver.relative(rel, level, module)
        return self.resolver.absolute(module, self.roots)


def walk_imports(root: Path, entry: str = "generate.py") -> ImportPath:
    """The checkout files the entry script imports, followed statically from ``root/entry``."""
    return walk_source(FsSource(root), entry).path


def walk_source(source: Source, entry: str = "generate.py") -> Walk:
    """Walk from ``entry`` through any ``Source``; never raises (unreadable files become ``errors``)."""
    entry = entry.replace("\\", "/").lstrip("./") if entry not in (".", "") else entry
    files = source.list_py()
    resolver = Resolver(files)
    entry_dir = posixpath.dirname(entry)
    roots = [entry_dir, ""] if entry_dir else [""]
    walk = Walk(source, ImportPath(entry=entry), files, set(), roots, resolver)
    if getattr(source, "truncated", False):
        walk.path.errors.append(f"more than {MAX_PY_FILES} .py files: only the first {MAX_PY_FILES} were read")
    if entry not in resolver.files:
        walk.path.errors.append(f"{entry}: entry script not found")
        walk.path.unimported = sorted(files)
        return walk
    for _ in range(5):  # sys.path additions found on the way widen the search; repeat until nothing new
        edges, extra = _explore(walk, entry)
        new = [r for r in extra if r not in walk.roots]
        if not new:
            break
        walk.roots.extend(new)
    reached = _closure(entry, edges, conditional_too=True)
    always = _closure(entry, edges, conditional_too=False)
    walk.on_path = reached
    walk.path.modules = sorted(reached)
    walk.path.conditional = sorted(reached - always)
    walk.path.unimported = sorted(set(files) - reached)
    return walk


def _closure(entry: str, edges: dict[str, list[tuple[str, bool]]], conditional_too: bool) -> set[str]:
    seen = {entry}
    todo = [entry]
    while todo:
        for target, conditional in edges.get(todo.pop(), []):
            if (conditional_too or not conditional) and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _explore(walk: Walk, entry: str) -> tuple[dict[str, list[tuple[str, bool]]], list[str]]:
    """Breadth-first over every import reachable from ``entry``; fills third-party names, errors, unresolved."""
    path = walk.path
    path.third_party, path.unresolved, path.errors = [], [], [e for e in path.errors if "SyntaxError" not in e]
    third: set[str] = set()
    unresolved: list[str] = []
    edges: dict[str, list[tuple[str, bool]]] = {}
    extra_roots: list[str] = []
    seen = {entry}
    todo = [entry]
    while todo:
        rel = todo.pop(0)
        refs, pf = walk.imports(rel)
        out: list[tuple[str, bool]] = []
        edges[rel] = out
        if (pf is None and rel not in walk.resolver.files) or rel in walk.unreadable:
            path.errors.append(f"{rel}:0 unreadable")
            continue
        if pf is not None and pf.error:
            path.errors.append(f"{rel}:{pf.error[0]} {pf.error[1]}")
            continue
        for line, what in pf.dynamic_unresolved if pf else []:
            unresolved.append(f"{rel}:{line} {what}")
        for expr in pf.path_adds if pf else []:
            added = eval_path(expr, rel, pf.assigns)  # type: ignore[union-attr]
            if added is not None and added not in extra_roots:
                extra_roots.append(added)
        for ref in refs:
            if ref.main_only and rel != entry:
                continue
            for target in _targets(walk, rel, ref, pf, third, unresolved):
                out.append((target, ref.in_function))
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
    path.third_party = sorted(third)
    path.unresolved = unresolved
    return edges, extra_roots


def _targets(
    walk: Walk, rel: str, ref: ImportRef, pf: ParsedFile | None, third: set[str], unresolved: list[str]
) -> list[str]:
    """Checkout files one import brings in; third-party and missing names are recorded on the way."""
    out: list[str] = []

    def note_missing(what: str) -> None:
        unresolved.append(f"{rel}:{ref.line} {what} (not found in the checkout)")

    if ref.kind == "file":
        target = eval_path(ref.expr, rel, pf.assigns) if ref.expr is not None and pf is not None else None
        if target is not None and target in walk.resolver.files:
            return [target]
        shown = ast.unparse(ref.expr)[:60] if ref.expr is not None else ""
        unresolved.append(f"{rel}:{ref.line} load by path({shown})")
        return []
    modules = [n for n, _ in ref.names] if ref.kind == "import" else [ref.module]
    for module in modules:
        res = walk._resolve(rel, ref.level, module)
        if not res.local:
            if module and module.split(".")[0] not in _STDLIB:
                third.add(module.split(".")[0])
            continue
        out.extend(res.files)
        if not res.found:
            note_missing(("." * ref.level) + module)
            continue
        if ref.kind == "from" and res.dirs:
            for name, _ in ref.names:
                if name != "*":
                    sub = walk.resolver.within(res.dirs, [name])
                    if sub.found:
                        out.extend(sub.files)
    return out
