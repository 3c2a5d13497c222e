"""Every shipped rule fires on its own positive examples and stays quiet on its negative ones."""

from __future__ import annotations

import pytest

from wandoc import rulebook
from wandoc.engine import load_rule_file
from wandoc.engine.rules import rule_files

RULE_FILES = rule_files([rulebook.shipped_rules_dir()])


def test_rules_are_shipped() -> None:
    assert len(RULE_FILES) >= 30


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.stem)
def test_rule_examples(path) -> None:
    for rule in load_rule_file(path):
        result = rulebook.test_rule(rule)
        assert result.ok, "\n".join(result.failed)


def test_rule_ids_are_unique() -> None:
    seen: dict[str, str] = {}
    for path in RULE_FILES:
        for rule in load_rule_file(path):
            assert rule.id not in seen, f"{rule.id} in {path} and {seen[rule.id]}"
            seen[rule.id] = str(path)
