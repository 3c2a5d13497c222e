"""docs/report-format.md is generated from the models; the check JSON's own keys are held to what it documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from wandoc.cli import main
from wandoc.metrics import Report, StepHistory
from wandoc.render.report_format import (
    CHECK_KEYS,
    CHECK_RULES_KEYS,
    CHECK_SUMMARY_KEYS,
    fields,
    report_format_markdown,
    type_name,
)

ROOT = Path(__file__).resolve().parents[1]


def test_report_format_doc_is_current() -> None:
    """Regenerate with `python -m wandoc.render.report_format > docs/report-format.md`."""
    assert (ROOT / "docs" / "report-format.md").read_text(encoding="utf-8") == report_format_markdown()


def test_every_run_report_field_says_what_it_holds() -> None:
    models: list[type[BaseModel]] = [Report, StepHistory]
    seen: set[type[BaseModel]] = set()
    while models:
        model = models.pop()
        if model in seen:
            continue
        seen.add(model)
        for key, _, meaning in fields(model):
            assert meaning, f"{model.__name__}.{key} has no description"
        models += [
            m for f in model.model_fields.values() for m in (f.annotation, *getattr(f.annotation, "__args__", ()))
            if isinstance(m, type) and issubclass(m, BaseModel)
        ]  # fmt: skip
    assert len(seen) >= 7


def test_check_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    facts = ROOT / "tests" / "fixtures" / "machines" / "h100-server.json"
    with pytest.raises(SystemExit):
        main(["check", "--facts", str(facts), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(CHECK_KEYS)
    assert set(out["summary"]) == set(CHECK_SUMMARY_KEYS) and set(out["rules"]) == set(CHECK_RULES_KEYS)


class _Nested(BaseModel):
    """What a nested model holds. More than one sentence."""


class _Sample(BaseModel):
    plain: int = 0
    described: float | None = Field(None, description="said in the field")  # a comment is not a description
    nested: _Nested = Field(default_factory=_Nested)


def test_meanings_come_from_descriptions_then_the_nested_models_docstring() -> None:
    assert [(k, t, m) for k, t, m in fields(_Sample)] == [
        ("plain", "int", ""),
        ("described", "float or null", "said in the field"),
        ("nested", "[_Nested](#_nested)", "What a nested model holds."),
    ]
    assert type_name(dict[str, _Sample]) == "object: str → [_Sample](#_sample)"


@pytest.mark.parametrize("module", ["wandoc/facts.py", "wandoc/metrics.py", "wandoc/engine/evaluate.py"])
def test_no_field_is_described_by_a_comment(module: str) -> None:
    """The reference reads descriptions only: a comment beside a field would never reach it."""
    import ast
    import io
    import tokenize

    source = (ROOT / module).read_text(encoding="utf-8")
    commented = {
        t.start[0] for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT
    }
    for cls in ast.parse(source).body:
        if isinstance(cls, ast.ClassDef):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign):
                    lines = set(range(node.lineno - 1, (node.end_lineno or node.lineno) + 1))
                    assert not lines & commented, f"{module}:{node.lineno}: use Field(description=...)"
