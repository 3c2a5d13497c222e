"""The code analysis's fast primitives agree with the standard library ones they stand in for.

The call graph follows calls in the order the node walk yields them, and the quick import reader trusts the
triple-quote map: a walker that visits in another order, or a decoder that reads a file differently, would
change what the doctor says without any test of a verdict noticing at once.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import wandoc
from wandoc.code.parse import _string_lines, calls_in, children, walk
from wandoc.code.source import decode_source

SNIPPET = '''
import os, sys as system
from . import x
@decorator(arg=1)
async def f(a, /, b: int = 2, *args, c, d=3, **kw) -> "T":  # type: ignore
    global g
    async with open(a) as fh, other():
        async for i in fh:
            yield (await i) if i else [j async for j in i if j]
    match a:
        case {"k": [1, *rest]} | Point(x=0) as p if p:
            pass
        case _:
            del a[0], b.c
    try:
        raise ValueError(f"{a!r:>{b}}") from None
    except* (TypeError, KeyError) as e:
        nonlocal_ = lambda q=1: q @ q
    x: list[int] = [*a, *b]
    return {**kw, "a": a[1:2, ::3]}, {s for s in b}, {k: v for k, v in c}
class C(B, metaclass=M):
    """doc"""
    v = 1 if a else 2
'''


def _reference(node: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(node) if not isinstance(n, ast.expr_context)]


def test_walk_visits_what_ast_walk_visits_in_its_order() -> None:
    trees = [ast.parse(SNIPPET)] + [
        ast.parse(p.read_text(encoding="utf-8")) for p in sorted(Path(wandoc.__file__).parent.rglob("*.py"))
    ]
    for tree in trees:
        assert walk(tree) == _reference(tree)
        assert calls_in(tree) == [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    tree = trees[0]
    for node in ast.walk(tree):
        assert children(node) == [n for n in ast.iter_child_nodes(node) if not isinstance(n, ast.expr_context)]


def _decoded_by_tokenize(data: bytes) -> str:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except (SyntaxError, LookupError):
        encoding = "utf-8"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def test_decode_reads_cookies_boms_and_bad_bytes_as_the_interpreter_would() -> None:
    cases = [
        b"",
        b"x = 'caf\xc3\xa9'\n",
        b"# -*- coding: latin-1 -*-\nx = '\xe9'\n",
        b"#!/usr/bin/env python\n# vim: set fileencoding=cp1252 :\nx = '\x80'\n",
        b"x = 1\ny = 2\n# coding: latin-1\nz = '\xe9'\n",  # a third-line cookie is not one
        b"\xef\xbb\xbfx = 'caf\xc3\xa9'\n",
        b"\xef\xbb\xbf# coding: latin-1\nx = 1\n",  # a BOM and another cookie: an error, read as UTF-8
        b"\xff\xfe = 1\n",
        b"# coding: no-such-codec\nx = 1\n",
        b"x = 1\r# coding: latin-1\r'\xe9'",  # old Mac line ends: one line for the reader
    ]
    for data in cases:
        assert decode_source(data) == _decoded_by_tokenize(data), data


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\n", b"# ", b"coding: latin-1", b"\xef\xbb\xbf", b"\xe9", b"x = 1", b"\r"])))
def test_decode_agrees_with_tokenize_on_any_mix(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert decode_source(data) == _decoded_by_tokenize(data)


def _string_lines_one_by_one(lines: list[str]) -> list[bool] | None:
    """The line-by-line reading that ``_string_lines`` speeds up (it skips lines without triple quotes)."""
    out: list[bool] = []
    quote: str | None = None
    for line in lines:
        out.append(quote is not None)
        pos = 0
        while True:
            if quote is None:
                hits = [(line.find(q, pos), q) for q in ('"""', "'''")]
                hits = [h for h in hits if h[0] >= 0]
                if not hits:
                    break
                at, q = min(hits)
                if "#" in line[pos:at]:
                    break
                quote, pos = q, at + 3
            else:
                at = line.find(quote, pos)
                if at < 0:
                    break
                quote, pos = None, at + 3
    return out if quote is None else None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(['"""', "'''", "#", "import x", "\n", "\n", "a", '"', " "]), max_size=40))
def test_triple_quote_map_matches_a_line_by_line_reading(parts: list[str]) -> None:
    lines = "".join(parts).split("\n")
    assert _string_lines(lines) == _string_lines_one_by_one(lines)
