"""Rule files: their model, and loading them with errors that name the file and the line.

A rule file is TOML and holds one rule (top-level keys) or several (``[[rule]]`` tables). Loading validates
every key with pydantic and compiles every expression with the safe evaluator, so a broken or hostile rule
file is refused at load time, never half-applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import tomli
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wandoc.engine.expr import Expr, ExprError, compile_expr, template_exprs
from wandoc.engine.schema import Schema, rule_problems

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
SHELLS = ("bash", "cmd", "powershell")
MAX_RULE_FILE = 256 * 1024
MAX_NESTING = 32  # tables and arrays in a rule file: a rule's example facts need about ten
TARGETS_FILE = "targets.toml"  # what runtime guards hook by name (wanrun.targets), not a rule
DATA_FILES = frozenset({TARGETS_FILE, "entries.toml"})  # data beside the rules (entries: known fork entry scripts)


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message names the file (and the line where known)."""


class Fix(BaseModel):
    """What to do: prose, and per-shell commands where the fix is something to type."""

    model_config = ConfigDict(extra="forbid")
    text: str = ""
    bash: str | None = None  # also used for zsh
    cmd: str | None = None
    powershell: str | None = None

    def command_for(self, shell: str) -> str | None:
        shell = {"zsh": "bash", "sh": "bash", "fish": "bash", "pwsh": "powershell"}.get(shell, shell)
        return getattr(self, shell, None) if shell in SHELLS else self.bash


class Example(BaseModel):
    """Facts (or step metrics) under which the rule must fire, or must stay quiet."""

    model_config = ConfigDict(extra="forbid")
    name: str
    fires: bool
    facts: dict[str, Any] = Field(default_factory=dict)
    count: int | None = None  # how many findings, for rules with ``each``


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    title: str
    severity: Severity
    scope: Literal["facts", "step", "run"] = "facts"
    when: str
    each: str | None = None  # a list to judge item by item: one finding per item that matches
    as_: str = Field(default="item", alias="as")
    message: str
    evidence: dict[str, str] = Field(default_factory=dict)  # label -> expression
    fix: Fix = Field(default_factory=Fix)
    module: str | None = None  # runtime rules: expression naming the module (dotted path)
    explain: str = ""  # the longer why, for `wandoc rules show` and the rule reference
    refs: list[str] = Field(default_factory=list)
    example: list[Example] = Field(default_factory=list)
    source: str = ""  # file the rule came from (set by the loader)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9]*-[A-Z0-9][A-Z0-9-]*", v):
            raise ValueError("an id is an area prefix and a name in capitals, e.g. ENV-VISIBLE-DEVICES-EMPTY")
        return v

    @field_validator("as_")
    @classmethod
    def _as_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError("'as' must be a lower-case name")
        return v

    @model_validator(mode="after")
    def _compile(self) -> Rule:
        for label, src in (("when", self.when), ("each", self.each), ("module", self.module)):
            if src is not None:
                try:
                    compile_expr(src)
                except ExprError as exc:
                    raise ValueError(f"{label}: {exc}") from None
        for label, src in self.evidence.items():
            try:
                compile_expr(src)
            except ExprError as exc:
                raise ValueError(f"evidence.{label}: {exc}") from None
        for label, text in [("message", self.message), ("title", self.title)] + [
            (f"fix.{k}", v) for k, v in self.fix.model_dump().items() if v
        ]:
            try:
                template_exprs(text)
            except ExprError as exc:
                raise ValueError(f"{label}: {exc}") from None
        return self

    @property
    def area(self) -> str:
        return self.id.split("-", 1)[0]

    def compiled(self) -> tuple[Expr, Expr | None]:
        return compile_expr(self.when), compile_expr(self.each) if self.each else None


def _names_key(line: str, key: str) -> bool:
    """Whether a TOML line is the table header or the assignment of ``key`` (plain string work: a line of a
    hostile file may be 256 KiB long)."""
    stripped = line.lstrip()
    if stripped.startswith("["):
        names = stripped.lstrip("[").split("]", 1)[0]
    elif "=" in stripped:
        names = stripped.split("=", 1)[0]
    else:
        return False
    return key in (part.strip().strip("\"'") for part in names.split("."))


def _line_of(text: str, loc: tuple[Any, ...], table: int = 0) -> int | None:
    """Best-effort line of the key an error points at, within the ``table``-th ``[[rule]]`` of the file."""
    keys = [k for k in loc if isinstance(k, str) and k != "rule"]
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("[[rule]]")]
    first = starts[table] if table < len(starts) else 0
    for key in reversed(keys):
        for i in range(first, len(lines)):
            if _names_key(lines[i], key):
                return i + 1
    return None


Schemas = Callable[[str], Schema | None]  # a rule scope -> the schema its paths are checked against (None: not)


def parse_rule_text(text: str, source: str, schemas: Schemas | None = None) -> list[Rule]:
    """Rules from the text of one rule file; RuleFileError on anything wrong, including a path, loop variable
    or enumeration value that the rule's scope does not have (when ``schemas`` is given)."""
    return _validated(_tables(text, source), text, source, schemas)


def _depth(value: Any) -> int:
    """How deep tables and arrays nest (iteratively: dotted keys nest without limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        if not items:
            continue
        depth += 1  # its items sit one level down; only the tables and arrays among them are followed
        if depth > deepest:
            deepest = depth
            if deepest > MAX_NESTING:
                break
        stack.extend((x, depth) for x in items if isinstance(x, dict | list))
    return deepest


def _tables(text: str, source: str) -> list[Any]:
    """The rule tables of one file: its top level, or its ``[[rule]]`` list."""
    try:
        data = tomli.loads(text)  # tomllib's own upstream, compiled: a third of tomllib's time for our ~80 files
    except tomli.TOMLDecodeError as exc:
        raise RuleFileError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays or inline tables nested hundreds deep
        raise RuleFileError(f"{source}: nested more than {MAX_NESTING} levels; not a rule file") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise RuleFileError(f"{source}: not valid TOML: {exc}") from None
    if _depth(data) > MAX_NESTING:
        raise RuleFileError(f"{source}: nested more than {MAX_NESTING} levels; not a rule file")
    raw = data.pop("rule") if "rule" in data and isinstance(data["rule"], list) else None
    if raw is None:
        return [data]
    if data:
        raise RuleFileError(f"{source}: top-level keys {sorted(data)} beside [[rule]] tables")
    return raw


def _validated(raw: list[Any], text: str, source: str, schemas: Schemas | None = None) -> list[Rule]:
    rules: list[Rule] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RuleFileError(f"{source}: [[rule]] {i + 1} is not a table")
        try:
            rule = Rule.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err.get("loc", ()))
            where = ".".join(str(p) for p in loc) or "rule"
            line = _line_of(text, loc, i)
            at = f"{source}:{line}" if line else source
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown key"
            more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
            raise RuleFileError(f"{at}: {where}: {msg}{more}") from None
        schema = schemas(rule.scope) if schemas is not None else None
        problems = rule_problems(rule, schema) if schema is not None else []
        if problems:
            where, why = problems[0]
            line = _line_of(text, tuple(where.split(".")), i)
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise RuleFileError(f"{f'{source}:{line}' if line else source}: {rule.id}: {where}: {why}{more}")
        rule.source = source
        rules.append(rule)
    return rules


def load_rule_file(path: Path, schemas: Schemas | None = None) -> list[Rule]:
    try:
        if path.stat().st_size > MAX_RULE_FILE:
            raise RuleFileError(f"{path}: larger than {MAX_RULE_FILE // 1024} KiB; not a rule file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(f"{path}: cannot read: {exc}") from None
    return parse_rule_text(text, str(path), schemas)


def rule_files(dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files.extend(sorted(p for p in d.rglob("*.toml") if p.is_file() and p.name not in DATA_FILES))
        else:
            raise RuleFileError(f"{d}: no such rule file or directory")
    return files


def load_rules(dirs: Iterable[Path], disabled: Iterable[str] = (), schemas: Schemas | None = None) -> list[Rule]:
    """Every rule under the given files and directories; a later directory's rule replaces an earlier one
    with the same id (so a user can override a shipped rule), and disabled ids are dropped."""
    by_id: dict[str, Rule] = {}
    for f in rule_files(dirs):
        for rule in load_rule_file(f, schemas):
            by_id[rule.id] = rule
    off = set(disabled)
    return [r for r in by_id.values() if r.id not in off]
