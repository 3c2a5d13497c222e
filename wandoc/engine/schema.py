"""What a rule's expressions read, checked against the models of its scope before the rule is used.

A typo in a path (``nvml.availabl``), in a loop variable's field (``g.memory_totl_bytes`` inside
``[... for g in nvml.gpus]``) or in a value compared with an enumeration (``s.kind == "mask_per_cal"``)
does not fail at run time: missing data reads as ``None``, so the rule silently never fires. Here every
expression is typed from the models instead: a list's items have the list's item model, a dict's entries
are ``{key, value}``, helpers such as ``first`` and ``entries`` keep the types they are given, and a string
compared with a ``Literal`` field must be one of its values.

The models are passed in (a ``Schema`` per rule scope), so the engine stays free of the rest of the
product. Types are checked once per distinct expression and binding, so loading a hundred rules stays cheap.
"""

from __future__ import annotations

import ast
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from wandoc.engine.expr import CONSTANT_NAMES, HELPERS, compile_expr, template_exprs

# -- types -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    cls: type[BaseModel]


@dataclass(frozen=True)
class ListOf:
    item: Type


@dataclass(frozen=True)
class DictOf:
    key: Type
    value: Type


@dataclass(frozen=True)
class Entry:
    """One ``{key, value}`` item of ``entries(d)``, of ``each`` over a dict, or of a comprehension over one."""

    key: Type
    value: Type


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Scalar:
    name: str  # "str", "int", "float", "bool"


Type = Model | ListOf | DictOf | Entry | Enum | Scalar | None  # None: not known, nothing to check
STR, INT, FLOAT, BOOL = Scalar("str"), Scalar("int"), Scalar("float"), Scalar("bool")
_SCALARS = {str: STR, int: INT, float: FLOAT, bool: BOOL}


@functools.cache
def type_of(annotation: Any) -> Type:
    """The checker's view of a field's annotation; ``X | None`` is X (missing data reads as none anyway)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        return type_of(real[0]) if len(real) == 1 else None
    if origin is typing.Literal:
        return Enum(tuple(args)) if args and all(isinstance(a, str) for a in args) else None
    if origin is list:
        return ListOf(type_of(args[0]) if args else None)
    if origin is dict:
        return DictOf(type_of(args[0]), type_of(args[1])) if args else DictOf(STR, None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Model(annotation)
    return _SCALARS.get(annotation) if isinstance(annotation, type) else None


@functools.cache
def _fields(cls: type[BaseModel]) -> dict[str, Type]:
    out: dict[str, Type] = {}
    for name, f in cls.model_fields.items():
        out[name] = out[f.alias or name] = type_of(f.annotation)
    return out


def describe(t: Type) -> str:
    if isinstance(t, Model):
        return t.cls.__name__
    if isinstance(t, ListOf):
        return f"list[{describe(t.item)}]"
    if isinstance(t, DictOf):
        return f"dict[{describe(t.key)}, {describe(t.value)}]"
    if isinstance(t, Entry):
        return f"entry{{key: {describe(t.key)}, value: {describe(t.value)}}}"
    if isinstance(t, Enum):
        return "one of " + ", ".join(map(repr, t.values))
    return t.name if isinstance(t, Scalar) else "any"


def _hint(word: str, choices: Iterable[str]) -> str:
    import difflib  # only when a rule has a problem to word

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _not_one_of(value: str, enum: Enum) -> str:
    return f"{value!r} is not one of {', '.join(map(repr, enum.values))}{_hint(value, enum.values)}"


# -- the schema of one rule scope --------------------------------------------------------------------------


class Schema:
    """The names a rule of one scope may read, and their types. Hashable by identity: checks are cached per
    schema, so build one per scope and keep it."""

    def __init__(self, roots: Mapping[str, Any]) -> None:
        self.roots: dict[str, Type] = {name: type_of(tp) if tp is not None else None for name, tp in roots.items()}

    @classmethod
    def of_model(cls, model: type[BaseModel]) -> Schema:
        """The fields of one model as the roots (the facts tree: ``nvml``, ``repo``, ...)."""
        return cls({f.alias or name: f.annotation for name, f in model.model_fields.items()})

    def problems(self, source: str, bound: tuple[tuple[str, Type], ...] = ()) -> list[str]:
        """Why an expression reads what its scope does not hold; empty when it is fine."""
        return list(_typed(source, self, bound)[1])

    def type(self, source: str, bound: tuple[tuple[str, Type], ...] = ()) -> Type:
        return _typed(source, self, bound)[0]


def item_type(t: Type) -> Type:
    """What one item of a list (or one entry of a dict) is, as ``each`` and comprehensions bind it."""
    if isinstance(t, ListOf):
        return t.item
    if isinstance(t, DictOf):
        return Entry(t.key, t.value)
    if isinstance(t, Model):
        return Entry(STR, None)
    return None


@functools.lru_cache(maxsize=4096)
def _typed(source: str, schema: Schema, bound: tuple[tuple[str, Type], ...]) -> tuple[Type, tuple[str, ...]]:
    typer = _Typer(schema, dict(bound))
    t = typer.visit(compile_expr(source).tree.body)
    return t, tuple(dict.fromkeys(typer.problems))


class _Typer:
    def __init__(self, schema: Schema, bound: dict[str, Type]) -> None:
        self.schema = schema
        self.scopes: list[dict[str, Type]] = [bound]
        self.problems: list[str] = []

    def visit(self, node: ast.AST) -> Type:
        method = _VISITORS.get(type(node))
        if method is None:
            for child in ast.iter_child_nodes(node):
                self.visit(child)
            return None
        return method(self, node)

    def _say(self, node: ast.AST, why: str) -> None:
        self.problems.append(f"{ast.unparse(node)}: {why}")

    # names and paths

    def t_Constant(self, node: ast.Constant) -> Type:
        return _SCALARS.get(type(node.value))

    def t_Name(self, node: ast.Name) -> Type:
        if node.id in CONSTANT_NAMES:
            return BOOL if node.id.lower() in ("true", "false") else None
        for scope in reversed(self.scopes):
            if node.id in scope:
                return scope[node.id]
        if node.id in self.schema.roots:
            return self.schema.roots[node.id]
        known = ", ".join(sorted(self.schema.roots))
        self._say(node, f"unknown name {node.id!r} (known: {known}){_hint(node.id, self.schema.roots)}")
        return None

    def _member(self, node: ast.AST, base: Type, key: str) -> Type:
        if isinstance(base, Model):
            fields = _fields(base.cls)
            if key not in fields:
                named = sorted(n for n in fields if not n.endswith("_"))
                self.problems.append(f"{ast.unparse(node)}.{key} does not exist ({base.cls.__name__} has no {key!r}"
                                     f"{_hint(key, named)})")  # fmt: skip
                return None
            return fields[key]
        if isinstance(base, DictOf):
            if isinstance(base.key, Enum) and key not in base.key.values:
                self.problems.append(f"{ast.unparse(node)}.{key}: {_not_one_of(key, base.key)}")
            return base.value
        if isinstance(base, Entry):
            if key not in ("key", "value"):
                self.problems.append(f"{ast.unparse(node)}.{key} does not exist (an entry has key and value)")
                return None
            return base.key if key == "key" else base.value
        if isinstance(base, ListOf):
            self.problems.append(f"{ast.unparse(node)} is a list; use a comprehension or first() before '.{key}'")
        elif isinstance(base, Scalar | Enum):
            self.problems.append(f"{ast.unparse(node)} is a value ({describe(base)}), it has no '.{key}'")
        return None

    def t_Attribute(self, node: ast.Attribute) -> Type:
        return self._member(node.value, self.visit(node.value), node.attr)

    def t_Subscript(self, node: ast.Subscript) -> Type:
        base = self.visit(node.value)
        self.visit(node.slice)
        if isinstance(base, ListOf):
            return base.item
        if isinstance(base, Scalar) and base.name == "str":
            return STR
        constant = node.slice.value if isinstance(node.slice, ast.Constant) else None
        if isinstance(constant, str) and isinstance(base, Model | DictOf | Entry):
            return self._member(node.value, base, constant)
        if isinstance(base, DictOf):
            return base.value
        return None

    # values built by the expression

    def t_List(self, node: ast.List | ast.Tuple) -> Type:
        items = {self.visit(e) for e in node.elts}
        return ListOf(items.pop() if len(items) == 1 else None)

    t_Tuple = t_List

    def t_BoolOp(self, node: ast.BoolOp) -> Type:
        kinds = {self.visit(v) for v in node.values}
        return kinds.pop() if len(kinds) == 1 else None

    def t_UnaryOp(self, node: ast.UnaryOp) -> Type:
        t = self.visit(node.operand)
        return BOOL if isinstance(node.op, ast.Not) else t

    def t_BinOp(self, node: ast.BinOp) -> Type:
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Add) and left == right and left in (STR, INT):
            return left
        if isinstance(node.op, ast.Add) and isinstance(left, ListOf) and isinstance(right, ListOf):
            return ListOf(left.item if left.item == right.item else None)
        if isinstance(node.op, ast.Add) and {left, right} == {STR, None}:
            return STR
        return None

    def t_IfExp(self, node: ast.IfExp) -> Type:
        self.visit(node.test)
        body, orelse = self.visit(node.body), self.visit(node.orelse)
        return body if body == orelse else None

    def t_Compare(self, node: ast.Compare) -> Type:
        operands = [node.left, *node.comparators]
        typed = [self.visit(n) for n in operands]
        for i, op in enumerate(node.ops):
            (a, ta), (b, tb) = (operands[i], typed[i]), (operands[i + 1], typed[i + 1])
            if isinstance(op, ast.Eq | ast.NotEq | ast.Is | ast.IsNot | ast.Lt | ast.LtE | ast.Gt | ast.GtE):
                self._enum_value(ta, b, node)
                self._enum_value(tb, a, node)
                self._same_kind(ta, b, node)
                self._same_kind(tb, a, node)
            elif isinstance(op, ast.In | ast.NotIn):
                if isinstance(b, ast.List | ast.Tuple):
                    for e in b.elts:
                        self._enum_value(ta, e, node)
                if isinstance(tb, ListOf):
                    self._enum_value(tb.item, a, node)
                elif isinstance(tb, DictOf):
                    self._enum_value(tb.key, a, node)
        return BOOL

    def _same_kind(self, t: Type, value: ast.AST, where: ast.AST) -> None:
        """A number set against a string constant (or a string against a number) is never equal nor ordered:
        ``nvml.gpu_count == '2'`` would never fire."""
        literal = value.value if isinstance(value, ast.Constant) else None
        if literal is None or isinstance(literal, bool):
            return
        if t in (INT, FLOAT) and isinstance(literal, str):
            self._say(where, f"{describe(t)} compared with the string {literal!r}: never equal, never ordered")
        elif (t == STR or isinstance(t, Enum)) and isinstance(literal, int | float):
            self._say(where, f"a string compared with the number {literal!r}: never equal, never ordered")

    def _enum_value(self, t: Type, value: ast.AST, where: ast.AST) -> None:
        """A string constant set against a Literal field must be one of its values."""
        literal = value.value if isinstance(value, ast.Constant) else None
        if isinstance(t, Enum) and isinstance(literal, str) and literal not in t.values:
            self._say(where, _not_one_of(literal, t))

    # helpers

    def t_Call(self, node: ast.Call) -> Type:
        assert isinstance(node.func, ast.Name)
        name, args = node.func.id, [self.visit(a) for a in node.args]
        first = args[0] if args else None
        if name in ("first", "last") or (name in ("min", "max", "median") and len(args) == 1):
            return first.item if isinstance(first, ListOf) else None
        if name == "unique":
            return first if isinstance(first, ListOf) else None
        if name in ("keys", "values", "entries"):
            if not isinstance(first, DictOf):
                return ListOf(STR) if name == "keys" else ListOf(None)
            return ListOf({"keys": first.key, "values": first.value}.get(name, Entry(first.key, first.value)))
        if name == "get" and len(node.args) >= 2:
            if isinstance(first, DictOf):
                self._enum_value(first.key, node.args[1], node)
                return first.value
            if isinstance(first, Model | Entry) and isinstance(node.args[1], ast.Constant):
                key = node.args[1].value
                return self._member(node.args[0], first, key) if isinstance(key, str) else None
            return None
        if name == "contains" and len(node.args) == 2:
            if isinstance(first, ListOf):
                self._enum_value(first.item, node.args[1], node)
            elif isinstance(first, DictOf):
                self._enum_value(first.key, node.args[1], node)
            return BOOL
        return _RETURNS.get(name)

    # comprehensions

    def _bind(self, target: ast.AST, t: Type, into: dict[str, Type]) -> None:
        if isinstance(target, ast.Name):
            into[target.id] = t
        elif isinstance(target, ast.Tuple | ast.List):
            pair = (t.key, t.value) if isinstance(t, Entry) and len(target.elts) == 2 else (None,) * len(target.elts)
            for sub, sub_t in zip(target.elts, pair, strict=False):
                self._bind(sub, sub_t, into)

    def t_ListComp(self, node: ast.ListComp | ast.GeneratorExp) -> Type:
        gen = node.generators[0]
        names: dict[str, Type] = {}
        self._bind(gen.target, item_type(self.visit(gen.iter)), names)
        self.scopes.append(names)
        try:
            for cond in gen.ifs:
                self.visit(cond)
            return ListOf(self.visit(node.elt))
        finally:
            self.scopes.pop()

    t_GeneratorExp = t_ListComp


_VISITORS = {getattr(ast, name[2:]): fn for name, fn in vars(_Typer).items() if name.startswith("t_")}
_RETURNS: dict[str, Type] = {
    **dict.fromkeys(("len", "count"), INT),
    **dict.fromkeys(
        ("any", "all", "startswith", "endswith", "contains", "like", "defined", "empty", "version_lt", "version_ge"),
        BOOL,
    ),
    **dict.fromkeys(("str", "lower", "upper", "strip", "join", "bytes"), STR),
    "split": ListOf(STR),
}
assert set(_RETURNS) <= set(HELPERS)


# -- a rule's expressions ----------------------------------------------------------------------------------


def rule_expressions(rule: Any) -> list[tuple[str, str]]:
    """(where, source) of every expression of a rule: its conditions, evidence and message templates."""
    out = [("when", rule.when)]
    out += [(k, v) for k, v in (("each", rule.each), ("module", rule.module)) if v]
    out += [(f"evidence.{label}", src) for label, src in rule.evidence.items()]
    templates = [("title", rule.title), ("message", rule.message)]
    templates += [(f"fix.{k}", v) for k, v in rule.fix.model_dump().items() if v]
    out += [(where, e.source) for where, text in templates for e in template_exprs(text)]
    return out


def rule_problems(rule: Any, schema: Schema) -> list[tuple[str, str]]:
    """(where, why) for every path, loop variable or enumeration value a rule reads that its scope lacks."""
    out: list[tuple[str, str]] = []
    bound: tuple[tuple[str, Type], ...] = ()
    if rule.each:
        out += [("each", why) for why in schema.problems(rule.each)]
        bound = ((rule.as_, item_type(schema.type(rule.each))),)
    for where, source in rule_expressions(rule):
        if where != "each":
            out += [(where, why) for why in schema.problems(source, bound)]
    return out
