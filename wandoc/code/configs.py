"""Values from the checkout's own code read as data: ``WAN_CONFIGS`` and each task's config, dict keys, lists.

``choices=list(WAN_CONFIGS.keys())`` and ``cfg.sample_steps`` are how the official generate.py names its tasks
and fills its defaults. They are read here from the checkout's ``wan/configs`` as text (``x.attr = literal``,
``x.update(shared)``), never imported, so a fork's own tasks and defaults are the ones judged; the tables in the
doctor (heads per task, model sizes) are only the fallback for code that has none.
"""

from __future__ import annotations

import ast
from typing import Any

from wandoc.code.imports import Walk

_MAX_ITEMS = 10_000  # a choices list longer than this is not replayed


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


class ModuleValues:
    """Resolves module-level names of one checkout side to their defining expressions, across imports."""

    def __init__(self, walk: Walk) -> None:
        self.walk = walk

    def expr(self, file: str, name: str, depth: int = 0) -> tuple[str, ast.expr] | None:
        """(file, expression) assigned to ``name`` at the top level of ``file`` or the module it came from."""
        if depth > 6:
            return None
        pf = self.walk.parsed(file)
        if pf is None or pf.tree is None:
            return None
        if name in pf.assigns:
            return file, pf.assigns[name]
        bound = self.walk.bindings(file).get(name)
        if bound is not None and bound[1] is not None and bound[0] != file:
            return self.expr(bound[0], bound[1], depth + 1)
        return None

    def sequence(self, file: str, node: ast.AST, depth: int = 0) -> list[Any] | None:
        """A list the expression evaluates to: a literal, ``list(D.keys())``, ``sorted(D)``, a dict's keys."""
        if depth > 6:
            return None
        ok, value = _literal(node)
        if ok and isinstance(value, list | tuple | set | dict):
            items = list(value)
            return items if len(items) <= _MAX_ITEMS else None
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("list", "tuple", "sorted", "set") and len(node.args) == 1:
                return self.sequence(file, node.args[0], depth + 1)
            if isinstance(func, ast.Attribute) and func.attr == "keys" and not node.args:
                return self.sequence(file, func.value, depth + 1)
            return None
        if isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None]
            out = []
            for k in keys:
                ok, v = _literal(k)
                if not ok:
                    return None
                out.append(v)
            return out if len(out) <= _MAX_ITEMS else None
        if isinstance(node, ast.Name):
            found = self.expr(file, node.id)
            return self.sequence(found[0], found[1], depth + 1) if found else None
        return None

    def task_configs(self, file: str, name: str = "WAN_CONFIGS") -> dict[str, dict[str, Any]]:
        """Task -> literal attributes of its config (``t2v_A14B.num_heads = 40``, shared values merged first)."""
        found = self.expr(file, name)
        if found is None or not isinstance(found[1], ast.Dict):
            return {}
        cfg_file, node = found
        out: dict[str, dict[str, Any]] = {}
        for k, v in zip(node.keys, node.values, strict=False):
            ok, key = _literal(k) if k is not None else (False, None)
            if ok and isinstance(key, str) and isinstance(v, ast.Name):
                out[key] = self.object_attrs(cfg_file, v.id)
        return out

    def object_attrs(self, file: str, name: str, depth: int = 0) -> dict[str, Any]:
        """Literal attributes set on a module-level object: ``x.attr = literal``, ``x.update(y)`` merging y's."""
        if depth > 4:
            return {}
        found = self.expr(file, name)
        if found is None:
            return {}
        home = found[0]
        pf = self.walk.parsed(home)
        if pf is None or pf.tree is None:
            return {}
        attrs: dict[str, Any] = {}
        for stmt in pf.tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                t = stmt.targets[0]
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == name:
                    ok, value = _literal(stmt.value)
                    if ok:
                        attrs[t.attr] = value
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                f = stmt.value.func
                if (
                    isinstance(f, ast.Attribute)
                    and f.attr == "update"
                    and isinstance(f.value, ast.Name)
                    and f.value.id == name
                    and stmt.value.args
                    and isinstance(stmt.value.args[0], ast.Name)
                ):
                    attrs.update(self.object_attrs(home, stmt.value.args[0].id, depth + 1))
        return attrs
