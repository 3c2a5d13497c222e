"""How often each line of the checkout runs in the run about to start: a call graph from the entry.

The walk starts at the entry script's ``if __name__ == "__main__":`` (and each imported module's top level) and
follows calls statically: functions by name and import, methods through ``self.x(...)``, instances whose class
the code states (``self.model = WanModel(...)``; calling a torch module runs its ``forward``), containers of
modules (``for block in self.blocks``), dicts of classes (``WAN_CONFIGS[args.task]``). Each ``if`` is judged with
the run's arguments, env and platform (``conditions``); a branch that cannot be decided is walked as conditional
and keeps its text. A loop that calls a model makes its body run every step. ``except`` bodies are fallbacks,
first-call flags run once, code after a ``return`` never runs.

The result is, per file and line, the best way the line is reached (every forward, once, conditional), and for
lines known not to run, why. Bounded: each function is walked for a few argument contexts only, and the whole
walk stops after ``BUDGET`` statements, saying so.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wandoc.code.conditions import ARGS, OBJECT, UNKNOWN, ArgsNS, Evaluator, Known, RunContext, batch_names
from wandoc.code.imports import Walk
from wandoc.code.parse import calls_in, children, dotted, walk
from wandoc.code.symbols import CONSTRUCTORS, Choice, Cls, Func, Inst, Mod, Symbols, Target, statements

BUDGET = 150_000  # statements visited, all contexts together
MAX_DEPTH = 40  # nested calls followed from the entry (real pipelines need under 20)
CONTEXTS = 6  # argument contexts walked per function and frequency before it is walked once with nothing known
_MODELISH = ("model", "transformer", "dit", "unet", "denoiser", "net")
_MODELISH_IN = re.compile("|".join(_MODELISH))  # one search instead of six: asked of every unresolved call's name
_PASSTHROUGH = frozenset({"to", "eval", "train", "requires_grad_", "half", "float", "bfloat16", "cuda"})
_PARSE = frozenset({"parse_args", "parse_known_args", "parse_intermixed_args"})
_EXITS = frozenset({"sys.exit", "exit", "quit", "os._exit"})
_SIMPLE = frozenset(
    {ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise, ast.Pass, ast.Delete, ast.Assert,
     ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.Break, ast.Continue}
)  # fmt: skip  # statements without a body, most of what the walk visits


@dataclass(frozen=True)
class Way:
    """How a line is reached: per forward or once, for sure or under conditions nobody could decide."""

    forward: bool
    certain: bool
    conditions: tuple[str, ...] = ()  # undecided tests on the way, as text
    decided: tuple[str, ...] = ()  # tests this run makes true on the way, as text
    chosen_by: frozenset[str] = frozenset()  # run arguments that decided a branch on the way
    chain: tuple[str, ...] = ()  # functions from the entry
    module: str | None = None  # module path inside the model ("blocks.*.self_attn"); None outside a forward

    @property
    def rank(self) -> int:
        return 2 * self.forward + self.certain

    def but(self, **changes: Any) -> Way:
        """``dataclasses.replace`` without its per-call field introspection: a way is copied at every branch and
        call the walk follows."""
        new = object.__new__(Way)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def unsure(self, text: str) -> Way:
        return self.but(certain=False, conditions=(*self.conditions, text)[:6])

    def decide(self, text: str, sources: frozenset[str]) -> Way:
        args = frozenset(s for s in sources if s not in ("platform", "env", "batch"))
        return self.but(decided=(*self.decided, text)[:8], chosen_by=self.chosen_by | args)


@dataclass(frozen=True, eq=False)
class _Local:
    """A function defined inside the one being walked (Wan's ``cross_attn_ffn`` in a block's forward)."""

    node: ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class _Frame:
    file: str
    func: Func | None  # None: a module's top level
    cls: Cls | None
    names: dict[str, Any]
    way: Way
    mod_names: dict[str, str] = field(default_factory=dict)  # loop variable -> module path ("blocks.*")
    evaluator: Evaluator | None = None  # made on first use; it reads ``names`` as they change


def _text(node: ast.AST) -> str:
    try:
        s = ast.unparse(node)
    except (ValueError, RecursionError):
        return "?"
    return s if len(s) <= 80 else s[:77] + "..."


def _is_super(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _modelish(name: str) -> bool:
    return _MODELISH_IN.search(name.lower()) is not None


def _never_reason(text: str, sources: frozenset[str], run: RunContext, negated: bool) -> str:
    shown = f"not ({text})" if negated else text
    if "platform" in sources:
        return f"another platform: `{shown}` is false on {run.sys_platform}"
    args = sorted(s for s in sources if s not in ("platform", "env", "batch"))
    values = ", ".join(f"{a}={run.args.get(a)!r}" for a in args)
    if "batch" in sources:
        values = ", ".join(x for x in (values, "one sample per forward") if x)
    if "env" in sources:
        values = ", ".join(x for x in (values, "this environment") if x)
    return f"branch false for this run: `{shown}`" + (f" ({values})" if values else "")


def _first_call_flag(test: ast.expr, body: Sequence[ast.stmt]) -> bool:
    """``if not self._logged:`` / ``if _CACHE is None:`` whose body sets the flag: runs on the first call only."""
    node = test.operand if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) else test
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Is):
        node = node.left
    name = dotted(node)
    if not name or not (name.startswith("self.") or "." not in name):
        return False
    for stmt in body:
        for n in walk(stmt):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
            if any(dotted(t) == name for t in targets):
                return True
    return False


def _stops(body: Sequence[ast.stmt]) -> bool:
    """A block that only reports and stops the run (raise, sys.exit), as argument checks do."""
    last = body[-1] if body else None
    if isinstance(last, ast.Raise):
        return True
    return isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and dotted(last.value.func) in _EXITS


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    return [*node.args.posonlyargs, *node.args.args]


class Reach:
    """The walk; ``lines[file][line]`` is the best ``Way`` a line is reached, ``never[file][line]`` why not."""

    def __init__(self, walk: Walk, symbols: Symbols, run: RunContext, entry: str) -> None:
        self.walk, self.symbols, self.run, self.entry = walk, symbols, run, entry
        self.lines: dict[str, dict[int, Way]] = {}
        self.never: dict[str, dict[int, str]] = {}
        self.walked: set[Func] = set()
        self.hot: set[Func] = set()  # functions entered every forward (a first-call branch in them is still theirs)
        self._visited: set[tuple[Any, ...]] = set()
        self._contexts: Counter[tuple[Func, bool, bool]] = Counter()
        self._consts: dict[tuple[str, str], Known | Any] = {}
        self._call_nodes: dict[int, list[ast.Call]] = {}
        self._returns_args_memo: dict[Func, bool] = {}  # per statement: its calls (trees live as long as the walk)
        self._inst_values: dict[Cls, dict[str, Known | Any]] = {}
        self._texts: dict[int, tuple[ast.AST, str]] = {}  # node id -> (node, its text): a test is shown many times
        self.steps = 0
        self.depth = 0
        self.cut: str | None = None
        self.stopped = False
        self.unresolved = 0
        self._locals_open: set[_Local] = set()  # nested functions being walked (a recursive one stops there)

    # -- entry points --------------------------------------------------------------------------------------

    def run_modules(self, files: Iterable[str], conditional: set[str], worth: Any = None) -> None:
        """The entry runs as ``__main__``; each imported module's top level runs at import. Modules the entry's
        calls never went into are walked only if ``worth(rel)`` says their text holds something to judge."""
        pf = self.walk.parsed(self.entry)
        if pf is not None and pf.tree is not None:
            self._block(pf.tree.body, _Frame(self.entry, None, None, {}, Way(False, True, chain=(self.entry,))))
        for rel in files:
            if rel == self.entry or (self.walk.cached(rel) is None and not (worth and worth(rel))):
                continue
            pf = self.walk.parsed(rel)
            if pf is None or pf.tree is None:
                continue
            way = Way(False, True, chain=(rel,))
            if rel in conditional:
                way = way.unsure("imported inside a function")
            self._block(pf.tree.body, _Frame(rel, None, None, {}, way))

    def roots(self, funcs: Iterable[Func]) -> None:
        """Walk functions as if each ran every forward (for code the run does not import: what it would do)."""
        for fn in funcs:
            node = self.symbols.function(fn)
            if node is None:
                continue
            cls = Cls(fn.file, fn.qual.split(".")[0]) if "." in fn.qual else None
            self._function(fn, cls, {}, Way(True, True, chain=(fn.qual,), module=""))

    # -- recording -----------------------------------------------------------------------------------------

    def _record(self, file: str, start: int, end: int, way: Way) -> None:
        lines = self.lines.setdefault(file, {})
        for line in range(start, end + 1):
            cur = lines.get(line)
            if cur is None or way.rank > cur.rank:
                lines[line] = way

    def _mark_never(self, file: str, stmts: Sequence[ast.AST], reason: str) -> None:
        if not stmts:
            return
        never = self.never.setdefault(file, {})
        start = getattr(stmts[0], "lineno", 0)
        end = max(getattr(s, "end_lineno", start) or start for s in stmts)
        for line in range(start, end + 1):
            never.setdefault(line, reason)

    # -- values --------------------------------------------------------------------------------------------

    def module_value(self, file: str, name: str, depth: int = 0) -> Known | Any:
        """A module-level constant of ``file`` (``IS_WINDOWS = os.name == "nt"``), evaluated for this run."""
        if name == "__name__":
            return Known("__main__" if file == self.entry else file.removesuffix(".py").replace("/", "."))
        key = (file, name)
        if key in self._consts:
            return self._consts[key]
        self._consts[key] = UNKNOWN  # recursion guard
        value: Known | Any = UNKNOWN
        pf = self.walk.parsed(file) if depth < 6 else None
        if pf is not None and name in pf.assigns:
            ev = Evaluator(self.run, {}, lambda n: self.module_value(file, n, depth + 1))
            value = ev.eval(pf.assigns[name])
        elif pf is not None:
            bound = self.walk.bindings(file).get(name)
            if bound is not None and bound[1] is not None and bound[0] != file:
                value = self.module_value(bound[0], bound[1], depth + 1)
        self._consts[key] = value
        return value

    def _evaluator(self, fr: _Frame) -> Evaluator:
        if fr.evaluator is None:
            fr.evaluator = self._new_evaluator(fr)
        return fr.evaluator

    def _new_evaluator(self, fr: _Frame) -> Evaluator:
        cls = fr.cls

        def self_value(attr: str) -> Known | Any:
            if cls is None:
                return UNKNOWN
            return self._inst_values.get(cls, {}).get(attr, UNKNOWN)

        return Evaluator(self.run, fr.names, lambda n: self.module_value(fr.file, n), self_value)

    def target(self, expr: ast.AST, fr: _Frame, depth: int = 0) -> Target | ArgsNS | None:
        """What an expression refers to: a function, class, instance, module, a choice of those, or the args."""
        if depth > 8:
            return None
        rec = self.target
        depth += 1
        if isinstance(expr, ast.Name):
            if expr.id in fr.names:
                v = fr.names[expr.id]
                return v if isinstance(v, Func | Cls | Inst | Mod | Choice | ArgsNS) else None
            if expr.id == "self" and fr.cls is not None:
                return Inst(fr.cls)
            return self.symbols.lookup(fr.file, expr.id)
        if isinstance(expr, ast.Attribute):
            if _is_super(expr.value):
                return self._super_member(expr.value, expr.attr, fr)
            base = rec(expr.value, fr, depth)
            if base is None or isinstance(base, ArgsNS | Choice):
                return None
            return self.symbols.member(base, expr.attr)
        if isinstance(expr, ast.Call):
            func = expr.func
            if _is_super(expr):  # the instance itself, seen from a base class's method
                return Inst(fr.cls) if fr.cls is not None else None
            if isinstance(func, ast.Attribute) and func.attr in _PARSE:
                return ARGS
            if isinstance(func, ast.Attribute) and func.attr in _PASSTHROUGH:
                inner = rec(func.value, fr, depth)
                return inner if isinstance(inner, Inst) else None
            if isinstance(func, ast.Attribute) and func.attr in CONSTRUCTORS:
                base = rec(func.value, fr, depth)
                return Inst(base) if isinstance(base, Cls) else None
            callee = rec(func, fr, depth)
            if isinstance(callee, Cls):
                return Inst(callee)
            if isinstance(callee, Func):
                if self._returns_args(callee):
                    return ARGS
                return self.symbols.returns(callee)
            return None
        if isinstance(expr, ast.Subscript):
            base = rec(expr.value, fr, depth)
            if isinstance(base, Inst) and base.elem:
                return Inst(base.cls)
            if isinstance(base, Choice):
                key = self._evaluator(fr).eval(expr.slice)
                if isinstance(key, Known):
                    for k, t in base.options:
                        if k == str(key.value):
                            return t  # type: ignore[return-value]
                    if isinstance(key.value, str):  # a key the dict lacks (the script would stop there)
                        return None
                return base
            return None
        if isinstance(expr, ast.IfExp):
            return rec(expr.body, fr, depth) or rec(expr.orelse, fr, depth)
        return None

    def _super_member(self, call: ast.Call, attr: str, fr: _Frame) -> Func | None:
        """``super().attr`` in a method: the method of the next class after the one that defines it, in the
        instance's bases nearest first (``super(Cls, self)`` names that class)."""
        if fr.cls is None or fr.func is None or "." not in fr.func.qual:
            return None
        defining: Target | None = Cls(fr.func.file, fr.func.qual.rsplit(".", 1)[0])
        if call.args:
            defining = self.target(call.args[0], fr)
        if not isinstance(defining, Cls):
            return None
        mro = self.symbols.bases(fr.cls)
        after = mro[mro.index(defining) + 1 :] if defining in mro else self.symbols.bases(defining)[1:]
        for c in after:
            info = self.symbols.class_info(c)
            if info is not None and attr in info.methods:
                return Func(c.file, f"{c.name}.{attr}")
        return None

    def _returns_args(self, fn: Func) -> bool:
        if fn not in self._returns_args_memo:
            self._returns_args_memo[fn] = self._returns_args_of(fn)
        return self._returns_args_memo[fn]

    def _returns_args_of(self, fn: Func) -> bool:
        node = self.symbols.function(fn)
        if node is None:
            return False
        parsed: set[str] = set()
        for n in statements(node.body):
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call):
                f = n.value.func
                if isinstance(f, ast.Attribute) and f.attr in _PARSE:
                    parsed.update(t.id for t in n.targets if isinstance(t, ast.Name))
            if isinstance(n, ast.Return) and n.value is not None:
                v = n.value
                if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr in _PARSE:
                    return True
                if isinstance(v, ast.Name) and v.id in parsed:
                    return True
        return False

    def _value(self, expr: ast.AST, fr: _Frame) -> Any:
        v = self._evaluator(fr).eval(expr)
        if isinstance(v, Known):
            return v
        t = self.target(expr, fr)
        if t is not None:
            return t
        if isinstance(expr, ast.Name) and fr.names.get(expr.id) is OBJECT:
            return OBJECT
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            return OBJECT  # ``Image.open(path).convert("RGB")``: an object, not None
        return UNKNOWN

    # -- statements ----------------------------------------------------------------------------------------

    def _shown(self, node: ast.AST) -> str:
        """``_text(node)``, once per node."""
        hit = self._texts.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        text = _text(node)
        self._texts[id(node)] = (node, text)
        return text

    def _block(self, stmts: Sequence[ast.stmt], fr: _Frame) -> bool:
        """Walk statements in order; True when the block always ends in a return or raise."""
        for i, stmt in enumerate(stmts):
            self.steps += 1
            if self.steps > BUDGET and not self.stopped:
                self.stopped = True
                self.cut = f"the call graph stopped after {BUDGET:,} statements; lines past that are undecided"
            if self.stopped:
                return False
            if self._stmt(stmt, fr):
                if i + 1 < len(stmts):
                    self._mark_never(fr.file, stmts[i + 1 :], "after a return or raise that always happens")
                return True
        return False

    def _branch(self, stmts: Sequence[ast.stmt], fr: _Frame, way: Way) -> tuple[bool, dict[str, Any]]:
        names = dict(fr.names)
        sub = _Frame(fr.file, fr.func, fr.cls, names, way, dict(fr.mod_names))
        return self._block(stmts, sub), names

    def _merge(self, fr: _Frame, first: dict[str, Any], second: dict[str, Any]) -> None:
        """A name keeps its value where both ways agree on it, else it becomes unknown."""
        out = fr.names
        for k, v in first.items():
            w = second.get(k, UNKNOWN)
            out[k] = v if v is w or v == w else UNKNOWN
        for k in second:
            if k not in first:
                out[k] = UNKNOWN

    def _stmt(self, stmt: ast.stmt, fr: _Frame) -> bool:
        if stmt.__class__ in _SIMPLE:
            return self._simple(stmt, fr)
        way = fr.way
        if isinstance(stmt, ast.If):
            self._record(fr.file, stmt.test.lineno, stmt.test.end_lineno or stmt.test.lineno, way)
            self._calls(stmt.test, fr)
            text = self._shown(stmt.test)
            if _first_call_flag(stmt.test, stmt.body):
                ends, names = self._branch(stmt.body, fr, way.but(forward=False))
                self._branch(stmt.orelse, fr, way)
                return False
            value, sources = self._evaluator(fr).truth(stmt.test)
            if value is True and _stops(stmt.body):
                value = None  # an argument check (``raise SystemExit("--ckpt_dir is required")``): judge the run
                # that passes it, as the user will run it, not the one that stops there
            if value is True:
                self._mark_never(fr.file, stmt.orelse, _never_reason(text, sources, self.run, negated=True))
                ends, names = self._branch(stmt.body, fr, way.decide(text, sources))
                fr.names.update(names)
                return ends
            if value is False:
                self._mark_never(fr.file, stmt.body, _never_reason(text, sources, self.run, negated=False))
                ends, names = self._branch(stmt.orelse, fr, way.decide(f"not ({text})", sources))
                fr.names.update(names)
                return ends
            e1, n1 = self._branch(stmt.body, fr, way.unsure(text))
            e2, n2 = self._branch(stmt.orelse, fr, way.unsure(f"not ({text})")) if stmt.orelse else (False, fr.names)
            self._merge(fr, n1, n2)
            return e1 and e2
        if isinstance(stmt, ast.For | ast.AsyncFor):
            self._record(fr.file, stmt.lineno, stmt.iter.end_lineno or stmt.lineno, way)
            self._calls(stmt.iter, fr)
            self._bind_loop(stmt, fr)
            body_way = way
            if not way.forward and self._calls_model(stmt.body, fr):
                body_way = way.but(forward=True, module="")
            _, names = self._branch(stmt.body, fr, body_way)
            self._merge(fr, fr.names, names)
            self._branch(stmt.orelse, fr, way)
            return False
        if isinstance(stmt, ast.While):
            self._record(fr.file, stmt.test.lineno, stmt.test.end_lineno or stmt.test.lineno, way)
            self._calls(stmt.test, fr)
            value, sources = self._evaluator(fr).truth(stmt.test)
            if value is False:
                self._mark_never(fr.file, stmt.body, _never_reason(self._shown(stmt.test), sources, self.run, False))
                return False
            body_way = way
            if not way.forward and self._calls_model(stmt.body, fr):
                body_way = way.but(forward=True, module="")
            _, names = self._branch(stmt.body, fr, body_way)
            self._merge(fr, fr.names, names)
            return False
        if isinstance(stmt, ast.Try | getattr(ast, "TryStar", ast.Try)):
            ends, names = self._branch(stmt.body, fr, way)
            self._merge(fr, fr.names, names)
            for h in stmt.handlers:
                caught = self._shown(h.type) if h.type is not None else "anything"
                self._mark_never(fr.file, h.body, f"fallback in `except {caught}`: runs only if the `try` fails")
            if stmt.orelse:
                self._block(stmt.orelse, fr)
            if stmt.finalbody:
                self._block(stmt.finalbody, fr)
            return ends and not stmt.handlers
        if isinstance(stmt, ast.With | ast.AsyncWith):
            first = stmt.items[0].context_expr if stmt.items else stmt
            self._record(fr.file, stmt.lineno, getattr(first, "end_lineno", stmt.lineno) or stmt.lineno, way)
            for item in stmt.items:
                self._calls(item.context_expr, fr)
            return self._block(stmt.body, fr)
        if isinstance(stmt, ast.Match):
            self._record(fr.file, stmt.lineno, stmt.subject.end_lineno or stmt.lineno, way)
            for case in stmt.cases:
                self._branch(case.body, fr, way.unsure(f"case {self._shown(case.pattern)}"))
            return False
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if fr.func is not None and not isinstance(stmt, ast.ClassDef):
                self._record(fr.file, stmt.lineno, stmt.end_lineno or stmt.lineno, way)  # a helper of this call
                fr.names[stmt.name] = _Local(stmt)  # its calls are followed where the function calls it
            return False
        return self._simple(stmt, fr)

    def _simple(self, stmt: ast.stmt, fr: _Frame) -> bool:
        """A statement without a body: its calls are followed; True when it ends the block."""
        self._record(fr.file, stmt.lineno, stmt.end_lineno or stmt.lineno, fr.way)
        self._calls(stmt, fr)
        if isinstance(stmt, ast.Assign):
            self._assign(stmt, fr)
        if isinstance(stmt, ast.Raise):
            return True
        if isinstance(stmt, ast.Return):
            return True
        return bool(
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and dotted(stmt.value.func) in _EXITS
        )

    def _assign(self, stmt: ast.Assign, fr: _Frame) -> None:
        batch = batch_names(stmt) if self.run.batch is not None else []
        for name in batch:
            fr.names[name] = Known(self.run.batch, frozenset({"batch"}))
        if len(stmt.targets) != 1:
            return
        target = stmt.targets[0]
        if isinstance(target, ast.Name) and target.id not in batch:
            fr.names[target.id] = self._value(stmt.value, fr)
        elif isinstance(target, ast.Tuple):
            for elt in target.elts:
                if isinstance(elt, ast.Name) and elt.id not in batch:
                    fr.names[elt.id] = UNKNOWN
        elif (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
            and fr.cls is not None
            and fr.func is not None
            and fr.func.qual.endswith(".__init__")
        ):
            info = self.symbols.class_info(fr.cls)
            changed_later = info is not None and target.attr in info.set_outside_init
            v = self._evaluator(fr).eval(stmt.value)
            sure = fr.way.certain and not changed_later
            self._inst_values.setdefault(fr.cls, {})[target.attr] = v if sure else UNKNOWN

    def _bind_loop(self, stmt: ast.For | ast.AsyncFor, fr: _Frame) -> None:
        it, tgt = stmt.iter, stmt.target
        if isinstance(it, ast.Call) and dotted(it.func) == "enumerate" and it.args:
            it = it.args[0]
            tgt = tgt.elts[1] if isinstance(tgt, ast.Tuple) and len(tgt.elts) == 2 else tgt
        names = [n.id for n in walk(tgt) if isinstance(n, ast.Name)]
        for n in names:
            fr.names[n] = UNKNOWN
        if isinstance(tgt, ast.Name):
            base = self.target(it, fr)
            if isinstance(base, Inst) and base.elem:
                fr.names[tgt.id] = Inst(base.cls)
                attr = it.attr if isinstance(it, ast.Attribute) else dotted(it)
                fr.mod_names[tgt.id] = f"{attr}.*"

    # -- calls ---------------------------------------------------------------------------------------------

    def _calls_model(self, body: Sequence[ast.stmt], fr: _Frame) -> bool:
        """Does a loop body call a model (a torch module instance, a ``forward``, a model-like callable)?"""
        todo: list[ast.AST] = list(body)
        while todo:
            n = todo.pop()
            if isinstance(n, ast.For | ast.AsyncFor | ast.While):
                todo.append(n.iter if isinstance(n, ast.For | ast.AsyncFor) else n.test)
                continue  # a model called in an inner loop: that loop is the step loop, not this one
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue
            todo.extend(children(n))
            if not isinstance(n, ast.Call):
                continue
            t = self.target(n.func, fr)
            if isinstance(t, Inst) and not t.elem and self.symbols.is_module(t.cls):
                return True
            if isinstance(t, Func) and t.qual.endswith(".forward"):
                return True
            if t is None:
                name = n.func.attr if isinstance(n.func, ast.Attribute) else dotted(n.func)
                if name and _modelish(name) and self._model_attrs(fr):
                    return True
        return False

    def _model_attrs(self, fr: _Frame) -> list[Inst]:
        """The model instances a pipeline class holds (``self.low_noise_model``, ``self.model``)."""
        if fr.cls is None:
            return []
        out: list[Inst] = []
        for c in self.symbols.bases(fr.cls):
            info = self.symbols.class_info(c)
            for attr in info.attr_exprs if info else []:
                if _modelish(attr):
                    t = self.symbols.attr_type(fr.cls, attr)
                    if isinstance(t, Inst) and not t.elem and self.symbols.is_module(t.cls) and t not in out:
                        out.append(t)
        return out

    def _calls(self, node: ast.AST, fr: _Frame) -> None:
        calls = self._call_nodes.get(id(node))
        if calls is None:
            calls = self._call_nodes[id(node)] = calls_in(node)
        for n in calls:
            self._call(n, fr)

    def _callbacks(self, call: ast.Call, fr: _Frame) -> None:
        """Functions handed to a call (``button.click(fn=generate)``, ``Thread(target=run)``): the callee may
        call them, so they run under a condition nobody can decide here."""
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            if not isinstance(arg, ast.Name | ast.Attribute) or isinstance(fr.names.get(getattr(arg, "id", "")), Known):
                continue
            t = self.target(arg, fr)
            if isinstance(t, Func):
                node = self.symbols.function(t)
                if node is not None:
                    bound = isinstance(arg, ast.Attribute) and "." in t.qual
                    cls = Cls(t.file, t.qual.split(".")[0]) if "." in t.qual else None
                    params = _params(node)[1 if bound else 0 :]
                    names = {p.arg: UNKNOWN for p in params}
                    if self.stopped or self._visit_key(t, cls, names, fr.way.forward, False, fr.way.module) is None:
                        continue  # walked so already: the way's text is not worth building
                    way = fr.way.unsure(f"`{self._shown(call.func)}(...)` calls back {self._shown(arg)}")
                    self._function(t, cls, names, way.but(chain=(*way.chain, t.qual)[-12:]))

    def _call(self, call: ast.Call, fr: _Frame) -> None:
        if call.args or call.keywords:
            self._callbacks(call, fr)
        if isinstance(call.func, ast.Name) and isinstance(local := fr.names.get(call.func.id), _Local):
            self._local(local, call, fr)
            return
        callee = self.target(call.func, fr)
        if callee is None:
            name = call.func.attr if isinstance(call.func, ast.Attribute) else dotted(call.func)
            models = self._model_attrs(fr) if name and _modelish(name) else []
            if not models:
                self.unresolved += 1
                return
            way = fr.way if len({m.cls for m in models}) == 1 else fr.way.unsure(f"whichever model `{name}` is")
            for m in models:
                self._invoke(m, call, fr, way, name)
            return
        self._invoke(callee, call, fr, fr.way, self._mod_suffix(call.func, fr))

    def _local(self, local: _Local, call: ast.Call, fr: _Frame) -> None:
        """Walk a nested function where it is called, with its arguments and the names it closes over (``self``);
        once per call site's frame, never into itself."""
        if local in self._locals_open or self.stopped:
            return
        names = {**fr.names, **self._bind(local.node, call, fr, bound=False)}
        self._locals_open.add(local)
        try:
            self._block(local.node.body, _Frame(fr.file, fr.func, fr.cls, names, fr.way, dict(fr.mod_names)))
        finally:
            self._locals_open.discard(local)

    def _mod_suffix(self, func: ast.AST, fr: _Frame) -> str:
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            return func.attr
        if isinstance(func, ast.Name):
            return fr.mod_names.get(func.id, func.id)
        return func.attr if isinstance(func, ast.Attribute) else ""

    def _invoke(self, callee: Any, call: ast.Call, fr: _Frame, way: Way, suffix: str) -> None:
        if isinstance(callee, Choice):
            key = call.func.slice if isinstance(call.func, ast.Subscript) else None
            for k, t in callee.options:
                # ``CLASSES[kind](...)``, or an attribute built from one (``self.cross_attn = CLASSES[kind](...)``)
                text = f"{self._shown(key)} == {k!r}" if key is not None else f"{self._shown(call.func)} is {k!r}"
                self._invoke(t, call, fr, way.unsure(text), suffix)
            return
        if isinstance(callee, Cls):
            init = self.symbols.method(callee, "__init__")
            if init is not None:
                self._enter(init, callee, call, fr, way, bound=True, module=way.module)
            return
        if isinstance(callee, Inst):
            if callee.elem:
                return
            if self.symbols.is_module(callee.cls):
                fwd = self.symbols.method(callee.cls, "forward")
                if fwd is not None:
                    module = way.module
                    if way.forward:
                        module = suffix if not module else f"{module}.{suffix}" if suffix else module
                    self._enter(fwd, callee.cls, call, fr, way, bound=True, module=module)
                return
            dunder = self.symbols.method(callee.cls, "__call__")
            if dunder is not None:
                self._enter(dunder, callee.cls, call, fr, way, bound=True, module=way.module)
            return
        if isinstance(callee, Func):
            bound = isinstance(call.func, ast.Attribute) and "." in callee.qual
            cls: Cls | None = None
            if bound:
                base = self.target(call.func.value, fr) if isinstance(call.func, ast.Attribute) else None
                cls = base.cls if isinstance(base, Inst) else Cls(callee.file, callee.qual.split(".")[0])
                if isinstance(base, Cls):
                    bound = False  # ``Class.method(obj, ...)``: self is passed explicitly
            self._enter(callee, cls, call, fr, way, bound=bound, module=way.module)

    def _bind(self, node: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call, fr: _Frame, bound: bool) -> dict:
        params = _params(node)
        if bound and params:
            params = params[1:]
        names: dict[str, Any] = {}
        star = any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)
        given: set[str] = set()
        for p, a in zip(params, call.args, strict=False):
            if isinstance(a, ast.Starred):
                break
            names[p.arg] = self._value(a, fr)
            given.add(p.arg)
        kwonly = {a.arg for a in node.args.kwonlyargs}
        known_params = {p.arg for p in params} | kwonly
        for k in call.keywords:
            if k.arg in known_params:
                names[k.arg] = self._value(k.value, fr)
                given.add(k.arg)
        defaults = dict(
            zip([p.arg for p in params][len(params) - len(node.args.defaults) :], node.args.defaults, strict=False)
        )
        defaults.update(
            {a.arg: d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=False) if d is not None}
        )
        for p in [*params, *node.args.kwonlyargs]:
            if p.arg in given:
                continue
            d = defaults.get(p.arg)
            if d is not None and not star and isinstance(d, ast.Constant):
                names[p.arg] = Known(d.value)
            else:
                names[p.arg] = UNKNOWN
        return names

    def _enter(
        self, fn: Func, cls: Cls | None, call: ast.Call, fr: _Frame, way: Way, bound: bool, module: str | None
    ) -> None:
        node = self.symbols.function(fn)
        if node is None:
            return
        names = self._bind(node, call, fr, bound)
        if self.stopped or self._visit_key(fn, cls, names, way.forward, way.certain, module) is None:
            return
        self._function(fn, cls, names, way.but(chain=(*way.chain, fn.qual)[-12:], module=module))

    def _visit_key(
        self, fn: Func, cls: Cls | None, names: dict[str, Any], forward: bool, certain: bool, module: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The context a call walks ``fn`` in (and the names it walks with), or None when the walk has already
        been there: each function is walked once per context, and past ``CONTEXTS`` once with nothing known."""
        try:
            frozen = tuple(sorted((k, v) for k, v in names.items() if v is not UNKNOWN))
            hash(frozen)
        except TypeError:
            frozen = ()
        slot = (fn, forward, certain)
        key = (*slot, cls, frozen, module)
        if key in self._visited:
            return None
        if self._contexts[slot] >= CONTEXTS:
            names = {k: UNKNOWN for k in names}
            key = (*slot, cls, (), "*")
            if key in self._visited:
                return None
        return key, names

    def _function(self, fn: Func, cls: Cls | None, names: dict[str, Any], way: Way) -> None:
        node = self.symbols.function(fn)
        if node is None or self.stopped:
            return
        found = self._visit_key(fn, cls, names, way.forward, way.certain, way.module)
        if found is None:
            return
        key, names = found
        slot = key[:3]
        if self.depth >= MAX_DEPTH:
            self.cut = self.cut or f"calls nested deeper than {MAX_DEPTH} were not followed; lines below are undecided"
            return
        self._visited.add(key)
        self._contexts[slot] += 1
        self.walked.add(fn)
        if way.forward:
            self.hot.add(fn)
        fr = _Frame(fn.file, fn, cls, dict(names), way)
        self.depth += 1
        try:
            self._block(node.body, fr)
        finally:
            self.depth -= 1
