"""The run's arguments: the checkout's argparse parser replayed on the user's arguments, never imported.

Each ``add_argument`` call is read as data (literals only) and replayed on a private, non-exiting parser, so
``-- ARGS`` given to the doctor are judged exactly as ``generate.py`` would judge them, and the entry's own
``if args.X is None: args.X = ...`` defaults are applied afterwards.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wandoc.code.parse import dotted, walk
from wandoc.code.symbols import statements
from wandoc.facts import ArgFacts

MAX_NARGS = 1000  # argparse builds a pattern per nargs: a bomb of 300,000,000 would take gigabytes
MAX_CHOICES = 10_000
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


def arg_specs(tree: ast.Module, sequence: Callable[[ast.AST], list[Any] | None] | None = None) -> list[ArgSpec]:
    """Every ``X.add_argument(...)`` in the file, in source order; ``sequence`` reads non-literal choices
    (``list(WAN_CONFIGS.keys())``) from the checkout's own modules."""
    nodes = walk(tree)
    aliases = {  # ``add = parser.add_argument``
        t.id
        for n in nodes
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Attribute) and n.value.attr == "add_argument"
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    calls = [
        n
        for n in nodes
        if isinstance(n, ast.Call)
        and (
            (isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument")
            or (isinstance(n.func, ast.Name) and n.func.id in aliases)
        )
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
        spec.choices = list(choices) if ok and isinstance(choices, list | tuple | set) else None
        if spec.choices is None and "choices" in kw and sequence is not None:
            spec.choices = sequence(kw["choices"])
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
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], str | None, bool, str | None]:
    """Parse ``given_args`` as the script would, then apply its ``if args.X is None:`` defaults (literals, the
    world size, the task's config: ``args.sample_steps = cfg.sample_steps``).

    Returns (effective values, argparse's error message or None, offload_model came from the runtime default,
    why the parser could not be replayed or None).
    """
    if not specs:  # a script that reads sys.argv itself: nothing to replay, and nothing to reject
        note = f"{prog} defines no argparse arguments the doctor could read" if given_args else None
        return {}, None, False, note
    for s in specs:
        if isinstance(s.nargs, int) and not 0 <= s.nargs <= MAX_NARGS:
            return {}, None, False, f"{s.flags[0]} takes nargs={s.nargs:,}: the parser was not replayed"
        if len(s.choices or ()) > MAX_CHOICES:
            return {}, None, False, f"{s.flags[0]} has {len(s.choices or ()):,} choices: the parser was not replayed"
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
        return {}, str(exc) or "invalid arguments", False, None
    except argparse.ArgumentTypeError as exc:  # the script's own bool converter refusing the value
        return {}, f"ArgumentTypeError: {exc}", False, None
    except (ValueError, TypeError, re.error, MemoryError, RecursionError) as exc:  # our replay, not the user
        return {}, None, False, f"the parser could not be replayed: {type(exc).__name__}: {str(exc)[:120]}"
    effective = {k: v for k, v in vars(ns).items() if v is not _UNKNOWN}
    task = effective.get("task")
    config = (configs or {}).get(task, {}) if isinstance(task, str) else {}
    defaulted = _runtime_defaults(tree, effective, environ, config)
    return effective, None, "offload_model" in defaulted, None


class _NoEval(Exception):
    pass


def _world_size(environ: Mapping[str, str]) -> int:
    try:
        return int(environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _reads_world_size(node: ast.AST) -> bool:
    for n in walk(node):
        if isinstance(n, ast.Constant) and n.value == "WORLD_SIZE":
            return True
        if isinstance(n, ast.Call) and dotted(n.func).endswith("get_world_size"):
            return True
    return False


def _runtime_defaults(
    tree: ast.Module, effective: dict[str, Any], environ: Mapping[str, str], config: Mapping[str, Any]
) -> set[str]:
    """``if args.X is None: args.X = <literal, a condition on the world size, cfg.X>``, evaluated for this run."""
    ws = _world_size(environ)
    stmts = statements(tree.body, into_functions=True)
    ws_names = {
        n.targets[0].id
        for n in stmts
        if isinstance(n, ast.Assign)
        and len(n.targets) == 1
        and isinstance(n.targets[0], ast.Name)
        and _reads_world_size(n.value)
    }
    blocks = sorted((n for n in stmts if isinstance(n, ast.If)), key=lambda n: n.lineno)
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
                value = _eval_default(stmt.value, effective, ws, ws_names, obj, config)
            except (_NoEval, TypeError, ValueError):
                continue
            effective[attr] = value
            done.add(attr)
    return done


def _eval_default(
    node: ast.AST, effective: Mapping[str, Any], ws: int, ws_names: set[str], obj: str, config: Mapping[str, Any]
) -> Any:
    rec = lambda n: _eval_default(n, effective, ws, ws_names, obj, config)  # noqa: E731
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
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == obj and node.attr in effective:
            return effective[node.attr]
        if node.value.id != obj and node.attr in config:  # ``cfg = WAN_CONFIGS[args.task]``
            return config[node.attr]
    if isinstance(node, ast.Call) and _reads_world_size(node):
        return ws
    raise _NoEval
