"""The run's import path: which checkout files ``generate.py`` really imports, read statically with ``ast``.

A setting, a branch difference or a slow attention only matters if the run imports the file that holds it, so
this walk decides what the doctor may judge. The user's code is parsed, never imported or executed. Files come
through a small ``Source`` reader (the working tree, or a git ref read with ``git show``), so the same walk serves
both sides of a branch comparison. Parse results are cached by content hash: the two sides of a comparison share
most files, and the repo and git probes run side by side on the same checkout.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import os
import posixpath
import sys
import threading
import tokenize
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from wandoc.facts import ImportPath

MAX_FILE_BYTES = 2_000_000  # larger .py files are generated data, not code worth walking
MAX_PY_FILES = 5000
_CACHE_SIZE = 4096

# Folders that never hold the user's own code: environments, dependencies, caches, VCS data.
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "dist-packages", "venv", "env", "conda-meta"})
_STDLIB = frozenset(sys.stdlib_module_names) | {"__future__", "__main__"}
# Substrings that make a file worth a full walk for dynamic imports and sys.path tricks.
_DEEP_TRIGGERS = ("import_module", "__import__", "sys.path", "spec_from_file_location", "addsitedir", "run_path")


class Source(Protocol):
    """Read-only access to one side of a checkout; paths are posix, relative to the checkout root."""

    def read(self, relpath: str) -> str | None: ...

    def list_py(self) -> list[str]: ...


def decode_source(data: bytes) -> str:
    """Decode Python source as the interpreter would (PEP 263 cookie or BOM, else UTF-8), never failing."""
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


class FsSource:
    """The working tree under ``root``, minus environments and caches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.truncated = False
        self._files: list[str] | None = None

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

    def read(self, relpath: str) -> str | None:
        try:
            p = self.root / relpath
            if p.stat().st_size > MAX_FILE_BYTES:
                return None
            return decode_source(p.read_bytes())
        except (OSError, ValueError):
            return None


# -- parsing, cached by content ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRef:
    """One import statement or import-like call, as written (resolution needs the file's location)."""

    line: int
    kind: str  # "import", "from", "dynamic" (literal import_module/__import__), "file" (load by path)
    module: str = ""  # dotted; "" for ``from . import x``
    level: int = 0
    names: tuple[tuple[str, str | None], ...] = ()  # (name, asname)
    in_function: bool = False
    main_only: bool = False  # under ``if __name__ == "__main__":`` (runs only when the file is the script)
    expr: ast.expr | None = None  # for "file": the path expression


@dataclass
class ParsedFile:
    """One file's syntax tree and the import facts of its content; ``memo`` holds other probes' per-content work."""

    text: str
    tree: ast.Module | None
    error: tuple[int, str] | None  # (line, "SyntaxError: message")
    imports: list[ImportRef] = field(default_factory=list)
    dynamic_unresolved: list[tuple[int, str]] = field(default_factory=list)  # (line, "import_module(name)")
    path_adds: list[ast.expr] = field(default_factory=list)  # sys.path.insert/append arguments
    assigns: dict[str, ast.expr] = field(default_factory=dict)  # module-level NAME = expr, for path evaluation
    memo: dict[str, Any] = field(default_factory=dict)
    _lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines


_cache: OrderedDict[bytes, ParsedFile] = OrderedDict()
_inflight: dict[bytes, threading.Event] = {}
_cache_lock = threading.Lock()


def parse_text(text: str) -> ParsedFile:
    """Parse once per distinct content; both sides of a comparison and both probes (threads) share the result."""
    key = hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).digest()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        event = _inflight.get(key)
        owner = event is None
        if owner:
            event = _inflight[key] = threading.Event()
    assert event is not None
    if not owner:
        event.wait(30)
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
    try:
        parsed = _parse(text)
        with _cache_lock:
            _cache[key] = parsed
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return parsed
    finally:
        if owner:
            with _cache_lock:
                _inflight.pop(key, None)
            event.set()


def _parse(text: str) -> ParsedFile:
    paused = gc.isenabled()
    gc.disable()  # building a large tree triggers the cycle collector again and again: ~15% of the parse time
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return ParsedFile(text, None, (exc.lineno or 0, f"SyntaxError: {exc.msg}"))
    except (ValueError, RecursionError, MemoryError) as exc:
        return ParsedFile(text, None, (0, f"{type(exc).__name__}: {exc}"))
    finally:
        if paused:
            gc.enable()
    pf = ParsedFile(text, tree, None)
    try:
        _collect(pf, tree, deep=any(t in text for t in _DEEP_TRIGGERS))
    except RecursionError:
        pf.error = (0, "RecursionError: nesting too deep to analyse")
    return pf


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ""."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_type_checking(test: ast.expr) -> bool:
    return dotted(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides
    )


def _str_const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _collect(pf: ParsedFile, tree: ast.Module, deep: bool) -> None:
    """Imports by statement (cheap: only statement lists are visited); with ``deep``, also import calls and
    sys.path edits inside expressions (a full walk, done only for files whose text mentions them)."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            pf.assigns[stmt.targets[0].id] = stmt.value

    def stmts(body: list[ast.stmt], in_func: bool, main_only: bool) -> None:
        for s in body:
            if isinstance(s, ast.Import | ast.ImportFrom):
                names = tuple((a.name, a.asname) for a in s.names)
                if isinstance(s, ast.Import):
                    pf.imports.append(
                        ImportRef(s.lineno, "import", names=names, in_function=in_func, main_only=main_only)
                    )
                else:
                    pf.imports.append(ImportRef(s.lineno, "from", s.module or "", s.level, names, in_func, main_only))
            elif isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef):
                stmts(s.body, True, main_only)
            elif isinstance(s, ast.If) and _is_type_checking(s.test):
                stmts(s.orelse, in_func, main_only)
            elif isinstance(s, ast.If) and not in_func and _is_main_guard(s.test):
                stmts(s.body, in_func, True)
                stmts(s.orelse, in_func, main_only)
            else:
                for name in ("body", "orelse", "finalbody"):
                    sub = getattr(s, name, None)
                    if sub:
                        stmts(sub, in_func, main_only)
                for h in getattr(s, "handlers", ()):
                    stmts(h.body, in_func, main_only)
                for case in getattr(s, "cases", ()):
                    stmts(case.body, in_func, main_only)

    def exprs(node: ast.AST, in_func: bool, main_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                exprs(child, True, main_only)
            elif isinstance(child, ast.If) and not in_func and _is_main_guard(child.test):
                exprs(child, in_func, True)
            else:
                if isinstance(child, ast.Call):
                    _dynamic(pf, child, in_func, main_only)
                exprs(child, in_func, main_only)

    stmts(tree.body, False, False)
    if deep:
        exprs(tree, False, False)


def _dynamic(pf: ParsedFile, call: ast.Call, in_func: bool, main_only: bool) -> None:
    name = dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    arg0 = call.args[0] if call.args else None
    if last == "import_module" or name == "__import__":
        literal = _str_const(arg0)
        if literal is None:
            shown = ast.unparse(arg0) if arg0 is not None else ""
            pf.dynamic_unresolved.append((call.lineno, f"{last}({shown[:60]})"))
            return
        level = len(literal) - len(literal.lstrip("."))
        name = literal.lstrip(".")
        package = (
            call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "package"), None)
        )
        if level and (anchor := _str_const(package)) is not None:  # import_module(".x", package="pkg")
            parts = anchor.split(".")[: len(anchor.split(".")) - (level - 1)]
            name, level = ".".join(p for p in [*parts, name] if p), 0
        pf.imports.append(ImportRef(call.lineno, "dynamic", name, level, (), in_func, main_only))
    elif name.startswith("sys.path.") and last in ("insert", "append") and call.args:
        pf.path_adds.append(call.args[-1])
    elif name.startswith("sys.path.") and last == "extend" and isinstance(arg0, ast.List | ast.Tuple):
        pf.path_adds.extend(arg0.elts)
    elif last == "addsitedir" and arg0 is not None:
        pf.path_adds.append(arg0)
    elif last == "spec_from_file_location" and len(call.args) >= 2:
        pf.imports.append(ImportRef(call.lineno, "file", in_function=in_func, main_only=main_only, expr=call.args[1]))
    elif last == "run_path" and arg0 is not None:
        pf.imports.append(ImportRef(call.lineno, "file", in_function=in_func, main_only=main_only, expr=arg0))


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
        left, right = rec(node.left), _str_const(node.right)
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
        parts = [rec(args[0])] + [_str_const(a) for a in args[1:]]
        return posixpath.join(*parts) if all(p is not None for p in parts) else None  # type: ignore[arg-type]
    if last == "joinpath" and isinstance(node.func, ast.Attribute):
        parts = [rec(node.func.value)] + [_str_const(a) for a in args]
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

    def parsed(self, rel: str) -> ParsedFile | None:
        if rel not in self._parsed:
            text = self.source.read(rel) if rel in self.resolver.files else None
            self._parsed[rel] = parse_text(text) if text is not None else None
        return self._parsed[rel]

    def cached(self, rel: str) -> ParsedFile | None:
        """The parse of ``rel`` if something already read it (no new read)."""
        return self._parsed.get(rel)

    def bindings(self, rel: str) -> dict[str, tuple[str, str | None]]:
        """Local name -> (checkout file, attribute or None for the module itself), from the file's imports."""
        if rel in self._bindings:
            return self._bindings[rel]
        out: dict[str, tuple[str, str | None]] = {}
        pf = self.parsed(rel)
        for ref in pf.imports if pf else []:
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
        pf = walk.parsed(rel)
        out: list[tuple[str, bool]] = []
        edges[rel] = out
        if pf is None:
            path.errors.append(f"{rel}:0 unreadable")
            continue
        if pf.error:
            path.errors.append(f"{rel}:{pf.error[0]} {pf.error[1]}")
            continue
        for line, what in pf.dynamic_unresolved:
            unresolved.append(f"{rel}:{line} {what}")
        for expr in pf.path_adds:
            added = eval_path(expr, rel, pf.assigns)
            if added is not None and added not in extra_roots:
                extra_roots.append(added)
        for ref in pf.imports:
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


def _targets(walk: Walk, rel: str, ref: ImportRef, pf: ParsedFile, third: set[str], unresolved: list[str]) -> list[str]:
    """Checkout files one import brings in; third-party and missing names are recorded on the way."""
    out: list[str] = []

    def note_missing(what: str) -> None:
        unresolved.append(f"{rel}:{ref.line} {what} (not found in the checkout)")

    if ref.kind == "file":
        target = eval_path(ref.expr, rel, pf.assigns) if ref.expr is not None else None
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
