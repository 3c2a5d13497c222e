"""A small, safe expression language for rule conditions and messages.

Rule files come from strangers, so an expression may only read the tree it is given and call a fixed set of
pure helpers. It is parsed with Python's ``ast`` but never compiled or ``eval``-ed: a whitelist walker
evaluates it. Attribute access is a key lookup on JSON data (``gpu.name`` reads ``gpu["name"]``), so no
Python object internals are reachable. Missing data reads as ``None``; ordering comparisons with ``None`` are
false, arithmetic with ``None`` gives ``None``, so a rule over facts that a probe could not read stays quiet
instead of crashing.

Every evaluation spends from a ``Budget`` of work, shared by everything one rule does over one scope (its
``each`` items, condition, evidence and messages): a node evaluated, an item visited or built, a helper's walk
over a list or a string all cost units, charged before the work where its size is known. A rule that runs out
raises ``BudgetExceeded``, so no rule, however written, takes more than about a second or builds more than
some tens of megabytes. Integers are kept under ``MAX_INT_BITS``.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_SOURCE = 4000
MAX_NODES = 600
MAX_WORK = 1_000_000  # units one rule may spend judging one scope: about a second on a slow CPU
MAX_INT_BITS = 256  # bytes, counts and their products fit many times over; 2**256 squared does not get built
MAX_DEPTH = 64  # nesting of a value that a rule shows, compares or walks
MAX_PATTERN = 256  # longest like() pattern: compiled patterns are cached
CHARS_PER_UNIT = 32  # text is read and built at C speed: one unit per 32 characters
ENTRY_UNITS = 8  # a {key, value} entry is a new dict: a few hundred bytes
FINDING_UNITS = 1_000  # a finding is a model, a message, evidence, lines on a screen: at most 1,000 per rule


class ExprError(ValueError):
    """An expression that cannot be parsed, is not allowed, or failed while evaluating."""


class BudgetExceeded(ExprError):
    """A rule that spent its work budget (see ``Budget``)."""


class Budget:
    """The work one rule may do judging one scope, in units of roughly a microsecond or a few dozen bytes: one
    node evaluated, one item visited, built or compared, 32 characters read or written. Charged before the work
    wherever the size is known, so running out stops a rule before it builds what it asked for."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int = MAX_WORK) -> None:
        self.left = self.limit = limit

    def charge(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            self.exceeded()

    def exceeded(self) -> None:
        self.left = -1
        raise BudgetExceeded(f"exceeded its work budget of {self.limit:,} steps")

    def charge_deep(self, value: Any) -> None:
        """What showing, comparing or walking a value costs: every item at every level, and its text. Shared
        items count each time they are reached, as the walk that follows reaches them."""
        units, stack = 1, [(value, 0)]
        while stack:
            v, depth = stack.pop()
            if isinstance(v, str):
                units += 1 + len(v) // CHARS_PER_UNIT
            elif isinstance(v, list | dict):
                if depth >= MAX_DEPTH:
                    raise ExprError(f"a value nested more than {MAX_DEPTH} levels")
                units += len(v) * (2 if isinstance(v, dict) else 1)
                if units > self.left:
                    break
                stack.extend((x, depth + 1) for x in v)
                if isinstance(v, dict):
                    stack.extend((x, depth + 1) for x in v.values())
            elif isinstance(v, int):
                units += 1 + (v.bit_length() // 256) ** 2 // 4  # int to text is quadratic: 0.4 ms at 4,300 digits
            else:
                units += 1
            if units > self.left:
                break
        self.charge(units)


def _small_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ExprError(f"an integer larger than {MAX_INT_BITS} bits")
    return value


_Missing = None
CONSTANT_NAMES = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None, "null": None}


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _version_key(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    parts = re.findall(r"\d+", str(v).split("+")[0])
    return tuple(int(p) for p in parts[:4]) if parts else None


def _version_cmp(a: Any, b: Any) -> int | None:
    ka, kb = _version_key(a), _version_key(b)
    if ka is None or kb is None:
        return None
    n = max(len(ka), len(kb))
    ka, kb = ka + (0,) * (n - len(ka)), kb + (0,) * (n - len(kb))
    return (ka > kb) - (ka < kb)


def _fmt_bytes(n: Any) -> str | None:
    if not _num(n):
        return None
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return None  # pragma: no cover


def _safe_len(x: Any) -> int | None:
    return len(x) if isinstance(x, str | list | dict) else None


def _agg(fn: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        items = args[0] if len(args) == 1 else list(args)
        if not isinstance(items, list):
            return None
        values = [i for i in items if i is not None]
        try:
            return fn(values) if values else None
        except TypeError:
            return None

    return run


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, dict):
        return isinstance(item, str | int | float | bool | type(None)) and item in container
    if isinstance(container, list):
        return item in container
    return False


def _lower(s: Any) -> Any:
    return s.lower() if isinstance(s, str) else None


def _join(items: Any, sep: Any = ", ") -> str | None:
    if not isinstance(items, list) or not isinstance(sep, str):
        return None
    return sep.join(_show(i) for i in items)


def _to_num(x: Any) -> float | int | None:
    if _num(x):
        return x
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, str):
        try:
            f = float(x.strip())
        except ValueError:
            return None
        return int(f) if f.is_integer() and "." not in x else f
    return None


def _like(s: Any, p: Any) -> bool:
    """fnmatch's shell-style match, compiled through ``re`` (whose cache is bounded; fnmatch keeps 32,768
    patterns) and for patterns of at most MAX_PATTERN characters."""
    if not (isinstance(s, str) and isinstance(p, str)):
        return False
    if len(p) > MAX_PATTERN:
        raise ExprError(f"like(): a pattern of more than {MAX_PATTERN} characters")
    return re.match(fnmatch.translate(p), s) is not None


def _round(x: Any, nd: Any = 0) -> Any:
    if not _num(x) or not isinstance(nd, int) or not -10 <= nd <= 10:
        return None
    return round(x, nd) if nd else round(x)


HELPERS: dict[str, Callable[..., Any]] = {
    "len": _safe_len,
    "any": lambda xs: isinstance(xs, list) and any(bool(x) for x in xs),
    "all": lambda xs: isinstance(xs, list) and all(bool(x) for x in xs),
    "count": lambda xs: sum(1 for x in xs if x) if isinstance(xs, list) else 0,
    "min": _agg(min),
    "max": _agg(max),
    "sum": _agg(lambda v: sum(x for x in v if _num(x))),
    "median": _agg(lambda v: sorted(v)[len(v) // 2] if all(_num(x) for x in v) else None),
    "abs": lambda x: abs(x) if _num(x) else None,
    "round": _round,
    "num": _to_num,
    "str": lambda x: "" if x is None else _show(x),
    "lower": _lower,
    "upper": lambda s: s.upper() if isinstance(s, str) else None,
    "strip": lambda s: s.strip() if isinstance(s, str) else None,
    "startswith": lambda s, p: isinstance(s, str) and isinstance(p, str) and s.startswith(p),
    "endswith": lambda s, p: isinstance(s, str) and isinstance(p, str) and s.endswith(p),
    "contains": _contains,
    "like": _like,
    "split": lambda s, sep=",": [p for p in s.split(sep)] if isinstance(s, str) and sep else None,
    "keys": lambda d: list(d.keys()) if isinstance(d, dict) else [],
    "values": lambda d: list(d.values()) if isinstance(d, dict) else [],
    "entries": lambda d: [{"key": k, "value": v} for k, v in d.items()] if isinstance(d, dict) else [],
    "get": lambda d, k, default=None: d.get(k, default) if isinstance(d, dict) else default,
    "first": lambda xs: xs[0] if isinstance(xs, list) and xs else None,
    "last": lambda xs: xs[-1] if isinstance(xs, list) and xs else None,
    "unique": lambda xs: (
        list(dict.fromkeys(x for x in xs if isinstance(x, str | int | float))) if isinstance(xs, list) else []
    ),
    "join": _join,
    "defined": lambda x: x is not None,
    "empty": lambda x: x is None or (isinstance(x, str | list | dict) and len(x) == 0),
    "gib": lambda n: n * 2**30 if _num(n) else None,  # a size in bytes: free < gib(2)
    "mib": lambda n: n * 2**20 if _num(n) else None,
    "in_gib": lambda n: round(n / 2**30, 1) if _num(n) else None,  # for messages
    "bytes": _fmt_bytes,
    "version_lt": lambda a, b: (_version_cmp(a, b) or 0) < 0 if _version_cmp(a, b) is not None else False,
    "version_ge": lambda a, b: (_version_cmp(a, b) or 0) >= 0 if _version_cmp(a, b) is not None else False,
    "pct": lambda a, b: 100.0 * a / b if _num(a) and _num(b) and b else None,
}

# What a helper's call costs beyond its nodes (see Budget): constant, a walk over its arguments, or one over
# everything inside them; helpers that build a list or a string also pay for what they return.
_CONSTANT_COST = frozenset(
    {"len", "first", "last", "get", "defined", "empty", "abs", "round", "gib", "mib", "in_gib", "bytes", "pct"}
)
_DEEP_COST = frozenset({"str", "join", "contains", "min", "max", "unique", "version_lt", "version_ge"})
_BUILDS = frozenset({"str", "join", "split", "keys", "values", "unique", "lower", "upper", "strip"})


def _size(x: Any) -> int:
    """Units to walk a value once, one level deep."""
    if isinstance(x, str):
        return 1 + len(x) // CHARS_PER_UNIT
    return 1 + len(x) if isinstance(x, list | dict) else 1


def _charge_call(budget: Budget, name: str, args: list[Any]) -> None:
    if name in _CONSTANT_COST:
        budget.charge(1)
    elif name in _DEEP_COST:
        for a in args:
            budget.charge_deep(a)
    elif name == "like" and len(args) == 2 and isinstance(args[1], str):
        budget.charge(len(args[1]) + _size(args[0]) * (1 + args[1].count("*")))
    elif name == "median" and args and isinstance(args[0], list):
        budget.charge(_size(args[0]) * max(1, len(args[0]).bit_length()))
    elif name == "entries" and args and isinstance(args[0], dict):
        budget.charge(len(args[0]) * ENTRY_UNITS)
    else:
        budget.charge(sum(_size(a) for a in args))


_CMP: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: _contains(b, a),
    ast.NotIn: lambda a, b: not _contains(b, a),
    ast.Is: lambda a, b: a is b if b is None or isinstance(b, bool) else a == b,
    ast.IsNot: lambda a, b: a is not b if b is None or isinstance(b, bool) else a != b,
}

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Compare, *_CMP.keys(), ast.Call,
    ast.Name, ast.Load, ast.Store, ast.Attribute, ast.Subscript, ast.Constant, ast.List, ast.Tuple,
    ast.IfExp, ast.GeneratorExp, ast.ListComp, ast.comprehension,
)  # fmt: skip
_ALLOWED_TYPES = frozenset(_ALLOWED)  # ast.parse makes exact node types, so a set lookup replaces isinstance


def _nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node in ``ast.walk``'s order (breadth first), without its generators: rule loading compiles a few
    hundred expressions on every run."""
    nodes = [tree]
    i = 0
    while i < len(nodes):
        node = nodes[i]
        i += 1
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, ast.AST):
                nodes.append(value)
            elif isinstance(value, list):
                nodes.extend(item for item in value if isinstance(item, ast.AST))
    return nodes


def _show_one(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # exact digits of 1e308 take 100 times longer than its 3 figures
        return f"{value:,.0f}" if 1000 <= abs(value) < 1e15 else f"{value:.3g}"
    if isinstance(value, int) and value.bit_length() > 1024:  # str() is quadratic, and refuses 4,300 digits
        return f"{'-' if value < 0 else ''}<a {value.bit_length():,}-bit integer>"
    try:
        return str(value)
    except (RecursionError, ValueError):  # a dict nested past the interpreter's limit, or holding a huge int
        return "<a value too large to show>"


def _show(value: Any) -> str:
    """How a value reads inside a message: lists flattened into a comma-separated line. Never raises, whatever
    the value (a report must not be lost to a number it cannot print)."""
    if not isinstance(value, list):
        return _show_one(value)
    parts: list[str] = []
    stack = [iter(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            parts.append(_show_one(item))
        else:
            stack.pop()
    return ", ".join(parts)


@dataclass(frozen=True)
class Expr:
    """A checked expression, ready to evaluate against a scope of JSON data."""

    source: str
    tree: ast.Expression

    def evaluate(self, scope: dict[str, Any], budget: Budget | None = None) -> Any:
        """The value over ``scope``, spending from ``budget`` (a fresh one when none is given)."""
        try:
            return _Eval(scope, budget or Budget()).visit(self.tree.body)
        except ExprError:
            raise
        except (RecursionError, MemoryError, OverflowError, TypeError, ValueError, LookupError) as exc:
            raise ExprError(f"{self.source!r}: {type(exc).__name__}") from None

    def truth(self, scope: dict[str, Any], budget: Budget | None = None) -> bool:
        return bool(self.evaluate(scope, budget))


@functools.lru_cache(maxsize=8192)
def compile_expr(source: str) -> Expr:
    """Parse and check an expression; raise ExprError naming what is not allowed. Cached: rules are compiled
    at load time and their templates rendered per finding, from the same few hundred sources."""
    if not isinstance(source, str) or not source.strip():
        raise ExprError("empty expression")
    if len(source) > MAX_SOURCE:
        raise ExprError(f"expression longer than {MAX_SOURCE} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error in {source.strip()!r}: {exc.msg} (column {exc.offset})") from None
    nodes = _nodes(tree)
    if len(nodes) > MAX_NODES:
        raise ExprError(f"expression too large ({len(nodes)} nodes, at most {MAX_NODES})")
    for node in nodes:
        kind = type(node)
        if kind not in _ALLOWED_TYPES:
            raise ExprError(f"{kind.__name__} is not allowed in rule expressions: {source.strip()!r}")
        check = _NODE_CHECKS.get(kind)
        if check is not None:
            check(node, source)
    return Expr(source.strip(), tree)


def _check_attribute(node: ast.Attribute, source: str) -> None:
    if node.attr.startswith("_"):
        raise ExprError(f"attribute {node.attr!r} is not allowed (names starting with '_' are reserved)")


def _check_name(node: ast.Name, source: str) -> None:
    if node.id.startswith("_"):
        raise ExprError(f"name {node.id!r} is not allowed (names starting with '_' are reserved)")


def _check_call(node: ast.Call, source: str) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in HELPERS:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise ExprError(f"call to {name!r} is not allowed; helpers are: {', '.join(sorted(HELPERS))}")
    if node.keywords:
        raise ExprError(f"keyword arguments are not allowed in {source.strip()!r}")


def _check_constant(node: ast.Constant, source: str) -> None:
    if not isinstance(node.value, str | int | float | bool | type(None)):
        raise ExprError(f"constant {node.value!r} is not allowed")
    _small_int(node.value)


def _check_comprehension(node: ast.comprehension, source: str) -> None:
    if node.is_async:
        raise ExprError("async comprehensions are not allowed")


def _check_generators(node: ast.GeneratorExp | ast.ListComp, source: str) -> None:
    if len(node.generators) != 1:
        raise ExprError("a comprehension may have one 'for' clause")


def _check_subscript(node: ast.Subscript, source: str) -> None:
    if isinstance(node.slice, ast.Slice):
        raise ExprError("slices are not allowed")


# What each node type must satisfy beyond being allowed; one lookup per node instead of an isinstance chain.
_NODE_CHECKS: dict[type[ast.AST], Callable[[Any, str], None]] = {
    ast.Attribute: _check_attribute,
    ast.Name: _check_name,
    ast.Call: _check_call,
    ast.Constant: _check_constant,
    ast.comprehension: _check_comprehension,
    ast.GeneratorExp: _check_generators,
    ast.ListComp: _check_generators,
    ast.Subscript: _check_subscript,
}


class _Eval:
    def __init__(self, scope: dict[str, Any], budget: Budget) -> None:
        self.scopes: list[dict[str, Any]] = [scope]
        self.budget = budget

    def visit(self, node: ast.AST) -> Any:
        budget = self.budget
        budget.left -= 1
        if budget.left < 0:
            budget.exceeded()
        return _VISIT[type(node)](self, node)

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return _Missing

    def v_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def v_Name(self, node: ast.Name) -> Any:
        if node.id in CONSTANT_NAMES:
            return CONSTANT_NAMES[node.id]
        return self.lookup(node.id)

    def v_Attribute(self, node: ast.Attribute) -> Any:
        base = self.visit(node.value)
        return base.get(node.attr) if isinstance(base, dict) else _Missing

    def v_Subscript(self, node: ast.Subscript) -> Any:
        base = self.visit(node.value)
        key = self.visit(node.slice)
        if isinstance(base, dict) and isinstance(key, str | int | float | bool):
            return base.get(key if isinstance(key, str) else str(key), base.get(key))  # type: ignore[call-overload]
        if isinstance(base, list | str) and isinstance(key, int) and not isinstance(key, bool):
            return base[key] if -len(base) <= key < len(base) else _Missing
        return _Missing

    def v_List(self, node: ast.List) -> Any:
        return [self.visit(e) for e in node.elts]

    v_Tuple = v_List

    def v_BoolOp(self, node: ast.BoolOp) -> Any:
        if isinstance(node.op, ast.And):
            value: Any = True
            for v in node.values:
                value = self.visit(v)
                if not value:
                    return value
            return value
        value = False
        for v in node.values:
            value = self.visit(v)
            if value:
                return value
        return value

    def v_UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        if not _num(value):
            return _Missing
        return -value if isinstance(node.op, ast.USub) else value

    def v_BinOp(self, node: ast.BinOp) -> Any:
        a, b = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Add) and isinstance(a, str) and isinstance(b, str):
            self.budget.charge(1 + (len(a) + len(b)) // CHARS_PER_UNIT)
            return a + b
        if isinstance(node.op, ast.Add) and isinstance(a, list) and isinstance(b, list):
            self.budget.charge(len(a) + len(b))
            return a + b
        if not (_num(a) and _num(b)):
            return _Missing
        try:
            if isinstance(node.op, ast.Add):
                r = a + b
            elif isinstance(node.op, ast.Sub):
                r = a - b
            elif isinstance(node.op, ast.Mult):
                r = a * b
            elif isinstance(node.op, ast.Div):
                r = a / b
            elif isinstance(node.op, ast.FloorDiv):
                r = a // b
            else:
                r = a % b
        except ZeroDivisionError:
            return _Missing
        if isinstance(r, float) and not math.isfinite(r):
            return _Missing
        return _small_int(r)

    def v_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comp)
            for side in (left, right):
                if isinstance(side, str | list | dict):  # equality and containment walk them
                    self.budget.charge_deep(side)
            if isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE):
                ok = (_num(left) or isinstance(left, bool)) and (_num(right) or isinstance(right, bool))
                ok = ok or (isinstance(left, str) and isinstance(right, str))
                if not ok or not _CMP[type(op)](left, right):
                    return False
            elif not _CMP[type(op)](left, right):
                return False
            left = right
        return True

    def v_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def v_Call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        args = [self.visit(a) for a in node.args]
        _charge_call(self.budget, name, args)
        try:
            result = HELPERS[name](*args)
        except TypeError:
            raise ExprError(f"{name}() got {len(args)} argument(s)") from None
        except (ValueError, AttributeError, IndexError, KeyError):
            return _Missing
        if name in _BUILDS:
            self.budget.charge(_size(result))
        return _small_int(result)

    def _bind(self, target: ast.AST, value: Any) -> dict[str, Any]:
        if isinstance(target, ast.Name):
            return {target.id: value}
        if isinstance(target, ast.Tuple | ast.List):
            if isinstance(value, dict):
                value = [value.get("key"), value.get("value")] if len(target.elts) == 2 else list(value.values())
            if not isinstance(value, list | tuple) or len(value) != len(target.elts):
                raise ExprError("cannot unpack a value in a comprehension")
            out: dict[str, Any] = {}
            for t, v in zip(target.elts, value, strict=True):
                out.update(self._bind(t, v))
            return out
        raise ExprError("comprehension targets must be names")

    def _comprehend(self, node: ast.GeneratorExp | ast.ListComp) -> list[Any]:
        gen = node.generators[0]
        source = self.visit(gen.iter)
        if isinstance(source, dict):
            self.budget.charge(len(source) * ENTRY_UNITS)
            source = [{"key": k, "value": v} for k, v in source.items()]
        if not isinstance(source, list):
            return []
        out = []
        budget = self.budget
        for item in source:
            budget.charge(1 + len(gen.target.elts) if isinstance(gen.target, ast.Tuple) else 1)
            self.scopes.append(self._bind(gen.target, item))
            try:
                if all(self.visit(cond) for cond in gen.ifs):
                    out.append(self.visit(node.elt))
            finally:
                self.scopes.pop()
        return out

    v_GeneratorExp = _comprehend
    v_ListComp = _comprehend


_VISIT = {getattr(ast, name[2:]): fn for name, fn in vars(_Eval).items() if name.startswith("v_")}


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")


def template_exprs(template: str) -> list[Expr]:
    """Check every ``{expression}`` in a message template; raise ExprError for a bad one."""
    return [compile_expr(m.group(1)) for m in _PLACEHOLDER.finditer(template) if m.group(1)]


def render(template: str, scope: dict[str, Any], budget: Budget | None = None) -> str:
    """Fill ``{expression}`` placeholders; ``{{`` and ``}}`` are literal braces. A placeholder that fails reads
    as ``<why>`` in the text; one that runs out of budget stops the whole rule."""
    work = budget or Budget()

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        try:
            value = compile_expr(m.group(1)).evaluate(scope, work)
            work.charge_deep(value)
        except BudgetExceeded:
            raise
        except ExprError as exc:
            return f"<{exc}>"
        return _show(value)

    return _PLACEHOLDER.sub(sub, template)


show = _show
