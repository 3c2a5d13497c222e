"""The reference of the JSON that scripts read (docs/report-format.md), generated from the models themselves so
it never drifts from them: every field with its JSON type and what it means.

A field's meaning is its ``description=``. Regenerate with ``python -m wandoc.render.report_format >
docs/report-format.md``; a test fails while the committed file is stale.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from wandoc.checklist import CheckItem
from wandoc.engine import Finding
from wandoc.facts import Facts
from wandoc.metrics import REPORT_SCHEMA, Report, StepHistory

CHECK_SCHEMA = "wandoc.check/1"
# The check JSON's own keys (built in the CLI, not a model): key -> (type, meaning); a test holds the CLI to it.
CHECK_KEYS: dict[str, tuple[str, str]] = {
    "schema": ("str", f"Always {CHECK_SCHEMA}."),
    "findings": ("list[[Finding](#finding)]", "The findings, most severe first (without `step` and `module`)."),
    "facts": ("[Facts](#facts)", "The facts the rules judged: this machine, or the file given with `--facts`."),
    "rules": (
        "object",
        "`evaluated` (int): facts rules evaluated; `files` (list[str]): the rule files they came from.",
    ),
    "summary": ("object", "See below."),
}
CHECK_SUMMARY_KEYS: dict[str, tuple[str, str]] = {
    "checked": ("list[str]", "The checklist's lines that were looked at, as text: `area: what was seen`."),
    "not_checked": (
        "list[str]",
        "The lines that could not be (no NVML, no checkout, ...), each with how to check it, and any probe that "
        "failed: a clean result never overclaims.",
    ),
    "checklist": (
        "list[[CheckItem](#checkitem)]",
        "Every area the doctor looks at, one item each, in the order `wandoc check` prints them.",
    ),
    "shell": ("str", "The shell the fixes are written for: bash, zsh, cmd, powershell, fish."),
    "fail_on": ("str", "The severity at which the command exits 1: error, warning or never."),
}
CHECK_RULES_KEYS = ("evaluated", "files")


def _cell(text: str) -> str:
    """One line of markdown that keeps table cells apart and never reads as an HTML tag."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from _models_in(arg)


def type_name(tp: Any) -> str:
    """A field's type as JSON sees it, with links to the models it holds."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, set):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"object: {type_name(args[0])} → {type_name(args[1])}" if args else "object"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    if tp is Any:
        return "any"
    return {"str": "str", "int": "int", "float": "float", "bool": "bool"}.get(getattr(tp, "__name__", ""), str(tp))


def _first_sentence(model: type[BaseModel]) -> str:
    doc = " ".join((model.__doc__ or "").split())
    return doc.split(". ")[0].rstrip(".") + "." if doc else ""


def fields(model: type[BaseModel]) -> Iterator[tuple[str, str, str]]:
    """(JSON key, type, meaning): the description, else the nested model's docstring."""
    for name, field in model.model_fields.items():
        nested = [m for m in _models_in(field.annotation) if m.__doc__ and m.__doc__ != BaseModel.__doc__]
        meaning = field.description or ""
        yield (
            field.alias or name,
            type_name(field.annotation),
            meaning or (_first_sentence(nested[0]) if nested else ""),
        )


def model_table(model: type[BaseModel]) -> list[str]:
    lines = ["| field | type | description |", "|---|---|---|"]
    return lines + [f"| `{key}` | {_cell(tp)} | {_cell(meaning)} |" for key, tp, meaning in fields(model)]


def model_list(model: type[BaseModel]) -> list[str]:
    """The compact form, for models whose fields mostly explain themselves (the facts)."""
    return [f"- `{key}` ({tp})" + (f": {_cell(meaning)}" if meaning else "") for key, tp, meaning in fields(model)]


def _walk(roots: list[type[BaseModel]], skip: set[type[BaseModel]]) -> list[type[BaseModel]]:
    """The models under ``roots``, each once, in the order a reader meets them."""
    order: list[type[BaseModel]] = []
    queue = list(roots)
    while queue:
        model = queue.pop(0)
        if model in order or model in skip:
            continue
        order.append(model)
        for field in model.model_fields.values():
            queue.extend(m for m in _models_in(field.annotation) if m not in order)
    return order


def _section(model: type[BaseModel], where: str, *, compact: bool = False) -> list[str]:
    doc = " ".join((model.__doc__ or "").split()) if model.__doc__ != BaseModel.__doc__ else ""
    intro = " ".join(x.rstrip(".") + "." for x in (where, doc) if x)
    body = model_list(model) if compact else model_table(model)
    return [f"### {model.__name__}", "", *([_cell(intro), ""] if intro else []), *body, ""]


RUN_WHERE = {
    "Report": "The whole file",
    "RunInfo": "`run`; runtime rules read it as `run.*`",
    "Phase": "Each item of `phases`",
    "StepMetrics": "Each item of `steps`; step rules read the current one as `step.*`",
    "ModuleVolume": "Each item of a step's `top_h2d`, `top_casts`, `top_cpu` and `top_syncs`",
    "Finding": "Each item of `findings` and `doctor` (and of the check JSON's `findings`)",
    "Summary": "`summary`; run rules read it as `summary.*`",
    "StepHistory": "Not in the file: what step rules read as `history.*`, the steps before the current one",
}


def report_format_markdown() -> str:
    """docs/report-format.md."""
    lines = [
        "# Report formats",
        "",
        "Generated from the models (`wandoc/metrics.py`, `wandoc/engine/evaluate.py`, `wandoc/facts.py`) by",
        "`python -m wandoc.render.report_format > docs/report-format.md`; do not edit by hand. New keys may be",
        "added within a schema version; none is renamed or removed without a new one. Sizes are bytes, times",
        "seconds; `null` means not measured.",
        "",
        f"## The run report: `{REPORT_SCHEMA}`",
        "",
        "Written by `wanrun generate --report FILE`; read by `wanrun report FILE`, `wanrun compare A B` and your",
        "scripts. Copy, cast, sync and CPU-op figures are measured in the inspected (`deep`) steps only and are",
        "null in the others; `summary.deep_steps` lists the inspected steps.",
        "",
    ]
    run_models = [*_walk([Report], set()), StepHistory]
    for model in run_models:
        lines += _section(model, RUN_WHERE.get(model.__name__, ""))
    lines += [
        f"## The doctor's verdict: `{CHECK_SCHEMA}`",
        "",
        "Printed by `wandoc check --format json`: one object.",
        "",
        "| key | type | description |",
        "|---|---|---|",
        *(f"| `{k}` | {_cell(t)} | {_cell(d)} |" for k, (t, d) in CHECK_KEYS.items()),
        "",
        "`summary`:",
        "",
        "| key | type | description |",
        "|---|---|---|",
        *(f"| `{k}` | {_cell(t)} | {_cell(d)} |" for k, (t, d) in CHECK_SUMMARY_KEYS.items()),
        "",
        "Each finding is a [Finding](#finding) (above) without the runtime keys `step` and `module`.",
        "",
        *_section(CheckItem, "Each item of `summary.checklist`"),
        "## The facts: `wandoc.facts/1`",
        "",
        "`wandoc facts` prints them; `wandoc check --facts FILE` replays them; rules read them by dotted path",
        "(`nvml.gpus`, `repo.effective.offload_model`). Each probe fills its own part and records what it could",
        "not read in its `error` field.",
        "",
    ]
    for model in _walk([Facts], {Finding}):
        where = "The whole object" if model is Facts else ""
        lines += _section(model, where, compact=True)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(report_format_markdown(), end="")
