"""The user's Wan checkout, read with ``ast``: arguments, env vars, launchers and perf-relevant code sites.

Everything is judged against the run's import path (``import_path``): an env var only matters if a file the run
imports reads it, and a slow attention only matters if ``forward`` reaches it. That is the difference between a
finding and a day on the wrong trail. The checkout is never imported or executed; code comes through a
``Source`` reader so the git probe can compute the same facts for another ref.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandoc.facts import ArgFacts, CodeSite, EnvRead, EnvVarUse, LauncherSet, RepoFacts
from wandoc.probes.import_path import FsSource, ParsedFile, Source, Walk, dotted, skip_dir, walk_source
from wandoc.probes.wan_tasks import other_task_files, scope_sites

REDACTED = "<redacted>"
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE")
CALL_DEPTH = 3  # how far calls are followed from forward() and attention helpers
_V22_MARKERS = ("ti2v", "A14B", "high_noise_model")


def is_secret_name(name: str) -> bool:
    return any(m in name.upper() for m in SECRET_MARKERS)


# -- finding the checkout ------------------------------------------------------------------------------


@dataclass
class Checkout:
    root: Path | None
    given: bool
    error: str | None = None


def looks_like_wan(root: Path, script: str = "generate.py") -> bool:
    return (root / script).is_file() and (root / "wan").is_dir()


def find_checkout(path: Path | str | None, script: str = "generate.py", cwd: Path | None = None) -> Checkout:
    """The folder to read: the one named, a Wan folder inside it (an app repo with ``Wan2.2/``), or the cwd."""
    if path is None:
        here = cwd or Path.cwd()
        return Checkout(here.resolve(), True) if looks_like_wan(here, script) else Checkout(None, False)
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


# -- the probe -----------------------------------------------------------------------------------------


def probe_repo(
    path: Path | None,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
) -> RepoFacts:
    """Facts of the checkout at ``path`` (or the cwd when it is one); never raises."""
    try:
        co = find_checkout(path, script)
        if co.root is None:
            return RepoFacts(path=str(path or ""), given=co.given, error=co.error, given_args=list(given_args))
        facts = code_facts(FsSource(co.root), script, given_args, environ, scan_launchers(co.root))
        facts.path = str(co.root)
        facts.given = co.given
        return facts
    except Exception as exc:  # a probe reports, it does not crash the doctor
        return RepoFacts(path=str(path or ""), given=path is not None, error=f"code probe failed: {exc!r}")


def code_facts(
    source: Source,
    script: str = "generate.py",
    given_args: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    launchers: Sequence[LauncherSet] = (),
) -> RepoFacts:
    """Every code fact of one side of a checkout (working tree or git ref), given its reader."""
    walk = walk_source(source, script)
    facts = RepoFacts(
        found=True,
        entry_script=script,
        given_args=list(given_args),
        import_path=walk.path,
        launchers=list(launchers),
    )
    if not walk.files:
        facts.error = "no Python files in the checkout"
    elif script not in walk.resolver.files:
        facts.error = f"{script} not found in the checkout"
    entry = walk.parsed(script) if script in walk.resolver.files else None
    if entry is not None and entry.tree is not None:
        specs = arg_specs(entry.tree)
        facts.args = [s.as_facts() for s in specs]
        facts.effective, facts.args_error, facts.offload_defaulted = effective_args(
            specs, entry.tree, given_args, environ, script
        )
    texts = _texts(walk)
    reads = _all_env_reads(walk, texts)
    facts.env_reads = [r.fact for r in reads]
    facts.env_vars = join_env(reads, facts.launchers, environ)
    facts.import_path.other_tasks = other_task_files(facts.import_path.modules, facts.effective.get("task"))
    sites = scope_sites(find_sites(walk, texts), facts.import_path.other_tasks)
    facts.sites = sites
    on = [s for s in sites if s.on_path]
    facts.flash_attn_required = any(s.kind == "flash_attention_call" for s in on)
    facts.sdpa_fallback = any(s.kind == "sdpa_call" for s in on)
    facts.fa3_result_indexed = any(s.kind == "fa3_index0" for s in on)
    facts.is_wan, facts.wan_version = _wan_identity(walk, texts, facts.args)
    for rel in sorted(set(walk.files) - walk.on_path):
        pf = walk.cached(rel)
        if pf is not None and pf.error:
            facts.import_path.errors.append(f"{rel}:{pf.error[0]} {pf.error[1]}")
    return facts


def _texts(walk: Walk) -> dict[str, str]:
    out: dict[str, str] = {}
    for rel in walk.files:
        pf = walk.cached(rel)
        text = pf.text if pf is not None else walk.source.read(rel)
        if text is not None:
            out[rel] = text
    return out


def _wan_identity(walk: Walk, texts: Mapping[str, str], args: list[ArgFacts]) -> tuple[bool, str]:
    flags = {f for a in args for f in a.flags}
    scope = [texts[f] for f in (walk.on_path or texts) if f in texts]
    is_wan = (
        "wan/modules/model.py" in walk.resolver.files
        or any(re.search(r"^class WanModel\b", t, re.M) for t in scope)
        or {"--task", "--ckpt_dir"} <= flags
    )
    if not is_wan:
        return False, ""
    return True, "2.2" if any(m in t for t in scope for m in _V22_MARKERS) else "2.1"


# -- arguments -----------------------------------------------------------------------------------------

_UNKNOWN = object()  # a default that is not a literal: the run computes it, we cannot


@dataclass
class ArgSpec:
    """One ``add_argument`` call as written in the entry script."""

    flags: list[str]
    dest: str
    default: Any = None
    literal_default: bool = True
    type_name: str = ""
    action: str = ""
    choices: list[Any] | None = None
    nargs: Any = None
    const: Any = None
    required: bool = False

    def as_facts(self) -> ArgFacts:
        return ArgFacts(
            name=self.dest,
            flags=self.flags,
            default=self.default if self.literal_default else None,
            type=self.type_name,
            action=self.action,
            choices=self.choices,
        )


def _literal(node: ast.AST | None) -> tuple[bool, Any]:
    if node is None:
        return False, None
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def arg_specs(tree: ast.Module) -> list[ArgSpec]:
    """Every ``X.add_argument(...)`` in the entry script, in source order."""
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"
    ]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    out: list[ArgSpec] = []
    for call in calls:
        flags = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if not flags or len(flags) != len(call.args):
            continue
        kw = {k.arg: k.value for k in call.keywords if k.arg}
        action = ""
        if "action" in kw:
            act = kw["action"]
            action = act.value if isinstance(act, ast.Constant) and isinstance(act.value, str) else dotted(act)
            action = action.rsplit(".", 1)[-1]
        ok, dest = _literal(kw.get("dest"))
        if not (ok and isinstance(dest, str)):
            dest = _dest_of(flags)
        spec = ArgSpec(flags=flags, dest=dest, action=action)
        if "default" in kw:
            spec.literal_default, spec.default = _literal(kw["default"])
        else:
            spec.default = {"store_true": False, "store_false": True}.get(action)
        if "type" in kw:
            t = kw["type"]
            spec.type_name = "lambda" if isinstance(t, ast.Lambda) else dotted(t).rsplit(".", 1)[-1]
        ok, choices = _literal(kw.get("choices"))
        spec.choices = list(choices) if ok and isinstance(choices, list | tuple | set | range) else None
        spec.nargs = _literal(kw.get("nargs"))[1]
        spec.const = _literal(kw.get("const"))[1]
        spec.required = _literal(kw.get("required"))[1] is True
        out.append(spec)
    return out


def _dest_of(flags: list[str]) -> str:
    if not flags[0].startswith("-"):
        return flags[0]
    long = [f for f in flags if f.startswith("--")]
    return (long or flags)[0].lstrip("-").replace("-", "_")


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports instead of printing and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise _ArgError(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:  # type: ignore[override]
        raise _ArgError((message or "").strip() or "the script would print its help or version and exit")

    def _print_message(self, message: str, file: Any = None) -> None:
        return None


def _str2bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "t", "y", "1"):
        return True
    if text in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected.")


def _converter(type_name: str) -> Any:
    if type_name in ("int", "float", "str", "bool"):
        return {"int": int, "float": float, "str": str, "bool": bool}[type_name]  # bool("False") is True, as in Python
    if "bool" in type_name.lower():
        return _str2bool
    return None


def effective_args(
    specs: Sequence[ArgSpec],
    tree: ast.Module,
    given_args: Sequence[str],
    environ: Mapping[str, str],
    prog: str = "generate.py",
) -> tuple[dict[str, Any], str | None, bool]:
    """Parse ``given_args`` as the script would, then apply its literal ``if args.X is None:`` defaults.

    Returns (effective values, argparse's error message or None, offload_model came from the runtime default).
    """
    parser = _Parser(prog=prog, exit_on_error=False, conflict_handler="resolve")
    store_like = ("", "store", "append", "extend")
    for s in specs:
        kwargs: dict[str, Any] = {"default": s.default if s.literal_default else _UNKNOWN}
        if s.flags[0].startswith("-"):
            kwargs["dest"] = s.dest
        if s.action and s.action != "store":
            kwargs["action"] = argparse.BooleanOptionalAction if s.action == "BooleanOptionalAction" else s.action
            if s.action not in ("store_true", "store_false", "store_const", "append", "append_const", "count",
                                "extend", "help", "version", "BooleanOptionalAction"):  # fmt: skip
                kwargs.pop("action")  # a custom Action class: parse it as a plain store
        action = kwargs.get("action", "")
        if action in store_like and (conv := _converter(s.type_name)) is not None:
            kwargs["type"] = conv
        if s.choices is not None and action in store_like:
            kwargs["choices"] = s.choices
        if s.nargs is not None and action in store_like:
            kwargs["nargs"] = s.nargs
        if s.const is not None and action in (*store_like, "store_const", "append_const"):
            kwargs["const"] = s.const
        if s.required and given_args and s.flags[0].startswith("-"):
            kwargs["required"] = True  # with no args given, judge the defaults instead of a missing flag
        try:
            parser.add_argument(*s.flags, **kwargs)
        except (ValueError, TypeError, argparse.ArgumentError):
            continue
    try:
        ns = parser.parse_args(list(given_args))
    except (_ArgError, argparse.ArgumentError) as exc:
        return {}, str(exc) or "invalid arguments", False
    except Exception as exc:  # a type converter or an action of ours failing: still the user's arguments
        return {}, f"{type(exc).__name__}: {exc}", False
    effective = {k: v for k, v in vars(ns).items() if v is not _UNKNOWN}
    defaulted = _runtime_defaults(tree, effective, environ)
    return effective, None, "offload_model" in defaulted


class _NoEval(Exception):
    pass


def _world_size(environ: Mapping[str, str]) -> int:
    try:
        return int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _reads_world_size(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and n.value == "WORLD_SIZE":
            return True
        if isinstance(n, ast.Call) and dotted(n.func).endswith("get_world_size"):
            return True
    return False


def _runtime_defaults(tree: ast.Module, effective: dict[str, Any], environ: Mapping[str, str]) -> set[str]:
    """``if args.X is None: args.X = <literal or a condition on the world size>``, evaluated for this run."""
    ws = _world_size(environ)
    ws_names = {
        n.targets[0].id
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign)
        and len(n.targets) == 1
        and isinstance(n.targets[0], ast.Name)
        and _reads_world_size(n.value)
    }
    blocks = sorted((n for n in ast.walk(tree) if isinstance(n, ast.If)), key=lambda n: n.lineno)
    done: set[str] = set()
    for block in blocks:
        test = block.test
        if not (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Is)
            and isinstance(test.left, ast.Attribute)
            and isinstance(test.left.value, ast.Name)
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None
        ):
            continue
        obj, attr = test.left.value.id, test.left.attr
        if attr not in effective or effective[attr] is not None:
            continue
        for stmt in block.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
                continue
            target = stmt.targets[0]
            if not (isinstance(target, ast.Attribute) and target.attr == attr and dotted(target.value) == obj):
                continue
            try:
                value = _eval_default(stmt.value, effective, ws, ws_names)
            except (_NoEval, TypeError, ValueError):
                continue
            effective[attr] = value
            done.add(attr)
    return done


def _eval_default(node: ast.AST, effective: Mapping[str, Any], ws: int, ws_names: set[str]) -> Any:
    rec = lambda n: _eval_default(n, effective, ws, ws_names)  # noqa: E731
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool | type(None)):
        return node.value
    if isinstance(node, ast.IfExp):
        return rec(node.body) if rec(node.test) else rec(node.orelse)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not rec(node.operand)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -rec(node.operand)
    if isinstance(node, ast.BoolOp):
        values = [rec(v) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        a, b = rec(node.left), rec(node.comparators[0])
        ops: dict[type, Any] = {
            ast.Gt: lambda: a > b, ast.GtE: lambda: a >= b, ast.Lt: lambda: a < b, ast.LtE: lambda: a <= b,
            ast.Eq: lambda: a == b, ast.NotEq: lambda: a != b, ast.Is: lambda: a is b, ast.IsNot: lambda: a is not b,
        }  # fmt: skip
        if type(node.ops[0]) in ops:
            return ops[type(node.ops[0])]()
    if isinstance(node, ast.Name) and (node.id in ws_names or "world_size" in node.id.lower()):
        return ws
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr in effective:
        return effective[node.attr]
    if isinstance(node, ast.Call) and _reads_world_size(node):
        return ws
    raise _NoEval


# -- env var reads -------------------------------------------------------------------------------------

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


def _all_env_reads(walk: Walk, texts: Mapping[str, str]) -> list[Read]:
    out: list[Read] = []
    for rel in walk.files:
        text = texts.get(rel, "")
        if "environ" not in text and "getenv" not in text:
            continue
        pf = walk.parsed(rel)
        if pf is None or pf.tree is None:
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

    def __init__(self, tree: ast.Module) -> None:
        super().__init__()
        self.tree = tree
        self.done: set[int] = set()

    def add(self, stmt: ast.stmt) -> None:
        if id(stmt) in self.done:
            return
        self.done.add(id(stmt))
        self[stmt] = self.tree
        for node in ast.walk(stmt):
            for child in ast.iter_child_nodes(node):
                self[child] = node

    def complete(self) -> None:
        for stmt in self.tree.body:
            self.add(stmt)


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

    parents = _Parents(tree)
    for _ in range(2):  # a second round once ``env = os.environ`` aliases are known
        words = ("environ", "getenv", *environ_names, *getenv_names)
        for stmt in tree.body:
            if any(w in _segment(pf, stmt) for w in words):
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
            var = _const_str(node.slice)
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            is_get = isinstance(f, ast.Attribute) and f.attr == "get" and is_environ(f.value)
            is_getenv = (isinstance(f, ast.Attribute) and f.attr == "getenv" and dotted(f.value) in os_names) or (
                isinstance(f, ast.Name) and f.id in getenv_names
            )
            if is_get or is_getenv:
                var = _const_str(node.args[0])
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
            var = _const_str(node.left)
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


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


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
        parents.complete()  # a module-level name: its uses may be anywhere in the file
    return [n for n in ast.walk(scope) if match(n)]


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
        if isinstance(op, ast.Eq | ast.NotEq) and (s := _const_str(other)) is not None:
            (raw.accepts if isinstance(op, ast.Eq) else raw.rejects).append(s)
            raw.compared = True
        elif isinstance(op, ast.In | ast.NotIn) and we_are_left and isinstance(other, ast.Tuple | ast.List | ast.Set):
            values = [s for e in other.elts if (s := _const_str(e)) is not None]
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


# -- launchers -----------------------------------------------------------------------------------------

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


# -- code sites ----------------------------------------------------------------------------------------

FORWARD_KINDS = frozenset(
    {"mask_per_call", "item_in_forward", "cpu_in_forward", "float_upcast_in_attention", "python_loop_kernel",
     "sync_in_forward", "flash_attention_call"}
)  # fmt: skip
_KERNELS = frozenset(
    {"scaled_dot_product_attention", "flash_attn_func", "flash_attn_varlen_func", "flash_attention", "attention",
     "sageattn", "memory_efficient_attention", "matmul", "bmm", "baddbmm", "einsum", "mm", "softmax"}
)  # fmt: skip
_MASK_BUILDERS = frozenset(
    {"ones", "zeros", "full", "empty", "ones_like", "zeros_like", "full_like", "empty_like", "tril", "triu",
     "where", "arange", "masked_fill", "new_ones", "new_zeros", "new_full", "new_empty", "eye"}
)  # fmt: skip
_QKV = frozenset({"q", "k", "v", "query", "key", "value", "qkv", "xq", "xk", "xv"})
_MODELISH = ("model", "encoder", "vae", "transformer", "dit", "pipe", "unet", "clip", "expert", "net")
# Text a top-level statement must contain for the setup kinds (found anywhere, not only under forward) to be there.
_ANYWHERE_TRIGGERS = (
    "sdp", "torch.compile", "_dynamo", "cpu_offload", "empty_cache", ".cpu(", "'cpu'", '"cpu"',
    "scaled_dot_product_attention", "flash_attn_interface",
)  # fmt: skip


@dataclass
class _Hit:
    kind: str
    function: str
    line: int
    in_loop: bool = False
    target: str = ""  # for flash_attention_call: the called name, confirmed later


@dataclass
class _FnScan:
    hits: list[_Hit] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # ("name", n, "") / ("self", a, "") / ("attr", m, a)
    asserts_flash: bool = False


def _attnish(name: str) -> bool:
    low = name.lower()
    return "attn" in low or "attention" in low


_FLASH_FLAG = re.compile(r"flash|(?:^|_)fa[23]?(?:$|_)|^fa[23]", re.I)  # FLASH_ATTN_2_AVAILABLE, FA3, HAS_FA3, use_fa


def _mentions_flash(node: ast.AST) -> bool:
    """A test or assert about flash-attention availability (names like FLASH_ATTN_2_AVAILABLE, FA3)."""
    for n in ast.walk(node):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
        if name and _FLASH_FLAG.search(name):
            return True
    return False


def _is_false(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _is_cpu(node: ast.AST) -> bool:
    if _const_str(node) == "cpu":
        return True
    return isinstance(node, ast.Call) and dotted(node.func).endswith("device") and any(_is_cpu(a) for a in node.args)


def _is_fp32(node: ast.AST) -> bool:
    return dotted(node) in ("torch.float32", "torch.float", "float32") or _const_str(node) == "float32"


def _base_name(node: ast.AST) -> str:
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return ""


class _Scanner:
    """Classifies the nodes of one function (or top-level statement) into SITE_KINDS hits and call references.

    A hand-rolled traversal with a type -> handler table: ``ast.NodeVisitor`` costs about twice as much, and this
    runs over every function that forward() reaches.
    """

    def __init__(self, attn_file: bool, qual: str, cls: str) -> None:
        self.out = _FnScan()
        self.attn_file = attn_file
        self.qual, self.cls = qual, cls
        self.in_loop = False
        self.guard = False
        self._table: dict[type, Any] = {
            ast.FunctionDef: self._function, ast.AsyncFunctionDef: self._function, ast.Lambda: self._lambda,
            ast.ClassDef: self._class, ast.For: self._for, ast.AsyncFor: self._for, ast.While: self._while,
            ast.ListComp: self._comp, ast.SetComp: self._comp, ast.GeneratorExp: self._comp, ast.DictComp: self._comp,
            ast.If: self._if, ast.IfExp: self._if, ast.Assert: self._assert, ast.Assign: self._assign,
            ast.Subscript: self._subscript, ast.BinOp: self._binop, ast.Call: self._call,
            ast.Load: None, ast.Store: None, ast.Del: None, ast.Constant: None, ast.Name: None,
        }  # fmt: skip

    def visit(self, node: ast.AST) -> None:
        handler = self._table.get(type(node), self._children)
        if handler is not None:
            handler(node)

    def _children(self, node: ast.AST) -> None:
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    def hit(self, kind: str, node: ast.AST, target: str = "") -> None:
        self.out.hits.append(_Hit(kind, self.qual, getattr(node, "lineno", 0), self.in_loop, target))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        saved = self.qual, self.in_loop, self.guard
        if self.qual == "<module>":
            self.qual = f"{self.cls}.{node.name}" if self.cls else node.name
        self.in_loop = False
        for stmt in node.body:
            self.visit(stmt)
        self.qual, self.in_loop, self.guard = saved

    def _lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    def _class(self, node: ast.ClassDef) -> None:
        if self.qual != "<module>" or self.cls:
            return self._children(node)
        self.cls = node.name
        for stmt in node.body:
            self.visit(stmt)
        self.cls = ""
        return None

    def _loop(self, head: Sequence[ast.AST], body: Sequence[ast.AST]) -> None:
        for n in head:
            self.visit(n)
        saved, self.in_loop = self.in_loop, True
        for n in body:
            self.visit(n)
        self.in_loop = saved

    def _for(self, node: ast.For | ast.AsyncFor) -> None:
        self._loop([node.iter], [*node.body, *node.orelse])

    def _while(self, node: ast.While) -> None:
        self._loop([node.test], [*node.body, *node.orelse])

    def _comp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self._loop([g.iter for g in node.generators], [*elts, *(c for g in node.generators for c in g.ifs)])

    def _if(self, node: ast.If | ast.IfExp) -> None:
        self.visit(node.test)
        saved = self.guard
        self.guard = saved or _mentions_flash(node.test)  # the else branch is the fallback: guarded too
        for n in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(n)
        for n in node.orelse if isinstance(node.orelse, list) else [node.orelse]:
            self.visit(n)
        self.guard = saved

    def _assert(self, node: ast.Assert) -> None:
        if _mentions_flash(node.test):
            self.out.asserts_flash = True
        self._children(node)

    def _assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            name = dotted(t.value if isinstance(t, ast.Subscript) else t).rsplit(".", 1)[-1].lower()
            if not (name.endswith("mask") and (name == "mask" or _attnish(name) or _attnish(self.qual))):
                continue  # an attention mask, not e.g. an input mask for the VAE
            builds = any(
                isinstance(n, ast.Call) and dotted(n.func).rsplit(".", 1)[-1] in _MASK_BUILDERS
                for n in ast.walk(node.value)
            )
            if builds or (isinstance(t, ast.Subscript) and self.in_loop):
                self.hit("mask_per_call", node)
                break
        self._children(node)

    def _subscript(self, node: ast.Subscript) -> None:
        idx = node.slice
        if (
            isinstance(idx, ast.Constant)
            and idx.value == 0
            and isinstance(node.value, ast.Call)
            and dotted(node.value.func).startswith("flash_attn_interface.")
        ):
            self.hit("fa3_index0", node)
        self._children(node)

    def _binop(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.MatMult) and self.in_loop:
            self.hit("python_loop_kernel", node)
        self._children(node)

    def _call(self, node: ast.Call) -> None:
        self._classify(node)
        self._children(node)

    def _classify(self, node: ast.Call) -> None:
        func = node.func
        full = dotted(func)
        name = func.attr if isinstance(func, ast.Attribute) else full
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if isinstance(func, ast.Name):
            self.out.calls.append(("name", func.id, ""))
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id == "self":
                self.out.calls.append(("self", func.attr, ""))
            else:
                self.out.calls.append(("attr", func.value.id, func.attr))
        if name in ("sdp_kernel", "sdpa_kernel"):
            backends = {dotted(e).rsplit(".", 1)[-1] for a in node.args for e in getattr(a, "elts", [a])}
            flash_off = _is_false(kw.get("enable_flash")) or (bool(backends) and "FLASH_ATTENTION" not in backends)
            math_only = backends == {"MATH"} or (
                _is_false(kw.get("enable_flash")) and _is_false(kw.get("enable_mem_efficient"))
                and not _is_false(kw.get("enable_math"))
            )  # fmt: skip
            if flash_off:
                self.hit("sdpa_flash_disabled", node)
            if math_only:
                self.hit("sdpa_math_only", node)
        elif name == "enable_flash_sdp" and node.args and _is_false(node.args[0]):
            self.hit("sdpa_flash_disabled", node)
        elif name in ("item", "tolist") and isinstance(func, ast.Attribute) and not node.args:
            self.hit("item_in_forward", node)
        elif name in ("cpu", "numpy") and isinstance(func, ast.Attribute) and not node.args:
            self.hit("cpu_in_forward", node)
            if name == "cpu" and any(m in dotted(func.value).lower() for m in _MODELISH):
                self.hit("model_offload", node)
        elif name == "synchronize" and ("cuda" in full or isinstance(func, ast.Name)):
            self.hit("sync_in_forward", node)
        elif name == "empty_cache":
            self.hit("empty_cache_in_loop", node)
        elif full in ("torch.compile", "torch._dynamo.optimize"):
            self.hit("compile_call", node)
        elif name == "enable_sequential_cpu_offload":
            self.hit("sequential_offload", node)
        elif name == "enable_model_cpu_offload":
            self.hit("model_offload", node)
        if name == "to" and isinstance(func, ast.Attribute) and any(_is_cpu(a) for a in [*node.args, *kw.values()]):
            self.hit("cpu_in_forward", node)
            if any(m in dotted(func.value).lower() for m in _MODELISH):
                self.hit("model_offload", node)
        upcast = (name == "float" and not node.args) or (
            name in ("to", "type") and any(_is_fp32(a) for a in [*node.args, *kw.values()])
        )
        if upcast and isinstance(func, ast.Attribute) and (self.attn_file or _attnish(self.qual)):
            base = _base_name(func.value)
            if base in _QKV or base.startswith(("q_", "k_", "v_")):
                self.hit("float_upcast_in_attention", node)
        if name == "scaled_dot_product_attention":
            self.hit("sdpa_call", node)
        if self.in_loop and name in _KERNELS and not (name == "einsum" and len(node.args) < 3):  # 1 operand: a permute
            self.hit("python_loop_kernel", node)
        in_flash_helper = "flash" in self.qual.rsplit(".", 1)[-1].lower()  # the helper itself, not its caller
        if (name.startswith("flash_attn") or name == "flash_attention") and not self.guard and not in_flash_helper:
            self.hit("flash_attention_call", node, target=name)
        if "attn_mask" in kw and any(
            isinstance(n, ast.Call) and dotted(n.func).rsplit(".", 1)[-1] in _MASK_BUILDERS
            for n in ast.walk(kw["attn_mask"])
        ):
            self.hit("mask_per_call", node)


def _functions(pf: ParsedFile) -> dict[str, tuple[ast.AST, str]]:
    """qualname -> (node, class) for module-level functions (also under a top-level if/try) and class methods."""
    cached = pf.memo.get("functions")
    if cached is not None:
        return cached
    out: dict[str, tuple[ast.AST, str]] = {}

    def index(body: Sequence[ast.stmt], cls: str, depth: int) -> None:
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                out[f"{cls}.{stmt.name}" if cls else stmt.name] = (stmt, cls)
            elif isinstance(stmt, ast.ClassDef) and not cls:
                index(stmt.body, stmt.name, depth)
            elif isinstance(stmt, ast.If | ast.Try) and depth < 2:  # ``if FLASH: def attention(...)``
                index(
                    [*stmt.body, *stmt.orelse, *(s for h in getattr(stmt, "handlers", []) for s in h.body)],
                    cls,
                    depth + 1,
                )

    index(pf.tree.body if pf.tree else [], "", 0)
    pf.memo["functions"] = out
    return out


def _segment(pf: ParsedFile, node: ast.AST) -> str:
    start, end = getattr(node, "lineno", 1), getattr(node, "end_lineno", None) or len(pf.lines)
    return "\n".join(pf.lines[start - 1 : end])


def _scan_function(pf: ParsedFile, qual: str, attn_file: bool) -> _FnScan:
    key = f"fn:{qual}:{attn_file}"
    cached = pf.memo.get(key)
    if cached is not None:
        return cached
    node, cls = _functions(pf)[qual]
    scanner = _Scanner(attn_file, qual, cls)
    for stmt in node.body:  # type: ignore[attr-defined]
        scanner.visit(stmt)
    pf.memo[key] = scanner.out
    return scanner.out


def _scan_setup(pf: ParsedFile, attn_file: bool) -> list[_Hit]:
    """Hits of the whole file for the kinds found anywhere; only statements whose text could hold one are walked,
    and functions reuse the per-function scan that forward() reachability also uses."""
    key = f"setup:{attn_file}"
    cached = pf.memo.get(key)
    if cached is not None:
        return cached
    hits: list[_Hit] = []
    if pf.tree is not None and any(t in pf.text for t in _ANYWHERE_TRIGGERS):
        indexed = {id(node): qual for qual, (node, _) in _functions(pf).items()}
        todo: list[tuple[ast.stmt, str]] = [(stmt, "") for stmt in pf.tree.body]
        while todo:
            stmt, cls = todo.pop()
            if not any(t in _segment(pf, stmt) for t in _ANYWHERE_TRIGGERS):
                continue
            if id(stmt) in indexed:
                hits.extend(_scan_function(pf, indexed[id(stmt)], attn_file).hits)
            elif isinstance(stmt, ast.ClassDef) and not cls:
                todo.extend((sub, stmt.name) for sub in stmt.body)
            else:
                scanner = _Scanner(attn_file, "<module>", cls)
                scanner.visit(stmt)
                hits.extend(scanner.out.hits)
    pf.memo[key] = hits
    return hits


def _is_attn_file(rel: str) -> bool:
    return "attention" in posixpath.basename(rel).lower()


class _CallGraph:
    """Follows calls by name from forward() and attention helpers, within one set of files."""

    def __init__(self, walk: Walk, files: Iterable[str]) -> None:
        self.walk = walk
        self.files = set(files)
        self.by_name: dict[str, list[tuple[str, str]]] = {}
        for rel in sorted(self.files):
            pf = walk.parsed(rel)
            if pf is None or pf.tree is None:
                continue
            for qual in _functions(pf):
                if "." not in qual:
                    self.by_name.setdefault(qual, []).append((rel, qual))

    def resolve(self, rel: str, cls: str, call: tuple[str, str, str]) -> tuple[str, str] | None:
        kind, a, b = call
        pf = self.walk.parsed(rel)
        funcs = _functions(pf) if pf else {}
        if kind == "self":
            return (rel, f"{cls}.{a}") if cls and f"{cls}.{a}" in funcs else None
        if kind == "name":
            if a in funcs:
                return rel, a
            bound = self.walk.bindings(rel).get(a)
            if bound and bound[1] is not None and bound[0] in self.files:
                tpf = self.walk.parsed(bound[0])
                if tpf is not None and bound[1] in _functions(tpf):
                    return bound[0], bound[1]
            cands = self.by_name.get(a, [])
            return cands[0] if len(cands) == 1 else None
        bound = self.walk.bindings(rel).get(a)
        if bound and bound[1] is None and bound[0] in self.files:
            tpf = self.walk.parsed(bound[0])
            if tpf is not None and b in _functions(tpf):
                return bound[0], b
        return None

    def reach(self) -> dict[tuple[str, str], int]:
        """(file, qualname) -> call depth, from every forward() and attention helper in the files."""
        depth: dict[tuple[str, str], int] = {}
        frontier: list[tuple[str, str]] = []
        for rel in sorted(self.files):
            pf = self.walk.parsed(rel)
            if pf is None or pf.tree is None:
                continue
            for qual in _functions(pf):
                short = qual.rsplit(".", 1)[-1]
                if short == "forward" or _attnish(short):
                    depth[(rel, qual)] = 0
                    frontier.append((rel, qual))
        for level in range(1, CALL_DEPTH + 1):
            nxt: list[tuple[str, str]] = []
            for rel, qual in frontier:
                pf = self.walk.parsed(rel)
                assert pf is not None
                cls = _functions(pf)[qual][1]
                for call in _scan_function(pf, qual, _is_attn_file(rel)).calls:
                    target = self.resolve(rel, cls, call)
                    if target is not None and target not in depth:
                        depth[target] = level
                        nxt.append(target)
            frontier = nxt
        return depth

    def requires_flash(self, rel: str, qual: str, target: str) -> bool:
        pf = self.walk.parsed(rel)
        cls = _functions(pf)[qual][1] if pf and qual in _functions(pf) else ""
        resolved = self.resolve(rel, cls, ("name", target, ""))
        if resolved is None:
            return target.startswith("flash_attn_")  # flash_attn's own function, called with no fallback
        tpf = self.walk.parsed(resolved[0])
        assert tpf is not None
        return _scan_function(tpf, resolved[1], _is_attn_file(resolved[0])).asserts_flash


def find_sites(walk: Walk, texts: Mapping[str, str] | None = None) -> list[CodeSite]:
    """SITE_KINDS sites: forward() and what it calls for per-call kinds, anywhere for setup kinds.

    On-path and off-path files are analysed separately (an off-path file's calls are not followed into the run),
    and off-path sites carry ``on_path=False``.
    """
    texts = texts or {}
    on_files = sorted(walk.on_path)
    wanted = ("forward", "attn", "attention", *_ANYWHERE_TRIGGERS)
    off_files = [f for f in walk.files if f not in walk.on_path and any(t in texts.get(f, "") for t in wanted)]
    sites: list[CodeSite] = []
    seen: set[tuple[str, str, str]] = set()
    for files, on_path in ((on_files, True), (off_files, False)):
        graph = _CallGraph(walk, files)
        reached = graph.reach()
        for rel in files:
            pf = walk.parsed(rel)
            if pf is None or pf.tree is None:
                continue
            attn_file = _is_attn_file(rel)
            hits = list(_scan_setup(pf, attn_file))
            for qual in _functions(pf):
                if (rel, qual) in reached:
                    hits.extend(_scan_function(pf, qual, attn_file).hits)
            for h in sorted(hits, key=lambda h: h.line):
                in_fwd = (rel, h.function) in reached
                if h.kind in FORWARD_KINDS and not in_fwd:
                    continue
                if h.kind == "empty_cache_in_loop" and not (h.in_loop or in_fwd):
                    continue
                if h.kind == "model_offload" and in_fwd:
                    continue
                if h.kind == "flash_attention_call" and not graph.requires_flash(rel, h.function, h.target):
                    continue
                key = (h.kind, rel, h.function)
                if key in seen:
                    continue
                seen.add(key)
                line = pf.lines[h.line - 1].strip() if 0 < h.line <= len(pf.lines) else ""
                sites.append(
                    CodeSite(
                        kind=h.kind, file=rel, line=h.line, function=h.function, snippet=line[:120], on_path=on_path
                    )
                )
    return sites
