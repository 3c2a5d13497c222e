"""Each file parsed once per distinct content (a SHA-1 of its text), with its import statements collected.

Both sides of a comparison share most files, and the repo and git probes run side by side on the same checkout,
so the parse cache is keyed by content and shared between threads. ``memo`` holds the other modules' per-content
work (functions, scans, env reads), so it is also done once per content.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

_CACHE_SIZE = 4096
_CACHE_BYTES = 256_000_000  # texts held by the cache (with their trees, several times that in memory)
# Substrings that make a file worth a full walk for dynamic imports and sys.path tricks.
_DEEP_TRIGGERS = ("import_module", "__import__", "sys.path", "spec_from_file_location", "addsitedir", "run_path")


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
_cache_bytes = 0
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
        global _cache_bytes
        with _cache_lock:
            if key not in _cache:
                _cache[key] = parsed
                _cache_bytes += len(text)
            while len(_cache) > _CACHE_SIZE or (_cache_bytes > _CACHE_BYTES and len(_cache) > 1):
                _, old = _cache.popitem(last=False)
                _cache_bytes -= len(old.text)
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


def segment(pf: ParsedFile, node: ast.AST) -> str:
    """The source lines of ``node`` (a cheap text test before an AST walk)."""
    start, end = getattr(node, "lineno", 1), getattr(node, "end_lineno", None) or len(pf.lines)
    return "\n".join(pf.lines[start - 1 : end])


_AST = ast.AST
_child_fields: dict[type, tuple[str, ...]] = {}
# Statements without a body of their own (imports are looked at before this is): nothing nested to visit.
LEAF_STATEMENTS = frozenset(
    {ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise, ast.Pass, ast.Delete, ast.Assert,
     ast.Global, ast.Nonlocal, ast.Break, ast.Continue}
)  # fmt: skip


# Fields that hold names, numbers and flags, never a node (the grammar of the Pythons the doctor runs on).
_PLAIN_FIELDS: dict[str, frozenset[str]] = {
    "Name": frozenset({"id"}), "Attribute": frozenset({"attr"}), "Constant": frozenset({"value", "kind"}),
    "arg": frozenset({"arg", "type_comment"}), "keyword": frozenset({"arg"}), "alias": frozenset({"name", "asname"}),
    "FunctionDef": frozenset({"name", "type_comment"}), "AsyncFunctionDef": frozenset({"name", "type_comment"}),
    "ClassDef": frozenset({"name"}), "ExceptHandler": frozenset({"name"}), "ImportFrom": frozenset({"module", "level"}),
    "Global": frozenset({"names"}), "Nonlocal": frozenset({"names"}), "FormattedValue": frozenset({"conversion"}),
    "comprehension": frozenset({"is_async"}), "AnnAssign": frozenset({"simple"}),
    "Assign": frozenset({"type_comment"}), "For": frozenset({"type_comment"}), "AsyncFor": frozenset({"type_comment"}),
    "With": frozenset({"type_comment"}), "AsyncWith": frozenset({"type_comment"}),
}  # fmt: skip


def _fields(cls: type) -> tuple[str, ...]:
    found = _child_fields.get(cls)
    if found is None:  # ``ctx`` only ever holds Load/Store/Del, which nothing here looks at
        plain = _PLAIN_FIELDS.get(cls.__name__, frozenset()) if cls.__module__ == "ast" else frozenset()
        fields = cls._fields  # type: ignore[attr-defined]
        found = _child_fields[cls] = tuple(f for f in fields if f != "ctx" and f not in plain)
    return found


def node_fields(cls: type) -> tuple[str, ...]:
    """The fields of a node class that can hold nodes (cached), for walkers of their own."""
    found = _child_fields.get(cls)
    return _fields(cls) if found is None else found


def children(node: ast.AST) -> list[ast.AST]:
    """``ast.iter_child_nodes`` as a list, without the Load/Store/Del markers."""
    out: list[ast.AST] = []
    fields = _child_fields.get(node.__class__)
    for name in _fields(node.__class__) if fields is None else fields:
        value = getattr(node, name, None)
        if value.__class__ is list:
            for x in value:
                if isinstance(x, _AST):
                    out.append(x)
        elif isinstance(value, _AST):
            out.append(value)
    return out


def walk(node: ast.AST) -> list[ast.AST]:
    """``list(ast.walk(node))`` in the same (breadth-first) order, without the Load/Store/Del markers: half the
    cost, and the walks over every function the run calls add up."""
    out = [node]
    get = _child_fields.get
    for n in out:  # the list grows as it is read: breadth first, without a counter
        fields = get(n.__class__)
        for name in _fields(n.__class__) if fields is None else fields:
            value = getattr(n, name, None)
            if value.__class__ is list:
                for x in value:
                    if isinstance(x, _AST):
                        out.append(x)
            elif isinstance(value, _AST):
                out.append(value)
    return out


_LEAVES = frozenset({ast.Name, ast.Constant})


def calls_in(node: ast.AST) -> list[ast.Call]:
    """The calls in ``node``, in ``walk``'s order (names and constants, which hold nothing, are not queued)."""
    todo = [node]
    get = _child_fields.get
    for n in todo:
        fields = get(n.__class__)
        for name in _fields(n.__class__) if fields is None else fields:
            value = getattr(n, name, None)
            if value.__class__ is list:
                for x in value:
                    if isinstance(x, _AST) and x.__class__ not in _LEAVES:
                        todo.append(x)
            elif isinstance(value, _AST) and value.__class__ not in _LEAVES:
                todo.append(value)
    return [n for n in todo if n.__class__ is ast.Call]  # type: ignore[misc]


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


def str_const(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _collect(pf: ParsedFile, tree: ast.Module, deep: bool) -> None:
    """Imports by statement (cheap: only statement lists are visited); with ``deep``, also import calls and
    sys.path edits inside expressions (a full walk, done only for files whose text mentions them)."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            pf.assigns[stmt.targets[0].id] = stmt.value

    def stmts(body: list[ast.stmt], in_func: bool, main_only: bool) -> None:
        for s in body:
            if s.__class__ in LEAF_STATEMENTS:
                continue
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

    def exprs(body: list[ast.stmt], in_func: bool, main_only: bool) -> None:
        """Import calls and sys.path edits, walked only in statements whose text mentions them."""
        for s in body:
            text = segment(pf, s)
            if not any(t in text for t in _DEEP_TRIGGERS):
                continue
            if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef):
                exprs(s.body, True, main_only)
                continue
            if isinstance(s, ast.If) and not in_func and _is_main_guard(s.test):
                exprs(s.body, in_func, True)
                exprs(s.orelse, in_func, main_only)
                continue
            subs = [getattr(s, name, None) or [] for name in ("body", "orelse", "finalbody")]
            subs += [h.body for h in getattr(s, "handlers", ())] + [c.body for c in getattr(s, "cases", ())]
            nested = [x for sub in subs for x in sub]
            if isinstance(s, ast.ClassDef) or nested:
                for child in children(s):  # the header's expressions (a test, an iterable, items)
                    if not isinstance(child, ast.stmt):
                        for n in walk(child):
                            if isinstance(n, ast.Call):
                                _dynamic(pf, n, in_func, main_only)
                exprs(nested, in_func, main_only)
                continue
            for n in walk(s):
                if isinstance(n, ast.Lambda):
                    continue
                if isinstance(n, ast.Call):
                    _dynamic(pf, n, in_func, main_only)

    stmts(tree.body, False, False)
    if deep:
        exprs(tree.body, False, False)


def _dynamic(pf: ParsedFile, call: ast.Call, in_func: bool, main_only: bool) -> None:
    name = dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    arg0 = call.args[0] if call.args else None
    if last == "import_module" or name == "__import__":
        literal = str_const(arg0)
        if literal is None:
            shown = ast.unparse(arg0) if arg0 is not None else ""
            pf.dynamic_unresolved.append((call.lineno, f"{last}({shown[:60]})"))
            return
        level = len(literal) - len(literal.lstrip("."))
        name = literal.lstrip(".")
        package = (
            call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "package"), None)
        )
        if level and (anchor := str_const(package)) is not None:  # import_module(".x", package="pkg")
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


def syntax_error(text: str, name: str) -> tuple[int, str] | None:
    """(line, "SyntaxError: message") if ``text`` does not compile, without building its syntax tree (about half
    the cost of a parse). Compiling runs nothing."""
    try:
        compile(text, name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return exc.lineno or 0, f"SyntaxError: {exc.msg}"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    return None


# -- imports without a full parse ----------------------------------------------------------------------

_IMPORT_AT = re.compile(r"^([ \t]*)(?:from[ \t]+\.*[\w.]*[ \t]+import\b|import[ \t]+\w)", re.M)
_OPENER = re.compile(r"^[ \t]*(async[ \t]+def|def|class|if|elif|else|try|except|finally|with|for|while|match|case)\b")
_quick: OrderedDict[bytes, list[ImportRef] | None] = OrderedDict()


def quick_imports(text: str) -> list[ImportRef] | None:
    """A file's import statements read line by line, each parsed alone: a fraction of a full parse for the files
    the run imports but never calls into. None when the file needs a full parse (dynamic imports, ``sys.path``
    edits, conflict markers, anything the line reader is unsure of)."""
    key = hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).digest()
    with _cache_lock:
        if key in _quick:
            return _quick[key]
    refs = _quick_imports(text)
    with _cache_lock:
        _quick[key] = refs
        while len(_quick) > _CACHE_SIZE:
            _quick.popitem(last=False)
    return refs


def _quick_imports(text: str) -> list[ImportRef] | None:
    if any(t in text for t in _DEEP_TRIGGERS) or "\n<<<<<<< " in text or text.startswith("<<<<<<< "):
        return None
    lines = text.split("\n")
    in_string = _string_lines(lines)
    if in_string is None:
        return None
    starts: dict[int, int] = {}
    line = pos = 0
    for m in _IMPORT_AT.finditer(text):  # line numbers counted on from the previous match, not from the start
        line += text.count("\n", pos, m.start())
        pos = m.start()
        starts[line] = len(m.group(1).expandtabs())
    found: list[tuple[int, bool, bool, str]] = []  # (line index, in function, main only, statement)
    for i, indent in sorted(starts.items()):
        if in_string[i]:
            continue
        stmt, ok = _statement(lines, i)
        if not ok:
            return None
        in_func, main_only, skip = _context(lines, in_string, i, indent)
        if not skip:
            found.append((i, in_func, main_only, stmt))
    try:  # one parse for all of them: statement k sits on line k + 1
        body = ast.parse("\n".join(stmt for *_, stmt in found)).body if found else []
    except (SyntaxError, ValueError):
        return None
    refs: list[ImportRef] = []
    for s in body:
        i, in_func, main_only, _ = found[s.lineno - 1]
        names = tuple((a.name, a.asname) for a in getattr(s, "names", ()))
        if isinstance(s, ast.Import):
            refs.append(ImportRef(i + 1, "import", names=names, in_function=in_func, main_only=main_only))
        elif isinstance(s, ast.ImportFrom):
            refs.append(ImportRef(i + 1, "from", s.module or "", s.level, names, in_func, main_only))
    return refs


def _string_lines(lines: list[str]) -> list[bool] | None:
    """Which lines start inside a triple-quoted string (so an ``import`` in a docstring is not taken)."""
    out = [False] * len(lines)
    quote: str | None = None
    last = 0  # lines after the last one with triple quotes keep its state
    for i in [i for i, line in enumerate(lines) if '"""' in line or "'''" in line]:
        if quote is not None:
            out[last + 1 : i + 1] = [True] * (i - last)
        last = i
        line = lines[i]
        pos = 0
        while True:
            if quote is None:
                hits = [(line.find(q, pos), q) for q in ('"""', "'''")]
                hits = [h for h in hits if h[0] >= 0]
                if not hits:
                    break
                at, q = min(hits)
                if "#" in line[pos:at]:
                    break  # a comment before the quotes
                quote, pos = q, at + 3
            else:
                at = line.find(quote, pos)
                if at < 0:
                    break
                quote, pos = None, at + 3
    return out if quote is None else None


def _statement(lines: list[str], i: int) -> tuple[str, bool]:
    """The import statement starting at line ``i``, with its parenthesised or backslashed continuation."""
    stmt = lines[i].strip()
    j = i
    while (stmt.count("(") > stmt.count(")") or stmt.endswith("\\")) and j + 1 < len(lines) and j - i < 200:
        j += 1
        stmt = stmt.rstrip("\\") + " " + lines[j].strip()
    stmt = stmt.split("#", 1)[0] if "(" not in stmt else stmt
    return stmt, stmt.count("(") == stmt.count(")")


def _context(lines: list[str], in_string: list[bool], i: int, indent: int) -> tuple[bool, bool, bool]:
    """(inside a function, under ``if __name__ == "__main__"``, under ``if TYPE_CHECKING``) for line ``i``."""
    in_func = main_only = skip = False
    need = indent
    j = i - 1
    while need > 0 and j >= 0:
        line = lines[j]
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not in_string[j]:
            ind = len(line) - len(line.lstrip(" \t"))
            if ind < need and _OPENER.match(line):
                head = stripped.split(None, 1)[0]
                if head in ("def", "async"):
                    in_func = True
                elif head == "if" and "__name__" in stripped and "__main__" in stripped:
                    main_only = not in_func
                elif head == "if" and "TYPE_CHECKING" in stripped:
                    skip = True
                need = ind
        j -= 1
    return in_func, main_only and not in_func, skip
