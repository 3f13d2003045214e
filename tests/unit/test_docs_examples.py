"""Every rule example of the user documentation parses and checks with the current language.

Fenced blocks tagged ```rules must load without errors (warnings are allowed: some examples show
them); blocks tagged ```rules-error must produce at least one error. Test blocks are parsed, but
their `.eml` files are not looked for: the examples name files of a user's rule directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.source import Diagnostic, render_all

DOCS = Path(__file__).resolve().parents[2] / "docs"
FILES = ("language.md", "operations.md")
_FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<tag>[A-Za-z0-9_-]*)[ \t]*$")


@dataclass(frozen=True)
class Block:
    file: str
    line: int  # of the opening fence
    tag: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def blocks(name: str) -> list[Block]:
    """The fenced code blocks of one Markdown file, with their tag (info string)."""
    path = DOCS / name
    if not path.exists():
        return []
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{name}:{start + 1}: code block is never closed")
        out.append(Block(name, start + 1, opening["tag"], "\n".join(body) + "\n"))
        i += 1
    return out


ALL = [b for name in FILES for b in blocks(name)]
RULES = [b for b in ALL if b.tag == "rules"]
ERRORS = [b for b in ALL if b.tag == "rules-error"]


def load(block: Block) -> tuple[ast.RuleFile | None, list[Diagnostic]]:
    """Parse, then check the rules (not the tests' message files) as `mailrules check` would."""
    rule_file, diags = parse_text(block.text, block.id)
    if rule_file is None:
        return None, diags
    without_tests = ast.RuleFile(rule_file.path, rule_file.rules, ())
    checked = check_rule_set(ast.RuleSet((without_tests,), {block.id: block.text}))
    return rule_file, [*diags, *checked]


def test_the_language_reference_has_examples_of_both_kinds() -> None:
    in_reference = [b for b in ALL if b.file == "language.md"]
    assert sum(b.tag == "rules" for b in in_reference) >= 15
    assert any(b.tag == "rules-error" for b in in_reference)


def test_rule_like_blocks_are_tagged() -> None:
    """A block that starts like a rule file must say whether it is an example or an error."""
    untagged = [
        b.id
        for b in ALL
        if b.tag == "" and re.match(r"\s*(#[^\n]*\n\s*)*(rule|test)\s+\"", b.text, re.IGNORECASE)
    ]
    assert not untagged, f"tag these blocks ```rules or ```rules-error: {untagged}"


@pytest.mark.parametrize("block", RULES, ids=[b.id for b in RULES])
def test_rules_example_loads_without_errors(block: Block) -> None:
    rule_file, diags = load(block)
    errors = [d for d in diags if d.severity == "error"]
    assert not errors, render_all(errors, {block.id: block.text})
    assert rule_file is not None and (rule_file.rules or rule_file.tests), "the block holds no rule or test"


@pytest.mark.parametrize("block", ERRORS, ids=[b.id for b in ERRORS])
def test_error_example_is_rejected(block: Block) -> None:
    _, diags = load(block)
    assert any(d.severity == "error" for d in diags), "this example is meant to show an error"
