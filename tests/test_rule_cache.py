"""The cache of parsed rule files: hits skip the TOML parser, never the validation; edits, damage, forgery and
unwritable folders all fall back to reading the rule file itself."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

from wandoc import rulebook
from wandoc.cli import main
from wandoc.engine import RuleFileError, load_rules
from wandoc.engine.cache import FILE_NAME, MAX_ENTRIES, SCHEMA, RuleCache

RULE = """id = "ENV-TEST-RULE"
title = "{title}"
severity = "warning"
when = "get(env.vars, 'WAN_TEST') == '1'"
message = "WAN_TEST is {{get(env.vars, 'WAN_TEST')}}"
"""
FACTS = {"schema": "wandoc.facts/1", "env": {"vars": {"WAN_TEST": "1"}}}


def _python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _dump(rules: list) -> list[dict]:
    return [r.model_dump() for r in rules]


def _no_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the TOML parser ran on a cache hit")

    monkeypatch.setattr(tomllib, "loads", refuse)


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "ENV-TEST-RULE.toml").write_text(RULE.format(title="first title"), encoding="utf-8")
    return d


def test_a_hit_skips_the_toml_parser_and_gives_the_same_rules(tmp_path: Path, monkeypatch) -> None:
    cache_dir = tmp_path / "cache"
    plain = rulebook.load()
    first = rulebook.load(cache_dir=cache_dir)
    assert (cache_dir / FILE_NAME).is_file()
    _no_toml(monkeypatch)
    second = rulebook.load(cache_dir=cache_dir)
    assert _dump(plain) == _dump(first) == _dump(second)
    assert [p.name for p in cache_dir.iterdir()] == [FILE_NAME]  # no temp file left behind


def test_an_edited_file_is_read_again_even_with_its_old_size_and_time(rule_dir: Path, tmp_path: Path) -> None:
    cache_dir, path = tmp_path / "cache", rule_dir / "ENV-TEST-RULE.toml"
    assert load_rules([rule_dir], cache=RuleCache(cache_dir))[0].title == "first title"
    stat = path.stat()
    path.write_text(RULE.format(title="other title"), encoding="utf-8")  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert load_rules([rule_dir], cache=RuleCache(cache_dir))[0].title == "other title"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"[]",
        json.dumps({"schema": "wandoc.rule-cache/0", "python": "3.11", "entries": {}}).encode(),
        json.dumps({"schema": SCHEMA, "entries": []}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_damaged_cache_file_is_ignored(rule_dir: Path, tmp_path: Path, content: bytes) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / FILE_NAME).write_bytes(content)
    rules = load_rules([rule_dir], cache=RuleCache(cache_dir))
    assert [r.id for r in rules] == ["ENV-TEST-RULE"]
    assert load_rules([rule_dir], cache=RuleCache(cache_dir))[0].title == "first title"  # and it was rewritten


@pytest.mark.parametrize(
    "entry",
    [
        "not a list",
        [],
        ["not a table"],
        [{"id": "ENV-TEST-RULE"}],  # a table the model refuses
        [{"id": "ENV-TEST-RULE", "title": "t", "severity": "error", "when": "__import__('os')", "message": "m"}],
    ],
)
def test_a_forged_or_broken_entry_is_refused_and_the_file_read(
    rule_dir: Path, tmp_path: Path, monkeypatch, entry: object
) -> None:
    cache_dir = tmp_path / "cache"
    load_rules([rule_dir], cache=RuleCache(cache_dir))
    data = json.loads((cache_dir / FILE_NAME).read_text(encoding="utf-8"))
    (key,) = data["entries"]
    data["entries"][key] = entry
    (cache_dir / FILE_NAME).write_text(json.dumps(data), encoding="utf-8")
    rules = load_rules([rule_dir], cache=RuleCache(cache_dir))
    assert [(r.id, r.title, r.when) for r in rules] == [
        ("ENV-TEST-RULE", "first title", "get(env.vars, 'WAN_TEST') == '1'")
    ]


def test_stale_entries_age_out_and_this_runs_stay(rule_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    stale = {f"{i:064x}": [{"id": f"ENV-OLD-{i}"}] for i in range(MAX_ENTRIES + 50)}
    entries = json.dumps({"schema": SCHEMA, "python": _python(), "entries": stale})
    (cache_dir / FILE_NAME).write_text(entries, encoding="utf-8")
    load_rules([rule_dir], cache=RuleCache(cache_dir))
    kept = json.loads((cache_dir / FILE_NAME).read_text(encoding="utf-8"))["entries"]
    key = RuleCache.key((rule_dir / "ENV-TEST-RULE.toml").read_text(encoding="utf-8"))
    assert len(kept) == MAX_ENTRIES and key in kept
    assert f"{MAX_ENTRIES + 49:064x}" in kept and f"{0:064x}" not in kept  # the oldest went first


def test_a_broken_rule_file_is_an_error_with_or_without_cache(rule_dir: Path, tmp_path: Path) -> None:
    cache = RuleCache(tmp_path / "cache")
    (rule_dir / "ENV-TEST-RULE.toml").write_text('id = "ENV-TEST-RULE"\nseverity = "loud"\n', encoding="utf-8")
    with pytest.raises(RuleFileError, match=r"ENV-TEST-RULE\.toml"):
        load_rules([rule_dir], cache=cache)
    assert not (tmp_path / "cache").exists()  # nothing to keep from a file that does not load


def test_values_json_cannot_hold_are_not_cached(rule_dir: Path, tmp_path: Path) -> None:
    (rule_dir / "ENV-TEST-RULE.toml").write_text(
        RULE.format(title="dated")
        + '[[example]]\nname = "when"\nfires = false\n[example.facts.env]\nsince = 2026-11-26T10:00:00Z\n',
        encoding="utf-8",
    )
    cache_dir = tmp_path / "cache"
    first = load_rules([rule_dir], cache=RuleCache(cache_dir))
    assert not (cache_dir / FILE_NAME).exists()
    assert _dump(first) == _dump(load_rules([rule_dir], cache=RuleCache(cache_dir))) == _dump(load_rules([rule_dir]))


def test_an_unwritable_cache_folder_changes_nothing(rule_dir: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    assert [r.id for r in load_rules([rule_dir], cache=RuleCache(blocker / "cache"))] == ["ENV-TEST-RULE"]

    def refuse(*_: object) -> None:
        raise PermissionError(13, "read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    cache_dir = tmp_path / "cache"
    assert [r.id for r in load_rules([rule_dir], cache=RuleCache(cache_dir))] == ["ENV-TEST-RULE"]
    assert list(cache_dir.iterdir()) == []  # the temp file went too


def test_check_rereads_a_rule_file_edited_between_runs(
    rule_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("WANDOC_CACHE_DIR", str(cache_dir))
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(FACTS), encoding="utf-8")
    args = ["check", "--facts", str(facts), "--rules", str(rule_dir), "--fail-on", "never"]
    for title in ("first title", "edited title"):
        (rule_dir / "ENV-TEST-RULE.toml").write_text(RULE.format(title=title), encoding="utf-8")
        with pytest.raises(SystemExit):
            main(args)
        assert title in capsys.readouterr().out
    assert (cache_dir / FILE_NAME).is_file()


@pytest.mark.parametrize("how", ["env", "toml"])
def test_the_cache_can_be_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch, how: str) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("WANDOC_CACHE_DIR", str(cache_dir))
    monkeypatch.chdir(tmp_path)
    if how == "env":
        monkeypatch.setenv("WANDOC_CACHE", "0")
    else:
        (tmp_path / "wandoc.toml").write_text("cache = false\n", encoding="utf-8")
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(FACTS), encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["check", "--facts", str(facts), "--fail-on", "never"])
    capsys.readouterr()
    assert not cache_dir.exists()
