"""Env var reads in the checkout (``os.environ[...]``, ``os.getenv``, aliases), and who sets each variable.

A variable matters only if code the run executes reads it, and a value compared with ``== "1"`` but set to
"true" is silently off; ``join_env`` puts the readers, the environment and the launchers side by side.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wandoc.code.imports import Walk
from wandoc.code.parse import ParsedFile, children, dotted, segment, str_const, walk
from wandoc.facts import EnvRead, EnvVarUse, LauncherSet

REDACTED = "<redacted>"
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE")


def is_secret_name(name: str) -> bool:
    return any(m in name.upper() for m in SECRET_MARKERS)


_CASE_FOLD = ("lower", "casefold", "upper")
_TRANSPARENT = (*_CASE_FOLD, "strip", "lstrip", "rstrip")


@dataclass
class _RawRead:
    var: str
    line: int
    default: str | None
    accepts: list[str] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    case_insensitive: bool = False
    compared: bool = False


@dataclass
class Read:
    """An env read with what value_ignored needs beyond the fact (case-insensitivity, accept vs reject)."""

    fact: EnvRead
    raw: _RawRead

    def accepts(self, value: str) -> bool:
        ci = self.raw.case_insensitive
        v = value.lower() if ci else value
        norm = (lambda xs: [x.lower() for x in xs]) if ci else (lambda xs: list(xs))
        if self.raw.accepts:
            return v in norm(self.raw.accepts)
        if self.raw.rejects:
            return v not in norm(self.raw.rejects)
        return True


def mentions_env(text: str) -> bool:
    return "environ" in text or "getenv" in text


def all_env_reads(walk: Walk, files: Iterable[str]) -> list[Read]:
    """Env reads of ``files`` (the run's own, and those others that may read a variable someone sets)."""
    out: list[Read] = []
    for rel in files:
        pf = walk.cached(rel)
        if pf is None:
            text = walk.source.read(rel)
            if text is None or not mentions_env(text):
                continue
            pf = walk.parsed(rel)
        if pf is None or not mentions_env(pf.text):
            continue
        if pf.tree is None:
            continue
        on = rel in walk.on_path
        for raw in env_reads_of(pf):
            fact = EnvRead(
                var=raw.var,
                file=rel,
                line=raw.line,
                default=raw.default,
                compared_values=list(dict.fromkeys(raw.accepts + raw.rejects)),
                on_path=on,
            )
            out.append(Read(fact, raw))
    return out


class _Parents(dict[ast.AST, ast.AST]):
    """Child -> parent links, built only for the statements that read env vars (the whole module on demand)."""

    def __init__(self, tree: ast.Module, pf: ParsedFile | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.pf = pf
        self.done: set[int] = set()

    def add(self, stmt: ast.stmt) -> None:
        if id(stmt) in self.done:
            return
        self.done.add(id(stmt))
        self[stmt] = self.tree
        for node in walk(stmt):
            for child in children(node):
                self[child] = node

    def complete(self) -> None:
        for stmt in self.tree.body:
            self.add(stmt)

    def statements_with(self, word: str) -> list[ast.stmt]:
        """Top-level statements whose text holds ``word`` (linked in), the only places a name's uses can be."""
        found = [s for s in self.tree.body if self.pf is None or word in segment(self.pf, s)]
        for stmt in found:
            self.add(stmt)
        return found


def env_reads_of(pf: ParsedFile) -> list[_RawRead]:
    """Reads of ``os.environ`` / ``os.getenv`` (and their aliases) in one file, with the literals compared."""
    cached = pf.memo.get("env_reads")
    if cached is not None:
        return cached
    assert pf.tree is not None
    tree = pf.tree
    os_names, environ_names, getenv_names = {"os"}, set(), set()
    for ref in pf.imports:
        for name, asname in ref.names:
            if ref.kind == "import" and name == "os":
                os_names.add(asname or name)
            elif ref.kind == "from" and ref.module == "os" and name in ("environ", "getenv"):
                (environ_names if name == "environ" else getenv_names).add(asname or name)

    def is_environ(n: ast.AST) -> bool:
        if isinstance(n, ast.Attribute) and n.attr == "environ":
            return isinstance(n.value, ast.Name) and n.value.id in os_names
        return isinstance(n, ast.Name) and n.id in environ_names

    parents = _Parents(tree, pf)
    for _ in range(2):  # a second round once ``env = os.environ`` aliases are known
        words = ("environ", "getenv", *environ_names, *getenv_names)
        for stmt in tree.body:
            text = segment(pf, stmt)
            if any(w in text for w in words):
                parents.add(stmt)
        aliases = {
            t.id
            for n in list(parents)
            if isinstance(n, ast.Assign) and is_environ(n.value)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        if aliases <= environ_names:
            break
        environ_names |= aliases

    reads: list[_RawRead] = []
    for node in list(parents):
        var, default, site = None, None, node
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and is_environ(node.value):
            var = str_const(node.slice)
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            is_get = isinstance(f, ast.Attribute) and f.attr == "get" and is_environ(f.value)
            is_getenv = (isinstance(f, ast.Attribute) and f.attr == "getenv" and dotted(f.value) in os_names) or (
                isinstance(f, ast.Name) and f.id in getenv_names
            )
            if is_get or is_getenv:
                var = str_const(node.args[0])
                d = (
                    node.args[1]
                    if len(node.args) > 1
                    else next((k.value for k in node.keywords if k.arg == "default"), None)
                )
                default = _default_text(d)
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and is_environ(node.comparators[0])
        ):
            var = str_const(node.left)
            site = None  # a membership test: any value passes it
        if var is None:
            continue
        raw = _RawRead(var, node.lineno, default)
        if site is not None:
            _compare_context(site, parents, raw)
        reads.append(raw)
    merged: dict[tuple[str, int], _RawRead] = {}
    for r in sorted(reads, key=lambda r: r.line):  # ``"X" in os.environ and os.environ["X"] == "1"``: one read
        m = merged.setdefault((r.var, r.line), r)
        if m is not r:
            m.accepts += r.accepts
            m.rejects += r.rejects
            m.compared |= r.compared
            m.case_insensitive |= r.case_insensitive
            m.default = m.default if m.default is not None else r.default
    out = list(merged.values())
    pf.memo["env_reads"] = out
    return out


def _default_text(node: ast.AST | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant):
        return None if node.value is None else str(node.value)
    return ast.unparse(node)[:60]


def _unwrap_up(node: ast.AST, parents: Mapping[ast.AST, ast.AST], raw: _RawRead) -> tuple[ast.AST, ast.AST | None]:
    """Climb through ``.lower()``, ``.strip()``, ``str(...)`` and ``or "default"`` to where the value is used."""
    cur = node
    while True:
        p = parents.get(cur)
        if isinstance(p, ast.Attribute) and p.value is cur and p.attr in _TRANSPARENT:
            gp = parents.get(p)
            if isinstance(gp, ast.Call) and gp.func is p:
                raw.case_insensitive |= p.attr in _CASE_FOLD
                cur = gp
                continue
            return cur, p
        if isinstance(p, ast.Call) and isinstance(p.func, ast.Name) and p.func.id == "str" and cur in p.args:
            cur = p
            continue
        if isinstance(p, ast.BoolOp) and isinstance(p.op, ast.Or) and p.values[0] is cur:
            cur = p
            continue
        return cur, p


def _compare_context(node: ast.AST, parents: Mapping[ast.AST, ast.AST], raw: _RawRead, depth: int = 0) -> None:
    cur, p = _unwrap_up(node, parents, raw)
    if isinstance(p, ast.Compare):
        _compare_literals(p, cur, raw)
    elif depth == 0 and isinstance(p, ast.Assign | ast.AnnAssign | ast.NamedExpr) and p.value is cur:
        target = p.targets[0] if isinstance(p, ast.Assign) and len(p.targets) == 1 else getattr(p, "target", None)
        for use in _uses_of(target, p, parents):
            _compare_context(use, parents, raw, depth + 1)


def _uses_of(target: ast.AST | None, assign: ast.AST, parents: Mapping[ast.AST, ast.AST]) -> list[ast.AST]:
    """Loads of the variable (or ``self.attr``) the value was stored in, within its scope."""
    if isinstance(target, ast.Name):
        scope_types: tuple[type, ...] = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)
        match = lambda n: isinstance(n, ast.Name) and n.id == target.id and isinstance(n.ctx, ast.Load)  # noqa: E731
    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        scope_types = (ast.ClassDef, ast.Module)
        match = lambda n: (  # noqa: E731
            isinstance(n, ast.Attribute) and n.attr == target.attr and dotted(n.value) == "self"
            and isinstance(n.ctx, ast.Load)
        )  # fmt: skip
    else:
        return []
    scope: ast.AST = assign
    while not isinstance(scope, scope_types) and scope in parents:
        scope = parents[scope]
    if isinstance(scope, ast.Module) and isinstance(parents, _Parents):
        word = target.id if isinstance(target, ast.Name) else target.attr  # type: ignore[union-attr]
        # a module-level name: its uses may be anywhere in the file, but only in statements that spell it
        return [n for stmt in parents.statements_with(word) for n in walk(stmt) if match(n)]
    return [n for n in walk(scope) if match(n)]


def _compare_literals(cmp: ast.Compare, cur: ast.AST, raw: _RawRead) -> None:
    operands = [cmp.left, *cmp.comparators]
    idx = next((i for i, o in enumerate(operands) if o is cur), None)
    if idx is None:
        return
    pairs = []
    if idx > 0:
        pairs.append((cmp.ops[idx - 1], operands[idx - 1], False))
    if idx < len(cmp.ops):
        pairs.append((cmp.ops[idx], operands[idx + 1], True))
    for op, other, we_are_left in pairs:
        if isinstance(op, ast.Eq | ast.NotEq) and (s := str_const(other)) is not None:
            (raw.accepts if isinstance(op, ast.Eq) else raw.rejects).append(s)
            raw.compared = True
        elif isinstance(op, ast.In | ast.NotIn) and we_are_left and isinstance(other, ast.Tuple | ast.List | ast.Set):
            values = [s for e in other.elts if (s := str_const(e)) is not None]
            (raw.accepts if isinstance(op, ast.In) else raw.rejects).extend(values)
            raw.compared = raw.compared or bool(values)


def join_env(
    reads: Sequence[Read], launchers: Sequence[LauncherSet], environ: Mapping[str, str]
) -> dict[str, EnvVarUse]:
    """Per variable: who sets it (env, launchers), who reads it (on or off the path), and whether it is heeded."""
    names = sorted({r.fact.var for r in reads} | {ls.var for ls in launchers})
    out: dict[str, EnvVarUse] = {}
    for var in names:
        secret = is_secret_name(var)
        mine = [r for r in reads if r.fact.var == var]
        on = [r for r in mine if r.fact.on_path]
        off = [r for r in mine if not r.fact.on_path]
        sets = [ls for ls in launchers if ls.var == var]
        use = EnvVarUse(
            set_in_env=var in environ,
            value=(REDACTED if secret else environ[var]) if var in environ else None,
            set_by=list(dict.fromkeys(ls.file for ls in sets)),
            launcher_values=list(dict.fromkeys(REDACTED if secret else ls.value for ls in sets)),
            read_on_path=bool(on),
            read_off_path=bool(off),
            files_on_path=list(dict.fromkeys(r.fact.file for r in on)),
            files_off_path=list(dict.fromkeys(r.fact.file for r in off)),
            compared_values=list(dict.fromkeys(v for r in on for v in r.fact.compared_values)),
        )
        values = ([environ[var]] if var in environ else []) + [ls.value for ls in sets]
        if on and all(r.raw.compared for r in on):
            use.value_ignored = any(not any(r.accepts(v) for r in on) for v in values)
        out[var] = use
    return out
