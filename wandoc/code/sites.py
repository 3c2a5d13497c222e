"""Perf-relevant code sites (``SITE_KINDS``): what a function does that can make a run slow.

``_Scanner`` classifies one function's nodes into hits and call references; which hits become facts, and how
often they run, is decided by the call graph.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wandoc.code.parse import ParsedFile, dotted, node_fields, segment, str_const, walk
from wandoc.code.reach import Reach, Way
from wandoc.code.symbols import Func, Symbols
from wandoc.facts import CodeSite

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
ANYWHERE_TRIGGERS = (
    "sdp", "torch.compile", "_dynamo", "cpu_offload", "empty_cache", ".cpu(", "'cpu'", '"cpu"',
    "scaled_dot_product_attention", "flash_attn_interface",
)  # fmt: skip


# Text a function must contain for a forward kind to be in it (a cheap test before scanning a function the run
# does not call, for the facts).
_FORWARD_TRIGGERS = (
    ".cpu(", ".item(", ".tolist(", ".numpy(", "synchronize", "empty_cache", "'cpu'", '"cpu"', "cpu_offload", "sdp",
    "flash_attn",
)  # fmt: skip


# Text without which no kind of site can be in a function (the scan is skipped).
_ANY_SITE = (
    "sdp", "mask", ".item(", ".tolist(", "cpu", ".numpy(", "synchronize", "empty_cache", "compile", "_dynamo",
    "float", "scaled_dot_product", "flash", "matmul", "bmm", "einsum", "softmax", "@", ".mm(", "sageattn",
    "memory_efficient", "attention(", "view_as_complex", "polar",
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
    for n in walk(node):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
        if name and _FLASH_FLAG.search(name):
            return True
    return False


def _is_false(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _is_cpu(node: ast.AST) -> bool:
    if str_const(node) == "cpu":
        return True
    return isinstance(node, ast.Call) and dotted(node.func).endswith("device") and any(_is_cpu(a) for a in node.args)


def _is_fp32(node: ast.AST) -> bool:
    return dotted(node) in ("torch.float32", "torch.float", "float32") or str_const(node) == "float32"


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
        self._default = self._children

    def visit(self, node: ast.AST) -> None:
        handler = self._table.get(node.__class__, self._default)
        if handler is not None:
            handler(node)

    def _children(self, node: ast.AST) -> None:
        table, default = self._table, self._default
        for name in node_fields(node.__class__):  # ``children`` and ``visit`` inlined: this runs for every node
            value = getattr(node, name, None)
            for child in value if value.__class__ is list else (value,):
                if isinstance(child, ast.AST):
                    handler = table.get(child.__class__, default)
                    if handler is not None:
                        handler(child)

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
                for n in walk(node.value)
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
        elif name in ("view_as_complex", "polar") and (full.startswith("torch.") or isinstance(func, ast.Name)):
            self.hit("complex_rope", node)
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
            for n in walk(kw["attn_mask"])
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
    if pf.tree is not None and any(t in pf.text for t in ANYWHERE_TRIGGERS):
        indexed = {id(node): qual for qual, (node, _) in _functions(pf).items()}
        todo: list[tuple[ast.stmt, str]] = [(stmt, "") for stmt in pf.tree.body]
        while todo:
            stmt, cls = todo.pop()
            text = segment(pf, stmt)
            if not any(t in text for t in ANYWHERE_TRIGGERS):
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


def is_attn_file(rel: str) -> bool:
    return "attention" in posixpath.basename(rel).lower()


def _forwardish(qual: str) -> bool:
    short = qual.rsplit(".", 1)[-1]
    return short == "forward" or _attnish(short)


def forward_roots(pf: ParsedFile, rel: str) -> list[Func]:
    """The functions a model runs per call, for files the entry does not reach: ``forward`` and attention helpers."""
    return [Func(rel, q) for q in _functions(pf) if _forwardish(q)]


def _requires_flash(symbols: Symbols, rel: str, target: str) -> bool:
    """The called ``flash_attention`` asserts flash_attn (rather than falling back to SDPA)."""
    resolved = symbols.lookup(rel, target)
    if not isinstance(resolved, Func):
        return target.startswith("flash_attn_")  # flash_attn's own function, called with no fallback
    pf = symbols.walk.parsed(resolved.file)
    if pf is None or resolved.qual not in _functions(pf):
        return False
    return _scan_function(pf, resolved.qual, is_attn_file(resolved.file)).asserts_flash


@dataclass
class Judged:
    """The sites of one set of files and how the walk that covers them reached each line."""

    reach: Reach
    symbols: Symbols
    files: list[str]
    label_unreached: str  # why a line the walk did not reach does not run ("" when it may: no entry)
    on_path: bool
    roots_only: bool = False  # the walk started at forward() functions, not at an entry: nothing is verified


def _label(way: Way | None, judged: Judged, rel: str, hit: _Hit) -> tuple[str, str]:
    if judged.roots_only:
        if not judged.on_path:
            return "never", judged.label_unreached
        return "unknown", judged.label_unreached
    if way is None:
        reason = judged.reach.never.get(rel, {}).get(hit.line)
        if reason is None:
            walked = Func(rel, hit.function) in judged.reach.walked or hit.function == "<module>"
            reason = "not reached in this run" if walked else judged.label_unreached
        return "never", reason
    chain = " -> ".join(way.chain[-5:])
    if way.rank == 3:
        return "forward", f"runs every step: {chain}"
    if way.rank == 1:
        return "once", f"runs once per run: {chain}"
    cond = " and ".join(way.conditions) or "a condition the doctor could not decide"
    return "conditional", f"runs only if {cond} ({'every step' if way.forward else 'once'}): {chain}"


# Kinds that run at import time when they sit at a module's top level: a module the call graph never entered is
# parsed for these only.
SETUP_TRIGGERS = ("sdp", "torch.compile", "_dynamo", "cpu_offload", "flash_attn_interface")


def worth_scanning(text: str | None) -> bool:
    return text is not None and any(t in text for t in SETUP_TRIGGERS)


def find_sites(parts: Sequence[Judged]) -> list[CodeSite]:
    """SITE_KINDS sites of each set of files with the reach of each, one per kind and function (the most
    often run)."""
    sites: list[CodeSite] = []
    seen: set[tuple[str, str, str]] = set()
    for judged in parts:
        walk = judged.reach.walk
        for rel in judged.files:
            pf = walk.cached(rel)
            if pf is None and (judged.roots_only or worth_scanning(walk.source.read(rel))):
                pf = walk.parsed(rel)
            if pf is None or pf.tree is None:
                continue
            attn_file = is_attn_file(rel)
            hits = list(_scan_setup(pf, attn_file))
            lines = judged.reach.lines.get(rel, {})
            funcs = _functions(pf)
            walked = judged.reach.walked
            whole = any(Func(rel, q) in walked for q in funcs)  # never-called neighbours: facts
            for qual, (node, _) in funcs.items():
                text = segment(pf, node)
                if not any(t in text for t in _ANY_SITE):
                    continue  # no kind of site can be in it: not worth a scan
                if (
                    Func(rel, qual) in walked
                    or _forwardish(qual)
                    or attn_file
                    or (whole and any(t in text for t in _FORWARD_TRIGGERS))
                ):
                    hits.extend(_scan_function(pf, qual, attn_file).hits)
            ranked = sorted(hits, key=lambda h: (-(lines[h.line].rank if h.line in lines else -1), h.line))
            for h in ranked:
                way = lines.get(h.line)
                fn = Func(rel, h.function)
                if way is not None:
                    hot = way.forward or fn in judged.reach.hot
                else:
                    hot = attn_file or _forwardish(h.function) or (h.in_loop and fn not in walked)
                if h.kind in FORWARD_KINDS and not hot:
                    continue
                if h.kind == "empty_cache_in_loop" and not (h.in_loop or (way is not None and way.forward)):
                    continue
                if h.kind == "model_offload" and way is not None and way.forward:
                    continue
                if h.kind == "flash_attention_call" and not _requires_flash(judged.symbols, rel, h.target):
                    continue
                key = (h.kind, rel, h.function)
                if key in seen:
                    continue
                seen.add(key)
                reach, why = _label(way, judged, rel, h)
                line = pf.lines[h.line - 1].strip() if 0 < h.line <= len(pf.lines) else ""
                verified = way is not None and not judged.roots_only
                sites.append(
                    CodeSite(
                        kind=h.kind,
                        file=rel,
                        line=h.line,
                        function=h.function,
                        snippet=line[:120],
                        on_path=judged.on_path,
                        reach=reach,
                        reach_why=why,
                        conditions=list(way.decided) if verified and way else [],
                        chosen_by=sorted(way.chosen_by) if verified and way else [],
                        module=(way.module or "") if verified and way else "",
                        via=list(way.chain) if verified and way else [],
                    )
                )
    return sites
