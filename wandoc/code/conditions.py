"""Conditions in the user's code judged against the run about to start: its arguments, env, platform.

Three answers: true, false, or unknown. What is known: the effective arguments (``args.offload_model``, and a
parameter a caller passed it to), env vars (``os.environ.get("X") == "1"``), the platform (``sys.platform``,
``os.name``, ``platform.system()`` and module constants computed from them, such as ``IS_WINDOWS``), literal
arguments and defaults (``causal=False``), and Wan's batch of one sample (``b = x.size(0)``: Wan's pipelines
pass one prompt at a time). Everything else stays unknown, and its text is kept so a note can name it.
"""

from __future__ import annotations

import ast
import os
import platform as _platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wandoc.code.parse import dotted

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Known:
    """A value the doctor knows, and the run arguments (or "batch", "platform", "env") it came from."""

    value: Any
    sources: frozenset[str] = frozenset()


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class _Object:
    """Some object, never None (an image the script opened, a model it built); its value is unknown."""

    def __repr__(self) -> str:
        return "OBJECT"


OBJECT = _Object()


class ArgsNS:
    """The parsed argument namespace (``args = parser.parse_args()``), wherever it flows."""

    def __repr__(self) -> str:
        return "ArgsNS"


ARGS = ArgsNS()


@dataclass
class RunContext:
    """What is known about the run: effective args, env, the platform it will run on."""

    args: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    sys_platform: str | None = sys.platform  # None: any platform (judging code the run does not import)
    os_name: str | None = os.name
    system: str | None = _platform.system()
    batch: int | None = 1

    @classmethod
    def anything(cls) -> RunContext:
        """Nothing known: every condition undecided (what code could do, not what this run does)."""
        return cls(sys_platform=None, os_name=None, system=None, batch=None)

    def arg(self, name: str) -> Known | _Unknown:
        if name in self.args and isinstance(self.args[name], (*_SCALARS, list, tuple)):
            v = self.args[name]
            return Known(tuple(v) if isinstance(v, list) else v, frozenset({name}))
        return UNKNOWN


def _join(*vals: Known) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for v in vals:
        out |= v.sources
    return out


_CMP = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_STR_METHODS = frozenset({"lower", "upper", "strip", "startswith", "endswith", "casefold", "lstrip", "rstrip"})


class Evaluator:
    """Evaluates expressions for one scope; ``names`` maps local names to Known / targets / ARGS / UNKNOWN."""

    def __init__(
        self,
        run: RunContext,
        names: Mapping[str, Any],
        module_value: Any,  # callable(name) -> Known | UNKNOWN, for module-level constants
        self_value: Any = None,  # callable(attr) -> Known | UNKNOWN, for self.attr
    ) -> None:
        self.run = run
        self.names = names
        self.module_value = module_value
        self.self_value = self_value

    def eval(self, node: ast.AST, depth: int = 0) -> Known | _Unknown:
        try:
            v = self._eval(node, depth)
            return UNKNOWN if v is OBJECT else v
        except (TypeError, ValueError, AttributeError, RecursionError, OverflowError):
            return UNKNOWN

    def truth(self, node: ast.AST) -> tuple[bool | None, frozenset[str]]:
        v = self.eval(node)
        if isinstance(v, Known):
            try:
                return bool(v.value), v.sources
            except (TypeError, ValueError):
                return None, frozenset()
        return None, frozenset()

    def _eval(self, node: ast.AST, depth: int) -> Known | _Unknown:
        if depth > 20:
            return UNKNOWN
        rec, d = self._eval, depth + 1
        if isinstance(node, ast.Constant):
            return Known(node.value) if isinstance(node.value, _SCALARS) else UNKNOWN
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = [rec(e, d) for e in node.elts]
            if all(isinstance(i, Known) for i in items):
                return Known(tuple(i.value for i in items), _join(*items))  # type: ignore[arg-type]
            return UNKNOWN
        if isinstance(node, ast.Name):
            if node.id in self.names:
                v = self.names[node.id]
                return v if isinstance(v, Known) else UNKNOWN if v is UNKNOWN else OBJECT  # type: ignore[return-value]
            if node.id == "__name__":
                return self.module_value("__name__")
            return self.module_value(node.id)
        if isinstance(node, ast.Attribute):
            full = dotted(node)
            if full == "sys.platform":
                return (
                    UNKNOWN if self.run.sys_platform is None else Known(self.run.sys_platform, frozenset({"platform"}))
                )
            if full == "os.name":
                return UNKNOWN if self.run.os_name is None else Known(self.run.os_name, frozenset({"platform"}))
            base = node.value
            if isinstance(base, ast.Name) and self.names.get(base.id) is ARGS:
                return self.run.arg(node.attr)
            if isinstance(base, ast.Name) and base.id == "args" and not isinstance(self.names.get("args"), Known):
                return self.run.arg(node.attr)  # the namespace by its usual name
            if (
                isinstance(base, ast.Attribute)
                and base.attr == "args"
                and isinstance(base.value, ast.Name)
                and base.value.id == "self"
            ):
                return self.run.arg(node.attr)
            if isinstance(base, ast.Name) and base.id == "self" and self.self_value is not None:
                return self.self_value(node.attr)
            return UNKNOWN
        if isinstance(node, ast.UnaryOp):
            v = rec(node.operand, d)
            if not isinstance(v, Known):
                return UNKNOWN
            if isinstance(node.op, ast.Not):
                return Known(not v.value, v.sources)
            if isinstance(node.op, ast.USub):
                return Known(-v.value, v.sources)
            return UNKNOWN
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            seen: list[Known] = []
            unknown = False
            for value in node.values:
                v = rec(value, d)
                if isinstance(v, Known):
                    seen.append(v)
                    if bool(v.value) is not is_and:  # short-circuit: a false in "and", a true in "or"
                        return Known(v.value, v.sources)
                else:
                    unknown = True
            return UNKNOWN if unknown else Known(seen[-1].value if seen else is_and, _join(*seen))
        if isinstance(node, ast.Compare):
            if len(node.ops) == 1 and isinstance(node.ops[0], ast.Is | ast.IsNot):
                pair = (rec(node.left, d), rec(node.comparators[0], d))
                if OBJECT in pair and any(isinstance(v, Known) and v.value is None for v in pair):
                    return Known(isinstance(node.ops[0], ast.IsNot))
            left = rec(node.left, d)
            result: Known | _Unknown = Known(True)
            for op, right_node in zip(node.ops, node.comparators, strict=False):
                right = rec(right_node, d)
                if not (isinstance(left, Known) and isinstance(right, Known)) or type(op) not in _CMP:
                    return UNKNOWN
                ok = _CMP[type(op)](left.value, right.value)
                assert isinstance(result, Known)
                result = Known(ok, _join(result, left, right))
                if not ok:
                    return result
                left = right
            return result
        if isinstance(node, ast.IfExp):
            t = rec(node.test, d)
            if not isinstance(t, Known):
                return UNKNOWN
            chosen = rec(node.body if t.value else node.orelse, d)
            return Known(chosen.value, chosen.sources | t.sources) if isinstance(chosen, Known) else UNKNOWN
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.Subscript):
            base = rec(node.value, d)
            idx = rec(node.slice, d)
            if isinstance(base, Known) and isinstance(idx, Known) and isinstance(base.value, str | tuple):
                return Known(base.value[idx.value], _join(base, idx))
            return UNKNOWN
        return UNKNOWN

    def _call(self, node: ast.Call, depth: int) -> Known | _Unknown:
        rec, d = self._eval, depth + 1
        full = dotted(node.func)
        if full in ("platform.system",) and not node.args:
            return UNKNOWN if self.run.system is None else Known(self.run.system, frozenset({"platform"}))
        last = full.rsplit(".", 1)[-1]
        if full in ("os.environ.get", "os.getenv", "environ.get", "getenv") and node.args:
            key = rec(node.args[0], d)
            if not isinstance(key, Known) or not isinstance(key.value, str):
                return UNKNOWN
            if key.value in self.run.environ:
                return Known(self.run.environ[key.value], frozenset({"env"}))
            if len(node.args) > 1:
                dv = rec(node.args[1], d)
                return Known(dv.value, frozenset({"env"})) if isinstance(dv, Known) else UNKNOWN
            return Known(None, frozenset({"env"}))
        if isinstance(node.func, ast.Name) and last in ("str", "int", "float", "bool") and len(node.args) == 1:
            v = rec(node.args[0], d)
            if isinstance(v, Known):
                conv = {"str": str, "int": int, "float": float, "bool": bool}[last]
                return Known(conv(v.value), v.sources)
            return UNKNOWN
        if isinstance(node.func, ast.Attribute) and last in _STR_METHODS:
            base = rec(node.func.value, d)
            if isinstance(base, Known) and isinstance(base.value, str):
                args = [rec(a, d) for a in node.args]
                if all(isinstance(a, Known) for a in args):
                    return Known(getattr(base.value, last)(*(a.value for a in args)), base.sources)  # type: ignore[union-attr]
        return UNKNOWN


def batch_names(stmt: ast.stmt) -> list[str]:
    """Names an assignment binds to the batch size: ``b = x.size(0)``, ``b, s, n, d = *x.shape[:2], ...``."""
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
        return []
    target, value = stmt.targets[0], stmt.value

    def shape_of(n: ast.AST) -> bool:
        return (isinstance(n, ast.Attribute) and n.attr == "shape") or (
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "size" and not n.args
        )

    def first_dim(n: ast.AST) -> bool:
        if isinstance(n, ast.Subscript) and shape_of(n.value):
            return isinstance(n.slice, ast.Constant) and n.slice.value == 0
        return (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr == "size"
            and len(n.args) == 1
            and isinstance(n.args[0], ast.Constant)
            and n.args[0].value == 0
        )

    if isinstance(target, ast.Name) and first_dim(value):
        return [target.id]
    if isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
        if shape_of(value) or (isinstance(value, ast.Subscript) and shape_of(value.value)):
            return [target.elts[0].id]
        if isinstance(value, ast.Tuple) and value.elts and first_dim(value.elts[0]):
            return [target.elts[0].id]
        if isinstance(value, ast.Tuple) and value.elts and isinstance(value.elts[0], ast.Starred):
            inner = value.elts[0].value
            if shape_of(inner) or (isinstance(inner, ast.Subscript) and shape_of(inner.value)):
                return [target.elts[0].id]
    return []
