"""parse_text reads a file without syntax errors in one parse: the same result as item by item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.dsl import ast, parser
from mailrules.dsl.parser import _chunks, _parse_chunk, parse_text
from mailrules.dsl.transform import AstBuilder
from mailrules.source import Diagnostic

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dsl"

#: Pieces of valid rules and tests (with semantic errors among them: unknown words, bad values).
ITEMS = [
    'rule "a" { when from contains "x" then move to "X" }',
    'rule "b" in "INBOX", "Lists" every 10 minutes {\n  when subject matches /^\\[l\\] (.*)/\n'
    '  then move to "Lists/{match.1}"; mark read\n}',
    'Rule "c" for account "work" { when (size > 2 KB or has attachment) and not seen then archive }',
    'rule "d" { when header "X-Tag" is any ["a", "b"] then tag "$L", flag }',
    'rule "e" { when form contains "x" then stop }',
    'rule "f" { when older than 3 fortnights then delete }',
    'rule "g" every monday, friday at 09:00 { then mark unread }',
    'rule "h" { when subject contains "bad \\q escape" then move to "A/{nope}" }',
    'test "t" { given "m.eml" flags seen, "$Kw" received 2024-05-01 12:00 expect keep }',
    'TEST "u" { given "m.eml" now 2024-13-01 expect move to "X" }',
    "# a comment line",
    "",
]


def _item_by_item(text: str) -> tuple[ast.RuleFile, list[Diagnostic]]:
    items: list[Any] = []
    diags: list[Diagnostic] = []
    for chunk, offset in _chunks(text):
        got, chunk_diags, _ = _parse_chunk(chunk, "f.rules", offset)
        items.extend(got)
        diags.extend(chunk_diags)
    rules = tuple(i for i in items if isinstance(i, ast.Rule))
    tests = tuple(i for i in items if isinstance(i, ast.TestBlock))
    diags.sort(key=lambda d: (d.span.line, d.span.column))
    return ast.RuleFile("f.rules", rules, tests), diags


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ITEMS), max_size=12), st.sampled_from(["\n", "\n\n", "\n  ", " \n# c\n"]))
def test_whole_file_equals_item_by_item(items: list[str], sep: str) -> None:
    text = sep.join(items)
    assert parser._parse_whole(text, "f.rules") is not None  # the fast path is the one taken
    assert parse_text(text, "f.rules") == _item_by_item(text)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*/*.rules")), ids=lambda p: p.name)
def test_fixtures_whole_or_item_by_item(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert parse_text(text, "f.rules") == _item_by_item(text)


def test_a_syntax_error_falls_back_to_item_by_item() -> None:
    text = 'rule "a" { then stop }\nrule "b" { when then stop }\nrule "c" { then flag }\n'
    assert parser._parse_whole(text, "f.rules") is None
    rule_file, diags = parse_text(text, "f.rules")
    assert rule_file is not None and [r.name for r in rule_file.rules] == ["a", "c"]
    assert [(d.span.line, d.span.column) for d in diags] == [(2, 17)]


def test_a_bug_in_the_builder_falls_back_to_item_by_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal error costs only its item, as when every item is parsed alone."""
    text = 'rule "a" { then stop }\nrule "b" { then flag }\n'
    real = AstBuilder.rule

    def broken_for_b(self: Any, span: Any, ch: list[Any]) -> Any:
        if str(ch[1]) == '"b"':
            raise RuntimeError("bug")
        return real(self, span, ch)

    monkeypatch.setattr(AstBuilder, "rule", broken_for_b)
    # a parser of its own: the shared one bound its callbacks before the patch
    monkeypatch.setattr(parser, "_parser_and_callbacks", parser._parser_and_callbacks.__wrapped__)
    rule_file, diags = parse_text(text, "f.rules")
    assert rule_file is not None and [r.name for r in rule_file.rules] == ["a"]
    assert [(d.span.line, d.message) for d in diags] == [
        (2, "cannot read this part of the file (internal error: RuntimeError)")
    ]
