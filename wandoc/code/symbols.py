"""What a name in the checkout refers to: functions, classes and their methods, instance attributes, modules.

The call graph asks one question many times: "what does this expression call?". The answers come from each
file's own definitions and its imports (``Walk.bindings``), followed across files, plus the types the code
states plainly: ``self.model = WanModel(...)``, ``WanModel.from_pretrained(...)``, ``nn.ModuleList([Block(...)
for ...])``, and module-level dicts of classes (``{"t2v": WanT2V}``). Nothing is imported or evaluated.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from wandoc.code.imports import Walk
from wandoc.code.parse import LEAF_STATEMENTS, ParsedFile, dotted

# Calls on a class that return an instance of it (diffusers and transformers loaders, alternative constructors).
CONSTRUCTORS = frozenset({"from_pretrained", "from_config", "from_single_file", "from_checkpoint", "from_file"})
# Wrappers whose result is the module they wrap.
_PASSTHROUGH = frozenset({"to", "eval", "train", "requires_grad_", "half", "float", "bfloat16", "cuda", "cpu"})
# Bases that make a class a torch module: calling an instance runs its ``forward``.
_MODULE_BASES = ("Module", "ModelMixin", "PreTrainedModel", "ModuleList", "Sequential")


@dataclass(frozen=True)
class Func:
    file: str
    qual: str  # "WanModel.forward", "attention"


@dataclass(frozen=True)
class Cls:
    file: str
    name: str


@dataclass(frozen=True)
class Inst:
    """An instance of a checkout class (``elem``: a container of such instances, e.g. ``nn.ModuleList``)."""

    cls: Cls
    elem: bool = False


@dataclass(frozen=True)
class Mod:
    file: str


@dataclass(frozen=True)
class Choice:
    """One of several targets chosen by a key the doctor may not know: ``CLASSES[args.task]``."""

    options: tuple[tuple[str, object], ...]  # (key as text, target)


Target = Func | Cls | Inst | Mod | Choice


@dataclass
class ClassInfo:
    node: ast.ClassDef
    bases: list[str]  # dotted, as written
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    attr_exprs: dict[str, list[ast.expr]] = field(default_factory=dict)  # self.x = <expr> anywhere in the class
    set_outside_init: set[str] = field(default_factory=set)  # attributes a method other than __init__ assigns


@dataclass
class FileIndex:
    functions: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]  # qual -> (node, class name)
    classes: dict[str, ClassInfo]
    assigns: dict[str, ast.expr]  # module-level NAME = expr


def statements(body: list[ast.stmt], into_functions: bool = False) -> list[ast.stmt]:
    """Every statement in a body, nested ones too, without walking expressions (assignments are statements);
    nested functions and classes only with ``into_functions``."""
    out: list[ast.stmt] = []
    todo = list(reversed(body))
    while todo:
        stmt = todo.pop()
        out.append(stmt)
        if stmt.__class__ in LEAF_STATEMENTS:
            continue
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not into_functions:
            continue
        for name in ("body", "orelse", "finalbody"):
            sub = getattr(stmt, name, None)
            if isinstance(sub, list):
                todo.extend(reversed(sub))
        for h in getattr(stmt, "handlers", ()):
            todo.extend(reversed(h.body))
        for case in getattr(stmt, "cases", ()):
            todo.extend(reversed(case.body))
    return out


def index_file(pf: ParsedFile) -> FileIndex:
    """Definitions of one file (memoised per content): top level, under a top-level ``if``/``try``, classes."""
    cached = pf.memo.get("index")
    if cached is not None:
        return cached
    functions: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]] = {}
    classes: dict[str, ClassInfo] = {}

    def add_class(node: ast.ClassDef) -> None:
        info = ClassInfo(node, [dotted(b) for b in node.bases])
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                info.methods.setdefault(stmt.name, stmt)
                functions.setdefault(f"{node.name}.{stmt.name}", (stmt, node.name))
        for fn in info.methods.values():
            for n in statements(fn.body):
                if isinstance(n, ast.AugAssign) and dotted(n.target).startswith("self."):
                    info.set_outside_init.add(dotted(n.target)[5:])
                targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
                value = getattr(n, "value", None)
                for t in targets:
                    if (
                        isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Name)
                        and t.value.id == "self"
                        and value is not None
                    ):
                        info.attr_exprs.setdefault(t.attr, []).append(value)
                        if fn.name != "__init__":
                            info.set_outside_init.add(t.attr)
        classes.setdefault(node.name, info)

    def visit(body: list[ast.stmt], depth: int) -> None:
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.setdefault(stmt.name, (stmt, ""))
            elif isinstance(stmt, ast.ClassDef):
                add_class(stmt)
            elif isinstance(stmt, ast.If | ast.Try) and depth < 2:  # ``if FLASH: def attention(...)``
                visit(
                    [*stmt.body, *stmt.orelse, *(s for h in getattr(stmt, "handlers", []) for s in h.body)], depth + 1
                )

    tree = pf.tree
    visit(tree.body if tree else [], 0)
    out = FileIndex(functions, classes, dict(pf.assigns))
    pf.memo["index"] = out
    return out


class Symbols:
    """Resolves names and attributes to checkout targets, across files, with bounded depth."""

    def __init__(self, walk: Walk, files: set[str]) -> None:
        self.walk = walk
        self.files = files  # the files the run imports: targets are looked for only there
        self._attr_types: dict[tuple[Cls, str], Target | None] = {}
        self._returns: dict[Func, Target | None] = {}
        self._lookups: dict[tuple[str, str], Target | None] = {}
        self._members: dict[tuple[object, str], Target | None] = {}
        self._bases: dict[Cls, list[Cls]] = {}
        self._modules: dict[Cls, bool] = {}

    def index(self, rel: str) -> FileIndex | None:
        if rel not in self.files:
            return None
        pf = self.walk.parsed(rel)
        if pf is None or pf.tree is None:
            return None
        return index_file(pf)

    # -- names -------------------------------------------------------------------------------------------

    def lookup(self, rel: str, name: str, depth: int = 0) -> Target | None:
        """``name`` at the top level of module ``rel``: its own definition, else what it imported."""
        key = (rel, name)
        if key in self._lookups:
            return self._lookups[key]
        found = self._lookup(rel, name, depth)
        if depth == 0:
            self._lookups[key] = found
        return found

    def _lookup(self, rel: str, name: str, depth: int) -> Target | None:
        if depth > 6:
            return None
        idx = self.index(rel)
        if idx is None:
            return None
        if name in idx.classes:
            return Cls(rel, name)
        if name in idx.functions:
            return Func(rel, name)
        bound = self.walk.bindings(rel).get(name)
        if bound is not None and bound[0] in self.files:
            target_file, attr = bound
            if attr is None:
                return Mod(target_file)
            if target_file == rel:
                return None
            return self.lookup(target_file, attr, depth + 1)
        if name in idx.assigns:
            return self.value_target(rel, idx.assigns[name], depth + 1)
        return None

    def value_target(self, rel: str, expr: ast.expr, depth: int = 0) -> Target | None:
        """A module-level expression as a target: an alias, a dict of classes, a constructed instance."""
        if depth > 6:
            return None
        if isinstance(expr, ast.Name):
            return self.lookup(rel, expr.id, depth + 1)
        if isinstance(expr, ast.Attribute):
            base = self.value_target(rel, expr.value, depth + 1)
            return self.member(base, expr.attr, depth + 1) if base is not None else None
        if isinstance(expr, ast.Dict):
            options = []
            for k, v in zip(expr.keys, expr.values, strict=False):
                if k is None:
                    continue
                t = self.value_target(rel, v, depth + 1)
                if t is not None:
                    key = k.value if isinstance(k, ast.Constant) else ast.unparse(k)[:40]
                    options.append((str(key), t))
            return Choice(tuple(options)) if options else None
        if isinstance(expr, ast.Call):
            return self.call_result(self.value_target(rel, expr.func, depth + 1), expr, depth + 1)
        return None

    def member(self, base: Target | None, attr: str, depth: int = 0) -> Target | None:
        """``base.attr``: a module's name, a method, an instance attribute whose type the class states."""
        if base is None or depth > 6:
            return None
        key = (base, attr)
        if key in self._members:
            return self._members[key]
        found = self._member(base, attr, depth)
        if depth == 0:
            self._members[key] = found
        return found

    def _member(self, base: Target, attr: str, depth: int) -> Target | None:
        if isinstance(base, Mod):
            found = self.lookup(base.file, attr, depth + 1)
            if found is None:  # ``import wan`` then ``wan.modules``: a submodule
                sub = self.walk.resolver.within([base.file.rsplit("/", 1)[0]], [attr]) if "/" in base.file else None
                if sub is not None and sub.found and sub.files and sub.files[-1] in self.files:
                    return Mod(sub.files[-1])
            return found
        if isinstance(base, Cls):
            m = self.method(base, attr)
            return m
        if isinstance(base, Inst) and not base.elem:
            m = self.method(base.cls, attr)
            if m is not None:
                return m
            return self.attr_type(base.cls, attr, depth + 1)
        return None

    def call_result(self, callee: Target | None, call: ast.Call | None = None, depth: int = 0) -> Target | None:
        """What calling ``callee`` returns, where the code says so plainly."""
        if callee is None or depth > 6:
            return None
        if isinstance(callee, Cls):
            return Inst(callee)
        if isinstance(callee, Func):
            return self.returns(callee, depth + 1)
        if isinstance(callee, Choice):
            options = tuple((k, r) for k, t in callee.options if (r := self.call_result(t, call, depth + 1)))
            return Choice(options) if options else None
        return None

    # -- classes -----------------------------------------------------------------------------------------

    def class_info(self, cls: Cls) -> ClassInfo | None:
        idx = self.index(cls.file)
        return idx.classes.get(cls.name) if idx else None

    def bases(self, cls: Cls, depth: int = 0) -> list[Cls]:
        """The class and its checkout base classes, nearest first."""
        if cls in self._bases:
            return self._bases[cls]
        found = self._bases_of(cls, depth)
        if depth == 0:
            self._bases[cls] = found
        return found

    def _bases_of(self, cls: Cls, depth: int) -> list[Cls]:
        out = [cls]
        info = self.class_info(cls)
        if info is None or depth > 8:
            return out
        for b in info.bases:
            head, _, rest = b.partition(".")
            t = self.lookup(cls.file, head)
            for part in rest.split(".") if rest else []:
                t = self.member(t, part)
            if isinstance(t, Cls) and t not in out:
                out.extend(x for x in self.bases(t, depth + 1) if x not in out)
        return out

    def method(self, cls: Cls, name: str) -> Func | None:
        for c in self.bases(cls):
            info = self.class_info(c)
            if info is not None and name in info.methods:
                return Func(c.file, f"{c.name}.{name}")
        return None

    def is_module(self, cls: Cls) -> bool:
        """A torch module (calling it runs ``forward``), from its bases as written."""
        if cls not in self._modules:
            self._modules[cls] = self._is_module(cls)
        return self._modules[cls]

    def _is_module(self, cls: Cls) -> bool:
        for c in self.bases(cls):
            info = self.class_info(c)
            if info is None:
                continue
            if "forward" in info.methods or any(b.rsplit(".", 1)[-1] in _MODULE_BASES for b in info.bases):
                return True
        return False

    def attr_type(self, cls: Cls, attr: str, depth: int = 0) -> Target | None:
        """The type of ``self.attr`` from its assignments in the class (first one the doctor can read)."""
        key = (cls, attr)
        if key in self._attr_types:
            return self._attr_types[key]
        self._attr_types[key] = None  # recursion guard
        found: Target | None = None
        for c in self.bases(cls):
            info = self.class_info(c)
            for expr in info.attr_exprs.get(attr, []) if info else []:
                found = self.expr_type(c, expr, depth + 1)
                if found is not None:
                    break
            if found is not None:
                break
        self._attr_types[key] = found
        return found

    def expr_type(self, cls: Cls, expr: ast.expr, depth: int = 0) -> Target | None:
        """The type of an expression inside a method of ``cls`` (no locals: for attribute assignments)."""
        if depth > 6:
            return None
        if isinstance(expr, ast.Call):
            func = expr.func
            name = func.attr if isinstance(func, ast.Attribute) else dotted(func)
            if name in ("ModuleList", "Sequential") and expr.args:
                inner = expr.args[0]
                elems = inner.elts if isinstance(inner, ast.List | ast.Tuple) else [getattr(inner, "elt", inner)]
                for e in elems:
                    t = self.expr_type(cls, e, depth + 1)
                    if isinstance(t, Inst):
                        return Inst(t.cls, elem=True)
                return None
            if isinstance(func, ast.Attribute) and func.attr in _PASSTHROUGH:
                return self.expr_type(cls, func.value, depth + 1)
            if isinstance(func, ast.Attribute) and func.attr in CONSTRUCTORS:
                t = self.expr_type(cls, func.value, depth + 1)
                return Inst(t) if isinstance(t, Cls) else None
            callee = self.expr_type(cls, func, depth + 1)
            if isinstance(callee, Func) and callee.qual.startswith(f"{cls.name}."):
                return self.returns(callee, depth + 1)
            return self.call_result(callee, expr, depth + 1)
        if isinstance(expr, ast.Name):
            return self.lookup(cls.file, expr.id, depth + 1)
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name) and expr.value.id == "self":
                return self.method(cls, expr.attr) or self.attr_type(cls, expr.attr, depth + 1)
            return self.member(self.expr_type(cls, expr.value, depth + 1), expr.attr, depth + 1)
        if isinstance(expr, ast.IfExp):
            return self.expr_type(cls, expr.body, depth + 1) or self.expr_type(cls, expr.orelse, depth + 1)
        if isinstance(expr, ast.Subscript):  # ``CLASSES[kind]``: the one the key names, else each of them
            value = expr.value  # a module's dict of classes: looked up afresh, as deep as a lookup from the walk goes
            base = (
                self.lookup(cls.file, value.id)
                if isinstance(value, ast.Name)
                else self.expr_type(cls, value, depth + 1)
            )
            if not isinstance(base, Choice):
                return None
            key = expr.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return next((t for k, t in base.options if k == key.value), None)  # type: ignore[misc]
            return base
        return None

    def returns(self, fn: Func, depth: int = 0) -> Target | None:
        """What a function returns where every return says the same plain thing (``return self.model``)."""
        if fn in self._returns:
            return self._returns[fn]
        self._returns[fn] = None  # recursion guard
        found = self._returns_of(fn, depth)
        self._returns[fn] = found
        return found

    def _returns_of(self, fn: Func, depth: int) -> Target | None:
        node = self.function(fn)
        if node is None or depth > 6:
            return None
        cls_name = fn.qual.split(".")[0] if "." in fn.qual else ""
        cls = Cls(fn.file, cls_name) if cls_name else None
        for n in statements(node.body):
            if isinstance(n, ast.Return) and n.value is not None:
                if cls is not None:
                    t = self.expr_type(cls, n.value, depth + 1)
                else:
                    t = self.value_target(fn.file, n.value, depth + 1)
                if t is not None:
                    return t
        return None

    def function(self, fn: Func) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        idx = self.index(fn.file)
        entry = idx.functions.get(fn.qual) if idx else None
        return entry[0] if entry else None
