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
    source_comments,
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


class _Sample(BaseModel):
    """A model as the facts write them: meanings in comments."""

    plain: int = 0
    beside: str = ""  # said beside it
    # said above it,
    # over two lines
    above: list[int] = Field(default_factory=list)
    described: float | None = Field(None, description="said in the field")  # and this comment loses


def test_meanings_come_from_descriptions_then_comments() -> None:
    assert source_comments(_Sample) == {
        "beside": "said beside it",
        "above": "said above it, over two lines",
        "described": "and this comment loses",
    }
    assert [(k, t, m) for k, t, m in fields(_Sample)] == [
        ("plain", "int", ""),
        ("beside", "str", "said beside it"),
        ("above", "list[int]", "said above it, over two lines"),
        ("described", "float or null", "said in the field"),
    ]
    assert type_name(dict[str, _Sample]) == "object: str → [_Sample](#_sample)"
